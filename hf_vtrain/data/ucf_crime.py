"""UCF-Crime video anomaly detection corpus with FG-CLIP training records: validation, the training-clip and
test-video datasets and their batch collators.

Conventions:
- Training records (FG-CLIP video records, README "UCF-Crime") are JSON objects {"video", "global_caption",
  "region_captions", "box_infos", "timestamps"} plus the optional "short_caption" (FG-CLIP's second global caption;
  absent: the first sentence of the global caption, `first_sentence`) and "region_negatives" (per region a list of K
  hard-negative captions, K = 10 in FG-CLIP, written by scripts/make_hard_negatives.py; [] or null for a region
  without). "video" is found by `common.VideoLocator` (under `video_dir`, ...); keyframe "frame"s are
  0-based frame numbers of the whole video (not of the clip); boxes are normalised xyxy; "timestamps" is null (the
  whole video) or [start, end] in seconds, i.e. frames round(start * fps) .. round(end * fps) - 1.
- Training clips: `num_frames` frames at round(linspace(first, last, num_frames)) (the first and last frame of the
  clip are always sampled); a clip shorter than that gives all its frames, then padding (the last frame repeated,
  `pixel_mask` False). Region boxes are interpolated linearly between the region's keyframes at the sampled frames;
  a frame before the first or after the last keyframe has no box.
- Frames (train and test): `resize_mode` squash (FG-CLIP's: the whole frame to `image_size` x `image_size`, boxes keep
  their normalised coordinates) or short_side_crop (short side to `image_size`, centre crop; video_io's
  resize_short_side + center_crop, offsets ((H - h) // 2, (W - w) // 2); boxes mapped into crop coordinates and
  clipped to [0, 1], a box left empty by the crop is absent), uint8. Training flips the clip
  horizontally with `flip_prob` (default 0: captions may say "left"/"right"); boxes are mirrored with it.
- Evaluation: one row per test video, in test-list order (= `video_index`). A video of F frames has
  max(F // 16, 1) snippets (metrics/vad: the partial last snippet is dropped; `expand_snippet_scores` accepts it
  and the ground truth covers 16 x snippets frames). One frame per snippet is fed: its centre frame 16 i + 8. Beyond
  `max_eval_snippets`, the snippets are split into that many contiguous groups and each group is represented by
  the centre frame of its middle snippet; `expand_eval_scores` repeats the group scores back to one per snippet.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Optional

import numpy as np
import torch

from ..metrics.vad import SNIPPET_FRAMES, read_temporal_annotation, read_test_list, video_key
from .common import (
    CorpusArguments,
    CorpusError,
    EpochSeeded,
    RowTransform,
    ValidationReport,
    VideoLocator,
    is_finite_number,
    probe_file,
)
from .video_io import (
    ReaderCache,
    center_crop,
    clip_generator,
    decode_smaller,
    resize,
    resize_short_side,
    shrinking_short_side,
)

logger = logging.getLogger(__name__)

NORMAL_CLASS = "Normal"
CLIP_PAD_TOKEN_ID = 49407  # <|endoftext|>, the pad token of the OpenAI CLIP tokenizers

__all__ = [
    "CorpusError",
    "VADCorpus",
    "VADDataArguments",
    "VADEvalTransform",
    "VADTrainTransform",
    "VADValidationReport",
    "collate_vad_eval",
    "collate_vad_train",
    "crop_boxes",
    "eval_frame_indices",
    "expand_eval_scores",
    "flip_boxes",
    "interpolate_boxes",
    "is_non_english",
    "load_ucf_crime",
    "num_video_snippets",
    "resize_center_crop",
    "uniform_frame_indices",
    "validate_ucf_crime",
    "video_class",
]


# ----------------------------------------------------------------------------------------------- arguments


@dataclass
class VADDataArguments(CorpusArguments):
    """Where a UCF-Crime-format anomaly corpus lives and how training clips and test videos are read from it."""

    SYNTHETIC_WRITER = ".synthetic_ucf_crime:ensure_synthetic_ucf_crime"

    train_json: str = field(
        default="ucf_fgclip_train.json",
        metadata={"help": "Training records: a JSON list of {video, global_caption, region_captions, box_infos, "
                  "timestamps[, region_negatives]} (README, \"UCF-Crime\")."},
    )  # fmt: skip
    video_dir: str = field(
        default="videos",
        metadata={"help": "Folder the records' and lists' video paths are in. A path is looked for under video_dir, "
                  "then data_root, then as given, then by its file name under video_dir (UCF-Crime names are "
                  "unique; two files of one name are an error naming both)."},
    )  # fmt: skip
    train_list: Optional[str] = field(
        default=None, metadata={"help": "Anomaly_Train.txt; when given, every training record's video must be in it."}
    )
    test_list: str = field(
        default="Anomaly_Test.txt", metadata={"help": "Anomaly_Test.txt: the test videos, in evaluation order."}
    )
    test_annotation: str = field(
        default="Temporal_Anomaly_Annotation_for_Testing_Videos.txt",
        metadata={"help": "Frame-level test annotation (`name class s1 e1 s2 e2`, -1 for none)."},
    )
    num_frames: int = field(
        default=256, metadata={"help": "Frames sampled uniformly over each training clip (64 debug, 8-16 CPU demo)."}
    )
    image_size: int = field(default=224, metadata={"help": "Frames become image_size x image_size (resize_mode)."})
    resize_mode: str = field(
        default="squash",
        metadata={"help": "'squash': the whole frame resized to image_size x image_size, aspect ratio not kept, as "
                  "FG-CLIP trains (nothing of the frame or its boxes is cut); 'short_side_crop': short side to "
                  "image_size, then a centre crop (OpenAI CLIP's preprocessing; boxes clipped to the crop)."},
    )  # fmt: skip
    flip_prob: float = field(
        default=0.0,
        metadata={"help": "Training: horizontal flip probability (boxes mirrored); 0 by default because captions "
                  "may name left and right."},
    )  # fmt: skip
    max_regions: int = field(default=4, metadata={"help": "Regions per training sample at most (FG-CLIP: 4)."})
    max_caption_tokens: int = field(
        default=248, metadata={"help": "Global captions are truncated to this many tokens (FG-CLIP long text)."}
    )
    max_region_tokens: int = field(
        default=77, metadata={"help": "Region captions and hard negatives are truncated to this many tokens."}
    )
    max_eval_snippets: Optional[int] = field(
        default=None,
        metadata={"help": "None: every 16-frame snippet of a test video is scored (one fed frame each). A number caps "
                  "the frames fed per video: a longer video is split into that many groups of snippets, each scored "
                  "once and repeated over its snippets (a memory bound for very long videos)."},
    )  # fmt: skip
    tokenizer_name_or_path: Optional[str] = field(
        default=None, metadata={"help": "CLIP tokenizer folder or Hub id (usually the CLIP checkpoint folder)."}
    )
    drop_test_videos_from_train: bool = field(
        default=False,
        metadata={"help": "False: a training record whose video is in the test list is an error; True: such "
                  "records are dropped and counted."},
    )  # fmt: skip
    non_english_captions: str = field(
        default="keep",
        metadata={"help": "'keep' (counted per class and reported; CLIP's BPE sees raw bytes) or 'translate' "
                  "(replaced through translation_file; a caption missing there is an error)."},
    )  # fmt: skip
    translation_file: Optional[str] = field(
        default=None, metadata={"help": "JSON {original caption: English caption} for non_english_captions: translate."}
    )
    max_train_videos: Optional[int] = field(
        default=None, metadata={"help": "Debug: records of the first n training videos only."}
    )
    max_test_videos: Optional[int] = field(default=None, metadata={"help": "Debug: first n test videos."})
    decode_threads: int = field(default=1, metadata={"help": "decord threads per reader."})
    validate_decode_last_frame: bool = field(
        default=True, metadata={"help": "Validation decodes each video's last frame besides opening it."}
    )
    validate_workers: int = field(default=4, metadata={"help": "Threads probing videos during validation."})
    synthetic_num_train_normal: int = field(default=8, metadata={"help": "Synthetic: normal training videos."})
    synthetic_num_train_anomalous: int = field(default=12, metadata={"help": "Synthetic: anomalous training videos."})
    synthetic_num_test_normal: int = field(default=6, metadata={"help": "Synthetic: normal test videos."})
    synthetic_num_test_anomalous: int = field(default=6, metadata={"help": "Synthetic: anomalous test videos."})
    synthetic_anomaly_classes: list[str] = field(
        default_factory=lambda: ["Abuse", "Arson", "Fighting"],
        metadata={"help": "Synthetic: anomaly classes (among the 13 official)."},
    )
    synthetic_fps: int = field(default=15, metadata={"help": "Synthetic: frames per second."})
    synthetic_height: int = field(default=64, metadata={"help": "Synthetic: frame height (even)."})
    synthetic_width: int = field(default=96, metadata={"help": "Synthetic: frame width (even)."})
    synthetic_min_duration: float = field(default=8.0, metadata={"help": "Synthetic: shortest video, seconds."})
    synthetic_max_duration: float = field(default=14.0, metadata={"help": "Synthetic: longest video, seconds."})
    synthetic_num_chinese_captions: int = field(
        default=0, metadata={"help": "Synthetic: anomalous records with a Chinese global caption."}
    )
    synthetic_num_region_negatives: int = field(
        default=4, metadata={"help": "Synthetic: hard-negative captions per region (0: none)."}
    )
    synthetic_seed: int = field(default=0, metadata={"help": "Synthetic: generator seed."})
    synthetic_free_captions: bool = field(
        default=False, metadata={"help": "Synthetic: captions in free words that never name a class or say "
                                         "'normal' (the prompts' words appear in none)."},
    )

    def __post_init__(self):
        super().__post_init__()
        for name in ("num_frames", "image_size", "max_regions", "max_caption_tokens", "max_region_tokens",
                     "max_eval_snippets", "decode_threads", "validate_workers"):  # fmt: skip
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize_mode must be one of {', '.join(RESIZE_MODES)}, got {self.resize_mode!r}")
        if not 0.0 <= self.flip_prob <= 1.0:
            raise ValueError(f"flip_prob must be in [0, 1], got {self.flip_prob}")
        if self.non_english_captions not in ("keep", "translate"):
            raise ValueError(f"non_english_captions must be 'keep' or 'translate', got {self.non_english_captions!r}")
        if self.non_english_captions == "translate" and not self.translation_file:
            raise ValueError("non_english_captions: translate needs translation_file")


# ----------------------------------------------------------------------------------------------- validation


@dataclass
class VADValidationReport(ValidationReport):
    train_json: str = ""
    num_records: int = 0  # training records kept
    num_train_videos: int = 0
    num_test_videos: int = 0
    records_per_class: dict[str, int] = field(default_factory=dict)
    caption_language_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    dropped_test_videos: list[str] = field(default_factory=list)

    def summary_lines(self) -> list[str]:
        per_class = ", ".join(f"{c}: {n}" for c, n in sorted(self.records_per_class.items()))
        return [
            f"UCF-Crime corpus check of {self.train_json}: {self.num_records} training records of "
            f"{self.num_train_videos} videos ({per_class or 'none'}), {self.num_test_videos} test videos"
        ]


def video_class(path: str) -> str:
    """Class of a video from its path: the folder (`Abuse/Abuse028_x264.mp4` -> Abuse); normal videos ->
    "Normal"; without a folder, the letters before the number (`Arson011_x264` -> Arson)."""
    norm = path.strip().replace("\\", "/")
    folder = os.path.basename(os.path.dirname(norm))
    base = os.path.basename(norm)
    if "normal" in folder.lower() or base.lower().startswith("normal"):
        return NORMAL_CLASS
    if folder:
        return folder
    letters = ""
    for ch in base:
        if not ch.isalpha():
            break
        letters += ch
    return letters or "Unknown"


_SENTENCE_END = re.compile(r"[.!?](?=\s|$)|[\u3002\uff01\uff1f]")


def first_sentence(caption: str) -> str:
    """The short caption of a record that has none (FG-CLIP trains a short caption beside the long one): the global
    caption up to and including its first sentence end (. ! ? followed by a space or the end, or a CJK 。！？),
    else the whole caption."""
    text = " ".join(caption.split())
    match = _SENTENCE_END.search(text)
    return text[: match.end()] if match else text


def is_non_english(text: str) -> bool:
    """True when the text holds a letter outside ASCII (Chinese, accented Latin, ...); punctuation does not count."""
    return any(ord(ch) > 127 and ch.isalpha() for ch in text)


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


@dataclass
class _Record:
    entry: int
    video: str
    key: str
    path: str
    class_name: str
    global_caption: str
    region_captions: list
    keyframes: list  # per region: [[frame, x1, y1, x2, y2], ...] sorted by frame
    negatives: list  # per region: list of captions ([] for none)
    timestamps: Optional[tuple]
    short_caption: str = ""  # the record's own, else the first sentence of the global caption (first_sentence)
    short_given: bool = False  # the record has its own short caption (a derived one is not counted as a caption)
    clip_start: int = 0
    clip_end: int = 0
    valid: bool = True  # False: a structure problem was reported; the video checks still run, loading does not


def _read_list(path: str, problems: list[str], what: str) -> Optional[list[tuple[str, str, int]]]:
    """(relative path, key, line) of a split file; keys and duplicates are checked by metrics/vad's reader."""
    if not os.path.isfile(path):
        problems.append(f"{path}: {what} not found")
        return None
    try:
        read_test_list(path)
    except ValueError as err:
        problems.append(str(err))
    out = []
    with open(path, encoding="utf-8-sig") as f:
        for lineno, line in enumerate(f, start=1):
            entry = line.strip()
            if entry and not entry.startswith("#"):
                out.append((entry, video_key(entry), lineno))
    return out


