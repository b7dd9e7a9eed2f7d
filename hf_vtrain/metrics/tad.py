"""Temporal action detection mAP (ActivityNet / OpenTAD style) on OpenTAD-format ground truth and predictions.
Python: `evaluate_detections(gt, predictions)`; shell: `python -m hf_vtrain.metrics.tad GT.json PRED.json`."""

from __future__ import annotations

import argparse
import json
import math
import numbers
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..exit_codes import BAD_INPUT

DEFAULT_TIOU_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)
# OpenTAD's remove_duplicate_annotations treats segments within 1 ms (same label) as the same instance.
DUPLICATE_TOLERANCE = 1e-3

_FAST_NUMBER_TYPES = {int, float}
_FAST_SEQUENCE_TYPES = {list, tuple}


@dataclass
class TADMetricResult:
    """mAP of temporal action detections; `ap` and `mAP` are fractions, `as_dict`/`table` report percent."""

    class_names: list[str]
    tiou_thresholds: tuple[float, ...]
    ap: np.ndarray
    mAP: np.ndarray
    average_mAP: float
    num_ground_truth: int
    num_predictions: int
    num_ignored_predictions: int
    num_outside_subset_predictions: int = 0
    outside_subset: str = "false_positive"

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        out = {f"{prefix}mAP@{t:g}": float(100.0 * m) for t, m in zip(self.tiou_thresholds, self.mAP)}
        out[f"{prefix}average_mAP"] = float(100.0 * self.average_mAP)
        return out

    def table(self) -> str:
        rows = ["tIoU       mAP (%)"]
        rows += [f"{t:<8.2f} {100.0 * m:>9.2f}" for t, m in zip(self.tiou_thresholds, self.mAP)]
        rows.append(f"{'average':<8} {100.0 * self.average_mAP:>9.2f}")
        return "\n".join(rows)

    def outside_subset_note(self) -> str:
        """One line on the predictions that fell on videos outside the evaluated subset and what was done with them."""
        what = ("counted as false positives (OpenTAD / ActivityNet rule)" if self.outside_subset == "false_positive"
                else "ignored (outside_subset='ignore')")
        return (f"{self.num_outside_subset_predictions} of {self.num_predictions} predictions are on videos outside "
                f"the evaluated subset: {what}")


def load_class_names(path: str | os.PathLike) -> list[str]:
    """Class names from a `category_idx.txt`: one per line, in index order, blank lines ignored."""
    with open(path, encoding="utf8") as f:
        names = [line.strip() for line in f if line.strip()]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise ValueError(f"{os.fspath(path)}: class {dup!r} is listed twice")
    return names


