#!/usr/bin/env bash
# FG-CLIP video on UCF-Crime, 10-video smoke run (one process by default; ACCELERATE_CONFIG=... for several, see scripts/launch.sh). Extra arguments override recipe
# keys, e.g. on the synthetic corpus on a CPU:
#   bash scripts/train_ucf_debug.sh --data_root .cache/synthetic_ucf_crime --clip_name_or_path .cache/tiny-clip \
#     --image_size 32 --use_cpu true --bf16 false
set -euo pipefail
cd "$(dirname "$0")/.."
exec bash scripts/launch.sh recipes/fgclip_ucf_debug.yaml "$@"