def _parse_record(i: int, raw: Any, where: str, locate, problems: list[str]) -> Optional[_Record]:
    """Structure checks of one training record (no video needed). None when it cannot even be checked against
    its video; `valid` False when it has problems (reported) but its video is still checked."""
    if not isinstance(raw, dict):
        problems.append(f"{where}: not a JSON object")
        return None
    bad = False
    video = raw.get("video")
    if not isinstance(video, str) or not video.strip():
        problems.append(f"{where}: 'video' must be a non-empty path, got {video!r}")
        return None
    caption = raw.get("global_caption")
    if not isinstance(caption, str) or not caption.strip():
        problems.append(f"{where}: 'global_caption' is empty or not a string ({caption!r})")
        bad = True
    region_captions = raw.get("region_captions", [])
    box_infos = raw.get("box_infos", [])
    if region_captions is None:
        region_captions = []
    if box_infos is None:
        box_infos = []
    if not isinstance(region_captions, list) or not isinstance(box_infos, list):
        problems.append(f"{where}: 'region_captions' and 'box_infos' must be lists")
        return None
    if len(region_captions) != len(box_infos):
        problems.append(
            f"{where}: {len(region_captions)} region caption(s) but {len(box_infos)} box_infos entries (one per region)"
        )
        bad = True
    for r, text in enumerate(region_captions):
        if not isinstance(text, str) or not text.strip():
            problems.append(f"{where}: region {r}: caption is empty or not a string ({text!r})")
            bad = True
    keyframes = []
    for r, boxes in enumerate(box_infos):
        at = f"{where}: region {r}"
        if not isinstance(boxes, list):
            problems.append(f"{at}: box_infos entry must be a list of {{frame, bbox}}")
            bad = True
            continue
        kf = []
        for j, box in enumerate(boxes):
            if not isinstance(box, dict):
                problems.append(f"{at}: keyframe {j}: not an object {{frame, bbox}}")
                bad = True
                continue
            frame, bbox = box.get("frame"), box.get("bbox")
            if not _is_int(frame) or frame < 0:
                problems.append(f"{at}: keyframe {j}: 'frame' must be an integer >= 0, got {frame!r}")
                bad = True
                continue
            if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4 and all(map(is_finite_number, bbox))):
                problems.append(f"{at}: keyframe {j} (frame {frame}): 'bbox' must be 4 numbers, got {bbox!r}")
                bad = True
                continue
            x1, y1, x2, y2 = map(float, bbox)
            if min(x1, y1, x2, y2) < 0.0 or max(x1, y1, x2, y2) > 1.0:
                problems.append(f"{at}: keyframe {j} (frame {frame}): bbox {list(bbox)} is outside [0, 1] "
                                "(normalised x1, y1, x2, y2)")  # fmt: skip
                bad = True
            if x2 <= x1 or y2 <= y1:
                problems.append(f"{at}: keyframe {j} (frame {frame}): bbox {list(bbox)} has x2 <= x1 or y2 <= y1")
                bad = True
            kf.append([float(frame), x1, y1, x2, y2])
        kf.sort(key=lambda k: k[0])
        keyframes.append(kf)
    negatives_raw = raw.get("region_negatives")
    negatives = [[] for _ in region_captions]
    if negatives_raw is not None:
        if not isinstance(negatives_raw, list) or len(negatives_raw) != len(region_captions):
            problems.append(f"{where}: 'region_negatives' must be a list with one entry per region "
                            f"({len(region_captions)})")  # fmt: skip
            bad = True
        else:
            for r, negs in enumerate(negatives_raw):
                if negs is None:
                    continue
                if not isinstance(negs, list) or not all(isinstance(t, str) and t.strip() for t in negs):
                    problems.append(f"{where}: region {r}: 'region_negatives' must be a list of non-empty captions")
                    bad = True
                    continue
                negatives[r] = list(negs)
    timestamps = raw.get("timestamps")
    if timestamps is not None:
        if not (isinstance(timestamps, (list, tuple)) and len(timestamps) == 2 and all(map(is_finite_number, timestamps))):
            problems.append(f"{where}: 'timestamps' must be null or [start, end] seconds, got {timestamps!r}")
            bad = True
            timestamps = None
        else:
            timestamps = (float(timestamps[0]), float(timestamps[1]))
            if timestamps[0] < 0 or timestamps[0] >= timestamps[1]:
                problems.append(f"{where}: timestamps {list(timestamps)} must have 0 <= start < end")
                bad = True
    short = raw.get("short_caption")
    if short is not None and (not isinstance(short, str) or not short.strip()):
        problems.append(f"{where}: 'short_caption' must be a non-empty string when given, got {short!r}")
        bad = True
    caption = caption if isinstance(caption, str) else ""
    given = isinstance(short, str) and bool(short.strip())
    short = short.strip() if given else first_sentence(caption)
    return _Record(i, video.strip(), video_key(video), locate(video.strip()), video_class(video), caption,
                   [t if isinstance(t, str) else "" for t in region_captions], keyframes, negatives, timestamps,
                   short, given, valid=not bad)  # fmt: skip


