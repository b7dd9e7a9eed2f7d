"""Frame-level video anomaly detection metrics (UCF-Crime protocol): ROC-AUC, AP and AUC over anomalous videos.
Python: `evaluate_frame_auc(annotations, test_list, scores)`;
shell: `python -m hf_vtrain.metrics.vad ANNOTATION.txt SCORES.json [--test-list Anomaly_Test.txt]`.

Conventions (those of VadCLIP's `list/make_gt_ucf.py` and `src/ucf_test.py`, which RTFM's evaluation shares):
- A model gives one score per 16-frame snippet; each score is repeated 16 times, so a video with n scores covers
  frames [0, 16 n). The ground truth of that video is built for exactly those 16 n frames: frames of a trailing
  partial snippet that has no score are dropped, and annotated segments are cut at frame 16 n.
- Annotated segments are END-EXCLUSIVE frame indices counted from 0: `start end` marks frames start .. end-1
  (`labels[start:end] = 1`). RTFM's Matlab-format labels include `end` as well; the two differ by one frame per
  segment.
- Videos are concatenated in test-list order and one ROC-AUC / AP is computed over all frames. `auc_anomalous_only`
  ("AUC_A") is the ROC-AUC over the frames of the videos that have at least one anomalous segment.
- With frame counts given, a video's snippet count must be floor(F / 16) (the partial snippet dropped, as the
  usual I3D/CLIP feature extractors do) or ceil(F / 16) (the last snippet padded); anything else is an error.
ROC-AUC and AP are computed here in numpy exactly as scikit-learn's `roc_auc_score` / `average_precision_score`
(ties give one curve point; AP is the step-wise sum of precision times recall increments, not interpolated).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..exit_codes import BAD_INPUT

SNIPPET_FRAMES = 16
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".mpg", ".mpeg")
NO_SEGMENT = -1


@dataclass
class VADMetricResult:
    """Frame-level metrics as fractions; `as_dict` and `table` report percent, as papers do."""

    auc: float
    ap: float
    auc_anomalous_only: float
    num_videos: int
    num_anomalous_videos: int
    num_frames: int
    num_anomalous_frames: int
    num_ignored_videos: int = 0

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        return {
            f"{prefix}auc": 100.0 * self.auc,
            f"{prefix}ap": 100.0 * self.ap,
            f"{prefix}auc_anomalous_only": 100.0 * self.auc_anomalous_only,
        }

    def table(self) -> str:
        rows = [
            "metric                 (%)",
            f"{'frame AUC':<18} {100.0 * self.auc:>8.2f}",
            f"{'frame AP':<18} {100.0 * self.ap:>8.2f}",
            f"{'frame AUC_A':<18} {100.0 * self.auc_anomalous_only:>8.2f}",
            f"videos {self.num_videos} ({self.num_anomalous_videos} anomalous), frames {self.num_frames} "
            f"({self.num_anomalous_frames} anomalous)",
        ]
        if self.num_ignored_videos:
            rows.append(f"ignored {self.num_ignored_videos} scored videos that are not in the test list")
        return "\n".join(rows)


# ----------------------------------------------------------------------------------------------- files


def video_key(name: str) -> str:
    """`Abuse/Abuse028_x264.mp4` -> `Abuse028_x264`: the base name without a video extension."""
    base = os.path.basename(name.strip().replace("\\", "/"))
    root, ext = os.path.splitext(base)
    return root if ext.lower() in VIDEO_EXTENSIONS else base


def read_temporal_annotation(path: str | os.PathLike) -> dict[str, list[tuple[int, int]]]:
    """Parse UCF-Crime's `Temporal_Anomaly_Annotation_for_Testing_Videos.txt`.

    Each line is `name class start1 end1 start2 end2` (any whitespace between fields; more start/end pairs are
    accepted), frame numbers with -1 -1 for "no segment". Returns {video key: [(start, end), ...]} in file order,
    segments end-exclusive (see the module doc); normal videos map to []. Errors name the file and line.
    """
    src = os.fspath(path)
    out: dict[str, list[tuple[int, int]]] = {}
    first_line: dict[str, int] = {}
    with open(src, encoding="utf-8-sig") as f:
        for lineno, line in enumerate(f, start=1):
            fields = line.split()
            if not fields or fields[0].startswith("#"):
                continue
            where = f"{src}:{lineno}"
            if len(fields) < 4 or (len(fields) - 2) % 2:
                raise ValueError(f"{where}: expected 'name class start end [start end ...]', got {line.strip()!r}")
            try:
                numbers = [int(x) for x in fields[2:]]
            except ValueError:
                raise ValueError(f"{where}: frame numbers must be integers, got {' '.join(fields[2:])!r}") from None
            segments = []
            for start, end in zip(numbers[0::2], numbers[1::2]):
                if start == NO_SEGMENT and end == NO_SEGMENT:
                    continue
                if start < 0 or end < 0:
                    raise ValueError(f"{where}: segment ({start}, {end}) has one bound -1; both must be -1 for none")
                if end <= start:
                    raise ValueError(f"{where}: segment ({start}, {end}) ends before it starts (end is exclusive)")
                segments.append((start, end))
            key = video_key(fields[0])
            if key in out:
                raise ValueError(f"{where}: video {key!r} is already annotated on line {first_line[key]}")
            out[key] = segments
            first_line[key] = lineno
    if not out:
        raise ValueError(f"{src}: no annotations")
    return out


def read_test_list(path: str | os.PathLike) -> list[str]:
    """Video keys of `Anomaly_Test.txt` (`Abuse/Abuse028_x264.mp4` -> `Abuse028_x264`), in file order."""
    src = os.fspath(path)
    keys: list[str] = []
    seen: dict[str, int] = {}
    with open(src, encoding="utf-8-sig") as f:
        for lineno, line in enumerate(f, start=1):
            entry = line.strip()
            if not entry or entry.startswith("#"):
                continue
            key = video_key(entry)
            if key in seen:
                raise ValueError(f"{src}:{lineno}: video {key!r} is already listed on line {seen[key]}")
            seen[key] = lineno
            keys.append(key)
    if not keys:
        raise ValueError(f"{src}: the test list is empty")
    return keys


# ----------------------------------------------------------------------------------------------- frames


def frame_labels(num_frames: int, segments: Sequence[tuple[int, int]]) -> np.ndarray:
    """0/1 (uint8) per frame: `labels[start:end] = 1` for each segment, end-exclusive, cut at `num_frames`."""
    if num_frames < 0:
        raise ValueError(f"num_frames={num_frames} is negative")
    labels = np.zeros(int(num_frames), dtype=np.uint8)
    for start, end in segments:
        if start < 0 or end < start:
            raise ValueError(f"segment ({start}, {end}) is not 0 <= start <= end")
        labels[int(start) : int(end)] = 1
    return labels


def expand_snippet_scores(
    scores,
    num_frames: int | None = None,
    snippet: int = SNIPPET_FRAMES,
    video: str | None = None,
) -> np.ndarray:
    """Per-frame scores: each of the n snippet scores repeated `snippet` times (length n * snippet).

    The result always covers n * snippet frames (the ground truth is built for the same frames). `num_frames`, when
    given, is only a check: n must be floor(num_frames / snippet) or ceil(num_frames / snippet), else a ValueError
    naming `video`.
    """
    name = f"video {video!r}: " if video is not None else ""
    if snippet < 1:
        raise ValueError(f"snippet={snippet} must be >= 1")
    try:
        arr = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name}scores must be numbers") from None
    if arr.ndim != 1:
        raise ValueError(f"{name}expected one score per snippet (1-D), got shape {arr.shape}")
    n = arr.shape[0]
    if n == 0:
        raise ValueError(f"{name}no scores")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}score {int(np.flatnonzero(~np.isfinite(arr))[0])} is not finite")
    if num_frames is not None:
        if num_frames < 1:
            raise ValueError(f"{name}num_frames={num_frames} must be >= 1")
        low, high = num_frames // snippet, -(-num_frames // snippet)
        if n not in (low, high):
            expected = f"{low}" if low == high else f"{low} or {high}"
            raise ValueError(
                f"{name}{n} snippet scores do not match {num_frames} frames: expected {expected} "
                f"snippets of {snippet} frames"
            )
    return np.repeat(arr, snippet)


# ----------------------------------------------------------------------------------------------- ranking metrics


def _curve_counts(y_true: np.ndarray, y_score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative (false positives, true positives) at each distinct score, highest first (sklearn's
    `confusion_matrix_at_thresholds` without weights)."""
    y_true = np.asarray(y_true)
    y_score = np.asarray(y_score, dtype=np.float64)
    if y_true.shape != y_score.shape or y_true.ndim != 1:
        raise ValueError(f"y_true {y_true.shape} and y_score {y_score.shape} must be 1-D of the same length")
    if y_true.size and not np.all(np.isfinite(y_score)):
        raise ValueError("y_score contains NaN or infinity")
    order = np.argsort(-y_score, kind="stable")
    y_score = y_score[order]
    y_true = (y_true[order] == 1).astype(np.float64)
    threshold_idxs = np.r_[np.flatnonzero(np.diff(y_score)), y_true.size - 1]
    tps = np.cumsum(y_true)[threshold_idxs]
    fps = 1 + threshold_idxs.astype(np.float64) - tps
    return fps, tps


