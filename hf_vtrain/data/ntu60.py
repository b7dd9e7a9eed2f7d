"""NTU RGB+D 60 in PYSKL's published format (task `har`): the annotation pickle and one RGB video per sample.

The pickle (read with `restricted_pickle.load_restricted`, never `pickle.load`): {"split": {"xsub_train": [frame_dir],
"xsub_val", "xview_train", "xview_val"}, "annotations": [{"frame_dir", "label" (0-based), "total_frames", "img_shape"
(H, W), "original_shape", "keypoint" (M, T, V, C) float, "keypoint_score" (M, T, V)}]}; 2D: V = 17 COCO joints,
C = 2 pixels; 3D: V = 25, C = 3, no scores, no image shape. Videos are `video_dir/<video_name_pattern>` with
`{frame_dir}` filled in: `{frame_dir}.mp4` (MMAction2) or `{frame_dir}_rgb.mp4` (EPAM-Net's release).

`validate_ntu60` checks everything before training and lists every problem at once, each naming the file and the
sample: the pickle's schema and types, labels outside the class count, keypoints (of joints that were detected,
score > 0) outside `img_shape`, split lists naming unknown `frame_dir`s or a sample in both the training and the
validation list, a 3D pickle where 2D heatmaps are needed, missing or undecodable videos and videos whose frame count
disagrees with `total_frames`.
"""

from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from .common import CorpusArguments, ValidationReport, probe_file
from .restricted_pickle import RefusedPickleError, load_restricted

SPLITS = ("xsub", "xview")
REQUIRED_KEYS = ("frame_dir", "label", "total_frames", "keypoint")


@dataclass
class HARDataArguments(CorpusArguments):
    """Where an NTU-60-format corpus lives and which split is trained and evaluated."""

    annotation_path: str = field(default="ntu60_2d.pkl", metadata={"help": "PYSKL annotation pickle."})
    video_dir: str = field(default="videos", metadata={"help": "Folder of the RGB videos."})
    video_name_pattern: str = field(
        default="{frame_dir}.mp4",
        metadata={"help": "A sample's video file name: {frame_dir}.mp4 (MMAction2), {frame_dir}_rgb.mp4 (EPAM-Net)."},
    )
    split: str = field(default="xsub", metadata={"help": "xsub (cross-subject) or xview (cross-view)."})
    num_classes: int = field(default=60, metadata={"help": "Classes (labels are 0 .. num_classes - 1)."})
    needs_heatmaps: bool = field(
        default=True, metadata={"help": "The model reads 2D pose heatmaps (RGBPoseConv3D, EPAM-Net): 2D keypoints "
                                        "with scores and img_shape are required."},
    )
    check_videos: bool = field(default=True, metadata={"help": "Validate the RGB videos too (false: pose only)."})
    frame_count_tolerance: int = field(
        default=0, metadata={"help": "Frames a video may differ from its sample's total_frames."}
    )
    validate_decode_last_frame: bool = field(
        default=True, metadata={"help": "Validation decodes each video's last frame besides opening it."}
    )
    validate_workers: int = field(default=8, metadata={"help": "Threads probing videos during validation."})
    synthetic_num_classes: int = field(default=4, metadata={"help": "Synthetic: classes (motions)."})
    synthetic_samples_per_class: int = field(default=12, metadata={"help": "Synthetic: samples per class."})
    synthetic_seed: int = field(default=0, metadata={"help": "Synthetic: generator seed."})

    def __post_init__(self):
        super().__post_init__()
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {self.split!r}")
        if "{frame_dir}" not in self.video_name_pattern:
            raise ValueError(f"video_name_pattern must contain {{frame_dir}}, got {self.video_name_pattern!r}")
        if self.num_classes < 2 or self.frame_count_tolerance < 0:
            raise ValueError("num_classes must be >= 2 and frame_count_tolerance >= 0")

    def video_path(self, frame_dir: str) -> str:
        return os.path.join(self.resolve(self.video_dir), self.video_name_pattern.format(frame_dir=frame_dir))


@dataclass
class HARValidationReport(ValidationReport):
    annotation_path: str = ""
    split: str = ""
    num_samples: dict[str, int] = field(default_factory=dict)  # train / val samples of the split
    keypoint_layout: str = ""

    def summary_lines(self) -> list[str]:
        counts = ", ".join(f"{k}: {v} samples" for k, v in self.num_samples.items()) or "nothing read"
        return [f"NTU-60 corpus check of {self.annotation_path} ({self.split}; {self.keypoint_layout or '?'}): "
                f"{counts}"]


