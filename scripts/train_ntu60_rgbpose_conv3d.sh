#!/usr/bin/env bash
# RGBPoseConv3D on NTU RGB+D 60: `xsub` (recipes/rgbpose_conv3d_ntu60_xsub.yaml, MMAction2's published configuration
# in three phases) or `demo` (the synthetic CPU demo). One process by default; ACCELERATE_CONFIG=... for several
# (scripts/launch.sh). Extra arguments override recipe keys, e.g.
#   bash scripts/train_ntu60_rgbpose_conv3d.sh xsub --data_root /data/ntu60
#   ACCELERATE_CONFIG=recipes/accelerate_configs/multi_gpu.yaml bash scripts/train_ntu60_rgbpose_conv3d.sh xsub
set -euo pipefail
cd "$(dirname "$0")/.."
which="${1:-}"
case "$which" in
  xsub) shift; exec bash scripts/launch.sh recipes/rgbpose_conv3d_ntu60_xsub.yaml "$@" ;;
  demo) shift; exec bash scripts/launch.sh recipes/rgbpose_conv3d_ntu60_demo.yaml "$@" ;;
  *) echo "usage: bash scripts/train_ntu60_rgbpose_conv3d.sh xsub|demo [--key value ...]" >&2; exit 2 ;;
esac