def _check_binary(y_true) -> np.ndarray:
    y_true = np.asarray(y_true)
    if y_true.size and not np.all((y_true == 0) | (y_true == 1)):
        raise ValueError("y_true must hold only 0 and 1")
    return y_true


def roc_auc(y_true, y_score) -> float:
    """Binary ROC-AUC, equal to `sklearn.metrics.roc_auc_score`; NaN when y_true holds one class only."""
    y_true = _check_binary(y_true)
    if y_true.size == 0 or np.all(y_true == y_true.flat[0]):
        return math.nan
    fps, tps = _curve_counts(y_true, y_score)
    if fps.shape[0] > 2:  # sklearn's drop_intermediate: collinear points do not change the area
        keep = np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True]
        fps, tps = fps[keep], tps[keep]
    fps = np.r_[0.0, fps]
    tps = np.r_[0.0, tps]
    return float(np.trapezoid(tps / tps[-1], fps / fps[-1]))


def average_precision(y_true, y_score) -> float:
    """Average precision, equal to `sklearn.metrics.average_precision_score`: sum over thresholds of
    (R_k - R_{k-1}) P_k, no interpolation. NaN when there is no positive."""
    y_true = _check_binary(y_true)
    if y_true.size == 0 or not np.any(y_true == 1):
        return math.nan
    fps, tps = _curve_counts(y_true, y_score)
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    precision = np.r_[precision[::-1], 1.0]
    recall = np.r_[recall[::-1], 0.0]
    return float(max(0.0, -np.sum(np.diff(recall) * precision[:-1])))


