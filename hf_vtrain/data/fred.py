"""FRED (Florence RGB-Event Drone dataset) in its published per-sequence layout (FIELD_NOTES), task `det`.

Layout under `data_root`: one folder per sequence (`<seq>/`, as the split lists name them) with `RGB/*.jpg` named by
wall-clock capture time (`Video_<seq>_HH_MM_SS.ffffff.jpg`), `Event/Frames/Video_<seq>_frame_<us>.png` named by the
sequence clock in microseconds (sorted numerically, not by name), YOLO labels per frame (`class cx cy w h`,
normalised) in `RGB_YOLO/` and `Event_YOLO/` named after the frame (an empty file: no drone), `coordinates.txt`; split
lists `dataset_splits/<canonical|challenging>/{train,test}_split.txt`, one `<seq>/` per line.

- `modality: rgb` reads the RGB frames and their labels, `event` the event frames and theirs, `rgb_event` the RGB
  frames and labels with the event frame nearest in time as three more input channels (early fusion). The RGB clock
  is taken to start with the first event frame (the first RGB frame's wall-clock time is the sequence clock's first
  event time, plus `rgb_clock_offset_ms`); pairs are made by nearest timestamp, never by index (RGB frames jitter and
  drop), and a pair farther apart than `pair_tolerance_ms` is a problem named in the report.
- Boxes are clipped to the frame (FRED's boxes are not); a label entirely outside its frame is a problem. Frames
  without a drone stay in the set: they are evaluated (their false positives count).
- `validate_fred` lists every problem at once: missing or unreadable split files, sequences the lists name that do
  not exist, training and test lists sharing a sequence, frames without a label file and label files without a frame,
  malformed label lines, classes outside `class_names`, labels outside the image, empty or unreadable images, frames
  of another size than the sequence's, RGB/event pairs farther apart than the tolerance.

Training samples (DetSampleTransform): every frame resized to `image_size` x `image_size` as the RT-DETR image
processor does (no aspect kept, values / 255, no mean/std), then, box-correct: mosaic of 4 frames and mixup of 2
(probabilities and the epoch from which each stops in the recipe), random scale and translation (`scale_range`,
`translate`), HSV jitter of the RGB channels, horizontal flip; boxes follow every step and are clipped, and boxes left
smaller than 2 px or under 10% of their area are dropped (YOLO's rule). Evaluation samples: the resize only.
"""

from __future__ import annotations

import bisect
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import torch

from .common import IMAGE_EXTENSIONS, CorpusArguments, CorpusError, EpochSeeded, RowTransform, ValidationReport

MODALITIES = ("rgb", "event", "rgb_event")
SPLITS = ("canonical", "challenging")
RGB_TIME = re.compile(r"_(\d{1,2})_(\d{2})_(\d{2})\.(\d{1,6})$")
EVENT_TIME = re.compile(r"_frame_(\d+)$")


