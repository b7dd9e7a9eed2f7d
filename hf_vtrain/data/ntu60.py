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

import torch

from .common import CorpusArguments, EpochSeeded, RowTransform, ValidationReport, probe_file
from .restricted_pickle import RefusedPickleError, load_restricted

SPLITS = ("xsub", "xview")
REQUIRED_KEYS = ("frame_dir", "label", "total_frames", "keypoint")


@dataclass
class HARDataArguments(CorpusArguments):
    """Where an NTU-60-format corpus lives and which split is trained and evaluated."""

    SYNTHETIC_WRITER = ".synthetic_ntu60:ensure_synthetic_ntu60"

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
    class_names_path: Optional[str] = field(
        default=None, metadata={"help": "Class names, one per line (default: NTU's action ids A001 ...)."}
    )
    rgb_frames: int = field(default=16, metadata={"help": "RGB frames per clip (EPAM 16, RGBPoseConv3D 8)."})
    pose_frames: int = field(default=48, metadata={"help": "Pose frames per clip (EPAM 48, RGBPoseConv3D 32)."})
    rgb_size: int = field(default=224, metadata={"help": "RGB frames become rgb_size x rgb_size."})
    pose_size: int = field(default=56, metadata={"help": "Heatmaps are pose_size x pose_size (rgb_size / 4)."})
    eval_rgb_size: Optional[int] = field(
        default=None, metadata={"help": "Evaluation and predict: RGB size (default rgb_size; MMAction2's "
                                        "RGBPoseConv3D tests at 256 after training at 224)."},
    )
    eval_pose_size: Optional[int] = field(
        default=None, metadata={"help": "Evaluation and predict: heatmap size (default pose_size; RGBPoseConv3D 64)."},
    )
    heatmap_sigma: float = field(default=0.6, metadata={"help": "Heatmap Gaussian sigma (EPAM 0.6, RGBPoseConv3D 0.7)."})
    flip_prob: float = field(default=0.5, metadata={"help": "Training: horizontal flip (joints swapped)."})
    num_test_clips: int = field(default=1, metadata={"help": "Clips per test sample (EPAM 1, RGBPoseConv3D 10)."})
    test_clip_fusion: str = field(
        default="mean_logits",
        metadata={"help": "How the clips of a test sample combine: mean_logits (EPAM: one clip of summed logits) or "
                          "mean_softmax (RGBPoseConv3D: softmax probabilities averaged over the clips)."},
    )
    decode_threads: int = field(default=1, metadata={"help": "decord threads per reader."})
    max_train_samples: Optional[int] = field(default=None, metadata={"help": "Debug: first n training samples."})
    max_eval_samples: Optional[int] = field(default=None, metadata={"help": "Debug: first n validation samples."})
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
        if self.test_clip_fusion not in ("mean_logits", "mean_softmax"):
            raise ValueError(f"test_clip_fusion must be mean_logits or mean_softmax, got {self.test_clip_fusion!r}")
        if (self.eval_rgb_size is None) != (self.eval_pose_size is None):
            raise ValueError("eval_rgb_size and eval_pose_size go together (both, or neither: the training sizes)")
        if self.pose_frames % self.rgb_frames or self.num_test_clips < 1:
            raise ValueError(f"pose_frames ({self.pose_frames}) must be a multiple of rgb_frames ({self.rgb_frames}) "
                             f"and num_test_clips >= 1")

    @property
    def eval_sizes(self) -> tuple[int, int]:
        """(RGB, heatmap) sizes of evaluation and predict."""
        if self.eval_rgb_size is None:
            return self.rgb_size, self.pose_size
        return self.eval_rgb_size, self.eval_pose_size

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