def _check_corpus(args: VADDataArguments):
    """Everything validate_ucf_crime reports, plus the parsed records and test videos load_ucf_crime uses."""
    train_json = args.resolve(args.train_json)
    report = VADValidationReport(train_json=train_json)
    problems = report.problems

    # 1. test list and annotation
    test_list_path = args.resolve(args.test_list)
    test_entries = _read_list(test_list_path, problems, "test list") or []
    test_keys = {key: lineno for _, key, lineno in test_entries}
    ann_path = args.resolve(args.test_annotation)
    annotations: dict = {}
    if not os.path.isfile(ann_path):
        problems.append(f"{ann_path}: test annotation file not found")
    else:
        try:
            annotations = read_temporal_annotation(ann_path)
        except ValueError as err:
            problems.append(str(err))
    train_keys = None
    if args.train_list:
        train_list_path = args.resolve(args.train_list)
        train_entries = _read_list(train_list_path, problems, "train list")
        if train_entries is not None:
            train_keys = {key for _, key, _ in train_entries}
            for rel, key, lineno in train_entries:
                if key in test_keys:
                    problems.append(f"{train_list_path}:{lineno}: '{rel}' is also in the test list "
                                    f"{test_list_path}:{test_keys[key]}")  # fmt: skip

    # 2. training records (structure)
    raw_records = None
    if not os.path.isfile(train_json):
        problems.append(f"{train_json}: training records file not found")
    else:
        try:
            with open(train_json, encoding="utf-8") as f:
                raw_records = json.load(f)
        except (ValueError, UnicodeDecodeError) as err:
            problems.append(f"{train_json}: not valid JSON ({err})")
        if raw_records is not None and not isinstance(raw_records, list):
            problems.append(f"{train_json}: expected a JSON list of records, got {type(raw_records).__name__}")
            raw_records = None
    locator = VideoLocator(args.resolve(args.video_dir), args.data_root)
    located: dict[str, str] = {}  # path -> why it is not found (missing, or its file name is ambiguous)

    def locate(name: str) -> str:
        path, problem = locator.locate(name)
        if problem:
            located[path] = problem
        return path

    records: list[_Record] = []
    dropped = Counter()
    for i, raw in enumerate(raw_records or []):
        where = f"{train_json}: entry {i}"
        if isinstance(raw, dict) and isinstance(raw.get("video"), str):
            where += f" ('{raw['video']}')"
            key = video_key(raw["video"])
            if key in test_keys:  # the leakage trap: a public FG-CLIP-for-UCF training set held 140 of the 290 test videos
                if args.drop_test_videos_from_train:
                    dropped[key] += 1
                    continue
                problems.append(f"{where}: video is in the test list ({test_list_path}:{test_keys[key]}): training "
                                "on test videos leaks; remove it or set drop_test_videos_from_train: true")  # fmt: skip
                continue
            if train_keys is not None and key not in train_keys:
                problems.append(f"{where}: video is not in the train list {args.resolve(args.train_list)}")
        record = _parse_record(i, raw, where, locate, problems)
        if record is not None:
            records.append(record)
    if dropped:
        report.dropped_test_videos = sorted(dropped)
        message = (f"dropped {sum(dropped.values())} training record(s) of {len(dropped)} video(s) that are in the "
                   f"test list (drop_test_videos_from_train: true)")  # fmt: skip
        report.notes.append(message)
        logger.warning("ucf_crime: %s", message)
    ks = {len(n) for r in records for n in r.negatives if n}
    if len(ks) > 1:
        problems.append(f"{train_json}: region_negatives hold different numbers of captions per region {sorted(ks)}; "
                        "the hard-negative batch needs one K")  # fmt: skip

    # 3. captions: non-English counted per class; optionally translated
    translations = None
    if args.non_english_captions == "translate":
        tpath = args.resolve(args.translation_file)
        try:
            with open(tpath, encoding="utf-8") as f:
                translations = json.load(f)
            if not isinstance(translations, dict):
                problems.append(f"{tpath}: expected a JSON object {{original: english}}")
                translations = {}
        except OSError:
            problems.append(f"{tpath}: translation file not found")
            translations = {}
        except ValueError as err:
            problems.append(f"{tpath}: not valid JSON ({err})")
            translations = {}
    counts: dict[str, dict[str, int]] = {}
    for record in records:
        c = counts.setdefault(record.class_name, {"captions": 0, "non_english": 0})
        texts = [("global caption", record.global_caption)]
        texts += [("short caption", record.short_caption)] if record.short_given else []
        texts += [(f"region {r} caption", t) for r, t in enumerate(record.region_captions)]
        texts += [(f"region {r} negative {k}", t) for r, n in enumerate(record.negatives) for k, t in enumerate(n)]
        for what, text in texts:
            c["captions"] += 1
            if not is_non_english(text):
                continue
            c["non_english"] += 1
            if translations is not None:
                english = translations.get(text)
                if not isinstance(english, str) or not english.strip():
                    problems.append(f"{train_json}: entry {record.entry} ('{record.video}'): {what} {text!r} is not "
                                    f"in the translation file {args.resolve(args.translation_file)}")  # fmt: skip
    if translations is not None:
        for record in records:
            tr = lambda t: translations.get(t, t) if is_non_english(t) else t  # noqa: E731
            record.global_caption = tr(record.global_caption)
            record.short_caption = tr(record.short_caption) if record.short_given else first_sentence(
                record.global_caption)
            record.region_captions = [tr(t) for t in record.region_captions]
            record.negatives = [[tr(t) for t in n] for n in record.negatives]
    report.caption_language_counts = counts
    non_english = {c: v["non_english"] for c, v in sorted(counts.items()) if v["non_english"]}
    if non_english:
        message = "non-English captions (CLIP's BPE reads them as raw bytes) per class: " + ", ".join(
            f"{c} {n}/{counts[c]['captions']}" for c, n in non_english.items()
        ) + (" - translated" if translations is not None else " - kept (non_english_captions: keep)")
        report.notes.append(message)
        logger.warning("ucf_crime: %s", message)

    # 4. videos: every training and test video is opened (and its last frame decoded), in parallel
    test_videos = []
    for rel, key, lineno in test_entries:
        test_videos.append({"key": key, "video": rel, "path": locate(rel), "line": lineno,
                            "class_name": video_class(rel)})  # fmt: skip
    paths = list(dict.fromkeys([r.path for r in records] + [v["path"] for v in test_videos]))
    paths = [p for p in paths if p not in located]
    with ThreadPoolExecutor(max_workers=args.validate_workers) as pool:
        probes = dict(zip(paths, pool.map(
            lambda p: probe_file(p, args.validate_decode_last_frame, args.decode_threads), paths)))  # fmt: skip
    # a located problem names the places it looked at; a probe's error is about the file found
    probes = {path: dict(probe, error=f"{path}: {probe['error']}") if "error" in probe else probe
              for path, probe in probes.items()}
    probes.update({path: {"error": problem} for path, problem in located.items()})
    reported = set()
    usable = []
    for record in records:
        where = f"{train_json}: entry {record.entry} ('{record.video}')"
        probe = probes[record.path]
        if "error" in probe:
            if record.path not in reported:
                problems.append(f"{where}: {probe['error']}")
                reported.add(record.path)
            continue
        n, fps = probe["num_frames"], probe["fps"]
        ok = True
        for r, kf in enumerate(record.keyframes):
            late = [int(k[0]) for k in kf if k[0] >= n]
            if late:
                problems.append(f"{where}: region {r}: keyframe frame(s) {late} past the video's end "
                                f"({n} frames)")  # fmt: skip
                ok = False
        if record.timestamps is None or record.timestamps[0] >= record.timestamps[1]:  # the latter: reported
            record.clip_start, record.clip_end = 0, n
        else:
            start, end = record.timestamps
            if end > n / fps + 1.0 / fps:
                problems.append(f"{where}: timestamps {list(record.timestamps)} end after the video's "
                                f"{n / fps:.3f} s ({n} frames at {fps:g} fps)")  # fmt: skip
                ok = False
            record.clip_start, record.clip_end = int(round(start * fps)), min(int(round(end * fps)), n)
            if ok and record.clip_end <= record.clip_start:
                problems.append(f"{where}: timestamps {list(record.timestamps)} cover no whole frame")
                ok = False
        if ok and record.valid:
            usable.append(record)
    for video in test_videos:
        where = f"{test_list_path}:{video['line']} ('{video['video']}')"
        probe = probes[video["path"]]
        if "error" in probe:
            if video["path"] not in reported:
                problems.append(f"{where}: {probe['error']}")
                reported.add(video["path"])
            continue
        video["num_frames"], video["fps"] = probe["num_frames"], probe["fps"]
        if annotations and video["key"] not in annotations:
            problems.append(f"{where}: test video '{video['key']}' has no line in {ann_path}")
            continue
        for s, e in annotations.get(video["key"], []):
            if e > video["num_frames"]:
                problems.append(f"{ann_path}: video '{video['key']}': segment ({s}, {e}) ends after the video's "
                                f"{video['num_frames']} frames (end-exclusive frame numbers)")  # fmt: skip
    extra = sorted(set(annotations) - set(test_keys))
    if extra and test_entries:
        report.notes.append(f"{len(extra)} annotated video(s) are not in the test list (not evaluated)")
    if raw_records is not None and not records and not problems:
        problems.append(f"{train_json}: no training record")
    if test_list_path and os.path.isfile(test_list_path) and not test_entries:
        problems.append(f"{test_list_path}: no test video")

    report.num_records = len(usable)
    report.num_train_videos = len({r.key for r in usable})
    report.num_test_videos = len(test_videos)
    report.records_per_class = dict(Counter(r.class_name for r in usable))
    return report, usable, test_videos, annotations