@dataclass
class DetDataArguments(CorpusArguments):
    """Where a FRED-format corpus lives, which split and modality are read, and the training augmentation."""

    SYNTHETIC_WRITER = ".synthetic_fred:ensure_synthetic_fred"

    split: str = field(default="canonical", metadata={"help": "canonical or challenging (dataset_splits/<split>/)."})
    split_dir: str = field(default="dataset_splits", metadata={"help": "Folder of the split lists."})
    train_list: str = field(default="train_split.txt", metadata={"help": "Training list inside split_dir/<split>/."})
    test_list: str = field(default="test_split.txt", metadata={"help": "Evaluation list inside split_dir/<split>/."})
    modality: str = field(default="rgb", metadata={"help": "rgb, event or rgb_event (both as 6 input channels)."})
    rgb_dir: str = field(default="RGB", metadata={"help": "RGB frames inside a sequence (RGB or PADDED_RGB)."})
    event_dir: str = field(default="Event/Frames", metadata={"help": "Event frames inside a sequence."})
    rgb_label_dir: str = field(default="RGB_YOLO", metadata={"help": "YOLO labels of the RGB frames."})
    event_label_dir: str = field(default="Event_YOLO", metadata={"help": "YOLO labels of the event frames."})
    class_names: list[str] = field(default_factory=lambda: ["drone"], metadata={"help": "YOLO class i's name."})
    pair_tolerance_ms: float = field(
        default=20.0, metadata={"help": "rgb_event: an RGB frame's nearest event frame must be this close in time."}
    )
    rgb_clock_offset_ms: float = field(
        default=0.0, metadata={"help": "rgb_event: the first RGB frame's time on the sequence clock, after the first "
                                       "event frame's."},
    )
    check_images: bool = field(default=True, metadata={"help": "Validation opens every image (size, readable)."})
    validate_workers: int = field(default=8, metadata={"help": "Threads reading image headers during validation."})
    image_size: int = field(default=640, metadata={"help": "Frames are resized to image_size x image_size."})
    mosaic_prob: float = field(default=1.0, metadata={"help": "Training: probability of a 4-frame mosaic."})
    mosaic_stop_epoch: Optional[int] = field(
        default=None, metadata={"help": "No mosaic from this epoch of the run on (YOLO's close_mosaic); none: never."}
    )
    mixup_prob: float = field(default=0.0, metadata={"help": "Training: probability of mixing in a second sample."})
    mixup_stop_epoch: Optional[int] = field(default=None, metadata={"help": "No mixup from this epoch on."})
    scale_range: list[float] = field(default_factory=lambda: [0.5, 1.5],
                                     metadata={"help": "Training: random zoom factors (YOLO's scale 0.5)."})
    translate: float = field(default=0.1, metadata={"help": "Training: random shift, a fraction of image_size."})
    flip_prob: float = field(default=0.5, metadata={"help": "Training: horizontal flip."})
    hsv_gains: list[float] = field(default_factory=lambda: [0.015, 0.7, 0.4],
                                   metadata={"help": "Training: HSV jitter of the RGB channels (YOLO's h, s, v)."})
    train_frame_stride: int = field(default=1, metadata={"help": "Training: every n-th frame of each sequence."})
    max_train_frames: Optional[int] = field(default=None, metadata={"help": "Debug: first n training frames."})
    max_eval_frames: Optional[int] = field(default=None, metadata={"help": "Debug: first n evaluation frames."})
    synthetic_sequences: int = field(default=8, metadata={"help": "Synthetic: sequences."})
    synthetic_seconds: float = field(default=2.0, metadata={"help": "Synthetic: seconds per sequence (30 fps)."})
    synthetic_seed: int = field(default=0, metadata={"help": "Synthetic: generator seed."})

    def __post_init__(self):
        super().__post_init__()
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {self.split!r}")
        if self.modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}, got {self.modality!r}")
        if not self.class_names or len(set(self.class_names)) != len(self.class_names):
            raise ValueError(f"class_names must be distinct names, got {self.class_names}")
        if len(self.scale_range) != 2 or not 0 < self.scale_range[0] <= self.scale_range[1]:
            raise ValueError(f"scale_range must be [low, high] with 0 < low <= high, got {self.scale_range}")
        if len(self.hsv_gains) != 3 or min(self.hsv_gains) < 0:
            raise ValueError(f"hsv_gains must be 3 gains >= 0 (h, s, v), got {self.hsv_gains}")
        for key in ("mosaic_prob", "mixup_prob", "flip_prob"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ValueError(f"{key} must be in [0, 1], got {getattr(self, key)}")
        if self.image_size < 32 or self.image_size % 32 or self.train_frame_stride < 1 or self.pair_tolerance_ms <= 0:
            raise ValueError("image_size must be a multiple of 32 (>= 32), train_frame_stride >= 1 and "
                             "pair_tolerance_ms > 0")

    @property
    def in_channels(self) -> int:
        return 6 if self.modality == "rgb_event" else 3

    def list_path(self, which: str) -> str:
        return os.path.join(self.resolve(self.split_dir), self.split, which)


# ------------------------------------------------------------------------------------------------------------------
# File names and labels


def stem_of(name: str) -> str:
    """The name without its extension: RGB stems contain a dot (`..._35.396349.jpg`), so only the last part goes."""
    return os.path.splitext(name)[0]


def rgb_time_us(stem: str) -> int | None:
    """Microseconds after midnight of a wall-clock RGB name `..._HH_MM_SS.ffffff`."""
    m = RGB_TIME.search(stem)
    if m is None:
        return None
    hours, minutes, seconds, frac = m.groups()
    return ((int(hours) * 60 + int(minutes)) * 60 + int(seconds)) * 1_000_000 + int(frac.ljust(6, "0"))


def event_time_us(stem: str) -> int | None:
    """The sequence-clock microseconds of an event name `..._frame_<us>`."""
    m = EVENT_TIME.search(stem)
    return int(m.group(1)) if m else None


def read_yolo_labels(path: str, width: int, height: int, num_classes: int) -> tuple[list, list[str], int]:
    """(boxes [x1, y1, x2, y2, cls] in pixels clipped to the frame, problems, number of boxes clipped)."""
    boxes, problems, clipped = [], [], 0
    with open(path, encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        parts = line.split()
        try:
            values = [float(p) for p in parts]
        except ValueError:
            values = []
        if len(values) != 5 or not all(np.isfinite(values)):
            problems.append(f"{path}:{n}: not `class cx cy w h` ({line.strip()!r})")
            continue
        cls, cx, cy, w, h = values
        if cls != int(cls) or not 0 <= cls < num_classes:
            problems.append(f"{path}:{n}: class {parts[0]} is not in the class map (0..{num_classes - 1})")
            continue
        if w <= 0 or h <= 0:
            problems.append(f"{path}:{n}: box of size {w} x {h}")
            continue
        x1, y1, x2, y2 = (cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height
        cx1, cy1, cx2, cy2 = max(x1, 0.0), max(y1, 0.0), min(x2, float(width)), min(y2, float(height))
        if cx2 <= cx1 or cy2 <= cy1:
            problems.append(f"{path}:{n}: box ({x1:.1f}, {y1:.1f}, {x2:.1f}, {y2:.1f}) px lies outside the "
                            f"{width} x {height} image")
            continue
        if max(cx1 - x1, cy1 - y1, x2 - cx2, y2 - cy2) > 0.01:  # by more than label rounding
            clipped += 1
        boxes.append([cx1, cy1, cx2, cy2, int(cls)])
    return boxes, problems, clipped


def read_split_list(path: str) -> list[str]:
    with open(path, encoding="utf-8") as handle:
        return [line.strip().strip("/") for line in handle if line.strip()]


# ------------------------------------------------------------------------------------------------------------------
# Scanning and validation


@dataclass
class DetValidationReport(ValidationReport):
    split: str = ""
    modality: str = ""
    sequences: dict = field(default_factory=dict)  # part -> number of sequences
    frames: dict = field(default_factory=dict)  # part -> frames
    boxes: dict = field(default_factory=dict)  # part -> boxes
    empty_frames: dict = field(default_factory=dict)
    clipped: int = 0
    max_pair_gap_ms: float | None = None

    def summary_lines(self) -> list[str]:
        lines = [f"FRED corpus check ({self.split} split, modality {self.modality}): {len(self.problems)} problem(s)"]
        for part in self.frames:
            lines.append(f"  {part}: {self.sequences.get(part, 0)} sequences, {self.frames[part]} frames "
                         f"({self.empty_frames.get(part, 0)} without a drone), {self.boxes.get(part, 0)} boxes")
        if self.clipped:
            lines.append(f"  {self.clipped} boxes clipped to their frame")
        if self.max_pair_gap_ms is not None:
            lines.append(f"  RGB/event pairs by nearest timestamp: largest gap {self.max_pair_gap_ms:.2f} ms")
        return lines


def _frames_of(folder: str, kind: str) -> tuple[list[tuple[int, str]], list[str]]:
    """[(time_us, file name)] sorted by time (numerically), and the names whose time cannot be read."""
    names = [n for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTENSIONS)]
    parse = rgb_time_us if kind == "rgb" else event_time_us
    timed, bad = [], []
    for name in names:
        t = parse(stem_of(name))
        (bad.append(name) if t is None else timed.append((t, name)))
    timed.sort()
    return timed, bad


def _image_size(path: str) -> tuple[int, int] | str:
    from PIL import Image, UnidentifiedImageError

    try:
        if os.path.getsize(path) == 0:
            return "empty file"
        with Image.open(path) as image:
            return image.size
    except (OSError, UnidentifiedImageError, ValueError) as err:
        return f"unreadable ({type(err).__name__}: {err})"


def nearest_pairs(rgb_times: list[int], event_times: list[int]) -> list[tuple[int, int]]:
    """For each RGB time, (index of the event frame nearest in time, |gap| in us); both lists sorted."""
    out = []
    for t in rgb_times:
        i = bisect.bisect_left(event_times, t)
        candidates = [j for j in (i - 1, i) if 0 <= j < len(event_times)]
        j = min(candidates, key=lambda j: (abs(event_times[j] - t), j))
        out.append((j, abs(event_times[j] - t)))
    return out


def _scan_sequence(args: DetDataArguments, seq: str, report: DetValidationReport) -> list[dict]:
    """The frames of one sequence as records (image, event, width, height, boxes, time_us); problems to `report`."""
    folder = args.resolve(seq)
    primary = "event" if args.modality == "event" else "rgb"
    image_dir = os.path.join(folder, args.event_dir if primary == "event" else args.rgb_dir)
    label_dir = os.path.join(folder, args.event_label_dir if primary == "event" else args.rgb_label_dir)
    records = []
    if not os.path.isdir(image_dir):
        report.problems.append(f"sequence {seq}: no frame folder {image_dir}")
        return records
    frames, bad = _frames_of(image_dir, primary)
    for name in bad:
        report.problems.append(f"{os.path.join(image_dir, name)}: no capture time in the name "
                               f"({'Video_<seq>_HH_MM_SS.ffffff' if primary == 'rgb' else 'Video_<seq>_frame_<us>'})")
    if not frames:
        report.problems.append(f"sequence {seq}: no frames in {image_dir}")
        return records
    labels = set(os.listdir(label_dir)) if os.path.isdir(label_dir) else None
    if labels is None:
        report.problems.append(f"sequence {seq}: no label folder {label_dir}")
        return records
    frame_stems = {stem_of(n) for _, n in frames}
    for name in sorted(labels):
        if name.endswith(".txt") and stem_of(name) not in frame_stems:
            report.problems.append(f"{os.path.join(label_dir, name)}: a label file without its frame")
    pairs = None
    if args.modality == "rgb_event":
        event_folder = os.path.join(folder, args.event_dir)
        events = _frames_of(event_folder, "event")[0] if os.path.isdir(event_folder) else []
        if not events:
            report.problems.append(f"sequence {seq}: no event frames in {event_folder} to pair with")
            return records
        origin = frames[0][0] - events[0][0] - int(round(args.rgb_clock_offset_ms * 1000))
        pairs = nearest_pairs([t - origin for t, _ in frames], [t for t, _ in events])
    for k, (t, name) in enumerate(frames):
        path = os.path.join(image_dir, name)
        label = stem_of(name) + ".txt"
        if label not in labels:
            report.problems.append(f"{path}: no label file {os.path.join(label_dir, label)} (an empty file means "
                                   f"no drone)")
            continue
        record = {"sequence": seq, "image": path, "event": None, "time_us": t, "label_path": os.path.join(label_dir,
                                                                                                           label)}
        if pairs is not None:
            j, gap = pairs[k]
            record["event"] = os.path.join(folder, args.event_dir, events[j][1])
            record["pair_gap_us"] = gap
            report.max_pair_gap_ms = max(report.max_pair_gap_ms or 0.0, gap / 1000)
            if gap > args.pair_tolerance_ms * 1000:
                report.problems.append(f"{path}: the nearest event frame {events[j][1]} is {gap / 1000:.1f} ms away "
                                       f"(pair_tolerance_ms {args.pair_tolerance_ms})")
        records.append(record)
    return records


def _check_images(args: DetDataArguments, records: list[dict], report: DetValidationReport) -> None:
    """Every image opened (size, readable), with threads; each record gets width / height; frames of another size
    than their sequence's first are problems."""
    paths = sorted({r["image"] for r in records} | {r["event"] for r in records if r["event"]})
    if args.check_images:
        with ThreadPoolExecutor(max_workers=max(1, args.validate_workers)) as pool:
            sizes = dict(zip(paths, pool.map(_image_size, paths)))
    else:  # one image per sequence and folder: the size of the rest
        sizes = {}
        for r in records:
            for key in ("image", "event"):
                folder = os.path.dirname(r[key]) if r[key] else None
                if folder and folder not in sizes:
                    sizes[folder] = _image_size(r[key])
        sizes = {p: sizes[os.path.dirname(p)] for p in paths}
    for path, size in sizes.items():
        if isinstance(size, str):
            report.problems.append(f"{path}: {size}")
    first = {}
    for r in records:
        size = sizes[r["image"]]
        if isinstance(size, str):
            r["width"] = None
            continue
        r["width"], r["height"] = size
        key = (r["sequence"], os.path.dirname(r["image"]))
        if first.setdefault(key, size) != size:
            report.problems.append(f"{r['image']}: {size[0]} x {size[1]}, the sequence's frames are "
                                   f"{first[key][0]} x {first[key][1]}")
        if r["event"] and not isinstance(sizes[r["event"]], str) and sizes[r["event"]] != size:
            report.problems.append(f"{r['image']}: its event frame {r['event']} is {sizes[r['event']][0]} x "
                                   f"{sizes[r['event']][1]}, the RGB frame {size[0]} x {size[1]}")


def _check_fred(args: DetDataArguments) -> tuple[DetValidationReport, dict[str, list[dict]]]:
    report = DetValidationReport(split=args.split, modality=args.modality)
    lists = {}
    for part, name in (("train", args.train_list), ("test", args.test_list)):
        path = args.list_path(name)
        try:
            lists[part] = list(dict.fromkeys(read_split_list(path)))
        except OSError as err:
            report.problems.append(f"split list {path}: cannot be read ({err.strerror or err})")
            lists[part] = []
    shared = sorted(set(lists["train"]) & set(lists["test"]))
    if shared:
        report.problems.append(f"the {args.split} training and test lists share {len(shared)} sequence(s): "
                               f"{shared[:10]}")
    parts = {}
    for part, seqs in lists.items():
        records = []
        for seq in seqs:
            folder = args.resolve(seq)
            if not os.path.isdir(folder):
                report.problems.append(f"{args.list_path(args.train_list if part == 'train' else args.test_list)}: "
                                       f"sequence {seq!r} does not exist ({folder})")
                continue
            records += _scan_sequence(args, seq, report)
        report.sequences[part] = len(seqs)
        parts[part] = records
    everything = parts["train"] + parts["test"]
    _check_images(args, everything, report)
    for part, records in parts.items():
        kept = []
        for r in records:
            if r.get("width") is None:
                continue
            boxes, problems, clipped = read_yolo_labels(r.pop("label_path"), r["width"], r["height"],
                                                        len(args.class_names))
            report.problems += problems
            report.clipped += clipped
            r["boxes"] = boxes
            kept.append(r)
        parts[part] = kept
        report.frames[part] = len(kept)
        report.boxes[part] = sum(len(r["boxes"]) for r in kept)
        report.empty_frames[part] = sum(1 for r in kept if not r["boxes"])
    return report, parts


def validate_fred(args: DetDataArguments) -> DetValidationReport:
    args.ensure_synthetic()
    return _check_fred(args)[0]


# ------------------------------------------------------------------------------------------------------------------
# Samples


def _read_image(path: str) -> torch.Tensor:
    """(3, H, W) uint8 RGB."""
    from PIL import Image

    with Image.open(path) as image:
        return torch.from_numpy(np.asarray(image.convert("RGB")).copy()).permute(2, 0, 1)


def resize_frame(image: torch.Tensor, size: int) -> torch.Tensor:
    """(C, H, W) uint8 -> (C, size, size) float on the 0-255 scale: the image processor's resize, no aspect kept."""
    import torch.nn.functional as F

    return F.interpolate(image[None].float(), size=(size, size), mode="bilinear", align_corners=False,
                         antialias=True)[0]


def boxes_after_resize(boxes: list, width: int, height: int, size: int) -> np.ndarray:
    """(n, 5) [x1, y1, x2, y2, cls] of the frame in pixels of the `size` x `size` resized frame."""
    out = np.asarray(boxes, np.float64).reshape(-1, 5).copy()
    out[:, [0, 2]] *= size / width
    out[:, [1, 3]] *= size / height
    return out


def keep_boxes(boxes: np.ndarray, before: np.ndarray, size: int) -> np.ndarray:
    """Clip to the image; keep boxes at least 2 px wide and tall with at least 10% of their area before clipping
    (YOLO's box_candidates)."""
    if not len(boxes):
        return boxes.reshape(-1, 5)
    area_before = (before[:, 2] - before[:, 0]) * (before[:, 3] - before[:, 1])
    clipped = boxes.copy()
    clipped[:, [0, 2]] = clipped[:, [0, 2]].clip(0, size)
    clipped[:, [1, 3]] = clipped[:, [1, 3]].clip(0, size)
    w, h = clipped[:, 2] - clipped[:, 0], clipped[:, 3] - clipped[:, 1]
    ok = (w >= 2) & (h >= 2) & (w * h >= 0.1 * area_before)
    return clipped[ok]


def crop_window(image: torch.Tensor, boxes: np.ndarray, x0: int, y0: int, side: int, size: int,
                fill: float = 114.0) -> tuple[torch.Tensor, np.ndarray]:
    """The `side` x `side` window at (x0, y0) of `image` (C, H, W floats; outside filled with `fill`), resized to
    `size`; boxes (n, 5) moved and scaled with it, then clipped and filtered."""
    import torch.nn.functional as F

    channels, height, width = image.shape
    canvas = torch.full((channels, side, side), fill, dtype=image.dtype)
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x0 + side, width), min(y0 + side, height)
    if sx1 > sx0 and sy1 > sy0:
        canvas[:, sy0 - y0: sy1 - y0, sx0 - x0: sx1 - x0] = image[:, sy0:sy1, sx0:sx1]
    if side != size:
        canvas = F.interpolate(canvas[None], size=(size, size), mode="bilinear", align_corners=False,
                               antialias=side > size)[0]
    scale = size / side
    moved = boxes.copy()
    moved[:, [0, 2]] = (moved[:, [0, 2]] - x0) * scale
    moved[:, [1, 3]] = (moved[:, [1, 3]] - y0) * scale
    return canvas, keep_boxes(moved, moved.copy(), size)


def hsv_jitter(rgb: torch.Tensor, gains: np.ndarray) -> torch.Tensor:
    """(3, H, W) floats 0-255 with hue shifted by gains[0] (of the circle) and saturation / value multiplied by
    gains[1] / gains[2] (YOLO's augment_hsv)."""
    x = (rgb / 255.0).clamp(0, 1)
    r, g, b = x[0], x[1], x[2]
    maxc, _ = x.max(0)
    minc, _ = x.min(0)
    v = maxc
    delta = maxc - minc
    s = torch.where(maxc > 0, delta / maxc.clamp_min(1e-12), torch.zeros_like(maxc))
    safe = delta.clamp_min(1e-12)
    h = torch.where(maxc == r, ((g - b) / safe) % 6, torch.where(maxc == g, (b - r) / safe + 2, (r - g) / safe + 4))
    h = torch.where(delta > 0, h / 6, torch.zeros_like(h))
    h = (h + gains[0]) % 1.0
    s = (s * gains[1]).clamp(0, 1)
    v = (v * gains[2]).clamp(0, 1)
    i = torch.floor(h * 6)
    f = h * 6 - i
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    i = i.long() % 6
    out_r = torch.stack([v, q, p, p, t, v])[i, torch.arange(h.shape[0])[:, None], torch.arange(h.shape[1])[None]]
    out_g = torch.stack([t, v, v, q, p, p])[i, torch.arange(h.shape[0])[:, None], torch.arange(h.shape[1])[None]]
    out_b = torch.stack([p, p, t, v, v, q])[i, torch.arange(h.shape[0])[:, None], torch.arange(h.shape[1])[None]]
    return torch.stack([out_r, out_g, out_b]) * 255.0


class DetSampleTransform(RowTransform, EpochSeeded):
    """One frame (or a mosaic / mixup of frames) at `size` x `size` with its boxes. Keys: pixel_values (C, S, S)
    float32 in [0, 1], labels {class_labels (n,), boxes (n, 4) normalised cx cy w h} (the RT-DETR convention),
    image_id (1-based index of the frame in its split), orig_size (H, W)."""

    def __init__(self, records: list[dict], args: DetDataArguments, train: bool, seed: int = 0):
        self.records, self.args, self.train, self.seed = records, args, train, seed
        self.size = args.image_size
        EpochSeeded.__init__(self)  # the epoch of the whole run (the trainer's epoch hooks count the phases before)

    def _frame(self, index: int) -> tuple[torch.Tensor, np.ndarray]:
        r = self.records[index]
        image = _read_image(r["image"])
        if r["event"]:
            image = torch.cat([image, _read_image(r["event"])])
        return resize_frame(image, self.size), boxes_after_resize(r["boxes"], r["width"], r["height"], self.size)

    def _scaled(self, image, boxes, generator, center: float) -> tuple[torch.Tensor, np.ndarray]:
        """Random zoom and shift: a window of side size / scale around `center` (+ shift), resized to size."""
        low, high = self.args.scale_range
        scale = low + (high - low) * float(torch.rand((), generator=generator))
        side = max(8, int(round(self.size / scale)))
        shift = self.args.translate * self.size
        cx = center + (2 * float(torch.rand((), generator=generator)) - 1) * shift
        cy = center + (2 * float(torch.rand((), generator=generator)) - 1) * shift
        return crop_window(image, boxes, int(round(cx - side / 2)), int(round(cy - side / 2)), side, self.size)

    def _mosaic(self, index: int, generator) -> tuple[torch.Tensor, np.ndarray]:
        s = self.size
        others = torch.randint(0, len(self.records), (3,), generator=generator).tolist()
        xc = int(s * (0.5 + float(torch.rand((), generator=generator))))
        yc = int(s * (0.5 + float(torch.rand((), generator=generator))))
        canvas = None
        all_boxes = []
        for k, i in enumerate([index] + others):
            image, boxes = self._frame(i)
            if canvas is None:
                canvas = torch.full((image.shape[0], 2 * s, 2 * s), 114.0)
            x0, y0 = (xc - s if k in (0, 2) else xc), (yc - s if k in (0, 1) else yc)
            sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x0 + s, 2 * s), min(y0 + s, 2 * s)
            canvas[:, sy0:sy1, sx0:sx1] = image[:, sy0 - y0: sy1 - y0, sx0 - x0: sx1 - x0]
            moved = boxes.copy()
            moved[:, [0, 2]] += x0
            moved[:, [1, 3]] += y0
            before = moved.copy()
            moved[:, [0, 2]] = moved[:, [0, 2]].clip(sx0, sx1)
            moved[:, [1, 3]] = moved[:, [1, 3]].clip(sy0, sy1)
            all_boxes.append(keep_boxes(moved, before, 2 * s))
        return self._scaled(canvas, np.concatenate(all_boxes), generator, center=s)

    def _augmented(self, index: int, generator, epoch: int) -> tuple[torch.Tensor, np.ndarray]:
        a = self.args
        mosaic = a.mosaic_prob > 0 and (a.mosaic_stop_epoch is None or epoch < a.mosaic_stop_epoch)
        if mosaic and float(torch.rand((), generator=generator)) < a.mosaic_prob:
            return self._mosaic(index, generator)
        image, boxes = self._frame(index)
        return self._scaled(image, boxes, generator, center=self.size / 2)

    def sample(self, index: int) -> tuple[torch.Tensor, np.ndarray]:
        """(image (C, S, S) floats 0-255, boxes (n, 5) pixels) of frame `index` as training or evaluation reads it."""
        if not self.train:
            return self._frame(index)
        from .video_io import clip_generator

        a = self.args
        epoch = self.epoch
        generator = clip_generator(self.seed, self.epoch, index)
        image, boxes = self._augmented(index, generator, epoch)
        mixup = a.mixup_prob > 0 and (a.mixup_stop_epoch is None or epoch < a.mixup_stop_epoch)
        if mixup and float(torch.rand((), generator=generator)) < a.mixup_prob:
            other = int(torch.randint(0, len(self.records), (), generator=generator))
            image2, boxes2 = self._augmented(other, generator, epoch)
            # YOLO's ratio ~ Beta(32, 32), drawn from the sample's own generator
            ratio = float(np.random.default_rng(int(torch.randint(0, 2**31, (), generator=generator))).beta(32, 32))
            image = image * ratio + image2 * (1 - ratio)
            boxes = np.concatenate([boxes, boxes2])
        if any(a.hsv_gains):
            gains = 1 + (2 * torch.rand(3, generator=generator).numpy() - 1) * np.asarray(a.hsv_gains)
            gains[0] -= 1  # hue: a shift, not a factor
            image = torch.cat([hsv_jitter(image[:3], gains), image[3:]])
        if float(torch.rand((), generator=generator)) < a.flip_prob:
            image = image.flip(-1)
            boxes = boxes.copy()
            boxes[:, [0, 2]] = self.size - boxes[:, [2, 0]]
        return image, boxes

    def transform_row(self, row: dict) -> dict:
        index = int(row["index"])
        image, boxes = self.sample(index)
        r = self.records[index]
        s = float(self.size)
        b = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 5)
        cxcywh = torch.stack([(b[:, 0] + b[:, 2]) / 2 / s, (b[:, 1] + b[:, 3]) / 2 / s, (b[:, 2] - b[:, 0]) / s,
                              (b[:, 3] - b[:, 1]) / s], dim=1)
        return {"pixel_values": (image / 255.0).clamp(0, 1).to(torch.float32),
                "labels": {"class_labels": b[:, 4].long(), "boxes": cxcywh},
                "image_id": torch.tensor(index + 1, dtype=torch.long),
                "orig_size": torch.tensor([r["height"], r["width"]], dtype=torch.long)}