def _check_ntu60(args: HARDataArguments) -> tuple[HARValidationReport, Any]:
    """The report and the pickle's contents (None when it could not be read), read once for check and load."""
    path = args.resolve(args.annotation_path)
    report = HARValidationReport(annotation_path=path, split=args.split)
    if not os.path.isfile(path):
        report.problems.append(f"{path}: annotation pickle not found")
        return report, None
    try:
        data = load_restricted(path)
    except (RefusedPickleError, ValueError) as err:
        report.problems.append(str(err))
        return report, None
    if not isinstance(data, dict) or not isinstance(data.get("split"), dict) or \
            not isinstance(data.get("annotations"), list):
        report.problems.append(f"{path}: expected {{'split': {{name: [frame_dir]}}, 'annotations': [...]}}, got "
                               f"{type(data).__name__} with keys {sorted(data) if isinstance(data, dict) else '-'}")
        return report, None
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
    joint_shapes = Counter(tuple(ann["keypoint"].shape[2:]) for ann in by_name.values()
                           if isinstance(ann.get("keypoint"), np.ndarray) and ann["keypoint"].ndim == 4)
    if len(joint_shapes) > 1:  # one (joints, channels) per corpus: the typed columns are fixed-size
        common = joint_shapes.most_common(1)[0][0]
        odd = next(n for n, a in by_name.items() if isinstance(a.get("keypoint"), np.ndarray) and
                   a["keypoint"].ndim == 4 and tuple(a["keypoint"].shape[2:]) != common)
        report.problems.append(f"{path}: samples hold keypoints of different layouts "
                               f"{dict((f'{v} joints x {c}', k) for (v, c), k in joint_shapes.items())}, e.g. "
                               f"{odd!r} has {tuple(by_name[odd]['keypoint'].shape[2:])} where most have {common}: "
                               f"one corpus holds one layout")
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
    return report, data



def validate_ntu60(args: HARDataArguments) -> HARValidationReport:
    args.ensure_synthetic()
    return _check_ntu60(args)[0]

# ----------------------------------------------------------------------------------------------- sampling