def _sample_problems(where: str, ann: Any, args: HARDataArguments) -> tuple[list[str], Optional[str]]:
    """Problems of one annotation entry and its keypoint layout ("2D" / "3D")."""
    if not isinstance(ann, dict):
        return [f"{where}: an annotation must be a dict, got {type(ann).__name__}"], None
    missing = [k for k in REQUIRED_KEYS if k not in ann]
    if missing:
        return [f"{where}: lacks {missing}"], None
    out = []
    label, frames = ann["label"], ann["total_frames"]
    if not isinstance(label, (int, np.integer)) or isinstance(label, bool) or not 0 <= int(label) < args.num_classes:
        out.append(f"{where}: label {label!r} is not a class index in [0, {args.num_classes})")
    if not isinstance(frames, (int, np.integer)) or int(frames) < 1:
        out.append(f"{where}: total_frames {frames!r} is not a positive integer")
    kp = ann["keypoint"]
    if not isinstance(kp, np.ndarray) or kp.ndim != 4 or kp.shape[-1] not in (2, 3):
        out.append(f"{where}: keypoint must be a (people, frames, joints, 2 or 3) array, got "
                   f"{getattr(kp, 'shape', type(kp).__name__)}")
        return out, None
    layout = "2D" if kp.shape[-1] == 2 else "3D"
    if isinstance(frames, (int, np.integer)) and kp.shape[1] != int(frames):
        out.append(f"{where}: keypoint holds {kp.shape[1]} frames, total_frames says {frames}")
    if not np.isfinite(kp).all():
        out.append(f"{where}: keypoint holds NaN or inf")
    if layout == "3D":
        if args.needs_heatmaps:
            out.append(f"{where}: 3D keypoints (V={kp.shape[2]}, x y z) carry no scores and no image shape, so they "
                       f"cannot be drawn as 2D pose heatmaps, which this model reads; use PYSKL's 2D pickle "
                       f"(ntu60_hrnet.pkl, 17 COCO joints)")
        return out, layout
    score = ann.get("keypoint_score")
    shape = ann.get("img_shape")
    if args.needs_heatmaps and score is None:
        out.append(f"{where}: 2D keypoints without keypoint_score")
    elif score is not None and (not isinstance(score, np.ndarray) or score.shape != kp.shape[:3]):
        out.append(f"{where}: keypoint_score must be {kp.shape[:3]}, got {getattr(score, 'shape', type(score).__name__)}")
        score = None
    if not (isinstance(shape, (tuple, list)) and len(shape) == 2 and all(isinstance(v, (int, np.integer)) and v > 0
                                                                          for v in shape)):
        out.append(f"{where}: img_shape must be (height, width), got {shape!r}")
    elif np.isfinite(kp).all():
        height, width = int(shape[0]), int(shape[1])
        seen = score > 0 if isinstance(score, np.ndarray) else np.ones(kp.shape[:3], bool)  # undetected: (0, 0)
        x, y = kp[..., 0][seen], kp[..., 1][seen]
        outside = (x < 0) | (x > width) | (y < 0) | (y > height)
        if outside.any():
            worst = np.flatnonzero(outside)[0]
            out.append(f"{where}: {int(outside.sum())} detected keypoints lie outside img_shape {height}x{width}, "
                       f"e.g. ({float(x[worst]):.1f}, {float(y[worst]):.1f})")
    return out, layout


def validate_ntu60(args: HARDataArguments) -> HARValidationReport:
    path = args.resolve(args.annotation_path)
    report = HARValidationReport(annotation_path=path, split=args.split)
    if not os.path.isfile(path):
        report.problems.append(f"{path}: annotation pickle not found")
        return report
    try:
        data = load_restricted(path)
    except (RefusedPickleError, ValueError) as err:
        report.problems.append(str(err))
        return report
    if not isinstance(data, dict) or not isinstance(data.get("split"), dict) or \
            not isinstance(data.get("annotations"), list):
        report.problems.append(f"{path}: expected {{'split': {{name: [frame_dir]}}, 'annotations': [...]}}, got "
                               f"{type(data).__name__} with keys {sorted(data) if isinstance(data, dict) else '-'}")
        return report
    by_name: dict[str, dict] = {}
    layouts = Counter()
    for i, ann in enumerate(data["annotations"]):
        name = ann.get("frame_dir") if isinstance(ann, dict) else None
        where = f"{path}: annotation {i} ({name})" if name else f"{path}: annotation {i}"
        problems, layout = _sample_problems(where, ann, args)
        report.problems += problems
        layouts[layout] += layout is not None
        if isinstance(name, str):
            if name in by_name:
                report.problems.append(f"{where}: frame_dir {name!r} appears twice")
            by_name[name] = ann
    report.keypoint_layout = ", ".join(f"{k} keypoints: {n}" for k, n in layouts.items() if k)
    lists = {}
    for part in ("train", "val"):
        key = f"{args.split}_{part}"
        names = data["split"].get(key)
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            report.problems.append(f"{path}: split {key!r} is missing or not a list of frame_dir names (the pickle "
                                   f"has {sorted(data['split'])})")
            names = []
        unknown = [n for n in names if n not in by_name]
        if unknown:
            report.problems.append(f"{path}: split {key} names {len(unknown)} frame_dir(s) with no annotation, e.g. "
                                   f"{unknown[:3]}")
        repeated = [n for n, c in Counter(names).items() if c > 1]
        if repeated:
            report.problems.append(f"{path}: split {key} lists {len(repeated)} frame_dir(s) twice, e.g. {repeated[:3]}")
        lists[part] = [n for n in dict.fromkeys(names) if n in by_name]
        report.num_samples[part] = len(lists[part])
    both = sorted(set(lists["train"]) & set(lists["val"]))
    if both:
        report.problems.append(f"{path}: {len(both)} sample(s) are in both {args.split}_train and {args.split}_val, "
                               f"e.g. {both[:3]}: the validation score would include training samples")
    if args.check_videos:
        wanted = lists["train"] + lists["val"]
        with ThreadPoolExecutor(max_workers=max(1, args.validate_workers)) as pool:
            probes = list(pool.map(lambda n: probe_file(args.video_path(n), args.validate_decode_last_frame, 1),
                                   wanted))
        for name, probe in zip(wanted, probes):
            video = args.video_path(name)
            if "error" in probe:
                report.problems.append(f"{video} (sample {name}): {probe['error']}")
                continue
            expected = by_name[name].get("total_frames")
            if isinstance(expected, (int, np.integer)) and abs(probe["num_frames"] - int(expected)) > \
                    args.frame_count_tolerance:
                report.problems.append(f"{video} (sample {name}): {probe['num_frames']} frames, the annotation's "
                                       f"total_frames is {expected} (frame_count_tolerance {args.frame_count_tolerance})")
    return report