def validate_ucf_crime(args: VADDataArguments) -> VADValidationReport:
    """Checks the whole corpus (training records, split lists, test annotation, every video) and reports every
    problem at once, each naming the file and entry. Non-English captions are counted per class (notes)."""
    args.ensure_synthetic()
    return _check_corpus(args)[0]


# ----------------------------------------------------------------------------------------------- sampling


def uniform_frame_indices(start: int, end: int, num: int) -> tuple[np.ndarray, np.ndarray]:
    """`num` frames spread uniformly over [start, end) with the first and last included: round(linspace(start,
    end - 1, num)) (distinct when the clip holds >= num frames). A shorter clip gives every frame once, then
    padding (the last frame repeated) with mask False."""
    length = end - start
    if length < 1 or num < 1:
        raise ValueError(f"need end > start and num >= 1, got start={start} end={end} num={num}")
    mask = np.ones(num, dtype=bool)
    if length >= num:
        indices = np.round(np.linspace(start, end - 1, num)).astype(np.int64)
    else:
        indices = np.full(num, end - 1, dtype=np.int64)
        indices[:length] = np.arange(start, end)
        mask[length:] = False
    return indices, mask


def interpolate_boxes(keyframes, frames) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (len(frames), 4) at the given frame numbers, linear between keyframes [[frame, x1, y1, x2, y2], ...]
    (sorted by frame), and a mask: False before the first or after the last keyframe (box zeros there)."""
    frames = np.asarray(frames, dtype=np.float64)
    boxes = np.zeros((len(frames), 4), dtype=np.float32)
    if not len(keyframes):
        return boxes, np.zeros(len(frames), dtype=bool)
    kf = np.asarray(keyframes, dtype=np.float64).reshape(-1, 5)
    mask = (frames >= kf[0, 0]) & (frames <= kf[-1, 0])
    for j in range(4):
        boxes[:, j] = np.interp(frames, kf[:, 0], kf[:, 1 + j])
    boxes[~mask] = 0.0
    return boxes, mask


def crop_boxes(boxes: np.ndarray, mask: np.ndarray, window) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (normalised to the source frame) in the coordinates of the crop `window` (x0, y0, x1, y1, normalised
    too), clipped to [0, 1]; a box with nothing left inside the crop is dropped from the mask."""
    x0, y0, x1, y1 = window
    out = boxes.astype(np.float32).copy()
    out[..., [0, 2]] = (out[..., [0, 2]] - x0) / (x1 - x0)
    out[..., [1, 3]] = (out[..., [1, 3]] - y0) / (y1 - y0)
    out = np.clip(out, 0.0, 1.0)
    keep = mask & (out[..., 2] > out[..., 0]) & (out[..., 3] > out[..., 1])
    out[~keep] = 0.0
    return out, keep


