#!/usr/bin/env bash
# Issue 20's GPU figures, in one run: whole-epoch times with data loading, next to what users report.
#   1. AdaTAD THUMOS-14 at 768 frames x 160 px, batch 8, fp16 (recipes/adatad_thumos14_bs8.yaml): one training epoch
#      over 200 training videos and one evaluation pass over 213 test videos (the OpenTAD report: 12-14 min per epoch);
#   2. RT-DETR on FRED RGB at 640 px (recipes/fred_rgb.yaml, its two phases one epoch each): images/s frozen (batch
#      32) and unfrozen (batch 16), and what that makes of an epoch of 48k images (the users' notes: 2.5 / 4.5 min).
# The corpora are synthetic unless THUMOS / FRED name real ones: THUMOS 320x180 at 30 fps, 20 training and 21 test
# videos of 60-240 s, each listed 10 times (scripts/repeat_thumos_corpus.py: 200 / 210 videos); FRED 12 sequences of 20 s, frames 1280x720.
# Backbones are random at the published sizes unless BACKBONE (VideoMAE-S) / FRED_MODEL name checkpoints: time and
# memory do not depend on the weights. The GPU's name comes first in the output; every log is kept under OUT_DIR.
# Usage: bash scripts/gpu_check_epochs.sh OUT_DIR
#   SCALE=toy: tiny corpora and models, to try the script on a CPU (its figures mean nothing).
set -uo pipefail
out=${1:?usage: gpu_check_epochs.sh OUT_DIR}
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
mkdir -p "$out"
python=${PYTHON:-python}
status=0
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | tee "$out/gpu.txt" \
  || echo "no nvidia-smi: not on a GPU" | tee "$out/gpu.txt"

if [ "${SCALE:-full}" = toy ]; then
  thumos_gen=(--num-train-videos 2 --num-test-videos 2 --min-duration 8 --max-duration 10 --height 64 --width 96)
  repeats=2
  tad_extra=(--window_size 64 --eval_window_stride 32 --per_device_train_batch_size 2 --per_device_eval_batch_size 2
             --fp16 false --dataloader_num_workers 1 --backbone_config_overrides
             "{hidden_size: 32, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 64, image_size: 32}"
             --eval_resize 32 --resize_short_side 36 --crop_size 32)
  fred_gen=(--sequences 4 --seconds 0.5 --width 192 --height 108)
  fred_extra=(--image_size 64 --model_config_overrides "{num_queries: 30}" --fp16 false --dataloader_num_workers 1 --per_device_eval_batch_size 2)
else
  thumos_gen=(--num-train-videos 20 --num-test-videos 21 --min-duration 60 --max-duration 240 --height 180 --width 320)
  repeats=10
  tad_extra=(--dataloader_num_workers 8 --backbone_config_overrides
             "{hidden_size: 384, num_hidden_layers: 12, num_attention_heads: 6, intermediate_size: 1536, drop_path_rate: 0.1}")
  fred_gen=(--sequences 12 --seconds 20 --width 1280 --height 720)
  fred_extra=()
fi

echo "== 1. AdaTAD THUMOS-14: one epoch and one evaluation"
thumos=${THUMOS:-}
if [ -z "$thumos" ]; then
  "$python" -m hf_vtrain.data.synthetic_thumos14 "$out/thumos_base" --num-classes 20 --fps 30 "${thumos_gen[@]}" \
    > "$out/thumos_gen.log" 2>&1 || { status=1; tail -5 "$out/thumos_gen.log"; }
  "$python" scripts/repeat_thumos_corpus.py "$out/thumos_base" "$out/thumos" "$repeats" >> "$out/thumos_gen.log" 2>&1 \
    || { status=1; tail -5 "$out/thumos_gen.log"; }
  thumos=$out/thumos
fi
tad=(--data_root "$thumos" --num_train_epochs 1 --eval_start_epoch 0 --save_strategy no --report_to none
     --disable_tqdm true --output_dir "$out/adatad")
if [ -n "${BACKBONE:-}" ]; then tad+=(--backbone_name_or_path "$BACKBONE"); else
  tad+=(--create_random_backbone true --backbone_name_or_path "$out/videomae-s-random"); fi
start=$(date +%s)
timeout 3000 "$python" -m hf_vtrain.run recipes/adatad_thumos14_bs8.yaml "${tad[@]}" "${tad_extra[@]}" \
  > "$out/adatad.log" 2>&1 || { status=1; tail -30 "$out/adatad.log"; }
echo "whole run: $(( $(date +%s) - start )) s (corpus check and model building included)"
grep -E "'train_runtime'|'eval_runtime'|train_samples_per_second|eval_average_mAP'" "$out/adatad.log" | tail -4

echo "== 2. FRED RGB, RT-DETR at 640 px: one epoch frozen (batch 32), one unfrozen (batch 16)"
fred=${FRED:-}
if [ -z "$fred" ]; then
  "$python" -m hf_vtrain.data.synthetic_fred "$out/fred" "${fred_gen[@]}" > "$out/fred_gen.log" 2>&1 \
    || { status=1; tail -5 "$out/fred_gen.log"; }
  fred=$out/fred
fi
det=(--data_root "$fred" --num_train_epochs 1 --report_to none --disable_tqdm true --output_dir "$out/fred_rgb" --save_strategy no
     --eval_strategy no)
if [ -n "${FRED_MODEL:-}" ]; then det+=(--model_name_or_path "$FRED_MODEL"); else
  # rtdetr_r18vd's shape (ResNet-18-vd basic blocks, 3 decoder layers), random
  det+=(--model_name_or_path null --backbone_config_overrides
        "{layer_type: basic, depths: [2, 2, 2, 2], hidden_sizes: [64, 128, 256, 512]}"
        --model_config_overrides "{encoder_in_channels: [128, 256, 512], decoder_layers: 3}"); fi
timeout 3000 "$python" -m hf_vtrain.run recipes/fred_rgb.yaml "${det[@]}" "${fred_extra[@]}" \
  > "$out/fred.log" 2>&1 || { status=1; tail -30 "$out/fred.log"; }
"$python" - "$out/fred.log" <<'PY'
import re, sys
rates = [float(m) for m in re.findall(r"'train_samples_per_second': '?([0-9.]+)", open(sys.argv[1]).read())]
for name, rate in zip(("frozen, batch 32", "unfrozen, batch 16"), rates):
    print(f"{name}: {rate:.1f} images/s -> {48000 / rate / 60:.1f} min per epoch of 48k images (notes: 2.5 / 4.5)")
if len(rates) < 2:
    print(f"only {len(rates)} phase(s) reported train_samples_per_second")
PY
exit $status
