#!/usr/bin/env bash
# GPU check of the AdaTAD THUMOS-14 batch-8 recipe (RECIPE, default recipes/adatad_thumos14_bs8.yaml) in its own shape
# (VideoMAE-S, 768 frames x 160 px, batch 8, fp16,
# activation checkpointing) on a corpus in THUMOS-14 / OpenTAD format: the real one, or a synthetic one, e.g.
#   python -m hf_vtrain.data.synthetic_thumos14 CORPUS --num-classes 20 --fps 30 --min-duration 30 --max-duration 40
# The VideoMAE-S backbone is random (written on first use) unless BACKBONE names a real checkpoint; step time and
# memory do not depend on the weights. Prints figures and writes the logs under OUT_DIR:
#   1. scripts/bench_adatad_step.py: the training step alone (no data loading), evaluation windows/s, peak memory;
#   2. the recipe through hf_vtrain/run.py under the `deepspeed` launcher with ZeRO-2 (recipes/deepspeed/zero2.json):
#      STEPS optimizer steps, then one evaluation; sec_per_step and gpu_mem_peak_gib are in every log line;
#   3. the same recipe without DeepSpeed (the Trainer's own fp16 AMP), for comparison.
# Steady-state step time needs several batches per epoch (e.g. >= 48 training videos at batch 8; repeat a small corpus
# with scripts/repeat_thumos_corpus.py): the first step of every epoch also waits for its first batch, and without
# persistent workers (the recipe now keeps them) for the workers to start (~6 s on the H200 machine).
# Usage: bash scripts/gpu_check_adatad.sh CORPUS_DIR OUT_DIR [STEPS]
# EXTRA_ARGS (recipe overrides) and BENCH_ARGS are appended as given; they exist to try the script at toy size.
set -uo pipefail
corpus=${1:?usage: gpu_check_adatad.sh CORPUS_DIR OUT_DIR [STEPS]}
out=${2:?usage: gpu_check_adatad.sh CORPUS_DIR OUT_DIR [STEPS]}
steps=${3:-6}
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
mkdir -p "$out"
backbone=${BACKBONE:-$out/videomae-s-random}  # the random one: 88 MB
python=${PYTHON:-python}
recipe=${RECIPE:-recipes/adatad_thumos14_bs8.yaml}
status=0

echo "== 1. training step alone (bench_adatad_step.py)"
# shellcheck disable=SC2086
timeout 300 "$python" scripts/bench_adatad_step.py ${BENCH_ARGS:-} 2>&1 | tee "$out/bench.txt" || status=1

common=(--data_root "$corpus" --backbone_name_or_path "$backbone" --max_steps "$steps" --logging_steps 1
        --eval_start_epoch 0 --save_strategy no --report_to none --dataloader_num_workers 8 --disable_tqdm true)
if [ -z "${BACKBONE:-}" ]; then
  common+=(--create_random_backbone true --backbone_config_overrides
           "{hidden_size: 384, num_hidden_layers: 12, num_attention_heads: 6, intermediate_size: 1536, drop_path_rate: 0.1}")
fi

echo "== 2. recipe, deepspeed launcher, ZeRO-2"
# shellcheck disable=SC2086
timeout 400 "${DEEPSPEED:-deepspeed}" --num_gpus 1 hf_vtrain/run.py "$recipe" "${common[@]}" \
  --deepspeed recipes/deepspeed/zero2.json --output_dir "$out/zero2" ${EXTRA_ARGS:-} > "$out/zero2.log" 2>&1 \
  || { status=1; tail -40 "$out/zero2.log"; }
grep -E "sec_per_step|eval_average_mAP'" "$out/zero2.log" | tail -"$((steps + 1))"

echo "== 3. recipe, plain Trainer fp16 AMP"
# shellcheck disable=SC2086
timeout 400 "$python" -m hf_vtrain.run "$recipe" "${common[@]}" --output_dir "$out/amp" \
  ${EXTRA_ARGS:-} > "$out/amp.log" 2>&1 || { status=1; tail -40 "$out/amp.log"; }
grep -E "sec_per_step|eval_average_mAP'" "$out/amp.log" | tail -"$((steps + 1))"
exit $status