def flip_boxes(boxes: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Horizontal mirror of normalised xyxy boxes: x1' = 1 - x2, x2' = 1 - x1 (absent boxes stay zeros)."""
    out = boxes.copy()
    out[..., 0], out[..., 2] = 1.0 - boxes[..., 2], 1.0 - boxes[..., 0]
    out[~mask] = 0.0
    return out


RESIZE_MODES = ("squash", "short_side_crop")


def resize_frames(clip, size: int, mode: str) -> tuple[torch.Tensor, tuple[float, float, float, float]]:
    """uint8 (T, 3, size, size) frames and the window of the source frame they show (normalised x0, y0, x1, y1, for
    `crop_boxes`): `squash` resizes the whole frame (window (0, 0, 1, 1): boxes keep their normalised coordinates),
    `short_side_crop` is `resize_center_crop`."""
    if mode == "squash":
        return resize(clip, (size, size)), (0.0, 0.0, 1.0, 1.0)
    if mode == "short_side_crop":
        return resize_center_crop(clip, size)
    raise ValueError(f"resize_mode must be one of {', '.join(RESIZE_MODES)}, got {mode!r}")


def resize_frames_decode_size(height: int, width: int, size: int, mode: str) -> tuple[int, int] | None:
    """The size to decode a height x width video at for `resize_frames`: its first resize, when that shrinks (then
    `resize_frames` has nothing left to resample; None: decode as stored)."""
    if mode == "squash":
        return decode_smaller((size, size), height, width)
    return shrinking_short_side(height, width, size)


def resize_center_crop(clip, size: int) -> tuple[torch.Tensor, tuple[float, float, float, float]]:
    """Short side to `size`, centre crop `size` x `size`: uint8 (T, 3, size, size) and the crop window in
    normalised source coordinates (a bilinear resize keeps normalised coordinates; the crop cuts a window)."""
    resized = resize_short_side(clip, size)
    height, width = resized.shape[-2:]
    oy, ox = (height - size) // 2, (width - size) // 2  # center_crop's offsets
    return center_crop(resized, size), (ox / width, oy / height, (ox + size) / width, (oy + size) / height)


def num_video_snippets(num_frames: int, snippet: int = SNIPPET_FRAMES) -> int:
    """Snippets of a test video: floor(F / 16), at least 1 (metrics/vad accepts floor and ceil)."""
    return max(int(num_frames) // snippet, 1)


def _snippet_groups(num_snippets: int, max_snippets: int | None) -> tuple[np.ndarray, np.ndarray]:
    """[lo, hi) snippet ranges of min(num_snippets, max_snippets) contiguous groups of (almost) equal size (None:
    one group per snippet)."""
    m = num_snippets if max_snippets is None else min(num_snippets, max_snippets)
    edges = (np.arange(m + 1, dtype=np.int64) * num_snippets) // m
    return edges[:-1], edges[1:]


def eval_frame_indices(num_frames: int, max_snippets: int | None, snippet: int = SNIPPET_FRAMES) -> np.ndarray:
    """The frame fed for each (group of) snippet(s): the centre frame 16 i + 8 of snippet i (of the middle snippet
    of each group when the video has more than `max_snippets` snippets), at most the last frame."""
    lo, hi = _snippet_groups(num_video_snippets(num_frames, snippet), max_snippets)
    centre = (lo + hi - 1) // 2
    return np.minimum(centre * snippet + snippet // 2, num_frames - 1)


def expand_eval_scores(scores, num_snippets: int) -> np.ndarray:
    """One score per snippet from the scores of the fed frames (len(scores) = min(num_snippets,
    max_eval_snippets)): each group's score repeated over its snippets. Then metrics/vad's expand_snippet_scores."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if not 1 <= len(scores) <= num_snippets:
        raise ValueError(f"{len(scores)} scores for {num_snippets} snippets")
    lo, hi = _snippet_groups(num_snippets, len(scores))
    return np.repeat(scores, hi - lo)


# ----------------------------------------------------------------------------------------------- transforms


def _tokenize(tokenizer, texts: list[str], max_length: int) -> list[list[int]]:
    if not texts:
        return []
    return [list(ids) for ids in tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]]


