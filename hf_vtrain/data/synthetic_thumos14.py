"""A synthetic THUMOS-14 corpus in OpenTAD's on-disk layout, so whole runs and tests need no downloads.

`make_synthetic_thumos14` writes an OpenTAD-layout THUMOS-14 corpus (annotation JSON, category_idx.txt, H.264 MP4s)
whose actions a small model can learn: each class is a large shape with its own colour and motion, drawn with
frame-exact start and end over a moving low-contrast background.
"""

from __future__ import annotations

import argparse
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np

from .synthetic import (
    PARAMS_FILE,
    build_corpus,
    check_decodable,
    default_kwargs,
    moving_background,
    preflight,
    read_params,
    write_mp4,
)

# Bump when the generated content changes, so `ensure_*` regenerates stale corpora.
THUMOS14_FORMAT_VERSION = 1

# The 20 THUMOS-14 detection classes in category_idx.txt order (alphabetical).
THUMOS14_CLASSES = (
    "BaseballPitch", "BasketballDunk", "Billiards", "CleanAndJerk", "CliffDiving", "CricketBowling", "CricketShot",
    "Diving", "FrisbeeCatch", "GolfSwing", "HammerThrow", "HighJump", "JavelinThrow", "LongJump", "PoleVault",
    "Shotput", "SoccerPenalty", "TennisSwing", "ThrowDiscus", "VolleyballSpiking",
)  # fmt: skip

# Class c is drawn as shape c % 5 in colour c % 7: distinct (shape, colour) pairs for up to 35 classes.
_SHAPES = ("disc", "vbar", "checker", "hbar", "rings")
_COLOURS = np.array(
    [(225, 35, 35), (35, 205, 60), (45, 80, 235), (235, 215, 35), (215, 45, 205), (35, 215, 215), (245, 135, 20)],
    dtype=np.float32,
)
_ALPHA = 0.9  # the shape almost hides the background: presence is obvious in every frame

ANNOTATION_FILE = "annotations/thumos_14_anno.json"
CLASS_MAP_FILE = "annotations/category_idx.txt"
VIDEO_DIR = "raw_data/video"


# ----------------------------------------------------------------------------------------------- drawing


