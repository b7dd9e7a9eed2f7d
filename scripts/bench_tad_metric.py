"""Times the TAD mAP (hf_vtrain.metrics.tad) on a THUMOS-sized synthetic input; prints figures, asserts nothing.

    python scripts/bench_tad_metric.py [--videos 200] [--classes 20] [--gt-per-video 10] [--preds-per-video 2000]
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # the loop-based reference lives in the tests

from hf_vtrain.metrics.tad import evaluate_detections  # noqa: E402


def synthetic(seed: int, videos: int, classes: int, gt_per_video: int, preds_per_video: int):
    """Half the predictions jitter a ground truth (mostly its label), half are random; scores rounded to 1e-3
    so ties occur as in real post-processed output."""
    rng = np.random.default_rng(seed)
    names = [f"class_{c:02d}" for c in range(classes)]
    database, results = {}, {}
    for v in range(videos):
        vid = f"video_{v:04d}"
        duration = float(rng.uniform(60, 600))
        n_gt = max(1, int(rng.poisson(gt_per_video)))
        length = rng.uniform(1, 20, n_gt)
        start = rng.uniform(0, duration - length)
        gt_cls = rng.integers(0, classes, n_gt)
        database[vid] = {
            "subset": "validation", "duration": duration, "frame": int(duration * 30),
            "annotations": [{"label": names[c], "segment": [float(s), float(s + ln)]}
                            for c, s, ln in zip(gt_cls, start, length)],
        }
        n_near = preds_per_video // 2
        which = rng.integers(0, n_gt, n_near)
        centre = start[which] + length[which] / 2 + rng.normal(0, 0.3, n_near) * length[which]
        half = length[which] / 2 * rng.lognormal(0, 0.3, n_near)
        near_cls = np.where(rng.random(n_near) < 0.8, gt_cls[which], rng.integers(0, classes, n_near))
        n_rand = preds_per_video - n_near
        r_len = rng.uniform(1, 30, n_rand)
        r_start = rng.uniform(0, duration, n_rand)
        seg_s = np.concatenate([centre - half, r_start])
        seg_e = np.concatenate([centre + half, r_start + r_len])
        cls = np.concatenate([near_cls, rng.integers(0, classes, n_rand)])
        score = np.round(np.concatenate([rng.beta(4, 2, n_near), rng.beta(1, 4, n_rand)]), 3)
        perm = rng.permutation(preds_per_video)
        results[vid] = [{"segment": [float(seg_s[i]), float(seg_e[i])], "label": names[cls[i]],
                         "score": float(score[i])} for i in perm]
    return {"database": database}, {"results": results}


def best_of(n: int, fn):
    times, out = [], None
    for _ in range(n):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=200)
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--gt-per-video", type=int, default=10)
    parser.add_argument("--preds-per-video", type=int, default=2000)
    parser.add_argument("--no-reference", action="store_true", help="skip the loop-based reference timing")
    args = parser.parse_args()

    gt, pred = synthetic(0, args.videos, args.classes, args.gt_per_video, args.preds_per_video)
    n_pred = sum(len(p) for p in pred["results"].values())
    n_gt = sum(len(v["annotations"]) for v in gt["database"].values())
    print(f"input: {args.videos} videos, {args.classes} classes, {n_gt} ground truth, {n_pred} predictions")

    seconds, result = best_of(3, lambda: evaluate_detections(gt, pred))
    print(f"evaluate_detections: {seconds:.3f} s (best of 3), {n_pred / seconds:,.0f} predictions/s")
    print(result.table())

    if not args.no_reference:
        from tests.metrics.test_tad import reference_evaluate

        small_gt, small_pred = synthetic(0, args.videos // 10, args.classes, args.gt_per_video, args.preds_per_video)
        n_small = sum(len(p) for p in small_pred["results"].values())
        t_fast, r_fast = best_of(3, lambda: evaluate_detections(small_gt, small_pred))
        t_ref, (_, _, ref_map) = best_of(1, lambda: reference_evaluate(small_gt, small_pred))
        print(f"1/10 input ({n_small} predictions): evaluate_detections {t_fast:.3f} s, loop reference {t_ref:.2f} s "
              f"({t_ref / t_fast:.0f}x); max |mAP difference| {np.max(np.abs(r_fast.mAP - ref_map)):.1e}")


if __name__ == "__main__":
    main()
