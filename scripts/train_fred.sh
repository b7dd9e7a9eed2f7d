#!/usr/bin/env bash
# FRED drone detection: `--modality rgb|event|rgb_event` picks recipes/fred_<modality>.yaml (the users' numbers);
# `--demo` the synthetic CPU demo (recipes/fred_rgb_demo.yaml) with that modality. One process by default;
# ACCELERATE_CONFIG=... for several (scripts/launch.sh). Every other argument overrides a recipe key, e.g.
#   bash scripts/train_fred.sh --modality event --data_root /data/FRED --map_during_training false
#   bash scripts/train_fred.sh --demo --modality rgb_event
set -euo pipefail
cd "$(dirname "$0")/.."
modality=rgb
demo=0
rest=()
while [ $# -gt 0 ]; do
  case "$1" in
    --modality) [ $# -ge 2 ] || { echo "error: --modality needs rgb, event or rgb_event" >&2; exit 2; }
                modality="$2"; shift 2 ;;
    --modality=*) modality="${1#*=}"; shift ;;
    --demo) demo=1; shift ;;
    *) rest+=("$1"); shift ;;
  esac
done
case "$modality" in
  rgb|event|rgb_event) ;;
  *) echo "error: --modality must be rgb, event or rgb_event, got '$modality'" >&2; exit 2 ;;
esac
if [ "$demo" = 1 ]; then
  exec bash scripts/launch.sh recipes/fred_rgb_demo.yaml --modality "$modality" \
    --output_dir "outputs/fred_${modality}_demo" "${rest[@]+"${rest[@]}"}"
fi
exec bash scripts/launch.sh "recipes/fred_${modality}.yaml" "${rest[@]+"${rest[@]}"}"
