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
stamp=".venv/.hf_vtrain-installed-$(cat setup.cfg | sha1sum | cut -c1-12)-${extras//,/_}"
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  # torch first and pinned: the CPU wheel on this machine; an unpinned torch would pull a multi-GB CUDA build.
  .venv/bin/python -m pip install -q "torch==2.13.0"
  .venv/bin/python -m pip install -q -e ".[${extras}]"
  # The CLIP BPE vocabulary ships inside clip-anytorch; its own dependencies (torchvision) must NOT come with it:
  # only the data file is used, found without importing the package (hf_vtrain/data/clip_tokenizer.py).
  .venv/bin/python -m pip install -q --no-deps "clip-anytorch==2.6.0"
  touch "$stamp"
fi
