#!/usr/bin/env bash
# EPAM-Net on NTU RGB+D 60 X-Sub: `baseline` or `optimized` (recipes/epam_ntu60_xsub_<which>.yaml), or `demo` (the
# synthetic CPU demo). One process by default; ACCELERATE_CONFIG=... for several (scripts/launch.sh). Extra arguments
# override recipe keys, e.g.
#   bash scripts/train_ntu60_epam.sh optimized --data_root /data/ntu60
#   ACCELERATE_CONFIG=recipes/accelerate_configs/multi_gpu.yaml bash scripts/train_ntu60_epam.sh baseline
set -euo pipefail
cd "$(dirname "$0")/.."
which="${1:-}"
case "$which" in
  baseline|optimized) shift; exec bash scripts/launch.sh "recipes/epam_ntu60_xsub_${which}.yaml" "$@" ;;
  demo) shift; exec bash scripts/launch.sh recipes/epam_ntu60_demo.yaml "$@" ;;
  *) echo "usage: bash scripts/train_ntu60_epam.sh baseline|optimized|demo [--key value ...]" >&2; exit 2 ;;
esac