def evaluate_detections(
    ground_truth: Mapping | str | os.PathLike,
    predictions: Mapping | str | os.PathLike,
    subset: str | None = "validation",
    tiou_thresholds: Sequence[float] = DEFAULT_TIOU_THRESHOLDS,
    class_names: Sequence[str] | None = None,
    ignore_labels: Sequence[str] = ("Ambiguous",),
    outside_subset: str = "false_positive",
) -> TADMetricResult:
    """Per-class AP at each tIoU threshold and their mean, as in ActivityNet / OpenTAD.

    Args:
        ground_truth: `{"database": {video_id: {"subset", "annotations": [{"label", "segment"}]}}}` or a path to it.
            Only videos whose "subset" equals `subset` are evaluated (`None`: all). Duplicate annotations (same
            label, both ends within `DUPLICATE_TOLERANCE`) and those with end <= start are dropped first, as are
            labels in `ignore_labels`.
        predictions: `{"results": {video_id: [{"segment": [s, e], "label": name, "score": x}]}}` or a path to it.
        tiou_thresholds: each in (0, 1].
        class_names: the classes to evaluate, e.g. from `load_class_names`; default: every ground-truth label of
            the evaluated videos except `ignore_labels`, sorted.
        ignore_labels: ground-truth labels that are not classes (THUMOS' "Ambiguous").
        outside_subset: what a prediction on a video that is not evaluated (another subset, or absent from the
            ground truth) counts as: "false_positive" (default; OpenTAD's and ActivityNet's evaluators: such a video
            has no ground truth, so each of its detections of a class is a false positive of that class) or
            "ignore" (dropped, as if the prediction file held only the evaluated videos). Either way the count is
            `num_outside_subset_predictions`.

    Detections of a class are ranked by score with a stable sort, so ties keep input order (videos in the order of
    the predictions dict, then list order); each is matched to the still-unmatched ground truth of its video with
    the highest tIoU >= t (equal tIoU: the earlier annotation), else it is a false positive. AP is the all-point
    interpolated area under the precision-recall curve. A class without ground truth gets AP NaN and is left out
    of the mean; the mean is 0.0 when no class has ground truth. Predictions of an evaluated video without
    annotations are false positives, and so are those of a video outside the evaluated subset unless
    `outside_subset="ignore"`. Predictions whose label is not a class are ignored; `num_ignored_predictions`
    counts every prediction left out of the ranking.

    Raises:
        ValueError: malformed input (the message names the file or argument, video and entry), a ground-truth
            label missing from `class_names`, or a `subset` that no video has.
    """
    thresholds = np.asarray(tuple(tiou_thresholds), dtype=np.float64)
    if thresholds.ndim != 1 or thresholds.size == 0 or not np.all((thresholds > 0) & (thresholds <= 1)):
        raise ValueError(f"tiou_thresholds must be a non-empty sequence of numbers in (0, 1], got {tiou_thresholds}")
    ignore = set(ignore_labels)
    if outside_subset not in ("false_positive", "ignore"):
        raise ValueError(f"outside_subset must be 'false_positive' or 'ignore', got {outside_subset!r}")

    gt_source, gt_data = _load(ground_truth, "ground truth")
    pred_source, pred_data = _load(predictions, "predictions")
    videos, annotations = _parse_ground_truth(gt_data, gt_source, subset)

    if class_names is None:
        names = sorted({label for anns in annotations for label, _, _ in anns if label not in ignore})
    else:
        names = list(class_names)
        if len(set(names)) != len(names) or not all(isinstance(n, str) for n in names):
            raise ValueError(f"class_names must be distinct strings, got {names}")
        if ignore & set(names):
            raise ValueError(f"class_names contains ignored label(s) {sorted(ignore & set(names))}")
    class_index = {name: i for i, name in enumerate(names)}
    video_index = {vid: i for i, vid in enumerate(videos)}

    gt_cls, gt_vid, gt_start, gt_end = [], [], [], []
    for v, (vid, anns) in enumerate(zip(videos, annotations)):
        for label, start, end in anns:
            if label in ignore:
                continue
            if label not in class_index:
                raise ValueError(f"{gt_source}: video {vid!r}: label {label!r} is not in class_names")
            gt_cls.append(class_index[label])
            gt_vid.append(v)
            gt_start.append(start)
            gt_end.append(end)

    det_cls, det_vid, det_start, det_end, det_score, num_predictions = _parse_predictions(
        pred_data, pred_source, class_index, video_index
    )
    outside = det_vid < 0
    if outside_subset == "false_positive":
        # One extra video index without ground truth: its detections rank with the others and never match.
        det_vid = np.where(outside, len(videos), det_vid)
    keep = (det_cls >= 0) & (det_vid >= 0)
    ap = _average_precision(
        np.asarray(gt_cls, np.int64),
        np.asarray(gt_vid, np.int64),
        np.asarray(gt_start, np.float64),
        np.asarray(gt_end, np.float64),
        det_cls[keep],
        det_vid[keep],
        det_start[keep],
        det_end[keep],
        det_score[keep],
        num_classes=len(names),
        num_videos=len(videos) + 1,
        thresholds=thresholds,
    )
    has_gt = ~np.isnan(ap[:, 0]) if len(names) else np.zeros(0, bool)
    mean_ap = ap[has_gt].mean(axis=0) if has_gt.any() else np.zeros(len(thresholds))
    return TADMetricResult(
        class_names=names,
        tiou_thresholds=tuple(float(t) for t in thresholds),
        ap=ap,
        mAP=mean_ap,
        average_mAP=float(mean_ap.mean()),
        num_ground_truth=len(gt_cls),
        num_predictions=num_predictions,
        num_ignored_predictions=int(num_predictions - keep.sum()),
        num_outside_subset_predictions=int(outside.sum()),
        outside_subset=outside_subset,
    )


# ----------------------------------------------------------------------------------------------- computation