def collate_det(samples: list[dict]) -> dict:
    """pixel_values (B, C, S, S), labels a list of per-image dicts (the RT-DETR convention), image_id (B,),
    orig_size (B, 2)."""
    return {"pixel_values": torch.stack([s["pixel_values"] for s in samples]),
            "labels": [s["labels"] for s in samples],
            "image_id": torch.stack([s["image_id"] for s in samples]),
            "orig_size": torch.stack([s["orig_size"] for s in samples])}


@dataclass
class DetCorpus:
    train_dataset: Any
    eval_dataset: Any
    class_names: list[str]
    train_records: list[dict]
    eval_records: list[dict]
    report: DetValidationReport
    train_transform: DetSampleTransform
    eval_transform: DetSampleTransform

    def set_epoch(self, epoch: int) -> None:
        self.train_transform.set_epoch(epoch)

    def coco_ground_truth(self) -> dict:
        """The evaluation frames as COCO ground truth: image id = 1-based index, every frame, also empty ones."""
        from ..metrics.det import coco_ground_truth

        images = [{"id": i + 1, "width": r["width"], "height": r["height"], "file_name": r["image"]}
                  for i, r in enumerate(self.eval_records)]
        return coco_ground_truth(images, [r["boxes"] for r in self.eval_records], self.class_names)