# ----------------------------------------------------------------------------------------------- evaluation


def evaluate_frame_auc(
    annotations: Mapping[str, Sequence[tuple[int, int]]] | str | os.PathLike,
    test_list: Sequence[str] | str | os.PathLike | None,
    scores: Mapping[str, Sequence[float]] | str | os.PathLike,
    num_frames: Mapping[str, int] | None = None,
    snippet: int = SNIPPET_FRAMES,
) -> VADMetricResult:
    """Frame-level ROC-AUC, AP and AUC over anomalous videos of per-snippet anomaly scores (see the module doc).

    Args:
        annotations: {video: [(start, end), ...]} as `read_temporal_annotation` returns, or the path of the file.
        test_list: the videos to evaluate, in order: keys or paths (`Abuse/Abuse028_x264.mp4`), or the path of
            `Anomaly_Test.txt`; None evaluates every annotated video in annotation order.
        scores: {video: [one score per snippet]} (keys may be paths or carry an extension), or a JSON file holding
            that or {"scores": {...}, "num_frames": {...}}. Scores of videos outside the test list are ignored
            (counted in `num_ignored_videos`); a test video without scores is an error.
        num_frames: {video: decoded frame count}, to check each snippet count (optional).
        snippet: frames per score.
    """
    if isinstance(annotations, (str, os.PathLike)):
        annotations = read_temporal_annotation(annotations)
    annotations = {video_key(k): list(v) for k, v in annotations.items()}
    if test_list is None:
        keys = list(annotations)
    elif isinstance(test_list, (str, os.PathLike)):
        keys = read_test_list(test_list)
    else:
        keys = [video_key(k) for k in test_list]
        if len(set(keys)) != len(keys):
            dup = next(k for k in keys if keys.count(k) > 1)
            raise ValueError(f"test list: video {dup!r} is listed twice")
    if not keys:
        raise ValueError("test list: no videos to evaluate")
    source = "scores"
    if isinstance(scores, (str, os.PathLike)):
        source = os.fspath(scores)
        scores, file_frames = load_scores(scores)
        if num_frames is None:
            num_frames = file_frames
    score_map = _normalise_keys(scores, source)
    frame_map = _normalise_keys(num_frames, "num_frames") if num_frames is not None else None

    wanted = set(keys)
    labels_parts, score_parts, anomalous_mask = [], [], []
    num_anomalous_videos = 0
    for key in keys:
        if key not in annotations:
            raise ValueError(f"video {key!r} of the test list has no temporal annotation")
        if key not in score_map:
            raise ValueError(f"video {key!r} of the test list has no scores in {source}")
        frames = None
        if frame_map is not None:
            if key not in frame_map:
                raise ValueError(f"video {key!r} has no entry in num_frames")
            frames = frame_map[key]
            if isinstance(frames, bool) or not isinstance(frames, (int, np.integer)):
                raise ValueError(f"video {key!r}: num_frames must be an integer, got {frames!r}")
        per_frame = expand_snippet_scores(score_map[key], frames, snippet, video=key)
        labels = frame_labels(per_frame.shape[0], annotations[key])
        is_anomalous = len(annotations[key]) > 0
        num_anomalous_videos += is_anomalous
        labels_parts.append(labels)
        score_parts.append(per_frame)
        anomalous_mask.append(np.full(labels.shape[0], is_anomalous))

    y_true = np.concatenate(labels_parts)
    y_score = np.concatenate(score_parts)
    num_positive = int(y_true.sum())
    if num_positive == 0 or num_positive == y_true.size:
        kind = "anomalous" if num_positive == 0 else "normal"
        raise ValueError(f"frame AUC is undefined: the evaluated frames contain no {kind} frame")
    mask = np.concatenate(anomalous_mask)
    return VADMetricResult(
        auc=roc_auc(y_true, y_score),
        ap=average_precision(y_true, y_score),
        auc_anomalous_only=roc_auc(y_true[mask], y_score[mask]),
        num_videos=len(keys),
        num_anomalous_videos=num_anomalous_videos,
        num_frames=int(y_true.size),
        num_anomalous_frames=num_positive,
        num_ignored_videos=len(set(score_map) - wanted),
    )


