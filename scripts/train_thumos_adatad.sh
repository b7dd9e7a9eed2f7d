#!/usr/bin/env bash
# AdaTAD on THUMOS-14 (one process by default; ACCELERATE_CONFIG=... for several, see scripts/launch.sh). Extra arguments override recipe keys, e.g.
#   bash scripts/train_thumos_adatad.sh --resume_from_checkpoint outputs/adatad_thumos14/checkpoint-1000
#   ACCELERATE_CONFIG=recipes/accelerate_configs/multi_gpu.yaml bash scripts/train_thumos_adatad.sh --per_device_train_batch_size 4
set -euo pipefail
cd "$(dirname "$0")/.."
exec bash scripts/launch.sh recipes/adatad_thumos14.yaml "$@"
