#!/usr/bin/env bash
# Set up (idempotent), lint, and run the whole test suite offline.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
.venv/bin/ruff check src tests bench
.venv/bin/mypy  # settings and file list: [tool.mypy] in pyproject.toml
.venv/bin/lint-imports  # layers point down and no import cycles ([tool.importlinter], pyproject.toml)
bash scripts/audit.sh  # pip-audit + scripts/audit-allow.txt; says "skipped" when its service is unreachable
.venv/bin/python -m pytest -q -ra --durations=25 "$@"  # the 25 slowest: what to trim when CI nears 30 min
