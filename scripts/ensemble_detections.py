"""Ensembles TAD checkpoints by score-level fusion of their saved raw per-window detections, before merging and NMS,
and writes OpenTAD predictions (plus the mAP when a ground truth is available).

    python scripts/ensemble_detections.py RUN_A/raw_detections.npz RUN_B/raw_detections.npz ...
        [--ground-truth RUN_A/ground_truth.json] [--weights 1,1] [--out predictions.json] [--save-raw fused.npz]

Fusion rule (hf_vtrain.models.adatad.postprocessing_adatad.fuse_raw_detections): weights are normalised to sum 1; in every window the
candidates of all inputs are pooled with their scores multiplied by their input's weight; identical candidates (same
start, end and class) are one candidate scored by the weighted sum, i.e. the weighted mean over inputs where an input
that does not propose it counts 0. The pooled candidates then go through the normal merge and soft-NMS, with the
first input's post-processing settings. All inputs must come from evaluations of the same windows (same eval
settings); a checkpoint ensembled with itself gives exactly its own predictions.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from hf_vtrain.exit_codes import run_tool  # noqa: E402
from hf_vtrain.metrics.tad import evaluate_detections  # noqa: E402
from hf_vtrain.models.adatad.postprocessing_adatad import (  # noqa: E402
    fuse_raw_detections,
    load_raw_detections,
    raw_ground_truth,
    raw_results,
    save_raw_detections,
)


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("raw", nargs="+", help="raw_detections*.npz of each checkpoint")
    parser.add_argument("--ground-truth", help="OpenTAD ground truth JSON (default: the one saved in the first .npz)")
    parser.add_argument("--weights", help="comma-separated, one per input (default: equal)")
    parser.add_argument("--out", default="predictions.json", help="OpenTAD predictions of the ensemble")
    parser.add_argument("--save-raw", help="also save the fused windows as a raw detections file (for tuning)")
    parser.add_argument("--no-eval", action="store_true", help="write predictions only")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse(argv)
    raws = [load_raw_detections(path) for path in args.raw]
    weights = [float(w) for w in args.weights.split(",")] if args.weights else None
    fused = fuse_raw_detections(raws, weights)
    results = raw_results(fused)
    with open(args.out, "w") as handle:
        json.dump(results, handle)
    print(f"fused {len(raws)} inputs ({len(fused.meta)} windows, up to {fused.detections.shape[1]} candidates each) "
          f"-> {args.out}")
    if args.save_raw:
        save_raw_detections(args.save_raw, fused)
    out = {"predictions": args.out}
    if not args.no_eval and (args.ground_truth or fused.ground_truth is not None):
        gt = raw_ground_truth(fused, args.ground_truth)
        for path, raw in zip(args.raw, raws):
            single = evaluate_detections(gt, raw_results(raw), subset=None, class_names=raw.class_names)
            print(f"  {path}: average mAP {100 * single.average_mAP:.2f}")
        result = evaluate_detections(gt, results, subset=None, class_names=fused.class_names)
        print(f"ensemble:\n{result.table()}")
        out.update(result.as_dict())
    return out


if __name__ == "__main__":
    run_tool(main)
