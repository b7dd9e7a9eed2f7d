#!/usr/bin/env bash
# Sets up .venv, then trains and evaluates the AdaTAD demo recipe on a synthetic THUMOS-format corpus (CPU).
# The corpus and a tiny random VideoMAE checkpoint are written on first use under .cache/. Extra args override keys.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh tests
exec .venv/bin/python -m hf_vtrain.run recipes/adatad_thumos14_demo.yaml "$@"
