"""THUMOS-14 temporal action detection corpus in OpenTAD's layout: validation, window datasets and the batch collator.

Time convention (OpenTAD's): fps = annotation `frame` / `duration`; sampled frame k of a video is raw frame
k * sample_stride, at k * sample_stride / fps seconds. Segment labels are continuous, in sampled frames counted from
the window's first frame (0..window_size).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np
import torch

from .common import (
    CorpusArguments,
    CorpusError,
    EpochSeeded,
    RowTransform,
    ValidationReport,
    is_finite_number,
    probe_file,
    write_json_atomic,
)
from .video_io import ReaderCache, clip_generator, sample_indices


# ----------------------------------------------------------------------------------------------- arguments


@dataclass
class TADDataArguments(CorpusArguments):
    """Where a temporal action detection corpus lives and how windows are read from it."""

    SYNTHETIC_WRITER = ".synthetic_thumos14:ensure_synthetic_thumos14"

    annotation_path: str = field(
        default="annotations/thumos_14_anno.json", metadata={"help": "OpenTAD annotation JSON ({'database': ...})."}
    )
    class_map_path: str = field(
        default="annotations/category_idx.txt", metadata={"help": "Class names, one per line; line i is class id i."}
    )
    video_dir: str = field(default="raw_data/video", metadata={"help": "Folder holding <video_id><video_ext>."})
    video_ext: str = field(default=".mp4", metadata={"help": "Video file extension, with the dot."})
    train_subset: str = field(
        default="training", metadata={"help": "Training subset name (OpenTAD calls THUMOS validation 'training')."}
    )
    eval_subset: str = field(
        default="validation", metadata={"help": "Evaluation subset name (OpenTAD calls THUMOS test 'validation')."}
    )
    exclude_videos: list[str] = field(
        default_factory=list,
        metadata={"help": "Video ids left out before validation and loading (OpenTAD's block_list)."},
    )
    sample_stride: int = field(default=4, metadata={"help": "Keep every n-th raw frame."})
    window_size: int = field(default=768, metadata={"help": "Sampled frames per window (model input length)."})
    eval_window_stride: int = field(default=384, metadata={"help": "Sampled frames between evaluation windows."})
    trunc_thresh: float = field(
        default=0.75,
        metadata={"help": "A training window holds >= this fraction of at least one action; ground truth kept in a "
                  "window (train and eval) is the one with >= this fraction inside, cropped to the window."},
    )  # fmt: skip
    trunc_crop_ratio: Optional[list[float]] = field(
        default_factory=lambda: [0.9, 1.0],
        metadata={"help": "Videos no longer than a window are cut to a random length in [lo, hi] x their length "
                  "(OpenTAD random_trunc crop_ratio); null keeps them whole."},
    )  # fmt: skip
    resize_short_side: int = field(default=182, metadata={"help": "Training: resize the short side to this."})
    crop_size: int = field(default=160, metadata={"help": "Training: random resized crop to this square size."})
    eval_resize: int = field(default=160, metadata={"help": "Evaluation: short side resize, then centre crop."})
    flip_prob: float = field(default=0.5, metadata={"help": "Training: horizontal flip probability."})
    rand_augment_num_ops: int = field(default=2, metadata={"help": "RandAugment operations per sample (0: off)."})
    rand_augment_magnitude: int = field(
        default=9, metadata={"help": "RandAugment magnitude: of 10 with style mmaction, of 30 with torchvision."}
    )
    rand_augment_style: str = field(
        default="mmaction",
        metadata={"help": "mmaction: MMAction2's imgaug RandAugment, as OpenTAD trains AdaTAD (15 ops, bilinear, "
                  "geometric signs fixed once per run from the seed); torchvision: torchvision's RandAugment (14 ops, "
                  "nearest, signs per clip)."},
    )  # fmt: skip
    color_jitter: Optional[list[float]] = field(
        default_factory=lambda: [0.5, 0.5, 0.5, 0.1],
        metadata={"help": "Brightness, contrast, saturation, hue (mmaction ColorJitter defaults, used by AdaTAD); "
                  "null: off."},
    )  # fmt: skip
    color_jitter_style: str = field(
        default="mmaction",
        metadata={"help": "mmaction: the op order fixed once per run from the seed and hue shifted by int(255 h) "
                  "OpenCV hue units (2 deg), as mmaction's ColorJitter in OpenTAD; torchvision: a random order per "
                  "clip and hue h in turns."},
    )  # fmt: skip
    ignore_labels: list[str] = field(
        default_factory=lambda: ["Ambiguous"], metadata={"help": "Labels dropped from the ground truth (counted)."}
    )
    decode_threads: int = field(default=1, metadata={"help": "decord threads per reader."})
    gt_whole_frames: bool = field(
        default=True,
        metadata={"help": "Training targets from ground truth cut to whole raw frames (OpenTAD: int(seconds x fps)) "
                  "before dividing by sample_stride; false keeps continuous times."},
    )  # fmt: skip
    frame_count_tolerance: float = field(
        default=0.05,
        metadata={"help": "An annotation 'frame' or 'duration' that differs from the video file by up to this "
                  "fraction is counted and reported, not refused (the file's frame count is read, the annotation's "
                  "fps = frame / duration kept, as OpenTAD); a larger difference is a problem."},
    )  # fmt: skip
    validate_decode_last_frame: bool = field(
        default=True,
        metadata={"help": "Validation decodes each video's last frame (catches broken tails) besides opening it."},
    )
    validate_workers: int = field(default=8, metadata={"help": "Threads probing videos during validation."})
    max_train_videos: Optional[int] = field(default=None, metadata={"help": "Debug: first n training videos."})
    max_eval_videos: Optional[int] = field(default=None, metadata={"help": "Debug: first n evaluation videos."})
    synthetic_num_train_videos: int = field(default=24, metadata={"help": "Synthetic: training videos."})
    synthetic_num_test_videos: int = field(default=8, metadata={"help": "Synthetic: evaluation videos."})
    synthetic_num_classes: int = field(default=3, metadata={"help": "Synthetic: classes (first THUMOS names)."})
    synthetic_seed: int = field(default=0, metadata={"help": "Synthetic: generator seed."})
    synthetic_height: int = field(default=64, metadata={"help": "Synthetic: frame height (even)."})
    synthetic_width: int = field(default=96, metadata={"help": "Synthetic: frame width (even)."})
    synthetic_fps: int = field(default=15, metadata={"help": "Synthetic: frames per second."})
    synthetic_min_duration: float = field(default=16.0, metadata={"help": "Synthetic: shortest video, seconds."})
    synthetic_max_duration: float = field(default=32.0, metadata={"help": "Synthetic: longest video, seconds."})
    synthetic_num_ambiguous: int = field(default=0, metadata={"help": "Synthetic: 'Ambiguous' annotations."})

    def __post_init__(self):
        super().__post_init__()
        for name in ("sample_stride", "window_size", "eval_window_stride", "decode_threads", "validate_workers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 < self.trunc_thresh <= 1.0:
            raise ValueError(f"trunc_thresh must be in (0, 1], got {self.trunc_thresh}")
        if self.trunc_crop_ratio is not None:
            if len(self.trunc_crop_ratio) != 2 or not 0 < self.trunc_crop_ratio[0] <= self.trunc_crop_ratio[1] <= 1:
                raise ValueError(
                    f"trunc_crop_ratio must be [lo, hi] with 0 < lo <= hi <= 1, got {self.trunc_crop_ratio}"
                )
        styles = {"mmaction": (15, 10), "torchvision": (14, 30)}  # style: (operations, highest magnitude)
        if self.rand_augment_style not in styles:
            raise ValueError(f"rand_augment_style must be one of {sorted(styles)}, got {self.rand_augment_style!r}")
        num_ops_max, magnitude_max = styles[self.rand_augment_style]
        if not 0 <= self.rand_augment_num_ops <= num_ops_max:
            raise ValueError(f"rand_augment_num_ops must be in [0, {num_ops_max}] with rand_augment_style "
                             f"{self.rand_augment_style}, got {self.rand_augment_num_ops}")
        if not 0 <= self.rand_augment_magnitude <= magnitude_max:
            raise ValueError(f"rand_augment_magnitude must be in [0, {magnitude_max}] with rand_augment_style "
                             f"{self.rand_augment_style}, got {self.rand_augment_magnitude}")
        if self.color_jitter_style not in styles:
            raise ValueError(f"color_jitter_style must be one of {sorted(styles)}, got {self.color_jitter_style!r}")
        if self.color_jitter is not None and len(self.color_jitter) != 4:
            raise ValueError("color_jitter must hold 4 numbers (brightness, contrast, saturation, hue) or be null")

    def video_path(self, video_id: str) -> str:
        return os.path.join(self.resolve(self.video_dir), video_id + self.video_ext)


# ----------------------------------------------------------------------------------------------- validation


@dataclass
class TADValidationReport(ValidationReport):
    annotation_path: str = ""
    num_videos: dict[str, int] = field(default_factory=dict)  # per subset, videos checked
    num_segments: dict[str, int] = field(default_factory=dict)  # per subset, segments kept
    ignored_segments: dict[str, int] = field(default_factory=dict)  # per ignored label, segments dropped
    adjusted: dict[str, int] = field(default_factory=dict)  # tolerated (as OpenTAD does) and counted

    def summary_lines(self) -> list[str]:
        counts = "; ".join(
            f"{subset}: {n} videos, {self.num_segments.get(subset, 0)} segments"
            for subset, n in self.num_videos.items()
        )
        lines = [f"THUMOS-14 corpus check of {self.annotation_path}: {counts or 'nothing read'}"]
        if self.ignored_segments:
            ignored = ", ".join(f"{label}: {n}" for label, n in sorted(self.ignored_segments.items()))
            lines.append(f"  ignored segments (excluded, not errors): {ignored}")
        return lines


@dataclass
class _VideoEntry:
    video_id: str
    subset: str
    path: str
    frame: Any
    duration: Any
    segments: list = field(default_factory=list)  # kept [start, end] seconds, clipped to [0, duration]
    labels: list = field(default_factory=list)  # kept class ids
    probe: Optional[dict] = None
    file_frames: Optional[int] = None  # the decoder's frame count (what is read), when the file opened


def _load_database(path: str, problems: list[str]) -> Optional[dict]:
    if not os.path.isfile(path):
        problems.append(f"{path}: annotation file not found")
        return None

    def no_duplicate_keys(pairs):
        obj, seen = {}, set()
        for key, value in pairs:
            if key in seen:
                problems.append(f"{path}: key '{key}' appears more than once (JSON keeps only the last)")
            seen.add(key)
            obj[key] = value
        return obj

    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f, object_pairs_hook=no_duplicate_keys)
    except (ValueError, UnicodeDecodeError) as err:
        problems.append(f"{path}: not valid JSON ({err})")
        return None
    if not isinstance(data, dict) or not isinstance(data.get("database"), dict):
        problems.append(f"{path}: no 'database' mapping at the top level")
        return None
    return data["database"]


def _load_class_map(path: str, problems: list[str]) -> Optional[list[str]]:
    if not os.path.isfile(path):
        problems.append(f"{path}: class map file not found")
        return None
    with open(path, encoding="utf-8") as f:
        names = [line.strip() for line in f]
    while names and not names[-1]:
        names.pop()
    for i, name in enumerate(names):
        if not name:
            problems.append(f"{path}: line {i + 1} is empty")
    for name, n in Counter(names).items():
        if name and n > 1:
            problems.append(f"{path}: class '{name}' listed {n} times")
    if not names:
        problems.append(f"{path}: no class names")
    return names


def _check_corpus(args: TADDataArguments) -> tuple[TADValidationReport, list[str], dict[str, list[_VideoEntry]]]:
    """Everything validate_thumos14 reports, plus the parsed entries that load_thumos14 builds its tables from."""
    ann_path = args.resolve(args.annotation_path)
    report = TADValidationReport(annotation_path=ann_path)
    problems = report.problems
    database = _load_database(ann_path, problems)
    class_names = _load_class_map(args.resolve(args.class_map_path), problems) or []
    class_index = {name: i for i, name in enumerate(class_names)}
    ignore = set(args.ignore_labels)
    subsets = list(dict.fromkeys([args.train_subset, args.eval_subset]))
    entries: dict[str, list[_VideoEntry]] = {s: [] for s in subsets}
    if database is None:
        return report, class_names, entries
    excluded = set(args.exclude_videos)
    missing_excluded = sorted(excluded - set(database))
    if missing_excluded:
        report.notes.append(f"exclude_videos not in the annotation file: {', '.join(missing_excluded)}")
    other = Counter()
    adjusted = Counter()  # what is tolerated, as OpenTAD does, and said in the report

    # 1. annotation entries
    for video_id in sorted(database):
        info = database[video_id]
        where = f"{ann_path}: video '{video_id}'"
        if video_id in excluded:
            continue
        if not isinstance(info, dict):
            problems.append(f"{where}: entry is not a mapping")
            continue
        subset = info.get("subset")
        if subset not in entries:
            other[str(subset)] += 1
            continue
        entry = _VideoEntry(video_id, subset, args.video_path(video_id), info.get("frame"), info.get("duration"))
        frame_ok = isinstance(entry.frame, int) and not isinstance(entry.frame, bool) and entry.frame > 0
        duration_ok = is_finite_number(entry.duration) and entry.duration > 0
        if not frame_ok:
            problems.append(f"{where}: 'frame' must be a positive integer, got {entry.frame!r}")
        if not duration_ok:
            problems.append(f"{where}: 'duration' must be a positive number, got {entry.duration!r}")
        annotations = info.get("annotations", None)
        if not isinstance(annotations, list):
            problems.append(f"{where}: 'annotations' must be a list, got {type(annotations).__name__}")
            annotations = []
        # One frame period of tolerance on segment bounds (annotations are rounded to the frame).
        tol = entry.duration / entry.frame if frame_ok and duration_ok else 0.0
        seen = set()
        for j, ann in enumerate(annotations):
            at = f"{where}: annotation {j}"
            if not isinstance(ann, dict):
                problems.append(f"{at}: not a mapping")
                continue
            label, segment = ann.get("label"), ann.get("segment")
            if isinstance(label, str) and label in ignore:
                report.ignored_segments[label] = report.ignored_segments.get(label, 0) + 1
                continue
            bad = False
            if not isinstance(label, str) or label not in class_index:
                problems.append(f"{at}: label {label!r} is not in the class map")
                bad = True
            if not (isinstance(segment, (list, tuple)) and len(segment) == 2 and all(map(is_finite_number, segment))):
                problems.append(f"{at}: segment must be [start, end] in seconds, got {segment!r}")
                continue
            start, end = float(segment[0]), float(segment[1])
            if duration_ok and start >= entry.duration:
                problems.append(f"{at}: segment {segment} lies entirely after the video's duration {entry.duration}")
                bad = True
            elif end <= 0:
                problems.append(f"{at}: segment {segment} lies entirely before 0")
                bad = True
            if bad:
                continue
            # What OpenTAD trains on anyway is kept and counted: reversed or zero-length segments are dropped, ends
            # past the duration and starts before 0 clipped.
            if start >= end:
                adjusted["segments with start >= end, dropped"] += 1
                continue
            if duration_ok and end > entry.duration + tol:
                adjusted["segments ending after the video's duration, clipped to it"] += 1
            if start < -tol:
                adjusted["segments starting before 0, clipped to 0"] += 1
            start, end = max(start, 0.0), min(end, float(entry.duration)) if duration_ok else end
            key = (class_index[label], start, end)
            if key in seen:  # OpenTAD drops exact duplicates too (filter_same_annotation)
                continue
            seen.add(key)
            entry.segments.append([start, end])
            entry.labels.append(class_index[label])
        entries[subset].append(entry)
    if other:
        report.notes.append(
            "videos of other subsets, not used: " + ", ".join(f"{s}: {n}" for s, n in sorted(other.items()))
        )

    # 2. video files, probed in parallel (decord releases the GIL while reading and decoding)
    all_entries = [e for s in subsets for e in entries[s]]
    with ThreadPoolExecutor(max_workers=args.validate_workers) as pool:
        probes = list(pool.map(lambda e: probe_file(e.path, args.validate_decode_last_frame, args.decode_threads, identity=True),
                               all_entries))  # fmt: skip
    for entry, probe in zip(all_entries, probes):
        where = f"video '{entry.video_id}' ({entry.subset}, {entry.path})"
        entry.probe = probe
        if "error" in probe:
            problems.append(f"{where}: {probe['error']}")
            continue
        n, fps = probe["num_frames"], probe["fps"]
        entry.file_frames = n
        tolerance = args.frame_count_tolerance
        if isinstance(entry.frame, int) and entry.frame != n:
            difference = abs(entry.frame - n) / max(entry.frame, 1)
            if difference > tolerance:
                problems.append(f"{where}: annotation 'frame' {entry.frame} != {n} frames in the file (decord), "
                                f"{100 * difference:.1f}% apart (frame_count_tolerance {tolerance:g})")
            else:
                adjusted["videos whose annotation 'frame' differs from the file's count (the file's is read)"] += 1
                adjusted["largest frame-count difference, frames"] = max(
                    adjusted["largest frame-count difference, frames"], abs(entry.frame - n))
        if is_finite_number(entry.duration) and abs(entry.duration - n / fps) > 1.0 / fps:
            # a duration of 0 (or below) is as far from the file's as it gets: a problem, never a division by zero
            difference = abs(entry.duration - n / fps) / entry.duration if entry.duration > 0 else float("inf")
            if difference > tolerance:
                problems.append(
                    f"{where}: annotation 'duration' {entry.duration} s differs from the file's {n} frames / "
                    f"{fps:g} fps = {n / fps:.4f} s by {100 * difference:.1f}% (frame_count_tolerance {tolerance:g})"
                )
            else:
                adjusted["videos whose annotation 'duration' differs from the file's by more than a frame"] += 1

    # 3. the same file under two ids (a train/eval overlap leaks test videos into training)
    groups: dict[Any, list[_VideoEntry]] = {}
    for entry in all_entries:
        if entry.probe and "fingerprint" in entry.probe:
            for key in (("path", entry.probe["realpath"]), ("inode", entry.probe["inode"]),
                        ("content", entry.probe["fingerprint"])):  # fmt: skip
                groups.setdefault(key, []).append(entry)
    reported = set()
    for key, group in groups.items():
        ids = tuple(sorted({(e.subset, e.video_id) for e in group}))
        if len(ids) < 2 or ids in reported:
            continue
        reported.add(ids)
        names = ", ".join(f"'{vid}' ({subset})" for subset, vid in ids)
        kind = "train/eval overlap" if len({s for s, _ in ids}) > 1 else "duplicate video"
        problems.append(f"{kind}: {names} are the same video file ({group[0].path})")

    for subset in subsets:
        report.num_videos[subset] = len(entries[subset])
        report.num_segments[subset] = sum(len(e.segments) for e in entries[subset])
    if args.train_subset == args.eval_subset:
        problems.append(f"train_subset and eval_subset are both '{args.train_subset}'")
    if not entries[args.train_subset]:
        problems.append(f"{ann_path}: no video in the training subset '{args.train_subset}'")
    elif not report.num_segments[args.train_subset]:
        problems.append(f"{ann_path}: the training subset '{args.train_subset}' has no segment to learn from")
    if not entries[args.eval_subset]:
        problems.append(f"{ann_path}: no video in the evaluation subset '{args.eval_subset}'")
    for what, count in adjusted.items():
        report.notes.append(f"{what}: {count}")
    report.adjusted = dict(adjusted)
    without = sum(1 for e in entries[args.train_subset] if not e.segments)
    if without:
        report.notes.append(f"{without} training video(s) have no kept segment and are not trained on")
    return report, class_names, entries


def validate_thumos14(args: TADDataArguments) -> TADValidationReport:
    """Checks the whole corpus (annotation file, class map, every video of both subsets) and reports every problem,
    each naming the file, video id and annotation index. Ignored labels ("Ambiguous") are counted, not problems."""
    args.ensure_synthetic()
    return _check_corpus(args)[0]


# ----------------------------------------------------------------------------------------------- windows


def num_sampled_frames(num_frames: int, sample_stride: int) -> int:
    """Sampled frames 0, s, 2s, ... below num_frames (OpenTAD: np.arange(0, num_frames, stride))."""
    return -(-num_frames // sample_stride)


def eval_window_starts(num_sampled: int, window_size: int, window_stride: int) -> list[int]:
    """First sampled frame of each evaluation window.

    OpenTAD's sliding windows: every `window_stride` while the window fits, then one last window ending at the
    video's end; a video no longer than a window gets one window at 0, padded. (OpenTAD can emit the last window
    twice when the length is a multiple of the stride; it is emitted once here.)
    """
    if num_sampled <= window_size:
        return [0]
    starts = list(range(0, num_sampled - window_size, window_stride))
    starts.append(num_sampled - window_size)
    return starts


def _window_gt(segments: np.ndarray, labels: np.ndarray, lo: float, hi: float, thresh: float):
    """GT (in sampled frames) with >= thresh of its length inside [lo, hi], cropped and shifted to start at lo."""
    if len(segments) == 0:
        return np.zeros((0, 2), np.float32), np.zeros((0,), np.int64)
    left = np.maximum(segments[:, 0], lo)
    right = np.minimum(segments[:, 1], hi)
    ratio = np.clip(right - left, 0, None) / np.maximum(segments[:, 1] - segments[:, 0], 1e-8)
    keep = ratio >= thresh
    cropped = np.stack([left[keep], right[keep]], axis=1) - lo
    return cropped.astype(np.float32), labels[keep].astype(np.int64)


def _randint(generator, low: int, high: int) -> int:
    """Uniform integer in [low, high] (inclusive) from a torch or numpy generator."""
    if isinstance(generator, np.random.Generator):
        return int(generator.integers(low, high + 1))
    return int(torch.randint(low, high + 1, (1,), generator=generator).item())


def random_trunc(
    num_sampled: int,
    segments: np.ndarray,
    labels: np.ndarray,
    window_size: int,
    trunc_thresh: float,
    crop_ratio,
    generator,
) -> tuple[int, int, np.ndarray, np.ndarray]:
    """OpenTAD's RandomTrunc (LoadFrames method="random_trunc") on sampled-frame units.

    Returns (start, num_valid, segments, labels): the window covers sampled frames [start, start + num_valid),
    padded to window_size. A video longer than the window: start uniform among the starts at which at least one
    action has >= trunc_thresh of its length inside (OpenTAD draws up to 200 uniform starts until one qualifies;
    this samples the same distribution exactly, and falls back to a uniform start when no start qualifies, as
    OpenTAD's last trial does). A video no longer than the window: with crop_ratio [lo, hi] its length is cut to a
    random round(lo*L)..round(hi*L) and the same search runs on it; when that length is the whole video (or
    crop_ratio is None) the window starts at 0 and all ground truth is kept unchanged. Kept ground truth: the
    segments with >= trunc_thresh inside, cropped to the window, shifted to window units.
    """
    length = window_size
    if num_sampled <= window_size:
        if crop_ratio is None:
            return 0, num_sampled, segments.astype(np.float32), labels.astype(np.int64)
        lo = max(int(round(crop_ratio[0] * num_sampled)), 1)
        hi = min(int(round(crop_ratio[1] * num_sampled)), num_sampled)
        length = _randint(generator, lo, hi)
        if length == num_sampled:
            return 0, num_sampled, segments.astype(np.float32), labels.astype(np.int64)
    starts = np.arange(0, num_sampled - length + 1, dtype=np.float64)
    if len(segments):
        left = np.maximum(starts[:, None], segments[None, :, 0])
        right = np.minimum(starts[:, None] + length, segments[None, :, 1])
        ratio = np.clip(right - left, 0, None) / np.maximum(segments[None, :, 1] - segments[None, :, 0], 1e-8)
        feasible = np.flatnonzero((ratio >= trunc_thresh).any(axis=1))
    else:
        feasible = np.zeros(0, dtype=np.int64)
    if len(feasible):
        start = int(feasible[_randint(generator, 0, len(feasible) - 1)])
    else:
        start = _randint(generator, 0, num_sampled - length)
    seg, lab = _window_gt(segments, labels, start, start + length, trunc_thresh)
    return start, length, seg, lab


def window_frame_indices(window_start: int, num_valid: int, window_size: int, sample_stride: int, num_frames: int):
    """Raw frame indices of a window of sampled frames [window_start, window_start + num_valid), padded to
    window_size by repeating the last real frame (OpenTAD's edge padding), and its mask."""
    indices, mask = sample_indices(window_start * sample_stride, window_size, sample_stride, num_frames)
    mask &= np.arange(window_size) < num_valid
    if num_valid < window_size:
        indices[num_valid:] = indices[max(num_valid - 1, 0)]
    return indices, mask


def _to_tensor_clip(clip: np.ndarray, generator=None) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(clip)).permute(0, 3, 1, 2).contiguous()


class _WindowTransformBase(RowTransform):
    def __init__(self, window_size: int, sample_stride: int, trunc_thresh: float, clip_transform, decode_threads: int,
                 gt_whole_frames: bool = True):
        self.gt_whole_frames = bool(gt_whole_frames)
        self.window_size = int(window_size)
        self.sample_stride = int(sample_stride)
        self.trunc_thresh = float(trunc_thresh)
        self.clip_transform = clip_transform or _to_tensor_clip
        self._readers = ReaderCache(decode_threads, read_ahead=False)  # one window per sample: no decoding past it

    def _sample(self, row: dict, start: int, num_valid: int, segments, labels, generator) -> dict:
        indices, mask = window_frame_indices(start, num_valid, self.window_size, self.sample_stride, row["num_frames"])
        reader = self._readers.get_for(row["path"], getattr(self.clip_transform, "decode_size", None))
        clip = reader.get_frames(indices)
        pixels = self.clip_transform(clip, generator)
        return {
            "pixel_values": pixels,
            "pixel_mask": torch.from_numpy(mask),
            "class_labels": torch.as_tensor(labels, dtype=torch.long),
            "segment_labels": torch.as_tensor(segments, dtype=torch.float32).reshape(-1, 2),
            "video_index": torch.tensor(int(row["video_index"]), dtype=torch.long),
            "window_start": torch.tensor(int(start), dtype=torch.long),
        }

    def _segments_sampled(self, row: dict) -> tuple[np.ndarray, np.ndarray]:
        frames = np.asarray(row["segments"], dtype=np.float64).reshape(-1, 2) * row["fps"]  # seconds -> raw frames
        if self.gt_whole_frames:  # OpenTAD: int(seconds / duration * frame), then / stride
            frames = np.floor(frames)
        return frames / self.sample_stride, np.asarray(row["labels"], dtype=np.int64)


class TrainWindowTransform(_WindowTransformBase, EpochSeeded):
    """datasets transform for training rows (one per video): draws a window with OpenTAD's RandomTrunc, decodes
    only its frames and augments them, all from a generator seeded by (seed, epoch, row index)."""

    def __init__(
        self,
        window_size: int,
        sample_stride: int,
        trunc_thresh: float = 0.75,
        crop_ratio=(0.9, 1.0),
        clip_transform: Optional[Callable] = None,
        seed: int = 0,
        decode_threads: int = 1,
        gt_whole_frames: bool = True,
    ):
        super().__init__(window_size, sample_stride, trunc_thresh, clip_transform, decode_threads, gt_whole_frames)
        self.crop_ratio = tuple(crop_ratio) if crop_ratio is not None else None
        self.seed = int(seed)
        EpochSeeded.__init__(self)

    def transform_row(self, row: dict) -> dict:
        generator = clip_generator(self.seed, self.epoch, row["index"])
        segments, labels = self._segments_sampled(row)
        num_sampled = num_sampled_frames(row["num_frames"], self.sample_stride)
        start, num_valid, seg, lab = random_trunc(
            num_sampled, segments, labels, self.window_size, self.trunc_thresh, self.crop_ratio, generator
        )
        return self._sample(row, start, num_valid, seg, lab, generator)


class EvalWindowTransform(_WindowTransformBase):
    """datasets transform for evaluation rows (one per sliding window): deterministic."""

    def __init__(
        self,
        window_size: int,
        sample_stride: int,
        trunc_thresh: float = 0.75,
        clip_transform: Optional[Callable] = None,
        decode_threads: int = 1,
        gt_whole_frames: bool = True,
    ):
        super().__init__(window_size, sample_stride, trunc_thresh, clip_transform, decode_threads, gt_whole_frames)

    def transform_row(self, row: dict) -> dict:
        start = int(row["window_start"])
        num_sampled = num_sampled_frames(row["num_frames"], self.sample_stride)
        num_valid = min(self.window_size, num_sampled - start)
        segments, labels = self._segments_sampled(row)
        seg, lab = _window_gt(segments, labels, start, start + num_valid, self.trunc_thresh)
        return self._sample(row, start, num_valid, seg, lab, torch.Generator().manual_seed(0))


def collate_tad(samples: list[dict]) -> dict:
    """Stacks window samples; ground truth padded to the batch's most segments (at least 1) with class -1."""
    if not samples:
        raise ValueError("collate_tad: empty batch")
    batch_size = len(samples)
    n = max([1] + [len(s["class_labels"]) for s in samples])
    class_labels = torch.full((batch_size, n), -1, dtype=torch.long)
    segment_labels = torch.zeros((batch_size, n, 2), dtype=torch.float32)
    for i, s in enumerate(samples):
        k = len(s["class_labels"])
        class_labels[i, :k] = torch.as_tensor(s["class_labels"], dtype=torch.long)
        segment_labels[i, :k] = torch.as_tensor(s["segment_labels"], dtype=torch.float32).reshape(-1, 2)
    return {
        "pixel_values": torch.stack([torch.as_tensor(s["pixel_values"]) for s in samples]),
        "pixel_mask": torch.stack([torch.as_tensor(s["pixel_mask"], dtype=torch.bool) for s in samples]),
        "class_labels": class_labels,
        "segment_labels": segment_labels,
        "video_index": torch.tensor([int(s["video_index"]) for s in samples], dtype=torch.long),
        "window_start": torch.tensor([int(s["window_start"]) for s in samples], dtype=torch.long),
    }


# ----------------------------------------------------------------------------------------------- loading


@dataclass
class TADCorpus:
    train_dataset: Any  # datasets.Dataset, one row per training video with >= 1 kept segment
    eval_dataset: Any  # datasets.Dataset, one row per sliding evaluation window
    class_names: list[str]
    videos: list[dict]  # evaluation videos in video_index order: video_id, fps, duration, num_frames, sample_stride
    train_videos: list[dict]  # training videos in video_index order, same keys
    ground_truth: dict  # OpenTAD JSON of the evaluation subset, ignored labels removed
    ground_truth_path: str
    report: TADValidationReport
    train_transform: TrainWindowTransform
    eval_transform: EvalWindowTransform

    def set_epoch(self, epoch: int) -> None:
        self.train_transform.set_epoch(epoch)


def build_clip_transforms(args: TADDataArguments, seed: int = 0) -> tuple[Callable, Callable]:
    """The train and eval clip transforms of the recipe (video_io's TrainClipTransform / EvalClipTransform);
    `seed` fixes the mmaction RandAugment's signs for the run."""
    from .video_io import EvalClipTransform, TrainClipTransform

    rand_augment = (args.rand_augment_num_ops, args.rand_augment_magnitude) if args.rand_augment_num_ops > 0 else None
    train = TrainClipTransform(
        resize=args.resize_short_side,
        crop=args.crop_size,
        flip_prob=args.flip_prob,
        rand_augment=rand_augment,
        color_jitter=tuple(args.color_jitter) if args.color_jitter is not None else None,
        rand_augment_style=args.rand_augment_style,
        rand_augment_seed=seed,
        color_jitter_style=args.color_jitter_style,
    )
    return train, EvalClipTransform(resize=args.eval_resize, crop=args.eval_resize)


_TABLE_FEATURES = None


def _features():
    import datasets

    global _TABLE_FEATURES
    if _TABLE_FEATURES is None:
        _TABLE_FEATURES = datasets.Features(
            {
                "index": datasets.Value("int64"),
                "video_index": datasets.Value("int64"),
                "video_id": datasets.Value("string"),
                "path": datasets.Value("string"),
                "num_frames": datasets.Value("int64"),
                "fps": datasets.Value("float64"),
                "duration": datasets.Value("float64"),
                "window_start": datasets.Value("int64"),
                "segments": datasets.List(datasets.List(datasets.Value("float64"))),
                "labels": datasets.List(datasets.Value("int64")),
            }
        )
    return _TABLE_FEATURES


def corpus_features(class_names: list[str]):
    """The typed columns of `load_corpus`: one row per video."""
    import datasets

    return datasets.Features({
        "video_id": datasets.Value("string"),
        "subset": datasets.Value("string"),
        "path": datasets.Value("string"),
        "fps": datasets.Value("float64"),  # OpenTAD's convention: annotation frame / duration
        "duration": datasets.Value("float64"),
        "num_frames": datasets.Value("int64"),  # what the file holds (the decoder's count)
        "annotation_frames": datasets.Value("int64"),  # the annotation's "frame"
        "segments": datasets.List(datasets.List(datasets.Value("float64"), length=2)),  # kept [start, end] seconds
        "labels": datasets.List(datasets.ClassLabel(names=list(class_names))),
    })


def _corpus_row(entry: _VideoEntry) -> dict:
    return {
        "video_id": entry.video_id,
        "subset": entry.subset,
        "path": entry.path,
        "fps": entry.frame / entry.duration,
        "duration": float(entry.duration),
        "num_frames": int(entry.file_frames if entry.file_frames else entry.frame),
        "annotation_frames": int(entry.frame),
        "segments": [list(seg) for seg in entry.segments],
        "labels": list(entry.labels),
    }


def _validated_corpus(args: TADDataArguments):
    """(DatasetDict with "train" and "test": the videos of train_subset / eval_subset, capped by max_*_videos (the
    training cap counts videos with a kept segment, as the training table does); class names). Generates the synthetic corpus first when asked; every corpus problem is one CorpusError."""
    import datasets

    args.ensure_synthetic()
    report, class_names, entries = _check_corpus(args)
    if not report.ok:
        raise CorpusError(report)
    features = corpus_features(class_names)
    train = entries[args.train_subset]
    cap = args.max_train_videos
    if cap is not None:  # up to the cap-th training video that trains (has a kept segment)
        trained = [i for i, e in enumerate(train) if e.segments]
        if len(trained) > cap:
            train = train[: trained[cap - 1] + 1] if cap > 0 else []
    splits = {"train": train, "test": entries[args.eval_subset][: args.max_eval_videos]}
    return datasets.DatasetDict({
        name: datasets.Dataset.from_list([_corpus_row(e) for e in rows], features=features)
        for name, rows in splits.items()
    }), class_names, report


def load_corpus(source, **overrides):
    """THUMOS-14 in OpenTAD's layout as a typed `datasets.DatasetDict` ("train", "test": one row per video, classes as
    ClassLabel), validated as a run validates it; the one the tad task builds its windows from. `source`: a recipe
    file, a mapping of data keys, or TADDataArguments; `overrides` on top (e.g. data_root=...)."""
    from .common import data_arguments_from

    return _validated_corpus(data_arguments_from(TADDataArguments, source, **overrides))[0]


def _video_record(row: dict, stride: int) -> dict:
    keys = ("video_id", "path", "fps", "duration", "num_frames")
    return {**{k: row[k] for k in keys}, "sample_stride": stride}


def ground_truth_json(rows, class_names: list[str]) -> dict:
    return {
        "database": {
            row["video_id"]: {
                "subset": row["subset"],
                "duration": float(row["duration"]),
                "frame": int(row["annotation_frames"]),
                "annotations": [
                    {"label": class_names[label], "segment": list(seg)} for seg, label in zip(row["segments"],
                                                                                              row["labels"])
                ],
            }
            for row in rows
        }
    }


def load_thumos14(
    args: TADDataArguments,
    seed: int = 0,
    train_clip_transform: Optional[Callable] = None,
    eval_clip_transform: Optional[Callable] = None,
    ground_truth_dir: Optional[str] = None,
) -> TADCorpus:
    """Validates the corpus (raises CorpusError listing every problem) and builds the window datasets.

    The evaluation ground truth (ignored labels removed) is written as OpenTAD JSON to `ground_truth_dir`, by default
    a content-addressed file in the system temp dir. Clip transforms default to the recipe's (build_clip_transforms).
    """
    import datasets

    corpus, class_names, report = _validated_corpus(args)
    if train_clip_transform is None or eval_clip_transform is None:
        default_train, default_eval = build_clip_transforms(args, seed)
        train_clip_transform = train_clip_transform or default_train
        eval_clip_transform = eval_clip_transform or default_eval
    stride = args.sample_stride

    train_entries = [row for row in corpus["train"] if row["segments"]]  # a video without a kept segment trains nothing
    train_videos = [_video_record(e, stride) for e in train_entries]
    train_rows = [
        {**v, "index": i, "video_index": i, "window_start": 0, "segments": e["segments"], "labels": e["labels"]}
        for i, (v, e) in enumerate(zip(train_videos, train_entries))
    ]
    eval_entries = list(corpus["test"])
    videos = [_video_record(e, stride) for e in eval_entries]
    eval_rows = []
    for vi, (v, e) in enumerate(zip(videos, eval_entries)):
        for start in eval_window_starts(num_sampled_frames(v["num_frames"], stride), args.window_size,
                                        args.eval_window_stride):  # fmt: skip
            eval_rows.append({**v, "index": len(eval_rows), "video_index": vi, "window_start": start,
                              "segments": e["segments"], "labels": e["labels"]})  # fmt: skip
    columns = list(_features())

    def table(rows):
        return datasets.Dataset.from_dict({c: [r[c] for r in rows] for c in columns}, features=_features())

    train_dataset, eval_dataset = table(train_rows), table(eval_rows)
    train_transform = TrainWindowTransform(args.window_size, stride, args.trunc_thresh, args.trunc_crop_ratio,
                                           train_clip_transform, seed, args.decode_threads,
                                           args.gt_whole_frames)  # fmt: skip
    eval_transform = EvalWindowTransform(args.window_size, stride, args.trunc_thresh, eval_clip_transform,
                                         args.decode_threads, args.gt_whole_frames)  # fmt: skip
    train_dataset.set_transform(train_transform)
    eval_dataset.set_transform(eval_transform)

    ground_truth = ground_truth_json(eval_entries, class_names)
    text = json.dumps(ground_truth, sort_keys=True)
    if ground_truth_dir is None:
        ground_truth_dir = os.path.join(tempfile.gettempdir(), "hf_vtrain_ground_truth")
        name = f"thumos14_{args.eval_subset}_{hashlib.sha1(text.encode()).hexdigest()[:16]}.json"
    else:
        name = f"thumos14_{args.eval_subset}_ground_truth.json"
    ground_truth_path = write_json_atomic(os.path.join(ground_truth_dir, name), ground_truth)
    return TADCorpus(
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        class_names=class_names,
        videos=videos,
        train_videos=train_videos,
        ground_truth=ground_truth,
        ground_truth_path=ground_truth_path,
        report=report,
        train_transform=train_transform,
        eval_transform=eval_transform,
    )
