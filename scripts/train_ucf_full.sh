#!/usr/bin/env bash
# FG-CLIP video on UCF-Crime (one process by default; ACCELERATE_CONFIG=... for several, see scripts/launch.sh). Extra arguments override recipe keys, e.g.
#   bash scripts/train_ucf_full.sh --resume_from_checkpoint outputs/fgclip_ucf/checkpoint-300
#   ACCELERATE_CONFIG=recipes/accelerate_configs/multi_gpu.yaml bash scripts/train_ucf_full.sh --gradient_accumulation_steps 4
set -euo pipefail
cd "$(dirname "$0")/.."
exec bash scripts/launch.sh recipes/fgclip_ucf.yaml "$@"