def _average_precision(
    gt_cls, gt_vid, gt_start, gt_end, det_cls, det_vid, det_start, det_end, det_score,
    num_classes, num_videos, thresholds,
) -> np.ndarray:
    num_t = len(thresholds)
    npos = np.bincount(gt_cls, minlength=num_classes)
    ap = np.full((num_classes, num_t), np.nan)
    ap[npos > 0] = 0.0

    # Rank order: by class, then score descending; the stable sorts keep input order among equal scores.
    order = np.argsort(-det_score, kind="stable")
    order = order[np.argsort(det_cls[order], kind="stable")]
    cls_ranked = det_cls[order]
    vid_ranked = det_vid[order]
    start_ranked = det_start[order]
    end_ranked = det_end[order]
    tp = np.zeros((num_t, len(order)), dtype=bool)

    # Matching is independent per (class, video): group those positions, keeping rank order inside a group.
    gt_key = gt_cls * num_videos + gt_vid
    gt_order = np.argsort(gt_key, kind="stable")  # stable: ties in tIoU go to the earlier annotation
    gt_keys_sorted = gt_key[gt_order]
    det_key = cls_ranked * num_videos + vid_ranked
    group_order = np.argsort(det_key, kind="stable")
    det_keys_sorted = det_key[group_order]
    bounds = np.flatnonzero(np.diff(det_keys_sorted)) + 1
    starts = np.concatenate(([0], bounds))
    ends = np.concatenate((bounds, [len(det_keys_sorted)]))
    if len(order):
        group_keys = det_keys_sorted[starts]
        lo = np.searchsorted(gt_keys_sorted, group_keys, side="left")
        hi = np.searchsorted(gt_keys_sorted, group_keys, side="right")
        for a, b, g0, g1 in zip(starts[hi > lo], ends[hi > lo], lo[hi > lo], hi[hi > lo]):
            pos = group_order[a:b]
            gts = gt_order[g0:g1]
            tp[:, pos] = _match(start_ranked[pos], end_ranked[pos], gt_start[gts], gt_end[gts], thresholds)

    class_bounds = np.searchsorted(cls_ranked, np.arange(num_classes + 1))
    for c in np.flatnonzero(npos > 0):
        a, b = class_bounds[c], class_bounds[c + 1]
        if b > a:
            ap[c] = _interpolated_ap(tp[:, a:b], npos[c])
    return ap


def _tiou(det_start, det_end, gt_start, gt_end) -> np.ndarray:
    """(num_det, num_gt) temporal IoU; same operation order as ActivityNet's segment_iou."""
    inter = np.clip(
        np.minimum(det_end[:, None], gt_end[None, :]) - np.maximum(det_start[:, None], gt_start[None, :]), 0, None
    )
    union = (gt_end - gt_start)[None, :] + (det_end - det_start)[:, None] - inter
    return inter / union


def _match(det_start, det_end, gt_start, gt_end, thresholds) -> np.ndarray:
    """True-positive flags (num_thresholds, num_det) for one class in one video, detections in rank order.

    The greedy match is sequential, but only a detection that takes a ground truth changes the state, so this
    loops over matches (at most num_gt + 1 rounds, all thresholds at once), not over detections.
    """
    num_t, num_det = len(thresholds), len(det_start)
    tp = np.zeros((num_t, num_det), dtype=bool)
    iou = _tiou(det_start, det_end, gt_start, gt_end)
    candidates = np.flatnonzero(iou.max(axis=1) >= thresholds.min())
    if candidates.size == 0:
        return tp
    iou = iou[candidates]
    eligible = iou[None, :, :] >= thresholds[:, None, None]  # (T, m, g)
    # available[t, r]: unmatched ground truths that detection r could take; rows already decided are 0.
    available = eligible.sum(axis=2)
    matched = np.zeros((num_t, iou.shape[1]), dtype=bool)
    t_all = np.arange(num_t)
    while True:
        has = available > 0
        first = has.argmax(axis=1)
        active = has[t_all, first]
        if not active.any():
            return tp
        t_act, d = t_all[active], first[active]
        options = np.where(eligible[t_act, d] & ~matched[t_act], iou[d], -1.0)
        j = options.argmax(axis=1)  # first maximum: the earlier annotation wins a tIoU tie
        matched[t_act, j] = True
        tp[t_act, candidates[d]] = True
        available[t_act] -= eligible[t_act, :, j]
        available[t_act, d] = 0


def _interpolated_ap(tp: np.ndarray, npos: int) -> np.ndarray:
    """ActivityNet's interpolated_prec_rec for each row of `tp` (num_thresholds, num_det)."""
    tp_cum = np.cumsum(tp, axis=1, dtype=np.float64)
    fp_cum = np.cumsum(~tp, axis=1, dtype=np.float64)
    recall = tp_cum / npos
    precision = tp_cum / (tp_cum + fp_cum)
    n = tp.shape[0]
    mprec = np.hstack([np.zeros((n, 1)), precision, np.zeros((n, 1))])
    mrec = np.hstack([np.zeros((n, 1)), recall, np.ones((n, 1))])
    mprec = np.maximum.accumulate(mprec[:, ::-1], axis=1)[:, ::-1]
    step = mrec[:, 1:] - mrec[:, :-1]
    return np.where(step != 0, step * mprec[:, 1:], 0.0).sum(axis=1)


