"""Re-tunes TAD post-processing from saved raw detections, without running the model: merge + soft-NMS + mAP over a
grid, printed as a table, best average mAP first (the recorded settings are marked with *).

    python scripts/tune_postprocess.py OUTPUT_DIR/raw_detections.npz [--ground-truth OUTPUT_DIR/ground_truth.json]
        [--sigma 0.3,0.5,0.7,0.9] [--max-segments 100,200,2000] [--voting-threshold 0.5,0.7,0.9]
        [--pre-nms-topk 500,1000,2000] [--class-agnostic false|true|both] [--top 20] [--csv grid.csv]

Every grid axis defaults to the setting the evaluation used (recorded in the .npz). `--pre-nms-topk` can only
shrink (only that many rows per window were saved); `--voting-threshold` only matters with class-agnostic NMS.
Without `--ground-truth` the evaluation's own ground truth (saved in the .npz) is used; a ground-truth file is
restricted to the videos of the .npz. Put the best row into the recipe's model_config_overrides (nms_sigma,
max_segments, voting_threshold, pre_nms_topk, class_agnostic).
"""

from __future__ import annotations

import argparse
import csv
import itertools
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from hf_vtrain.exit_codes import run_tool  # noqa: E402
from hf_vtrain.metrics.tad import evaluate_detections  # noqa: E402
from hf_vtrain.models.adatad.postprocessing_adatad import load_raw_detections, raw_ground_truth, raw_results  # noqa: E402


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def _ints(text: str) -> list[int]:
    return [int(float(v)) for v in text.split(",") if v.strip()]


def _agnostic(text: str) -> list[bool]:
    choices = {"false": [False], "true": [True], "both": [False, True]}
    if text.lower() not in choices:
        raise argparse.ArgumentTypeError("--class-agnostic takes false, true or both")
    return choices[text.lower()]


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("raw", help="raw_detections*.npz written by evaluation")
    parser.add_argument("--ground-truth", help="OpenTAD ground truth JSON (default: the one saved in the .npz)")
    parser.add_argument("--sigma", type=_floats, help="soft-NMS sigmas, comma-separated")
    parser.add_argument("--max-segments", type=_ints, help="segments kept per video")
    parser.add_argument("--voting-threshold", type=_floats, help="segment voting tIoU (class-agnostic mode only)")
    parser.add_argument("--pre-nms-topk", type=_ints, help="rows kept per window before merging")
    parser.add_argument("--class-agnostic", type=_agnostic, help="false, true or both")
    parser.add_argument("--top", type=int, default=0, help="print only the best N rows (0: all)")
    parser.add_argument("--csv", help="also write the whole table here")
    return parser.parse_args(argv)


def grid(args, recorded: dict) -> list[dict]:
    axes = {
        "nms_sigma": args.sigma or [recorded["nms_sigma"]],
        "max_segments": args.max_segments or [recorded["max_segments"]],
        "pre_nms_topk": args.pre_nms_topk or [recorded["pre_nms_topk"]],
        "class_agnostic": args.class_agnostic or [recorded["class_agnostic"]],
        "voting_threshold": args.voting_threshold or [recorded["voting_threshold"]],
    }
    points, seen = [], set()
    for values in itertools.product(*axes.values()):
        point = dict(zip(axes, values))
        if not point["class_agnostic"]:  # voting does nothing in multiclass mode: one row, the recorded value
            point["voting_threshold"] = recorded["voting_threshold"]
        key = tuple(sorted(point.items()))
        if key not in seen:
            seen.add(key)
            points.append(point)
    return points


def tune(raw_path: str, ground_truth: str | None = None, points: list[dict] | None = None) -> list[dict]:
    """mAP of each post-processing setting; rows sorted best average mAP first (stable: grid order on ties)."""
    raw = load_raw_detections(raw_path)
    gt = raw_ground_truth(raw, ground_truth)
    recorded = {k: raw.postprocess[k] for k in raw.postprocess}
    rows = []
    for point in points or [{}]:
        settings = {**recorded, **point}
        result = evaluate_detections(gt, raw_results(raw, settings), subset=None, class_names=raw.class_names)
        row = {k: settings[k] for k in ("nms_sigma", "max_segments", "voting_threshold", "pre_nms_topk",
                                        "class_agnostic")}
        row.update(result.as_dict())
        row["recorded"] = all(settings[k] == recorded[k] for k in row if k in recorded)
        rows.append(row)
    rows.sort(key=lambda r: -r["average_mAP"])
    return rows


def format_table(rows: list[dict]) -> str:
    metric_keys = [k for k in rows[0] if k.startswith("mAP@")] + ["average_mAP"]
    header = f"{'':1} {'sigma':>6} {'max_seg':>8} {'voting':>7} {'topk':>6} {'agnostic':>8} " + " ".join(
        f"{k.replace('average_mAP', 'avg'):>8}" for k in metric_keys)
    lines = [header]
    for row in rows:
        voting = f"{row['voting_threshold']:g}" if row["class_agnostic"] else "-"
        lines.append(f"{'*' if row['recorded'] else ' '} {row['nms_sigma']:>6g} {row['max_segments']:>8d} "
                     f"{voting:>7} {row['pre_nms_topk']:>6d} {str(row['class_agnostic']).lower():>8} "
                     + " ".join(f"{row[k]:>8.2f}" for k in metric_keys))
    return "\n".join(lines)


def main(argv=None) -> list[dict]:
    args = parse(argv)
    raw = load_raw_detections(args.raw)
    points = grid(args, raw.postprocess)
    start = time.perf_counter()
    rows = tune(args.raw, args.ground_truth, points)
    shown = rows[: args.top] if args.top > 0 else rows
    print(f"{args.raw}: {len(raw.meta)} windows, {len(raw.videos)} videos, step {raw.step}; recorded settings: "
          f"{raw.postprocess}")
    print(f"{len(rows)} settings in {time.perf_counter() - start:.1f} s; mAP in percent, best first, * = recorded\n")
    print(format_table(shown))
    if args.csv:
        with open(args.csv, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return rows


if __name__ == "__main__":
    run_tool(main)
