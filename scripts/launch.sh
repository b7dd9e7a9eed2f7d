#!/usr/bin/env bash
# Runs hf_vtrain/run.py on a recipe with the project's .venv (made by scripts/setup_env.sh) when it exists, else with
# the python3/accelerate on PATH (an environment you activated). One process by default; with ACCELERATE_CONFIG set,
# through `accelerate launch --config_file $ACCELERATE_CONFIG` (multi-GPU, multi-node, DeepSpeed).
# Usage: bash scripts/launch.sh RECIPE [--key value ...]      (the train_*.sh scripts call this)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -x .venv/bin/python ]; then
  py=.venv/bin/python
else
  py=$(command -v python3 || true)
fi
if [ -z "$py" ] || ! "$py" -c "import hf_vtrain.run, accelerate" >/dev/null 2>&1; then
  echo "error: no .venv in $(pwd) and no python3 on PATH with hf_vtrain installed: run 'bash scripts/setup_env.sh' (or activate the environment you installed hf_vtrain into)" >&2
  exit 2
fi
if [ -z "${ACCELERATE_CONFIG:-}" ]; then
  # One process needs no launcher (the same as accelerate's single_gpu.yaml); the exit status is run.py's own.
  exec "$py" -m hf_vtrain.run "$@"
fi
# -q: a failing process ends with its own message, not accelerate's CalledProcessError traceback (status 1 then).
exec "$py" -m accelerate.commands.launch -q --config_file "$ACCELERATE_CONFIG" hf_vtrain/run.py "$@"
