"""Times TAD post-processing per video at the THUMOS recipe's settings; prints figures, asserts nothing.

    python scripts/bench_postprocess.py [--videos 20] [--seed 0] [--workload spread|windows|both]
    python scripts/bench_postprocess.py --raw outputs/adatad_thumos14/raw_detections.npz   # a real evaluation's windows

For each video: its evaluation windows (AdaTAD THUMOS: 768 sampled frames at stride 4, 30 fps, windows every 384
sampled frames; pre_nms_topk 2000 decoded (point, class) pairs per window above score 0.001) become candidates as
`merge_video_detections` makes them (seconds, OpenTAD's rounding), and Gaussian soft-NMS (sigma 0.7, 2000 per class and
per video) runs twice in this process: the numpy definition (`soft_nms(reference=True)`, today's implementation before
the compiled one) and the compiled kernel (`soft_nms_kernels`, numba). Prints ms per video of each, their ratio, whether
the outputs are identical bit for bit, and the whole `merge_video_detections` (rounding included) per video.

Two synthetic workloads (both by default). `spread`: 8,000 candidates per video spread evenly over the 20 classes
(uniform starts over 200 s, exponential lengths of mean 5 s, scores rounded to 1e-4), the setting issue 20 measured
today's implementation on (about 112 ms per video). `windows`: a video of 60-400 s holds 5-25 actions of one or two of the 20 classes; half of each
window's pairs lie near an action (its class, jittered boundaries, higher scores), half are background pairs of any
class at pyramid-level lengths with low scores. `--raw` takes the windows an evaluation saved instead (raw_detections.npz).
"""

from __future__ import annotations

import argparse
import time
from types import SimpleNamespace

import numpy as np

from hf_vtrain.models.adatad.postprocessing_adatad import (
    load_raw_detections,
    merge_video_detections,
    soft_nms,
    video_candidates,
)

SETTINGS = dict(score_threshold=0.001, pre_nms_topk=2000, nms_sigma=0.7, max_segments=2000, class_agnostic=False,
                voting_threshold=0.7, opentad_rounding=True)


def synthetic_videos(seed: int, count: int, num_classes: int = 20, window: int = 768, stride: int = 384,
                     sample_stride: int = 4, fps: float = 30.0, top_k: int = 2000):
    """[(windows [(detections (K, 4), window_start)], fps, sample_stride, duration)] in window frame units."""
    rng = np.random.default_rng(seed)
    videos = []
    for _ in range(count):
        duration = float(rng.uniform(60, 400))
        sampled = int(duration * fps / sample_stride)
        classes = rng.choice(num_classes, size=int(rng.integers(1, 3)), replace=False)
        num_actions = int(rng.integers(5, 26))
        length = rng.uniform(1.0, 15.0, num_actions) * fps / sample_stride  # sampled frames
        start = rng.uniform(0, max(sampled - length.max(), 1), num_actions)
        label = rng.choice(classes, num_actions)
        windows = []
        for window_start in range(0, max(sampled - window, 0) + stride, stride):
            inside = (start + length > window_start) & (start < window_start + window)
            near = top_k // 2 if inside.any() else 0
            pick = rng.choice(np.flatnonzero(inside), near) if near else np.zeros(0, int)
            s = start[pick] - window_start + rng.normal(0, 0.15, near) * length[pick]
            e = start[pick] + length[pick] - window_start + rng.normal(0, 0.15, near) * length[pick]
            far = top_k - near
            centre = rng.uniform(0, window, far)
            half = 2.0 ** rng.integers(0, 6, far) * rng.uniform(0.5, 4.0, far)  # pyramid levels' ranges
            detections = np.stack([
                np.concatenate([np.minimum(s, e), centre - half]),
                np.concatenate([np.maximum(s, e), centre + half]),
                np.concatenate([rng.beta(2, 3, near), rng.uniform(0.0011, 0.15, far)]),
                np.concatenate([label[pick], rng.integers(0, num_classes, far)]).astype(np.float64),
            ], axis=1)
            windows.append((detections[np.argsort(-detections[:, 2], kind="stable")].astype(np.float32),
                            window_start))
        videos.append((windows, fps, sample_stride, duration))
    return videos