def corpus_features(class_names: list[str]):
    """The typed columns of `load_corpus`: one row per frame (RGB, or event frames, or the pair), boxes in pixels of
    the stored frame as [x1, y1, x2, y2], an empty list for a frame without a drone."""
    import datasets

    return datasets.Features({
        "sequence": datasets.Value("string"),
        "image": datasets.Image(),  # the frame's file (decoded on access); the RGB frame for rgb_event
        "event": datasets.Image(),  # rgb_event: the paired event frame; else None
        "time_us": datasets.Value("int64"),  # capture time on the sequence clock
        "width": datasets.Value("int64"),
        "height": datasets.Value("int64"),
        "boxes": datasets.List(datasets.List(datasets.Value("float64"), length=4)),
        "labels": datasets.List(datasets.ClassLabel(names=list(class_names))),
    })


def _validated_corpus(args: DetDataArguments):
    """(DatasetDict "train" / "test" with train_frame_stride and the max_*_frames caps applied; the validation
    report). Generates the synthetic corpus first when asked; every corpus problem is one CorpusError."""
    import datasets

    args.ensure_synthetic()
    report, parts = _check_fred(args)
    if not report.ok:
        raise CorpusError(report)
    train = parts["train"]
    if args.train_frame_stride > 1:
        by_seq: dict[str, list] = {}
        for r in train:
            by_seq.setdefault(r["sequence"], []).append(r)
        train = [r for seq in by_seq.values() for r in seq[:: args.train_frame_stride]]
    splits = {"train": train[: args.max_train_frames], "test": parts["test"][: args.max_eval_frames]}
    features = corpus_features(args.class_names)
    return datasets.DatasetDict({
        part: datasets.Dataset.from_dict({
            "sequence": [r["sequence"] for r in rows], "image": [r["image"] for r in rows],
            "event": [r["event"] for r in rows], "time_us": [int(r["time_us"]) for r in rows],
            "width": [r["width"] for r in rows], "height": [r["height"] for r in rows],
            "boxes": [[list(b[:4]) for b in r["boxes"]] for r in rows],
            "labels": [[int(b[4]) for b in r["boxes"]] for r in rows],
        }, features=features)
        for part, rows in splits.items()
    }), report