def load_scores(path: str | os.PathLike) -> tuple[dict, dict | None]:
    """Read a scores JSON: {video: [scores]} or {"scores": {...}, "num_frames": {...}}."""
    src = os.fspath(path)
    with open(src, encoding="utf-8") as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{src}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{src}: expected an object {{video: [snippet scores]}}, got {type(data).__name__}")
    if "scores" in data and isinstance(data["scores"], dict):
        extra = set(data) - {"scores", "num_frames"}
        if extra:
            raise ValueError(f"{src}: unknown top-level key {sorted(extra)[0]!r} (expected 'scores', 'num_frames')")
        frames = data.get("num_frames")
        if frames is not None and not isinstance(frames, dict):
            raise ValueError(f"{src}: 'num_frames' must be an object {{video: frame count}}")
        data = data["scores"]
    else:
        frames = None
    for key, value in data.items():
        if not isinstance(value, list) or not all(
            isinstance(x, (int, float)) and not isinstance(x, bool) for x in value
        ):
            raise ValueError(f"{src}: entry {key!r}: scores must be a list of numbers")
    return data, frames


def _normalise_keys(mapping: Mapping, source: str) -> dict:
    out: dict = {}
    original: dict = {}
    for k, v in mapping.items():
        key = video_key(str(k))
        if key in out:
            raise ValueError(f"{source}: entries {original[key]!r} and {k!r} are the same video {key!r}")
        out[key] = v
        original[key] = k
    return out


# ----------------------------------------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hf_vtrain.metrics.vad",
        description="Frame-level ROC-AUC / AP of per-snippet anomaly scores on UCF-Crime-style annotations.",
    )
    parser.add_argument("annotation", help="Temporal_Anomaly_Annotation_for_Testing_Videos.txt")
    parser.add_argument(
        "scores", help="JSON {video: [snippet scores]} or {'scores': {...}, 'num_frames': {video: frames}}"
    )
    parser.add_argument("--test-list", dest="test_list", help="Anomaly_Test.txt (default: every annotated video)")
    parser.add_argument("--snippet", type=int, default=SNIPPET_FRAMES, help="frames per score (default 16)")
    parser.add_argument("--json", dest="json_out", help="also write the metrics (percent) and counts here")
    args = parser.parse_args(argv)
    try:
        result = evaluate_frame_auc(args.annotation, args.test_list, args.scores, snippet=args.snippet)
        print(result.table())
        if args.json_out:
            report = {k: (None if math.isnan(v) else v) for k, v in result.as_dict().items()}
            report.update(
                num_videos=result.num_videos,
                num_anomalous_videos=result.num_anomalous_videos,
                num_frames=result.num_frames,
                num_anomalous_frames=result.num_anomalous_frames,
                num_ignored_videos=result.num_ignored_videos,
            )
            with open(args.json_out, "w", encoding="utf-8") as f:
                json.dump(report, f, indent=2, allow_nan=False)
    except OSError as e:
        print(f"error: {e.filename or ''}: {e.strerror or e}", file=sys.stderr)
        return BAD_INPUT
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return BAD_INPUT
    return 0


if __name__ == "__main__":
    sys.exit(main())
