#!/usr/bin/env bash
# Run the schemathesis test (tests/serve/test_fuzz.py) under N fresh seeds and list the failing ones.
# CI pins one seed; this loop is how new cases are found between submissions.
#   bash bench/fuzz_seeds.sh [ROUNDS=10] [EXAMPLES=40]
set -u
rounds=${1:-10}
examples=${2:-40}
cd "$(dirname "$0")/.."
failed=0
for round in $(seq 1 "$rounds"); do
  log=$(mktemp)
  if AIFORGE_FUZZ_SEED=random AIFORGE_FUZZ_EXAMPLES=$examples HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false \
      .venv/bin/python -m pytest -q -x -rA tests/serve/test_fuzz.py -k schemathesis >"$log" 2>&1; then
    echo "round $round: $(grep -o 'schemathesis seed [0-9]*' "$log" | head -1) passed"
  else
    failed=$((failed + 1))
    echo "round $round: $(grep -o 'schemathesis seed [0-9]*' "$log" | head -1) FAILED (log kept: $log)"
    continue
  fi
  rm -f "$log"
done
echo "$failed of $rounds rounds failed"
[ "$failed" -eq 0 ]
