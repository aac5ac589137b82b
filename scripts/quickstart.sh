#!/usr/bin/env bash
# The main job: set up, check the machine, fine-tune a Korean sentiment model on the bundled
# NSMC sample, register it, run it, and serve it with the demo page.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/aiforge quickstart "$@"