def spread_candidates(seed: int, count: int, num=8000, num_classes=20, duration=200.0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        start = rng.uniform(0, duration, num)
        segments = np.stack([start, np.minimum(start + rng.exponential(duration / 40, num), duration)], axis=1)
        out.append((np.round(segments, 2), np.round(rng.uniform(0.001, 1.0, num), 4),
                    rng.integers(0, num_classes, num)))
    return out


def raw_videos(path: str):
    raw = load_raw_detections(path)
    per_video = {}
    for detections, (video_index, window_start) in zip(raw.detections, raw.meta):
        per_video.setdefault(int(video_index), []).append((detections, int(window_start)))
    return [(per_video.get(i, []), v["fps"], v["sample_stride"], v["duration"]) for i, v in enumerate(raw.videos)], \
        raw.postprocess


def compare(label: str, inputs, nms: dict) -> None:
    sizes = [len(scores) for _, scores, _ in inputs]
    largest = max(int(np.bincount(labels).max()) for _, _, labels in inputs)
    print(f"-- {label}: {len(inputs)} videos, {np.mean(sizes):.0f} candidates per video on average (max {max(sizes)}), "
          f"largest class {largest}")
    timings = {"reference": [], "compiled": []}
    identical = True
    for segments, scores, labels in inputs:
        outputs = {}
        for name in ("reference", "compiled"):  # alternating per video: both see the same machine load
            t0 = time.perf_counter()
            outputs[name] = soft_nms(segments, scores, labels, reference=name == "reference", **nms)
            timings[name].append(time.perf_counter() - t0)
        identical &= all(np.array_equal(a, b) for a, b in zip(outputs["reference"], outputs["compiled"]))
    reference, compiled = (1e3 * np.mean(timings[k]) for k in ("reference", "compiled"))
    per_video_ratio = np.array(timings["reference"]) / np.array(timings["compiled"])
    print(f"soft-NMS reference (numpy loop): {reference:8.2f} ms per video")
    print(f"soft-NMS compiled (numba):       {compiled:8.2f} ms per video")
    print(f"ratio {reference / compiled:.1f}x (per video: median {np.median(per_video_ratio):.1f}x, "
          f"min {per_video_ratio.min():.1f}x); outputs identical bit for bit: {identical}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=20, help="synthetic videos per workload (THUMOS test: 213)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workload", choices=["spread", "windows", "both"], default="both")
    parser.add_argument("--raw", help="raw_detections.npz of an evaluation, instead of synthetic windows")
    args = parser.parse_args()

    settings = dict(SETTINGS)
    if args.raw:
        videos, recorded = raw_videos(args.raw)
        settings.update(recorded)
    else:
        videos = synthetic_videos(args.seed, args.videos) if args.workload != "spread" else []
    config = SimpleNamespace(**settings)
    nms = dict(sigma=config.nms_sigma, max_segments=config.max_segments, class_agnostic=config.class_agnostic,
               voting_threshold=config.voting_threshold)
    print(f"sigma {config.nms_sigma}, max_segments {config.max_segments}, class_agnostic {config.class_agnostic}")

    t0 = time.perf_counter()
    soft_nms([[0.0, 1.0], [0.5, 1.5]], [0.9, 0.8], [0, 0])  # numba: compiled, or loaded from its cache
    print(f"first call (numba compile or cache load): {time.perf_counter() - t0:.2f} s")

    if not args.raw and args.workload in ("spread", "both"):
        compare("spread: 8,000 candidates over 20 classes", spread_candidates(args.seed, args.videos), nms)
    if videos:
        compare(f"windows of {args.raw}" if args.raw else "windows: synthetic AdaTAD THUMOS windows",
                [video_candidates(*video, rounding=config.opentad_rounding) for video in videos], nms)
        t0 = time.perf_counter()
        for video in videos:
            merge_video_detections(*video, config)
        merge = 1e3 * (time.perf_counter() - t0) / len(videos)
        print(f"merge_video_detections (rounding + compiled soft-NMS): {merge:.2f} ms per video; "
              f"for 213 THUMOS test videos {merge * 213 / 1e3:.1f} s per evaluation")


if __name__ == "__main__":
    main()