class VADTrainTransform(RowTransform, EpochSeeded):
    """datasets transform for training rows (one per record): samples `num_frames` frames uniformly over the clip,
    decodes them, resizes and centre-crops them (boxes follow), flips with `flip_prob` from a generator seeded by
    (seed, epoch, row index), interpolates the region boxes and tokenises the captions."""

    def __init__(self, tokenizer, num_frames: int, image_size: int, max_regions: int = 4,
                 max_caption_tokens: int = 248, max_region_tokens: int = 77, flip_prob: float = 0.0, seed: int = 0,
                 decode_threads: int = 1, resize_mode: str = "squash"):  # fmt: skip
        self.tokenizer = tokenizer
        self.resize_mode = resize_mode
        self.num_frames, self.image_size = int(num_frames), int(image_size)
        self.max_regions = int(max_regions)
        self.max_caption_tokens, self.max_region_tokens = int(max_caption_tokens), int(max_region_tokens)
        self.flip_prob = float(flip_prob)
        self.seed = int(seed)
        EpochSeeded.__init__(self)
        self._readers = ReaderCache(decode_threads, read_ahead=False)  # one window per sample: no decoding past it

    def decode_size(self, height: int, width: int) -> tuple[int, int] | None:
        return resize_frames_decode_size(height, width, self.image_size, self.resize_mode)

    def transform_row(self, row: dict) -> dict:
        generator = clip_generator(self.seed, self.epoch, row["index"])
        indices, mask = uniform_frame_indices(row["clip_start"], row["clip_end"], self.num_frames)
        clip = self._readers.get_for(row["path"], self.decode_size).get_frames(indices)
        pixels, window = resize_frames(clip, self.image_size, self.resize_mode)
        flip = bool(torch.rand(1, generator=generator) < self.flip_prob)  # drawn always: a stable random stream
        if flip:
            pixels = pixels.flip(-1)
        regions = []
        for r, keyframes in enumerate(row["region_keyframes"]):
            boxes, box_mask = interpolate_boxes(keyframes, indices)
            boxes, box_mask = crop_boxes(boxes, box_mask & mask, window)
            if flip:
                boxes = flip_boxes(boxes, box_mask)
            regions.append((bool(box_mask.any()), r, boxes, box_mask))
        # Regions seen in this clip first (a region without any box is masked out anyway), then the cap.
        regions = sorted(regions, key=lambda x: not x[0])[: self.max_regions]
        captions = [row["region_captions"][r] for _, r, _, _ in regions]
        negatives = [row["region_negatives"][r] if r < len(row["region_negatives"]) else [] for _, r, _, _ in regions]
        flat = [t for n in negatives for t in n]
        flat_ids = _tokenize(self.tokenizer, flat, self.max_region_tokens)
        negative_ids, k = [], 0
        for n in negatives:
            negative_ids.append(flat_ids[k : k + len(n)])
            k += len(n)
        t = self.num_frames
        return {
            "pixel_values": pixels,
            "pixel_mask": torch.from_numpy(mask),
            "input_ids": _tokenize(self.tokenizer, [row["global_caption"]], self.max_caption_tokens)[0],
            "short_input_ids": _tokenize(self.tokenizer, [row["short_caption"]], self.max_region_tokens)[0],
            "region_boxes": torch.from_numpy(np.stack([b for _, _, b, _ in regions]).astype(np.float32))
            if regions else torch.zeros((0, t, 4)),
            "region_box_mask": torch.from_numpy(np.stack([m for _, _, _, m in regions]))
            if regions else torch.zeros((0, t), dtype=torch.bool),
            "region_mask": torch.tensor([has for has, _, _, _ in regions], dtype=torch.bool),
            "region_input_ids": _tokenize(self.tokenizer, captions, self.max_region_tokens),
            "negative_input_ids": negative_ids,
            "sample_index": int(row["index"]),
        }  # fmt: skip


class VADEvalTransform(RowTransform):
    """datasets transform for test rows (one per video): one frame per 16-frame snippet (eval_frame_indices),
    resized and centre-cropped like training frames. Deterministic."""

    def __init__(self, image_size: int, max_eval_snippets: int | None = None, decode_threads: int = 1,
                 resize_mode: str = "squash"):
        self.image_size = int(image_size)
        self.max_eval_snippets = None if max_eval_snippets is None else int(max_eval_snippets)
        self.resize_mode = resize_mode
        self._readers = ReaderCache(decode_threads, read_ahead=False)  # one window per sample: no decoding past it

    def decode_size(self, height: int, width: int) -> tuple[int, int] | None:
        return resize_frames_decode_size(height, width, self.image_size, self.resize_mode)

    def transform_row(self, row: dict) -> dict:
        indices = eval_frame_indices(row["num_frames"], self.max_eval_snippets)
        clip = self._readers.get_for(row["path"], self.decode_size).get_frames(indices)
        pixels, _ = resize_frames(clip, self.image_size, self.resize_mode)
        return {"pixel_values": pixels, "video_index": int(row["video_index"]),
                "num_snippets": int(row["num_snippets"])}  # fmt: skip


def uniform_segments(features: torch.Tensor, max_len: int) -> torch.Tensor:
    """(T, D) snippet features as at most `max_len` rows: when T is longer, T cut into max_len contiguous segments
    of (almost) equal length, each the mean of its snippets (VadCLIP's process_feat for training)."""
    length = features.shape[0]
    if length <= max_len:
        return features
    edges = torch.linspace(0, length, max_len + 1).round().long()
    return torch.stack([features[lo: max(hi, lo + 1)].mean(dim=0) for lo, hi in zip(edges[:-1], edges[1:])])


class VADFeatureTransform(RowTransform):
    """datasets transform for the weakly supervised head: a video's cached snippet features (`load(key)` -> (T, D)),
    for training cut to at most `max_snippets` segments (uniform_segments), with its label (1 anomalous, 0 normal),
    its class index (the alignment term's) and for evaluation its video_index and num_snippets."""

    def __init__(self, load, max_snippets: int | None = None):
        self.load, self.max_snippets = load, max_snippets

    def transform_row(self, row: dict) -> dict:
        features = self.load(row["key"]).float()
        if self.max_snippets is not None:
            features = uniform_segments(features, self.max_snippets)
        return {"features": features, "labels": float(row["label"]), "class_labels": int(row["class_index"]),
                "video_index": int(row["video_index"]), "num_snippets": int(row["num_snippets"])}