def _shape_mask(shape: str, t: np.ndarray, height: int, width: int, fps: float, phase: float) -> np.ndarray:
    """Bool (len(t), H, W) mask of one action's shape at frame offsets t (frames since the action started)."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    t = t.astype(np.float32)[:, None, None]
    small = min(height, width)
    if shape == "disc":  # pulsing disc, radius 0.3..0.45 of the short side
        radius = small * (0.375 + 0.075 * np.sin(2 * np.pi * t / (0.8 * fps) + phase))
        return (yy - height / 2) ** 2 + (xx - width / 2) ** 2 <= radius**2
    if shape == "vbar":  # full-height bar, a third of the width, sweeping left-right
        bar = width / 3
        x0 = (width - bar) * (0.5 + 0.5 * np.sin(2 * np.pi * t / (1.5 * fps) + phase))
        return np.broadcast_to((xx >= x0) & (xx < x0 + bar), (t.shape[0], height, width))
    if shape == "hbar":  # full-width bar, a third of the height, sweeping up-down
        bar = height / 3
        y0 = (height - bar) * (0.5 + 0.5 * np.sin(2 * np.pi * t / (1.5 * fps) + phase))
        return np.broadcast_to((yy >= y0) & (yy < y0 + bar), (t.shape[0], height, width))
    if shape == "checker":  # checkerboard over the central 80%, its parity flipping every 3 frames
        cell = max(small // 5, 2)
        inside = (np.abs(yy - height / 2) < 0.4 * height) & (np.abs(xx - width / 2) < 0.4 * width)
        parity = ((yy // cell + xx // cell) % 2)[None]
        flip = (t // 3) % 2
        return inside[None] & (parity == flip)
    if shape == "rings":  # concentric rings expanding outwards inside a disc of radius 0.45 of the short side
        dist = np.sqrt((yy - height / 2) ** 2 + (xx - width / 2) ** 2)[None]
        period = max(small / 5, 4.0)
        return (dist <= 0.45 * small) & (((dist - 1.5 * t - phase * period) % period) < period / 2)
    raise ValueError(f"unknown shape {shape!r}")


def _class_style(class_id: int) -> tuple[str, np.ndarray]:
    return _SHAPES[class_id % len(_SHAPES)], _COLOURS[class_id % len(_COLOURS)]


def _place_segments(
    rng: np.random.Generator, num_frames: int, lengths: list[int], gap: int, keep: int = 1
) -> list[tuple[int, int]]:
    """Random non-overlapping [start, end) frame ranges of the given lengths, at least `gap` frames apart and from
    the video's ends. When they do not fit, lengths past the first `keep` are dropped from the end of the list,
    then the rest are shortened to fit (a short video still gets its actions)."""
    lengths = list(lengths)
    while len(lengths) > keep and sum(lengths) + (len(lengths) + 1) * gap > num_frames:
        lengths.pop()
    room = num_frames - (len(lengths) + 1) * gap
    while lengths and room < len(lengths):
        lengths.pop()
        room = num_frames - (len(lengths) + 1) * gap
    if not lengths:
        return []
    if sum(lengths) > room:
        lengths = [max(int(length * room / sum(lengths)), 1) for length in lengths]
    slack = num_frames - sum(lengths) - (len(lengths) + 1) * gap
    cuts = np.sort(rng.integers(0, slack + 1, size=len(lengths)))
    extra = np.diff(np.concatenate([[0], cuts]))  # slack before each segment
    ranges, pos = [], gap
    for length, before in zip(lengths, extra):
        start = pos + int(before)
        ranges.append((start, start + length))
        pos = start + length + gap
    return ranges


def _make_video(spec: dict, path: str, height: int, width: int, fps: int) -> None:
    rng = np.random.default_rng(spec["draw_seed"])
    n = spec["num_frames"]
    background = moving_background(rng, n, height, width)
    actions = [a for a in spec["actions"] if a["class_id"] is not None]

    def frames(lo: int, hi: int):
        out = background[lo:hi].copy()
        for action in actions:
            s, e = max(action["start"], lo), min(action["end"], hi)
            if s >= e:
                continue
            shape, colour = _class_style(action["class_id"])
            mask = _shape_mask(shape, np.arange(s - action["start"], e - action["start"]), height, width, fps,
                               action["phase"])  # fmt: skip
            seg = out[s - lo : e - lo]
            seg[mask] = (1 - _ALPHA) * seg[mask] + _ALPHA * colour
        return np.clip(out, 0, 255).astype(np.uint8)

    write_mp4(path, frames, n, height, width, fps)
    check_decodable(path, n)  # `frame` in the annotation must be the decoded count


# ----------------------------------------------------------------------------------------------- THUMOS-14


def _thumos_params(
    num_train_videos, num_test_videos, class_names, num_classes, fps, height, width, min_duration, max_duration,
    actions_per_video, action_duration, num_ambiguous, seed,
) -> dict:  # fmt: skip
    if class_names is None:
        if not 1 <= num_classes <= len(THUMOS14_CLASSES):
            raise ValueError(
                f"num_classes must be in 1..{len(THUMOS14_CLASSES)} without class_names, got {num_classes}"
            )
        class_names = THUMOS14_CLASSES[:num_classes]
    class_names = [str(c) for c in class_names]
    if len(set(class_names)) != len(class_names) or not class_names:
        raise ValueError(f"class_names must be non-empty and unique, got {class_names}")
    if height % 2 or width % 2:
        raise ValueError(f"height and width must be even for yuv420p, got {height}x{width}")
    if not 0 < min_duration <= max_duration:
        raise ValueError(f"need 0 < min_duration <= max_duration, got {min_duration}, {max_duration}")
    lo, hi = actions_per_video
    if not 0 <= lo <= hi:
        raise ValueError(f"actions_per_video must be (lo, hi) with 0 <= lo <= hi, got {actions_per_video}")
    if not 0 < action_duration[0] <= action_duration[1]:
        raise ValueError(f"action_duration must be (lo, hi) with 0 < lo <= hi, got {action_duration}")
    return {
        "corpus": "thumos14",
        "format_version": THUMOS14_FORMAT_VERSION,
        "num_train_videos": int(num_train_videos),
        "num_test_videos": int(num_test_videos),
        "class_names": class_names,
        "fps": int(fps),
        "height": int(height),
        "width": int(width),
        "min_duration": float(min_duration),
        "max_duration": float(max_duration),
        "actions_per_video": [int(lo), int(hi)],
        "action_duration": [float(action_duration[0]), float(action_duration[1])],
        "num_ambiguous": int(num_ambiguous),
        "seed": int(seed),
    }


def _plan_thumos(params: dict) -> list[dict]:
    """Per-video plan (id, subset, frame count, actions in frames), a pure function of the params."""
    fps = params["fps"]
    num_classes = len(params["class_names"])
    videos = []
    for subset_code, (subset, prefix, count) in enumerate(
        [("training", "video_validation", params["num_train_videos"]),
         ("validation", "video_test", params["num_test_videos"])]
    ):  # fmt: skip
        for i in range(count):
            # One seed per video: its content does not depend on the other videos or on thread order.
            seq = np.random.SeedSequence([params["seed"], subset_code, i])
            rng = np.random.default_rng(seq)
            duration = rng.uniform(params["min_duration"], params["max_duration"])
            n = max(int(round(duration * fps)), 2)
            k = int(rng.integers(params["actions_per_video"][0], params["actions_per_video"][1] + 1))
            lengths = [max(int(round(rng.uniform(*params["action_duration"]) * fps)), 1) for _ in range(k)]
            labels = [int(rng.integers(num_classes)) for _ in range(k)]
            videos.append({"video_id": f"{prefix}_{i + 1:07d}", "subset": subset, "num_frames": n,
                           "lengths": lengths, "labels": labels, "rng": rng,
                           "draw_seed": int(seq.generate_state(1)[0])})  # fmt: skip
    # Ambiguous annotations go to the first videos (training first), one each, as an extra unpainted slot.
    for j in range(params["num_ambiguous"]):
        if videos:
            video = videos[j % len(videos)]
            video["lengths"].append(max(int(round(1.5 * fps)), 1))
            video["labels"].append(None)
    for video in videos:
        rng = video.pop("rng")
        ranges = _place_segments(rng, video["num_frames"], video["lengths"], gap=max(int(round(0.5 * fps)), 1),
                                 keep=max(params["actions_per_video"][0], 1))
        video["actions"] = [
            {"start": s, "end": e, "class_id": label, "phase": float(rng.uniform(0, 2 * np.pi))}
            for (s, e), label in zip(ranges, video["labels"])
        ]
        video["actions"].sort(key=lambda a: a["start"])
    return videos


def make_synthetic_thumos14(
    root: str | os.PathLike,
    num_train_videos: int = 24,
    num_test_videos: int = 8,
    class_names: Sequence[str] | None = None,
    num_classes: int = 3,
    fps: int = 15,
    height: int = 64,
    width: int = 96,
    min_duration: float = 16.0,
    max_duration: float = 32.0,
    actions_per_video: tuple[int, int] = (1, 3),
    action_duration: tuple[float, float] = (2.0, 6.0),
    num_ambiguous: int = 0,
    seed: int = 0,
    num_workers: int | None = None,
) -> dict[str, str]:
    """Write a THUMOS-14 corpus in OpenTAD layout under `root` and return its paths.

    Layout: `annotations/thumos_14_anno.json` ({"database": {video_id: {"subset", "duration", "frame",
    "annotations": [{"label", "segment": [start_s, end_s]}]}}}, `frame` = the exact encoded frame count,
    `duration` = frame / fps), `annotations/category_idx.txt`, `raw_data/video/<video_id>.mp4` (H.264, yuv420p) and
    `synthetic_params.json`. Subset "training" holds `video_validation_*` ids, "validation" holds `video_test_*`
    (OpenTAD's naming). `class_names` defaults to the first `num_classes` THUMOS classes. `num_ambiguous` adds that
    many "Ambiguous" annotations (unpainted). Deterministic for a seed. The corpus is built in a temporary
    directory next to `root` and renamed into place when complete; an existing synthetic corpus at `root` is
    replaced, anything else there is refused.
    """
    params = _thumos_params(
        num_train_videos, num_test_videos, class_names, num_classes, fps, height, width,
        min_duration, max_duration, actions_per_video, action_duration, num_ambiguous, seed,
    )  # fmt: skip
    return _thumos_paths(build_corpus(root, params, _write_thumos, num_workers))


def _thumos_paths(root: Path) -> dict[str, str]:
    return {
        "root": str(root),
        "annotation_path": str(root / ANNOTATION_FILE),
        "class_map_path": str(root / CLASS_MAP_FILE),
        "video_dir": str(root / VIDEO_DIR),
        "params_path": str(root / PARAMS_FILE),
    }


def _write_thumos(out: Path, params: dict, num_workers: int | None) -> None:
    (out / "annotations").mkdir(parents=True)
    video_dir = out / VIDEO_DIR
    video_dir.mkdir(parents=True)
    plan = _plan_thumos(params)
    fps, height, width = params["fps"], params["height"], params["width"]
    preflight(out, height, width, fps)
    workers = num_workers or min(4, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:  # numpy and x264 release the GIL
        list(pool.map(lambda v: _make_video(v, str(video_dir / f"{v['video_id']}.mp4"), height, width, fps), plan))
    names = params["class_names"]
    database = {}
    for video in plan:
        database[video["video_id"]] = {
            "subset": video["subset"],
            "duration": video["num_frames"] / fps,
            "frame": video["num_frames"],
            "annotations": [
                {
                    "label": "Ambiguous" if a["class_id"] is None else names[a["class_id"]],
                    "segment": [a["start"] / fps, a["end"] / fps],
                }
                for a in video["actions"]
            ],
        }
    with open(out / ANNOTATION_FILE, "w") as f:
        json.dump({"database": database}, f, indent=1)
    with open(out / CLASS_MAP_FILE, "w") as f:
        f.write("".join(name + "\n" for name in names))
    # Written last: its presence marks a complete corpus.
    with open(out / PARAMS_FILE, "w") as f:
        json.dump(params, f, indent=1, sort_keys=True)


def ensure_synthetic_thumos14(root: str | os.PathLike, **params) -> dict[str, str]:
    """Reuse the synthetic corpus at `root` when its stored parameters match `params`, else (re)generate it."""
    num_workers = params.pop("num_workers", None)
    wanted = _thumos_params(**{**default_kwargs(make_synthetic_thumos14), **params})
    root = Path(root).absolute()
    if read_params(root) == wanted:
        return _thumos_paths(root)
    return make_synthetic_thumos14(root, num_workers=num_workers, **params)


# ----------------------------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m hf_vtrain.data.synthetic_thumos14", description=__doc__)
    p.add_argument("out_dir")
    p.add_argument("--num-train-videos", type=int, default=24)
    p.add_argument("--num-test-videos", type=int, default=8)
    p.add_argument("--num-classes", type=int, default=3)
    p.add_argument("--class-names", nargs="+", default=None)
    p.add_argument("--fps", type=int, default=15)
    p.add_argument("--height", type=int, default=64)
    p.add_argument("--width", type=int, default=96)
    p.add_argument("--min-duration", type=float, default=16.0)
    p.add_argument("--max-duration", type=float, default=32.0)
    p.add_argument("--actions-per-video", type=int, nargs=2, default=(1, 3))
    p.add_argument("--action-duration", type=float, nargs=2, default=(2.0, 6.0))
    p.add_argument("--num-ambiguous", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="regenerate even when matching parameters are stored")
    args = vars(p.parse_args(argv))
    out_dir, force = args.pop("out_dir"), args.pop("force")
    args["actions_per_video"] = tuple(args["actions_per_video"])
    args["action_duration"] = tuple(args["action_duration"])
    paths = (make_synthetic_thumos14 if force else ensure_synthetic_thumos14)(out_dir, **args)
    print(json.dumps(paths, indent=1))
    return paths


if __name__ == "__main__":
    main()
