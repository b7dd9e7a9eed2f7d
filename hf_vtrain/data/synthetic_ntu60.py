"""A tiny NTU RGB+D 60 corpus in the real on-disk format: a PYSKL annotation pickle (2D COCO-17 keypoints with scores,
X-Sub and X-View splits) and one H.264 MP4 per sample named `<frame_dir>.mp4`, `frame_dir` in NTU's
`SsssCcccPpppRrrrAaaa` form. Each video shows a stick figure on a moving background; its motion is the class (wave the
left arm, squat, jump, raise both arms, ...), its joints are the pickle's keypoints. Subjects split as NTU's X-Sub
splits them (the official training subject ids), cameras as X-View (camera 1 is the validation view).

    python -m hf_vtrain.data.synthetic_ntu60 OUT_DIR [--num-classes 4] [--samples-per-class 12]
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np

from .synthetic import PARAMS_FILE, build_corpus, check_decodable, default_kwargs, moving_background, preflight, \
    read_params, write_mp4

# NTU RGB+D's X-Sub training subjects (the other performers are validation subjects).
XSUB_TRAIN_SUBJECTS = (1, 2, 4, 5, 8, 9, 13, 14, 15, 16, 17, 18, 19, 25, 27, 28, 31, 34, 35, 38)
XSUB_VAL_SUBJECTS = (3, 6, 7, 10, 11, 12, 20, 21, 22, 23, 24, 26, 29, 30, 32, 33, 36, 37, 39, 40)
XVIEW_VAL_CAMERA = 1
# The motions, in class order. wave_left_arm and wave_right_arm are mirror images: with both, a horizontal flip turns one
# RGB clip into the other class (the pose stream keeps them apart by joint identity), so they come last.
MOTIONS = ("wave_left_arm", "squat", "jump", "raise_both_arms", "sway", "wave_right_arm")
# COCO-17: nose, eyes, ears, shoulders, elbows, wrists, hips, knees, ankles (left before right)
BONES = ((0, 5), (0, 6), (5, 6), (5, 7), (7, 9), (6, 8), (8, 10), (5, 11), (6, 12), (11, 12), (11, 13), (13, 15),
         (12, 14), (14, 16), (0, 1), (0, 2), (1, 3), (2, 4))
# Standing pose in body units (x right, y down), head at the top; the figure's left is the image's right.
BASE_POSE = np.array([
    [0.0, -1.6], [0.08, -1.68], [-0.08, -1.68], [0.16, -1.62], [-0.16, -1.62],
    [0.35, -1.3], [-0.35, -1.3], [0.45, -0.85], [-0.45, -0.85], [0.5, -0.45], [-0.5, -0.45],
    [0.22, -0.4], [-0.22, -0.4], [0.24, 0.3], [-0.24, 0.3], [0.25, 1.0], [-0.25, 1.0]], np.float32)


def pose_at(motion: str, phase: np.ndarray) -> np.ndarray:
    """(T, 17, 2) body-unit poses of `motion` at phases (radians)."""
    pose = np.repeat(BASE_POSE[None], len(phase), axis=0).copy()
    s = np.sin(phase)
    lift = (s + 1) / 2  # 0..1
    if motion == "wave_left_arm":  # elbow at shoulder height, the hand swinging sideways above it
        pose[:, 7] = np.stack([0.6 + 0 * s, -1.3 + 0 * s], 1)
        pose[:, 9] = np.stack([0.6 + 0.3 * s, -1.8 + 0 * s], 1)
    if motion == "wave_right_arm":
        pose[:, 8] = np.stack([-0.6 + 0 * s, -1.3 + 0 * s], 1)
        pose[:, 10] = np.stack([-0.6 - 0.3 * s, -1.8 + 0 * s], 1)
    if motion == "raise_both_arms":  # both arms from the hips to straight above the head and back
        for elbow, wrist, side in ((7, 9, 1.0), (8, 10, -1.0)):
            pose[:, elbow] = np.stack([side * (0.45 + 0.1 * lift), -0.85 - 0.9 * lift], 1)
            pose[:, wrist] = np.stack([side * (0.5 - 0.2 * lift), -0.45 - 1.6 * lift], 1)
    if motion == "squat":
        drop = 0.5 * lift
        pose[:, :13, 1] += drop[:, None]
        pose[:, 13:15, 0] *= (1 + lift)[:, None]
        pose[:, 13:15, 1] += (drop / 2)[:, None]
    if motion == "jump":
        pose[:, :, 1] -= (0.4 * np.clip(s, 0, None))[:, None]
    if motion == "sway":
        pose[:, :13, 0] += (0.3 * s)[:, None]
    return pose


def draw_figure(canvas: np.ndarray, joints: np.ndarray, colour) -> None:
    """Bones as 2-px lines and a head disc, in place on an (H, W, 3) float frame."""
    height, width = canvas.shape[:2]
    for a, b in BONES:
        steps = int(np.ceil(np.abs(joints[b] - joints[a]).max())) * 2 + 2
        pts = joints[a][None] + np.linspace(0, 1, steps)[:, None] * (joints[b] - joints[a])[None]
        for dx in (0, 1):
            for dy in (0, 1):
                x = np.clip(np.round(pts[:, 0]).astype(int) + dx, 0, width - 1)
                y = np.clip(np.round(pts[:, 1]).astype(int) + dy, 0, height - 1)
                canvas[y, x] = colour


def _sample(index: int, label: int, subject: int, camera: int, params: dict, seed: int) -> dict:
    rng = np.random.default_rng([seed, index])
    fps, height, width = params["fps"], params["height"], params["width"]
    frames = int(rng.integers(params["min_frames"], params["max_frames"] + 1))
    scale = rng.uniform(0.32, 0.4) * height / 2.0  # pixels per body unit
    centre = np.array([rng.uniform(0.35, 0.65) * width, 0.55 * height], np.float32)
    period = rng.uniform(0.7, 1.1) * fps  # frames per motion cycle
    phase = rng.uniform(0, 2 * np.pi) + 2 * np.pi * np.arange(frames) / period
    body = pose_at(MOTIONS[label], phase) + rng.normal(0, 0.01, (frames, 17, 2)).astype(np.float32)
    keypoint = (body * scale + centre).astype(np.float32)
    score = rng.uniform(0.7, 1.0, (frames, 17)).astype(np.float16)
    frame_dir = f"S001C{camera:03d}P{subject:03d}R{1 + index % 2:03d}A{label + 1:03d}"
    return {"frame_dir": frame_dir, "label": label, "total_frames": frames, "img_shape": (height, width),
            "original_shape": (height, width), "keypoint": keypoint[None], "keypoint_score": score[None],
            "seed": [seed, index]}


def _write_video(path: str, sample: dict, params: dict) -> None:
    rng = np.random.default_rng(sample["seed"])
    frames, (height, width) = sample["total_frames"], sample["img_shape"]
    background = moving_background(rng, frames, height, width)
    colour = rng.uniform(200, 250, 3)
    joints = sample["keypoint"][0]

    def frames_fn(lo, hi):
        out = []
        for t in range(lo, hi):
            canvas = background[t].copy()
            draw_figure(canvas, joints[t], colour)
            out.append(np.clip(canvas, 0, 255).astype(np.uint8))
        return out

    write_mp4(path, frames_fn, frames, height, width, params["fps"])
    check_decodable(path, frames)


def _write(out: Path, params: dict, num_workers: int | None) -> None:
    (out / "videos").mkdir(parents=True)
    preflight(out, params["height"], params["width"], params["fps"])
    samples = []
    cameras = (1, 2, 3)
    for label in range(params["num_classes"]):
        for k in range(params["samples_per_class"]):
            pool = XSUB_TRAIN_SUBJECTS if k % 3 else XSUB_VAL_SUBJECTS  # two thirds training subjects
            subject = pool[(k // 3 + label) % len(pool)]
            samples.append(_sample(len(samples), label, subject, cameras[k % 3], params, params["seed"]))
    names = [s["frame_dir"] for s in samples]
    if len(set(names)) != len(names):
        raise ValueError("samples_per_class too large for distinct synthetic frame_dir names (20 subjects per split, "
                         "3 cameras, 2 replications)")
    with ThreadPoolExecutor(max_workers=num_workers or min(4, os.cpu_count() or 1)) as pool_:
        list(pool_.map(lambda s: _write_video(str(out / "videos" / f"{s['frame_dir']}.mp4"), s, params), samples))
    for s in samples:
        s.pop("seed")
    subject_of = {s["frame_dir"]: int(s["frame_dir"][9:12]) for s in samples}
    camera_of = {s["frame_dir"]: int(s["frame_dir"][5:8]) for s in samples}
    split = {
        "xsub_train": [d for d in subject_of if subject_of[d] in XSUB_TRAIN_SUBJECTS],
        "xsub_val": [d for d in subject_of if subject_of[d] not in XSUB_TRAIN_SUBJECTS],
        "xview_train": [d for d in camera_of if camera_of[d] != XVIEW_VAL_CAMERA],
        "xview_val": [d for d in camera_of if camera_of[d] == XVIEW_VAL_CAMERA],
    }
    with open(out / "ntu60_2d.pkl", "wb") as handle:
        pickle.dump({"split": split, "annotations": samples}, handle)
    with open(out / "class_names.txt", "w") as handle:
        handle.write("\n".join(MOTIONS[: params["num_classes"]]) + "\n")
    with open(out / PARAMS_FILE, "w") as handle:
        json.dump(params, handle, indent=1)


def _params(num_classes, samples_per_class, fps, height, width, min_frames, max_frames, seed) -> dict:
    if not 2 <= num_classes <= len(MOTIONS):
        raise ValueError(f"num_classes must be in [2, {len(MOTIONS)}] (the synthetic motions), got {num_classes}")
    if samples_per_class < 3 or not 8 <= min_frames <= max_frames:
        raise ValueError("samples_per_class must be >= 3 and 8 <= min_frames <= max_frames")
    return {"num_classes": num_classes, "samples_per_class": samples_per_class, "fps": fps, "height": height,
            "width": width, "min_frames": min_frames, "max_frames": max_frames, "seed": seed, "version": 1}


def make_synthetic_ntu60(root: str | os.PathLike, num_classes: int = 4, samples_per_class: int = 12, fps: int = 15,
                         height: int = 64, width: int = 96, min_frames: int = 30, max_frames: int = 45,
                         seed: int = 0, num_workers: int | None = None) -> dict[str, str]:
    params = _params(num_classes, samples_per_class, fps, height, width, min_frames, max_frames, seed)
    root = build_corpus(root, params, _write, num_workers)
    return {"annotation_path": str(root / "ntu60_2d.pkl"), "video_dir": str(root / "videos")}


def ensure_synthetic_ntu60(root: str | os.PathLike, **params) -> dict[str, str]:
    """Reuse the synthetic corpus at `root` when its stored parameters match `params`, else (re)generate it."""
    num_workers = params.pop("num_workers", None)
    wanted = _params(**{**default_kwargs(make_synthetic_ntu60), **params})
    root = Path(root).absolute()
    if read_params(root) == wanted:
        return {"annotation_path": str(root / "ntu60_2d.pkl"), "video_dir": str(root / "videos")}
    return make_synthetic_ntu60(root, num_workers=num_workers, **params)


def main(argv: Sequence[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m hf_vtrain.data.synthetic_ntu60", description=__doc__)
    p.add_argument("out_dir")
    p.add_argument("--num-classes", type=int, default=4)
    p.add_argument("--samples-per-class", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    paths = ensure_synthetic_ntu60(args.out_dir, num_classes=args.num_classes,
                                   samples_per_class=args.samples_per_class, seed=args.seed)
    print(json.dumps(paths, indent=1))
    return paths


if __name__ == "__main__":
    main()