# ----------------------------------------------------------------------------------------------- input parsing


def _load(data, what: str) -> tuple[str, object]:
    if isinstance(data, (str, os.PathLike)):
        path = os.fspath(data)
        if os.path.isdir(path):
            raise ValueError(f"{path}: a folder, not a JSON file ({what})")
        with open(path, encoding="utf8") as f:
            try:
                return path, json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: not valid JSON ({e.msg}, line {e.lineno} column {e.colno})") from None
            except UnicodeDecodeError:
                raise ValueError(f"{path}: not a UTF-8 text file") from None
    return what, data


def _number(x, where: str, what: str) -> float:
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        raise ValueError(f"{where}: {what} must be a number, got {x!r}")
    try:
        value = float(x)
    except OverflowError:
        value = math.inf
    if not math.isfinite(value):
        raise ValueError(f"{where}: {what} must be finite, got {x!r}")
    return value


def _entry(entry, where: str, with_score: bool) -> tuple[str, float, float, float]:
    if not isinstance(entry, Mapping):
        raise ValueError(f"{where}: expected an object with 'segment' and 'label', got {entry!r}")
    for key in ("segment", "label") + (("score",) if with_score else ()):
        if key not in entry:
            raise ValueError(f"{where}: missing key {key!r}")
    segment, label = entry["segment"], entry["label"]
    if isinstance(segment, np.ndarray):
        segment = segment.tolist()
    if isinstance(segment, (str, bytes, Mapping)) or not isinstance(segment, Sequence) or len(segment) != 2:
        raise ValueError(f"{where}: segment must be 2 numbers [start, end], got {segment!r}")
    start, end = (_number(x, where, "segment") for x in segment)
    if not isinstance(label, str):
        raise ValueError(f"{where}: label must be a string (class name), got {label!r}")
    score = _number(entry["score"], where, "score") if with_score else 0.0
    return label, start, end, score


def _parse_ground_truth(data, source: str, subset: str | None):
    """Evaluated video ids (database order) and, per video, the cleaned (label, start, end) annotations."""
    if not isinstance(data, Mapping) or "database" not in data:
        raise ValueError(f"{source}: missing key 'database'")
    database = data["database"]
    if not isinstance(database, Mapping):
        raise ValueError(f"{source}: 'database' must map video ids to videos")
    videos, annotations = [], []
    for vid, video in database.items():
        if not isinstance(video, Mapping):
            raise ValueError(f"{source}: video {vid!r}: expected an object, got {type(video).__name__}")
        if subset is not None:
            if "subset" not in video:
                raise ValueError(f"{source}: video {vid!r}: missing key 'subset'")
            if video["subset"] != subset:
                continue
        anns = video.get("annotations", [])
        if not isinstance(anns, list):
            raise ValueError(f"{source}: video {vid!r}: 'annotations' must be a list")
        kept: list[tuple[str, float, float]] = []
        for i, ann in enumerate(anns):
            label, start, end, _ = _entry(ann, f"{source}: video {vid!r}, annotation {i}", with_score=False)
            if end <= start:
                continue
            duplicate = any(
                lab == label and abs(start - s) <= DUPLICATE_TOLERANCE and abs(end - e) <= DUPLICATE_TOLERANCE
                for lab, s, e in kept
            )
            if not duplicate:
                kept.append((label, start, end))
        videos.append(vid)
        annotations.append(kept)
    if subset is not None and database and not videos:
        found = sorted({str(v.get("subset")) for v in database.values()})
        raise ValueError(f"{source}: no video has subset {subset!r} (subsets present: {', '.join(found)})")
    return videos, annotations


def _fast_video(entries: list):
    """Columns of one video's predictions, or None when anything needs the per-entry checks."""
    try:
        segments = [e["segment"] for e in entries]
        labels = [e["label"] for e in entries]
        scores = [e["score"] for e in entries]
    except (TypeError, KeyError, IndexError):
        return None
    # Exact-type set checks: much cheaper than isinstance per value, and anything unusual takes the slow path.
    if not (
        {type(s) for s in segments} <= _FAST_SEQUENCE_TYPES
        and {type(x) for s in segments for x in s} | {type(x) for x in scores} <= _FAST_NUMBER_TYPES
        and {type(x) for x in labels} <= {str}
    ):
        return None
    try:
        seg = np.array(segments, dtype=np.float64)
        score = np.array(scores, dtype=np.float64)
    except (OverflowError, ValueError):
        return None
    if seg.shape != (len(entries), 2):
        return None
    if not (np.isfinite(seg).all() and np.isfinite(score).all() and (seg[:, 1] >= seg[:, 0]).all()):
        return None
    return labels, seg, score