def load_corpus(source, **overrides):
    """FRED in its published layout as a typed `datasets.DatasetDict` ("train", "test": one row per frame of the
    recipe's modality, frames as `datasets.Image`, boxes as sequences, classes as ClassLabel), validated as a run
    validates it; the one the det task builds its samples from. `source`: a recipe file, a mapping of data keys, or
    DetDataArguments."""
    from .common import data_arguments_from

    return _validated_corpus(data_arguments_from(DetDataArguments, source, **overrides))[0]


def _records(dataset) -> list[dict]:
    """A `load_corpus` split as the samples' records, read from its Arrow columns (no frame decoded)."""
    table = dataset.data
    columns = {name: table.column(name).to_pylist() for name in ("sequence", "time_us", "width", "height", "boxes",
                                                                 "labels")}
    images = [cell["path"] for cell in table.column("image").to_pylist()]
    events = [cell["path"] if cell else None for cell in table.column("event").to_pylist()]
    return [{"sequence": columns["sequence"][i], "image": images[i], "event": events[i],
             "time_us": columns["time_us"][i], "width": columns["width"][i], "height": columns["height"][i],
             "boxes": [(*box, label) for box, label in zip(columns["boxes"][i], columns["labels"][i])]}
            for i in range(len(images))]


def load_fred(args: DetDataArguments, seed: int = 0) -> DetCorpus:
    import datasets

    corpus, report = _validated_corpus(args)
    train, test = _records(corpus["train"]), _records(corpus["test"])
    transforms = {"train": DetSampleTransform(train, args, train=True, seed=seed),
                  "test": DetSampleTransform(test, args, train=False)}
    tables = {}
    for part, records in (("train", train), ("test", test)):
        tables[part] = datasets.Dataset.from_dict({"index": list(range(len(records))),
                                                   "sequence": [r["sequence"] for r in records]})
        tables[part].set_transform(transforms[part])
    return DetCorpus(train_dataset=tables["train"], eval_dataset=tables["test"], class_names=list(args.class_names),
                     train_records=train, eval_records=test, report=report, train_transform=transforms["train"],
                     eval_transform=transforms["test"])