def uniform_sample_indices(total: int, num: int, generator=None, clip_index: int = 0) -> np.ndarray:
    """MMAction2's UniformSampleFrames: `num` frames of `total`. Training (a generator): one random frame in each of
    `num` equal segments (a video shorter than `num` frames: a run from a random start, wrapped around; up to twice
    `num`: each frame once, with random skips). Testing (no generator): the same rules with draws from a
    generator seeded by `clip_index` (clip k of a multi-clip test is always the same frames)."""
    if generator is None:
        generator = torch.Generator().manual_seed(255 + clip_index)

    def randint(high: int, size: int = 1) -> np.ndarray:
        return torch.randint(0, int(high), (size,), generator=generator).numpy()

    if total < num:
        start = int(randint(total)[0])
        return (np.arange(start, start + num) % total).astype(np.int64)
    if total < 2 * num:
        skips = np.zeros(num + 1, np.int64)
        chosen = torch.randperm(num + 1, generator=generator)[: total - num].numpy()
        skips[chosen] = 1
        return np.arange(num) + np.cumsum(skips)[:-1]
    edges = np.array([i * total // num for i in range(num + 1)], np.int64)
    sizes = np.diff(edges)
    offsets = np.array([int(randint(s)[0]) for s in sizes], np.int64)
    return edges[:num] + offsets


# ----------------------------------------------------------------------------------------------- transforms

COCO_LEFT = (1, 3, 5, 7, 9, 11, 13, 15)
COCO_RIGHT = (2, 4, 6, 8, 10, 12, 14, 16)


def compact_box(keypoints: np.ndarray, scores: np.ndarray, height: int, width: int, padding: float = 0.25,
                threshold: float = 10) -> tuple[int, int, int, int]:
    """MMAction2's PoseCompact (hw_ratio 1, padding allowed outside the image): the box around every detected joint
    of the clip, grown by `padding` and made square; the whole frame when the joints span less than `threshold`
    pixels. (x0, y0, x1, y1) in source pixels, possibly beyond the frame."""
    seen = (scores > 0) & (keypoints[..., 0] != 0) & (keypoints[..., 1] != 0)
    if not seen.any():
        return 0, 0, width, height
    x, y = keypoints[..., 0][seen], keypoints[..., 1][seen]
    min_x, max_x, min_y, max_y = float(x.min()), float(x.max()), float(y.min()), float(y.max())
    if max_x - min_x < threshold or max_y - min_y < threshold:
        return 0, 0, width, height
    cx, cy = (max_x + min_x) / 2, (max_y + min_y) / 2
    half_w = (max_x - min_x) / 2 * (1 + padding)
    half_h = (max_y - min_y) / 2 * (1 + padding)
    half_w = half_h = max(half_w, half_h)
    return int(cx - half_w), int(cy - half_h), int(cx + half_w), int(cy + half_h)


def decode_plan(box, height: int, width: int, size: int, max_halvings: int = 3):
    """How to decode a height x width video whose frames are cropped to `box` (x0, y0, x1, y1) and resized to
    `size`: halve the frame while the box still spans at least `size` pixels both ways (at most `max_halvings`
    times), so the crop is never upsampled more than at full size. Returns (decode size or None, the box in decoded
    pixels, the same box in source pixels): the box snapped to the decoded pixel grid, which moves its edges by
    less than one decoded pixel; the keypoints follow the snapped box, so pixels and heatmaps stay aligned."""
    halvings = 0
    while (halvings < max_halvings and (box[2] - box[0]) / 2 ** (halvings + 1) >= size
           and (box[3] - box[1]) / 2 ** (halvings + 1) >= size):
        halvings += 1
    if halvings == 0:
        return None, box, box
    decoded = (max(1, round(height / 2**halvings)), max(1, round(width / 2**halvings)))
    fy, fx = decoded[0] / height, decoded[1] / width
    frame_box = tuple(int(round(v * f)) for v, f in zip(box, (fx, fy, fx, fy)))
    source_box = tuple(v / f for v, f in zip(frame_box, (fx, fy, fx, fy)))
    return decoded, frame_box, source_box


def crop_resize_frames(frames: np.ndarray, box, size: int, flip: bool) -> torch.Tensor:
    """uint8 (T, 3, size, size) of `box` (x0, y0, x1, y1) of (T, H, W, 3) frames, zero-padded where the box leaves
    the frame, flipped horizontally on request."""
    from .video_io import _run

    clip = torch.from_numpy(np.ascontiguousarray(frames))
    height, width = clip.shape[1:3]
    x0, y0, x1, y1 = box
    pad = (max(0, -x0), max(0, x1 - width), max(0, -y0), max(0, y1 - height))
    if any(pad):
        clip = torch.nn.functional.pad(clip.permute(0, 3, 1, 2), pad).permute(0, 2, 3, 1)
        x0, x1, y0, y1 = x0 + pad[0], x1 + pad[0], y0 + pad[2], y1 + pad[2]
    return _run(clip, (x0, y0, x1, y1), (size, size), flip=flip)


class HARSampleTransform(RowTransform, EpochSeeded):
    """One sample of each stream at the same temporal positions: `pose_frames` sampled uniformly (one clip for
    training, `num_clips` fixed clips for testing), every `pose_frames / rgb_frames`-th of them for RGB; the clip's
    compact box (PoseCompact); training: a random resized crop of it (area 0.56-1) and a horizontal flip (left/right
    joints swapped); the RGB frames cropped and resized to `rgb_size`, the keypoints moved with them and drawn as
    heatmaps at `pose_size` (`sigma`, MMAction2's rules). Keys: pixel_values (K, T, 3, S, S) uint8, heatmaps (K, V,
    Tp, s, s) float32, labels, sample_index; K = 1 for training."""

    def __init__(self, samples: list[dict], paths: list[str], rgb_frames: int, pose_frames: int, rgb_size: int,
                 pose_size: int, sigma: float, train: bool, num_clips: int = 1, flip_prob: float = 0.5,
                 crop_area: tuple = (0.56, 1.0), seed: int = 0, with_rgb: bool = True, decode_threads: int = 1):
        from .video_io import ReaderCache

        if pose_frames % rgb_frames:
            raise ValueError(f"pose_frames ({pose_frames}) must be a multiple of rgb_frames ({rgb_frames})")
        self.samples, self.paths = samples, paths
        self.rgb_frames, self.pose_frames = rgb_frames, pose_frames
        self.rgb_size, self.pose_size, self.sigma = rgb_size, pose_size, sigma
        self.train, self.num_clips, self.flip_prob, self.crop_area = train, num_clips, flip_prob, crop_area
        self.seed, self.with_rgb = seed, with_rgb
        self._readers = ReaderCache(decode_threads, read_ahead=False)  # one window per sample: no decoding past it
        EpochSeeded.__init__(self)

    def _clip(self, index: int, clip_index: int, generator) -> dict:
        from .pose_heatmaps import keypoint_heatmaps
        from .video_io import _draw_flip, _draw_resized_crop_box

        ann = self.samples[index]
        kp_all, sc_all = np.asarray(ann["keypoint"], np.float32), np.asarray(ann["keypoint_score"], np.float32)
        height, width = int(ann["img_shape"][0]), int(ann["img_shape"][1])
        pose_idx = uniform_sample_indices(int(ann["total_frames"]), self.pose_frames,
                                          generator if self.train else None, clip_index)
        kp, sc = kp_all[:, pose_idx].copy(), sc_all[:, pose_idx].copy()
        box = compact_box(kp, sc, height, width)
        flip = False
        if self.train:
            bw, bh = box[2] - box[0], box[3] - box[1]
            sx0, sy0, sx1, sy1 = _draw_resized_crop_box(bh, bw, self.crop_area, (3 / 4, 4 / 3), generator)
            box = (box[0] + sx0, box[1] + sy0, box[0] + sx1, box[1] + sy1)
            flip = _draw_flip(self.flip_prob, generator)
        decode_size, frame_box, box = decode_plan(box, height, width, self.rgb_size) if self.with_rgb else \
            (None, box, box)
        scale_x = self.rgb_size / (box[2] - box[0])
        scale_y = self.rgb_size / (box[3] - box[1])
        kp[..., 0] = (kp[..., 0] - box[0]) * scale_x
        kp[..., 1] = (kp[..., 1] - box[1]) * scale_y
        if flip:  # mmaction's Flip of keypoints: x -> width - x, left and right joints swapped
            kp[..., 0] = self.rgb_size - kp[..., 0]
            order = np.arange(kp.shape[2])
            order[list(COCO_LEFT)], order[list(COCO_RIGHT)] = COCO_RIGHT, COCO_LEFT
            kp, sc = kp[:, :, order], sc[:, :, order]
        heatmaps = keypoint_heatmaps(kp * (self.pose_size / self.rgb_size), sc, self.pose_size, self.pose_size,
                                     self.sigma).permute(1, 0, 2, 3)  # (V, Tp, s, s)
        out = {"heatmaps": heatmaps}
        if self.with_rgb:
            rgb_idx = pose_idx[:: self.pose_frames // self.rgb_frames]
            frames = self._readers.get(self.paths[index], decode_size).get_frames(rgb_idx)
            out["pixel_values"] = crop_resize_frames(frames, frame_box, self.rgb_size, flip)
        return out

    def transform_row(self, row: dict) -> dict:
        from .video_io import clip_generator

        index = int(row["index"])
        generator = clip_generator(self.seed, self.epoch, index) if self.train else None
        clips = [self._clip(index, k, generator) for k in range(1 if self.train else self.num_clips)]
        out = {key: torch.stack([c[key] for c in clips]) for key in clips[0]}
        out["labels"] = torch.tensor(int(self.samples[index]["label"]), dtype=torch.long)
        out["sample_index"] = torch.tensor(index, dtype=torch.long)
        return out


def collate_har(samples: list[dict]) -> dict:
    """Stacks samples: pixel_values (B, K, T, 3, S, S), heatmaps (B, K, V, Tp, s, s), labels (B,), sample_index."""
    return {key: torch.stack([s[key] for s in samples]) for key in samples[0]}


# ----------------------------------------------------------------------------------------------- the typed corpus


def corpus_features(class_names: list[str], joints: int, channels: int, with_scores: bool):
    """The typed columns of `load_corpus`: one row per sample. Keypoints keep PYSKL's (persons, frames, joints,
    channels) nesting as lists (persons and frames vary per sample; joints and channels are fixed per corpus)."""
    import datasets

    value = datasets.Value("float32")
    features = {
        "frame_dir": datasets.Value("string"),
        "path": datasets.Value("string"),  # the sample's RGB video (video_dir / video_name_pattern)
        "label": datasets.ClassLabel(names=list(class_names)),
        "total_frames": datasets.Value("int64"),
        "img_shape": datasets.List(datasets.Value("int64"), length=2),  # (height, width); None in 3D pickles
        "original_shape": datasets.List(datasets.Value("int64"), length=2),
        "keypoint": datasets.List(datasets.List(datasets.List(datasets.List(value, length=channels), length=joints))),
    }
    if with_scores:
        features["keypoint_score"] = datasets.List(datasets.List(datasets.List(value, length=joints)))
    return datasets.Features(features)


def _nested_column(arrays: list[np.ndarray], pa_type):
    """An Arrow column of (persons, frames, *fixed) float arrays, built from one flat buffer (pyarrow's list
    conversion of nested Python lists takes minutes at NTU's 56k samples; this takes seconds)."""
    import pyarrow as pa

    fixed = arrays[0].shape[2:] if arrays else ()
    flat = np.concatenate([np.asarray(a, np.float32).reshape(-1) for a in arrays]) if arrays else \
        np.zeros(0, np.float32)
    column = pa.array(flat, pa.float32())
    for size in reversed(fixed):
        column = pa.FixedSizeListArray.from_arrays(column, size)
    frames = np.cumsum([0] + [a.shape[1] for a in arrays for _ in range(a.shape[0])], dtype=np.int32)
    column = pa.ListArray.from_arrays(pa.array(frames), column)
    persons = np.cumsum([0] + [a.shape[0] for a in arrays], dtype=np.int32)
    return pa.ListArray.from_arrays(pa.array(persons), column).cast(pa_type)


def _shape_or_none(shape) -> Optional[list[int]]:
    return [int(v) for v in shape] if isinstance(shape, (tuple, list)) and len(shape) == 2 else None


def _corpus_split(annotations: list[dict], args: HARDataArguments, features):
    import datasets
    import pyarrow as pa

    schema = features.arrow_schema
    columns = {
        "frame_dir": [a["frame_dir"] for a in annotations],
        "path": [args.video_path(a["frame_dir"]) for a in annotations],
        "label": [int(a["label"]) for a in annotations],
        "total_frames": [int(a["total_frames"]) for a in annotations],
        "img_shape": [_shape_or_none(a.get("img_shape")) for a in annotations],
        "original_shape": [_shape_or_none(a.get("original_shape")) for a in annotations],
    }
    arrays = [pa.array(values, schema.field(name).type) for name, values in columns.items()]
    arrays.append(_nested_column([a["keypoint"] for a in annotations], schema.field("keypoint").type))
    if "keypoint_score" in features:
        arrays.append(_nested_column([a["keypoint_score"] for a in annotations],
                                     schema.field("keypoint_score").type))
    return datasets.Dataset(pa.Table.from_arrays(arrays, schema=schema), info=datasets.DatasetInfo(features=features))


def _validated_corpus(args: HARDataArguments):
    """(DatasetDict with "train" and "val": the samples of `split`'s two lists, capped by max_*_samples; the
    report). Generates the synthetic corpus first when asked; every corpus problem is one CorpusError."""
    import datasets

    from .common import CorpusError

    args.ensure_synthetic()
    report, data = _check_ntu60(args)  # the pickle (hundreds of MB for NTU) read once
    if not report.ok:
        raise CorpusError(report)
    by_name = {ann["frame_dir"]: ann for ann in data["annotations"]}
    splits = {}
    for part, cap in (("train", args.max_train_samples), ("val", args.max_eval_samples)):
        names = list(dict.fromkeys(data["split"][f"{args.split}_{part}"]))[:cap]
        splits[part] = [by_name[n] for n in names]
    chosen = splits["train"] + splits["val"]
    joints, channels = chosen[0]["keypoint"].shape[2:] if chosen else (17, 2)
    features = corpus_features(class_names_for(args), int(joints), int(channels),
                               with_scores=bool(chosen) and all(a.get("keypoint_score") is not None for a in chosen))
    return datasets.DatasetDict({part: _corpus_split(anns, args, features) for part, anns in splits.items()}), report


def load_corpus(source, **overrides):
    """NTU RGB+D 60 in PYSKL's format as a typed `datasets.DatasetDict` ("train", "val": the recipe's split, one row
    per sample with its keypoints (persons, frames, joints, channels), scores, image shape and video path; classes
    as ClassLabel), validated as a run validates it; the one the har task reads its samples from. `source`: a recipe
    file, a mapping of data keys, or HARDataArguments; `overrides` on top."""
    from .common import data_arguments_from

    return _validated_corpus(data_arguments_from(HARDataArguments, source, **overrides))[0]


class CorpusSamples:
    """A `load_corpus` split read back as PYSKL annotations (dicts of frame_dir, label, total_frames, img_shape,
    keypoint (M, T, V, C) float32, keypoint_score (M, T, V) float32): the small columns as Python values once, the
    keypoints from the Arrow buffers on each access (no copy; ~15 us a sample). What the sample transform reads."""

    def __init__(self, dataset):
        if getattr(dataset, "_indices", None) is not None:  # a select()/shuffle() view: the rows in its order
            dataset = dataset.flatten_indices()
        table = dataset.data.table
        self.frame_dirs = table.column("frame_dir").to_pylist()
        self.labels = table.column("label").to_pylist()
        self._total_frames = table.column("total_frames").to_pylist()
        self._img_shapes = [tuple(s) if s else None for s in table.column("img_shape").to_pylist()]
        names = set(table.column_names)
        self._arrays, self._fixed = {}, {}
        for name in ("keypoint", "keypoint_score"):
            if name in names:
                self._arrays[name] = column = table.column(name).combine_chunks()
                fixed, shape = column.type.value_type.value_type, []  # persons -> frames -> fixed-size lists
                while hasattr(fixed, "list_size"):
                    shape.append(fixed.list_size)
                    fixed = fixed.value_type
                self._fixed[name] = tuple(shape)

    def __len__(self) -> int:
        return len(self.frame_dirs)

    def _array(self, name: str, index: int) -> np.ndarray:
        cell = self._arrays[name][index]
        values = cell.values.flatten()
        while hasattr(values, "flatten"):
            values = values.flatten()
        return values.to_numpy(zero_copy_only=False).reshape(len(cell), self._total_frames[index], *self._fixed[name])

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        index = range(len(self))[index]
        ann = {"frame_dir": self.frame_dirs[index], "label": self.labels[index],
               "total_frames": self._total_frames[index], "img_shape": self._img_shapes[index]}
        for name in self._arrays:
            ann[name] = self._array(name, index)
        return ann

    def __iter__(self):
        return (self[i] for i in range(len(self)))


@dataclass
class HARCorpus:
    train_dataset: Any
    eval_dataset: Any
    class_names: list[str]
    train_samples: CorpusSamples  # the training split's annotations, in dataset order
    eval_samples: CorpusSamples
    report: HARValidationReport
    train_transform: HARSampleTransform
    eval_transform: HARSampleTransform
    corpus: Any  # load_corpus's DatasetDict the samples are read from

    def set_epoch(self, epoch: int) -> None:
        self.train_transform.set_epoch(epoch)


def class_names_for(args: "HARDataArguments") -> list[str]:
    path = args.resolve(args.class_names_path) if args.class_names_path else None
    if path:
        with open(path, encoding="utf-8") as handle:
            names = [line.strip() for line in handle if line.strip()]
        if len(names) != args.num_classes:
            raise ValueError(f"{path}: {len(names)} class names for num_classes {args.num_classes}")
        return names
    return [f"A{i + 1:03d}" for i in range(args.num_classes)]  # NTU's action ids


def load_ntu60(args: "HARDataArguments", seed: int = 0, with_rgb: bool = True) -> HARCorpus:
    """Validates the corpus (CorpusError listing every problem) and builds the two datasets (one row per sample)
    with their transforms, which read the samples from `load_corpus`'s columns; `with_rgb` False (a pose-only
    model) decodes no video and does not check the videos."""
    import dataclasses

    import datasets

    if not with_rgb:
        args = dataclasses.replace(args, check_videos=False)
    corpus, report = _validated_corpus(args)
    splits = {part: CorpusSamples(corpus[part]) for part in ("train", "val")}
    common = dict(rgb_frames=args.rgb_frames, pose_frames=args.pose_frames, sigma=args.heatmap_sigma,
                  with_rgb=with_rgb, decode_threads=args.decode_threads)
    eval_rgb, eval_pose = args.eval_sizes
    transforms = {
        "train": HARSampleTransform(splits["train"], corpus["train"]["path"], rgb_size=args.rgb_size,
                                    pose_size=args.pose_size, train=True, flip_prob=args.flip_prob, seed=seed,
                                    **common),
        "val": HARSampleTransform(splits["val"], corpus["val"]["path"], rgb_size=eval_rgb, pose_size=eval_pose,
                                  train=False, num_clips=args.num_test_clips, **common),
    }
    tables = {}
    for part, samples in splits.items():
        tables[part] = datasets.Dataset.from_dict(
            {"index": list(range(len(samples))), "frame_dir": samples.frame_dirs, "label": samples.labels})
        tables[part].set_transform(transforms[part])
    return HARCorpus(train_dataset=tables["train"], eval_dataset=tables["val"], class_names=class_names_for(args),
                     train_samples=splits["train"], eval_samples=splits["val"], report=report,
                     train_transform=transforms["train"], eval_transform=transforms["val"], corpus=corpus)