def _parse_predictions(data, source: str, class_index: dict, video_index: dict):
    """Columns of all predictions in input order; class/video index -1 marks an ignored prediction."""
    if not isinstance(data, Mapping) or "results" not in data:
        raise ValueError(f"{source}: missing key 'results'")
    results = data["results"]
    if not isinstance(results, Mapping):
        raise ValueError(f"{source}: 'results' must map video ids to lists of predictions")
    cls_parts, vid_parts, seg_parts, score_parts = [], [], [], []
    for vid, entries in results.items():
        if not isinstance(entries, list):
            raise ValueError(f"{source}: video {vid!r}: predictions must be a list, got {type(entries).__name__}")
        if not entries:
            continue
        columns = _fast_video(entries)
        if columns is None:
            rows = []
            for i, entry in enumerate(entries):
                where = f"{source}: video {vid!r}, prediction {i}"
                label, start, end, score = _entry(entry, where, with_score=True)
                if end < start:
                    raise ValueError(f"{where}: segment end < start: {list(entry['segment'])!r}")
                rows.append((label, start, end, score))
            labels = [r[0] for r in rows]
            seg = np.array([r[1:3] for r in rows], dtype=np.float64)
            score = np.array([r[3] for r in rows], dtype=np.float64)
        else:
            labels, seg, score = columns
        cls_parts.append(np.array([class_index.get(x, -1) for x in labels], dtype=np.int64))
        vid_parts.append(np.full(len(entries), video_index.get(vid, -1), dtype=np.int64))
        seg_parts.append(seg)
        score_parts.append(score)
    if not cls_parts:
        empty = np.zeros(0)
        return empty.astype(np.int64), empty.astype(np.int64), empty, empty, empty, 0
    seg = np.concatenate(seg_parts)
    cls = np.concatenate(cls_parts)
    return cls, np.concatenate(vid_parts), seg[:, 0].copy(), seg[:, 1].copy(), np.concatenate(score_parts), len(cls)


# ----------------------------------------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hf_vtrain.metrics.tad",
        description="Temporal action detection mAP (ActivityNet / OpenTAD style) of an OpenTAD predictions file.",
    )
    parser.add_argument("ground_truth", help="OpenTAD ground-truth JSON ({'database': ...})")
    parser.add_argument("predictions", help="predictions JSON ({'results': ...})")
    parser.add_argument("--subset", default="validation", help="ground-truth subset to evaluate; 'all': every video")
    parser.add_argument("--class-index", dest="class_index", help="category_idx.txt: the classes, one per line")
    parser.add_argument("--tiou-thresholds", dest="tiou_thresholds", type=float, nargs="+",
                        default=list(DEFAULT_TIOU_THRESHOLDS))
    parser.add_argument("--outside-subset", dest="outside_subset", choices=("false_positive", "ignore"),
                        default="false_positive",
                        help="predictions on videos outside the evaluated subset: false positives (OpenTAD's and "
                             "ActivityNet's rule, the default) or ignored")
    parser.add_argument("--json", dest="json_out", help="also write the metrics (percent) and per-class AP here")
    args = parser.parse_args(argv)
    try:
        class_names = load_class_names(args.class_index) if args.class_index else None
        result = evaluate_detections(
            args.ground_truth,
            args.predictions,
            subset=None if args.subset == "all" else args.subset,
            tiou_thresholds=args.tiou_thresholds,
            class_names=class_names,
            outside_subset=args.outside_subset,
        )
        print(result.outside_subset_note())
        print(result.table())
        if args.json_out:
            report = dict(result.as_dict())
            # JSON has no NaN: a class without ground truth is null.
            report["per_class_AP"] = {
                name: {f"{t:g}": None if np.isnan(a) else float(100.0 * a) for t, a in zip(result.tiou_thresholds, row)}
                for name, row in zip(result.class_names, result.ap)
            }
            report.update(
                num_ground_truth=result.num_ground_truth,
                num_predictions=result.num_predictions,
                num_ignored_predictions=result.num_ignored_predictions,
                num_outside_subset_predictions=result.num_outside_subset_predictions,
                outside_subset=result.outside_subset,
            )
            with open(args.json_out, "w", encoding="utf8") as f:
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