def collate_vad_features(samples: list[dict]) -> dict:
    """features (B, T, D) padded with zeros to the batch's longest, snippet_mask (B, T), labels (B,), video_index,
    num_snippets (B,)."""
    length = max(int(s["features"].shape[0]) for s in samples)
    dim = samples[0]["features"].shape[1]
    features = torch.zeros(len(samples), length, dim)
    mask = torch.zeros(len(samples), length, dtype=torch.bool)
    for i, s in enumerate(samples):
        n = s["features"].shape[0]
        features[i, :n], mask[i, :n] = s["features"], True
    return {"features": features, "snippet_mask": mask,
            "labels": torch.tensor([s["labels"] for s in samples], dtype=torch.float32),
            "class_labels": torch.tensor([s["class_labels"] for s in samples], dtype=torch.long),
            "video_index": torch.tensor([s["video_index"] for s in samples], dtype=torch.long),
            "num_snippets": torch.tensor([s["num_snippets"] for s in samples], dtype=torch.long)}


def _pad_ids(seqs: list[list[int]], length: int, pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.full((len(seqs), length), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), length), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.as_tensor(list(s), dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids, mask


def collate_vad_train(samples: list[dict], pad_token_id: int = CLIP_PAD_TOKEN_ID) -> dict:
    """Training batch (see the module doc): captions padded to the batch's longest with `pad_token_id`; regions
    padded to R = max regions in the batch (>= 1) with all-pad caption rows and masks False; hard negatives
    (B, R, K, Lr) only when some sample has them."""
    if not samples:
        raise ValueError("collate_vad_train: empty batch")
    b = len(samples)
    t = samples[0]["pixel_mask"].shape[0]
    r_max = max([1] + [len(s["region_input_ids"]) for s in samples])
    ks = {len(n) for s in samples for n in s["negative_input_ids"] if n}
    if len(ks) > 1:
        raise ValueError(f"collate_vad_train: regions with different numbers of hard negatives {sorted(ks)}")
    k = ks.pop() if ks else 0
    region_len = max([1] + [len(ids) for s in samples for ids in s["region_input_ids"]]
                     + [len(ids) for s in samples for n in s["negative_input_ids"] for ids in n])  # fmt: skip
    input_ids, attention_mask = _pad_ids([s["input_ids"] for s in samples],
                                         max(len(s["input_ids"]) for s in samples), pad_token_id)  # fmt: skip
    short_input_ids, short_attention_mask = _pad_ids([s["short_input_ids"] for s in samples],
                                                     max(len(s["short_input_ids"]) for s in samples), pad_token_id)
    region_boxes = torch.zeros((b, r_max, t, 4), dtype=torch.float32)
    region_box_mask = torch.zeros((b, r_max, t), dtype=torch.bool)
    region_mask = torch.zeros((b, r_max), dtype=torch.bool)
    region_input_ids = torch.full((b, r_max, region_len), pad_token_id, dtype=torch.long)
    region_attention_mask = torch.zeros((b, r_max, region_len), dtype=torch.long)
    if k:
        negative_input_ids = torch.full((b, r_max, k, region_len), pad_token_id, dtype=torch.long)
        negative_attention_mask = torch.zeros((b, r_max, k, region_len), dtype=torch.long)
        negative_mask = torch.zeros((b, r_max), dtype=torch.bool)
    for i, s in enumerate(samples):
        n = len(s["region_input_ids"])
        if n:
            region_boxes[i, :n] = torch.as_tensor(s["region_boxes"], dtype=torch.float32)
            region_box_mask[i, :n] = torch.as_tensor(s["region_box_mask"], dtype=torch.bool)
            region_mask[i, :n] = torch.as_tensor(s["region_mask"], dtype=torch.bool)
            region_input_ids[i, :n], region_attention_mask[i, :n] = _pad_ids(s["region_input_ids"], region_len,
                                                                             pad_token_id)  # fmt: skip
        for r, negs in enumerate(s["negative_input_ids"] if k else []):
            if negs:
                negative_input_ids[i, r], negative_attention_mask[i, r] = _pad_ids(negs, region_len, pad_token_id)
                negative_mask[i, r] = True
    batch = {
        "pixel_values": torch.stack([torch.as_tensor(s["pixel_values"]) for s in samples]),
        "pixel_mask": torch.stack([torch.as_tensor(s["pixel_mask"], dtype=torch.bool) for s in samples]),
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "short_input_ids": short_input_ids,
        "short_attention_mask": short_attention_mask,
        "region_boxes": region_boxes,
        "region_box_mask": region_box_mask,
        "region_mask": region_mask,
        "region_input_ids": region_input_ids,
        "region_attention_mask": region_attention_mask,
        "sample_index": torch.tensor([int(s["sample_index"]) for s in samples], dtype=torch.long),
    }
    if k:
        batch.update(negative_input_ids=negative_input_ids, negative_attention_mask=negative_attention_mask,
                     negative_mask=negative_mask)  # fmt: skip
    return batch


def collate_vad_eval(samples: list[dict]) -> dict:
    """Test batch: pixel_values (B, S, 3, H, W) padded with zero frames to the batch's most fed snippets,
    pixel_mask (B, S), video_index (B,), num_snippets (B,) = the video's snippet count (what its scores expand
    to with expand_eval_scores; the fed count is pixel_mask.sum(1))."""
    if not samples:
        raise ValueError("collate_vad_eval: empty batch")
    s_max = max(int(s["pixel_values"].shape[0]) for s in samples)
    first = samples[0]["pixel_values"]
    pixel_values = torch.zeros((len(samples), s_max, *first.shape[1:]), dtype=first.dtype)
    pixel_mask = torch.zeros((len(samples), s_max), dtype=torch.bool)
    for i, s in enumerate(samples):
        n = s["pixel_values"].shape[0]
        pixel_values[i, :n] = s["pixel_values"]
        pixel_mask[i, :n] = True
    return {
        "pixel_values": pixel_values,
        "pixel_mask": pixel_mask,
        "video_index": torch.tensor([int(s["video_index"]) for s in samples], dtype=torch.long),
        "num_snippets": torch.tensor([int(s["num_snippets"]) for s in samples], dtype=torch.long),
    }


# ----------------------------------------------------------------------------------------------- loading


@dataclass
class VADCorpus:
    train_dataset: Any  # datasets.Dataset, one row per training record (clip)
    eval_dataset: Any  # datasets.Dataset, one row per test video, row i = video_index i
    test_videos: list[dict]  # key, video, path, class_name, num_frames, fps, num_snippets; test-list order
    annotations: dict  # metrics/vad read_temporal_annotation: {key: [(start, end), ...]} (end-exclusive frames)
    report: VADValidationReport
    caption_language_counts: dict  # {class: {"captions": n, "non_english": m}}
    dropped_test_videos: list[str]  # keys of test videos whose training records were dropped
    tokenizer: Any
    train_transform: VADTrainTransform
    eval_transform: VADEvalTransform
    train_collator: Any  # collate_vad_train with the tokenizer's pad id
    eval_collator: Any  # collate_vad_eval
    num_records_with_boxes: int = 0  # training records with a region that has a box (feed the region loss)
    num_records_with_negatives: int = 0  # training records with hard negatives (feed the hard-negative loss)

    def set_epoch(self, epoch: int) -> None:
        self.train_transform.set_epoch(epoch)

    @staticmethod
    def expand_eval_scores(scores, num_snippets: int) -> np.ndarray:
        """The fed snippets' scores of one test video back to one score per snippet (`expand_eval_scores`)."""
        return expand_eval_scores(scores, num_snippets)


def _load_tokenizer(args: VADDataArguments):
    if not args.tokenizer_name_or_path:
        raise ValueError("load_ucf_crime needs a tokenizer: pass one or set tokenizer_name_or_path")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(args.resolve(args.tokenizer_name_or_path))


def corpus_features(class_names: list[str]) -> tuple:
    """The typed columns of `load_corpus`: (train: one row per training record, a clip of a video with its captions
    and region boxes; test: one row per test video with its annotated anomalies)."""
    import datasets

    label = datasets.ClassLabel(names=list(class_names))
    train = datasets.Features({
        "video": datasets.Value("string"), "key": datasets.Value("string"), "class_name": label,
        "path": datasets.Value("string"), "clip_start": datasets.Value("int64"), "clip_end": datasets.Value("int64"),
        "global_caption": datasets.Value("string"), "short_caption": datasets.Value("string"),
        "region_captions": datasets.List(datasets.Value("string")),
        "region_keyframes": datasets.List(datasets.List(datasets.List(datasets.Value("float64")))),
        "region_negatives": datasets.List(datasets.List(datasets.Value("string"))),
    })  # fmt: skip
    test = datasets.Features({
        "key": datasets.Value("string"), "video": datasets.Value("string"), "class_name": label,
        "path": datasets.Value("string"), "num_frames": datasets.Value("int64"), "fps": datasets.Value("float64"),
        "anomalies": datasets.List(datasets.List(datasets.Value("int64"), length=2)),  # end-exclusive frames
    })  # fmt: skip
    return train, test


def _validated_corpus(args: VADDataArguments):
    """(DatasetDict "train" / "test", capped by max_train_videos / max_test_videos; the validation report; the test
    videos as dicts; the temporal annotations). Generates the synthetic corpus first when asked; every corpus
    problem is one CorpusError."""
    import datasets

    args.ensure_synthetic()
    report, records, test_videos, annotations = _check_corpus(args)
    if not report.ok:
        raise CorpusError(report)
    if args.max_train_videos is not None:
        keep = set(list(dict.fromkeys(r.key for r in records))[: args.max_train_videos])
        records = [r for r in records if r.key in keep]
    test_videos = test_videos[: args.max_test_videos]
    for v in test_videos:
        v["num_snippets"] = num_video_snippets(v["num_frames"])
        v.pop("line", None)
    class_names = sorted({r.class_name for r in records} | {v["class_name"] for v in test_videos})
    train_features, test_features = corpus_features(class_names)
    train = datasets.Dataset.from_dict({
        "video": [r.video for r in records], "key": [r.key for r in records],
        "class_name": [r.class_name for r in records], "path": [r.path for r in records],
        "clip_start": [r.clip_start for r in records], "clip_end": [r.clip_end for r in records],
        "global_caption": [r.global_caption for r in records], "short_caption": [r.short_caption for r in records],
        "region_captions": [r.region_captions for r in records], "region_keyframes": [r.keyframes for r in records],
        "region_negatives": [r.negatives for r in records],
    }, features=train_features)  # fmt: skip
    test = datasets.Dataset.from_dict({
        **{c: [v[c] for v in test_videos] for c in ("key", "video", "class_name", "path", "num_frames", "fps")},
        "anomalies": [[list(seg) for seg in annotations.get(v["key"], [])] for v in test_videos],
    }, features=test_features)
    return datasets.DatasetDict({"train": train, "test": test}), report, test_videos, annotations


def load_corpus(source, **overrides):
    """UCF-Crime in its published layout (videos, Anomaly_Train/Test lists, temporal annotations, FG-CLIP-format
    training records) as a typed `datasets.DatasetDict` ("train": one row per training record; "test": one row per
    test video with its anomalies; classes as ClassLabel), validated as a run validates it; the one the vad task
    builds its tables from. `source`: a recipe file, a mapping of data keys, or VADDataArguments."""
    from .common import data_arguments_from

    return _validated_corpus(data_arguments_from(VADDataArguments, source, **overrides))[0]


def class_strings(dataset) -> list[str]:
    """The class_name column of a `load_corpus` split as names."""
    return [dataset.features["class_name"].int2str(i) for i in dataset["class_name"]]


def load_ucf_crime(args: VADDataArguments, tokenizer=None, seed: int = 0, tokenizer_loader=None) -> VADCorpus:
    """Validates the corpus (raises CorpusError listing every problem) and builds the training-clip and test-video
    datasets with their lazy transforms from `load_corpus`'s. The tokenizer is `tokenizer`, else
    `tokenizer_loader()`, else AutoTokenizer(tokenizer_name_or_path); a loader runs after the corpus check, so a
    corpus with problems is reported before any weight or tokenizer is fetched."""
    corpus, report, test_videos, annotations = _validated_corpus(args)
    if tokenizer is None:
        tokenizer = tokenizer_loader() if tokenizer_loader is not None else _load_tokenizer(args)
    # the task's tables: the corpus's columns (class names as strings) with the row numbers the transforms use
    train, test = corpus["train"], corpus["test"]
    train_dataset = train.remove_columns("class_name").add_column("class_name", class_strings(train)).add_column(
        "index", list(range(len(train))))
    eval_dataset = test.remove_columns(["anomalies", "class_name"]).add_column("class_name", class_strings(test))
    eval_dataset = eval_dataset.add_column("index", list(range(len(test)))).add_column(
        "video_index", list(range(len(test)))).add_column("num_snippets", [v["num_snippets"] for v in test_videos])
    train_transform = VADTrainTransform(tokenizer, args.num_frames, args.image_size, args.max_regions,
                                        args.max_caption_tokens, args.max_region_tokens, args.flip_prob, seed,
                                        args.decode_threads, args.resize_mode)  # fmt: skip
    eval_transform = VADEvalTransform(args.image_size, args.max_eval_snippets, args.decode_threads, args.resize_mode)
    train_dataset.set_transform(train_transform)
    eval_dataset.set_transform(eval_transform)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else CLIP_PAD_TOKEN_ID
    return VADCorpus(
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        test_videos=test_videos,
        annotations=annotations,
        report=report,
        caption_language_counts=report.caption_language_counts,
        dropped_test_videos=report.dropped_test_videos,
        tokenizer=tokenizer,
        train_transform=train_transform,
        eval_transform=eval_transform,
        train_collator=partial(collate_vad_train, pad_token_id=pad),
        eval_collator=collate_vad_eval,
        num_records_with_boxes=sum(any(len(kf) for kf in r) for r in train["region_keyframes"]),
        num_records_with_negatives=sum(any(len(n) for n in r) for r in train["region_negatives"]),
    )
