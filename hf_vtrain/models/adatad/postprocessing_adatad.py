"""Post-processing for temporal action detection: decode per-window outputs, merge windows per video, soft-NMS, and
write OpenTAD's prediction format. Pure functions, never called inside `forward` (STYLE principle 6).

Semantics follow OpenTAD (`SingleStageDetector.post_processing`, `batched_nms`, `softnms_1d_cpu`, `seg_voting`).
The raw per-window detections of an evaluation can be saved and post-processed again without the model
(`RawDetections`: scripts/tune_postprocess.py, scripts/ensemble_detections.py).
"""

import json
import os
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import torch


def _point_positions(config, num_points: int, device) -> torch.Tensor:
    # Imported here: the model module is heavy and only this helper needs it.
    from .modeling_adatad import build_point_table

    strides = [2**level for level in range(config.num_pyramid_levels)]
    seq_len = int(round(num_points / sum(1.0 / s for s in strides)))
    positions = build_point_table(config, seq_len, device)["positions"]
    if positions.numel() != num_points:
        raise ValueError(f"{num_points} points do not fit the config's {config.num_pyramid_levels}-level pyramid.")
    return positions


@torch.no_grad()
def decode_window_detections(output, config, point_positions: torch.Tensor | None = None) -> torch.Tensor:
    """Top-scoring (point, class) pairs of each window as a fixed-shape tensor (batch, pre_nms_topk, 4).

    `output` is an `AdaTADDetectionOutput` or a tuple (class_logits (B, P, C), segment_offsets (B, P, 2),
    point_mask (B, P)). Scores are sigmoids; pairs on padded points are dropped, pairs with score <= score_threshold
    are dropped, the best `pre_nms_topk` are kept (stable sort, ties by point then class). Columns are
    [start, end, score, class_id] in window frame units; rows past the kept ones hold score -1 and class -1.
    `point_positions` (P,) default to the config's point table (positions = index * stride).
    """
    if isinstance(output, (tuple, list)):
        class_logits, segment_offsets, point_mask = output[:3]
    else:
        class_logits, segment_offsets, point_mask = output.class_logits, output.segment_offsets, output.point_mask
    batch, num_points, num_classes = class_logits.shape
    device = class_logits.device
    if point_positions is None:
        point_positions = _point_positions(config, num_points, device)
    point_positions = point_positions.to(device=device, dtype=torch.float32)

    scores = torch.sigmoid(class_logits.float())
    scores = scores.masked_fill(~point_mask.bool()[..., None], -1.0).flatten(1)  # (B, P*C)
    top_k = config.pre_nms_topk
    detections = torch.full((batch, top_k, 4), -1.0, device=device)
    detections[..., :2] = 0.0
    sorted_scores, order = torch.sort(scores, dim=1, descending=True, stable=True)
    keep = min(top_k, order.shape[1])
    sorted_scores, order = sorted_scores[:, :keep], order[:, :keep]
    valid = sorted_scores > config.score_threshold
    points = torch.div(order, num_classes, rounding_mode="floor")
    classes = order % num_classes
    offsets = torch.gather(segment_offsets.float(), 1, points[..., None].expand(-1, -1, 2))
    centres = point_positions[points]
    decoded = torch.stack(
        (centres - offsets[..., 0], centres + offsets[..., 1], sorted_scores, classes.float()), dim=-1
    )
    padding = torch.tensor([0.0, 0.0, -1.0, -1.0], device=device)
    detections[:, :keep] = torch.where(valid[..., None], decoded, padding)
    return detections


def _soft_nms_single(segments: np.ndarray, scores: np.ndarray, sigma: float, max_segments: int, min_score: float):
    """Gaussian soft-NMS as OpenTAD's softnms_1d_cpu (method 2): repeatedly take the highest remaining score and
    multiply every remaining score by exp(-IoU^2 / sigma); lengths carry OpenTAD's +1e-6. Returns kept indices and
    their decayed scores in selection order (non-increasing). Ties go to the lowest index.

    The definition `soft_nms(reference=True)` runs; `soft_nms_kernels` is its compiled form (OpenTAD's own is C++,
    in float32; this one is float64)."""
    scores = scores.astype(np.float64).copy()
    starts, ends = segments[:, 0].astype(np.float64), segments[:, 1].astype(np.float64)
    lengths = ends - starts + 1e-6
    alive = np.ones(len(scores), dtype=bool)
    kept, kept_scores = [], []
    limit = len(scores) if max_segments <= 0 else min(max_segments, len(scores))
    # Selected scores never increase, so the first `limit` selections are the capped result.
    while len(kept) < limit and alive.any():
        masked = np.where(alive, scores, -np.inf)
        best = int(np.argmax(masked))
        kept.append(best)
        kept_scores.append(scores[best])
        alive[best] = False
        inter = np.clip(np.minimum(ends[best], ends) - np.maximum(starts[best], starts), 0.0, None)
        iou = inter / (lengths[best] + lengths - inter)
        scores = np.where(alive, scores * np.exp(-(iou * iou) / sigma), scores)
        if min_score > 0:
            alive &= scores >= min_score
    return np.asarray(kept, dtype=np.int64), np.asarray(kept_scores, dtype=np.float64)


def _segment_voting(kept: np.ndarray, segments: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """OpenTAD's seg_voting: each kept segment becomes the score-weighted mean of all input segments with
    IoU >= threshold to it."""
    inter = np.clip(
        np.minimum(kept[:, None, 1], segments[None, :, 1]) - np.maximum(kept[:, None, 0], segments[None, :, 0]),
        0.0,
        None,
    )
    union = (kept[:, None, 1] - kept[:, None, 0]) + (segments[None, :, 1] - segments[None, :, 0]) - inter
    iou = inter / np.maximum(union, 1e-12)
    weights = (iou >= threshold) * scores[None, :]
    weights = weights / np.maximum(weights.sum(axis=1, keepdims=True), 1e-12)
    return weights @ segments


def _reference_groups(starts, ends, scores, bounds, sigma, max_segments, min_score):
    """`soft_nms_kernels.soft_nms_groups`'s contract with `_soft_nms_single`: one numpy pass per selection."""
    kept = np.empty(len(scores), dtype=np.int64)
    kept_scores = np.empty(len(scores), dtype=np.float64)
    count = np.zeros(len(bounds) - 1, dtype=np.int64)
    segments = np.stack([starts, ends], axis=1)
    for g, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
        index, decayed = _soft_nms_single(segments[lo:hi], scores[lo:hi], sigma, max_segments, min_score)
        kept[lo : lo + len(index)], kept_scores[lo : lo + len(index)], count[g] = lo + index, decayed, len(index)
    return kept, kept_scores, count


def soft_nms(
    segments,
    scores,
    labels,
    sigma: float = 0.7,
    max_segments: int = 2000,
    min_score: float = 0.0,
    class_agnostic: bool = False,
    voting_threshold: float = 0.0,
    reference: bool = False,
):
    """Gaussian soft-NMS with OpenTAD's `batched_nms` semantics (use_soft_nms=True, method 2).

    Multiclass (default): each class independently, at most `max_segments` each; then all classes together sorted
    by score and cut to `max_segments`. Class-agnostic: one pass over all segments, then, if `voting_threshold` > 0,
    segment voting against all input segments. `min_score` drops segments whose decayed score falls below it
    (OpenTAD's default 0 drops nothing). Returns (segments (M, 2), scores (M,), labels (M,)) as numpy arrays,
    sorted by score (stable). Scores must be finite.

    The loop runs compiled (`soft_nms_kernels`, numba); `reference=True` runs the numpy definition
    (`_soft_nms_single`, one pass per selected segment), which tests and scripts/bench_postprocess.py compare it with:
    the two give the same output bit for bit.
    """
    segments = np.asarray(segments, dtype=np.float64).reshape(-1, 2)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    if len(scores) == 0:
        return np.zeros((0, 2)), np.zeros((0,)), np.zeros((0,), dtype=np.int64)
    if len(segments) != len(scores) or len(labels) != len(scores):
        raise ValueError(f"soft_nms: {len(segments)} segments, {len(scores)} scores and {len(labels)} labels")
    if not np.isfinite(scores).all():
        raise ValueError(f"soft_nms: {int((~np.isfinite(scores)).sum())} scores are not finite")

    if class_agnostic:
        order = np.arange(len(scores))
        bounds = np.array([0, len(scores)], dtype=np.int64)
    else:  # classes in increasing label order, each in input order (OpenTAD's per-class loop)
        order = np.argsort(labels, kind="stable")
        sorted_labels = labels[order]
        bounds = np.flatnonzero(np.r_[True, sorted_labels[1:] != sorted_labels[:-1], True]).astype(np.int64)
    if reference:
        run_groups = _reference_groups
    else:
        from .soft_nms_kernels import soft_nms_groups as run_groups  # numba: imported when first needed

    kept, kept_scores, count = run_groups(
        segments[order, 0], segments[order, 1], scores[order], bounds, sigma, max_segments, min_score
    )
    take = np.concatenate([np.arange(lo, lo + c) for lo, c in zip(bounds[:-1].tolist(), count.tolist())])
    kept, kept_scores = order[kept[take]], kept_scores[take]
    new_segments, new_labels = segments[kept], labels[kept]
    if class_agnostic and voting_threshold > 0:
        new_segments = _segment_voting(new_segments, segments, scores, voting_threshold)

    order = np.argsort(-kept_scores, kind="stable")
    if max_segments > 0:
        order = order[:max_segments]
    return new_segments[order], kept_scores[order], new_labels[order]


def video_candidates(windows, fps: float, sample_stride: int, duration: float, rounding: bool):
    """The soft-NMS input of `merge_video_detections`: (segments (N, 2) seconds, scores (N,), labels (N,))."""
    all_segments, all_scores, all_labels = [], [], []
    for detections, window_start in windows:
        if isinstance(detections, torch.Tensor):
            detections = detections.detach().cpu().numpy()
        detections = np.asarray(detections, dtype=np.float64).reshape(-1, 4)
        detections = detections[(detections[:, 3] >= 0) & (detections[:, 2] >= 0)]
        seconds = np.clip((float(window_start) + detections[:, :2]) * sample_stride / fps, 0.0, duration)
        scores = detections[:, 2]
        if rounding:
            seconds, scores = _rounded(seconds, 2), _rounded(scores, 4)
        all_segments.append(seconds)
        all_scores.append(scores)
        all_labels.append(detections[:, 3].astype(np.int64))
    segments = np.concatenate(all_segments) if all_segments else np.zeros((0, 2))
    scores = np.concatenate(all_scores) if all_scores else np.zeros((0,))
    labels = np.concatenate(all_labels) if all_labels else np.zeros((0,), dtype=np.int64)
    keep = np.ones(len(scores), dtype=bool) if rounding else segments[:, 1] > segments[:, 0]
    return segments[keep], scores[keep], labels[keep]


def merge_video_detections(windows, fps: float, sample_stride: int, duration: float, config) -> dict[str, np.ndarray]:
    """Merges the decoded windows of one video and applies soft-NMS.

    windows: iterable of (detections (K, 4) [start, end, score, class] in window frame units, window_start in
    sampled frames). Padding rows (class < 0) are dropped; times become seconds with
    (window_start + x) * sample_stride / fps and are clipped to [0, duration]. With `config.opentad_rounding`
    (OpenTAD's post-processing) every window's seconds are rounded to 0.01 and its scores to 1e-4 (Python's round, as
    OpenTAD's), zero-length segments are kept, and the soft-NMS output is rounded again; without it zero-length
    segments are dropped and nothing is rounded. Soft-NMS uses the config's nms_sigma, max_segments, class_agnostic
    and voting_threshold.
    Returns {"segments": (M, 2) seconds, "scores": (M,), "labels": (M,)}.
    """
    rounding = bool(getattr(config, "opentad_rounding", False))
    segments, scores, labels = video_candidates(windows, fps, sample_stride, duration, rounding)
    segments, scores, labels = soft_nms(
        segments,
        scores,
        labels,
        sigma=config.nms_sigma,
        max_segments=config.max_segments,
        class_agnostic=config.class_agnostic,
        voting_threshold=config.voting_threshold,
    )
    if rounding:
        segments, scores = _rounded(segments, 2), _rounded(scores, 4)
    return {"segments": segments, "scores": scores, "labels": labels}


def _rounded(values: np.ndarray, digits: int) -> np.ndarray:
    """Python's round(x, digits) of each value (what OpenTAD applies to `.item()`; numpy's round can differ on
    halves), vectorised: rint(x * 10^d) / 10^d is Python's answer unless x * 10^d lies within a few ulps of a half
    (where the product's own rounding may have moved it across) or is too large to matter; those values, about one in
    10^12 of random input and every exact half, go through Python's round itself."""
    flat = np.asarray(values, dtype=np.float64)
    scale = 10.0 ** digits
    scaled = flat * scale
    with np.errstate(invalid="ignore"):
        fraction = np.abs(scaled - np.trunc(scaled))
        doubtful = ~(np.abs(scaled) < 2.0**52) | (np.abs(fraction - 0.5) <= 4 * np.spacing(np.abs(scaled)))
    result = np.rint(scaled) / scale  # both exact integers below 2^53: one correctly rounded division, as strtod
    for position in np.flatnonzero(doubtful.reshape(-1)):
        result.reshape(-1)[position] = round(float(flat.reshape(-1)[position]), digits)
    return result


def to_opentad_results(video_detections: dict, id2label: dict) -> dict:
    """{video_id: merged detections} -> {"results": {video_id: [{"segment": [s, e], "label": name, "score": p}]}}.

    Values are plain floats, as merged (rounded to 2 and 4 decimals with the config's opentad_rounding).
    """
    names = {int(key): value for key, value in id2label.items()}
    results = {}
    for video_id, merged in video_detections.items():
        results[video_id] = [
            {"segment": [float(start), float(end)], "label": names[int(label)], "score": float(score)}
            for (start, end), score, label in zip(merged["segments"], merged["scores"], merged["labels"])
        ]
    return {"results": results}


# ----------------------------------------------------------------------------------------------------------------
# Raw per-window detections: saved by evaluation, re-post-processed without the model (tuning, ensembles)

POSTPROCESS_KEYS = ("score_threshold", "pre_nms_topk", "nms_sigma", "max_segments", "class_agnostic", "voting_threshold",
                    "opentad_rounding")


@dataclass
class RawDetections:
    """Decoded evaluation windows before merging and NMS, with everything needed to finish the post-processing.

    detections (N, K, 4) float32 [start, end, score, class] in window frame units (padding rows: score -1, class -1),
    sorted by score within a window; meta (N, 2) int64 [video_index, window_start] in the order the evaluation saw
    them; videos[video_index] = {video_id, fps, sample_stride, duration}; postprocess = the settings used
    (`POSTPROCESS_KEYS`); ground_truth = the evaluated OpenTAD ground truth (or None).
    """

    detections: np.ndarray
    meta: np.ndarray
    videos: list
    class_names: list
    postprocess: dict
    ground_truth: dict | None = None
    step: int | None = None


def postprocess_settings(config) -> dict:
    return {key: getattr(config, key) for key in POSTPROCESS_KEYS}


def save_raw_detections(path: str, raw: RawDetections) -> str:
    """One compressed .npz (numpy arrays plus JSON strings); written to a temporary name, then renamed."""
    tmp = f"{path}.tmp-{os.getpid()}.npz"
    np.savez_compressed(
        tmp,
        detections=np.asarray(raw.detections, dtype=np.float32),
        meta=np.asarray(raw.meta, dtype=np.int64),
        video_id=np.asarray([v["video_id"] for v in raw.videos], dtype=str),
        fps=np.asarray([v["fps"] for v in raw.videos], dtype=np.float64),
        sample_stride=np.asarray([v["sample_stride"] for v in raw.videos], dtype=np.int64),
        duration=np.asarray([v["duration"] for v in raw.videos], dtype=np.float64),
        class_names=np.asarray(raw.class_names, dtype=str),
        postprocess=np.asarray(json.dumps(raw.postprocess)),
        ground_truth=np.asarray(json.dumps(raw.ground_truth) if raw.ground_truth is not None else ""),
        step=np.asarray(-1 if raw.step is None else raw.step, dtype=np.int64),
    )
    os.replace(tmp, path)
    return path


def load_raw_detections(path: str) -> RawDetections:
    with np.load(path, allow_pickle=False) as data:
        missing = {"detections", "meta", "video_id", "fps", "sample_stride", "duration", "class_names",
                   "postprocess"} - set(data.files)
        if missing:
            raise ValueError(f"{path}: not a raw detections file (lacks {sorted(missing)})")
        videos = [
            {"video_id": str(vid), "fps": float(fps), "sample_stride": int(stride), "duration": float(duration)}
            for vid, fps, stride, duration in zip(data["video_id"], data["fps"], data["sample_stride"],
                                                  data["duration"])
        ]
        gt_text = str(data["ground_truth"]) if "ground_truth" in data.files else ""
        step = int(data["step"]) if "step" in data.files else -1
        return RawDetections(
            detections=data["detections"],
            meta=data["meta"].astype(np.int64),
            videos=videos,
            class_names=[str(name) for name in data["class_names"]],
            postprocess=json.loads(str(data["postprocess"])),
            ground_truth=json.loads(gt_text) if gt_text else None,
            step=None if step < 0 else step,
        )


def merge_raw_detections(raw: RawDetections, settings: dict | None = None) -> dict[str, dict]:
    """Per-video merge + soft-NMS of raw windows, as evaluation does it (windows in saved order), with `settings`
    overriding the recorded post-processing. `pre_nms_topk` can only shrink (the first k rows of a window are what
    decoding with k keeps) and `score_threshold` only rise. Returns {video_id: merged detections}."""
    settings = {**raw.postprocess, **(settings or {})}
    unknown = set(settings) - set(POSTPROCESS_KEYS)
    if unknown:
        raise ValueError(f"unknown post-processing settings {sorted(unknown)}; known: {POSTPROCESS_KEYS}")
    detections = np.asarray(raw.detections)
    top_k = int(settings["pre_nms_topk"])
    if top_k > raw.postprocess["pre_nms_topk"]:
        raise ValueError(f"pre_nms_topk {top_k} exceeds the {raw.postprocess['pre_nms_topk']} rows per window that "
                         f"were saved")
    if float(settings["score_threshold"]) < float(raw.postprocess["score_threshold"]):
        raise ValueError(f"score_threshold {settings['score_threshold']} is below the saved "
                         f"{raw.postprocess['score_threshold']}: lower-scoring pairs were not saved")
    detections = detections[:, :top_k]
    if float(settings["score_threshold"]) > float(raw.postprocess["score_threshold"]):
        detections = detections.copy()
        low = detections[..., 2] <= float(settings["score_threshold"])
        detections[low] = np.asarray([0.0, 0.0, -1.0, -1.0], dtype=detections.dtype)
    per_video: dict[int, list] = {}
    for dets, (video_index, window_start) in zip(detections, np.asarray(raw.meta)):
        per_video.setdefault(int(video_index), []).append((dets, int(window_start)))
    config = SimpleNamespace(**settings)
    return {
        video["video_id"]: merge_video_detections(
            per_video.get(index, []), video["fps"], video["sample_stride"], video["duration"], config
        )
        for index, video in enumerate(raw.videos)
    }


def raw_results(raw: RawDetections, settings: dict | None = None) -> dict:
    """OpenTAD predictions of raw windows under `settings` (see `merge_raw_detections`)."""
    return to_opentad_results(merge_raw_detections(raw, settings), dict(enumerate(raw.class_names)))


def raw_ground_truth(raw: RawDetections, path: str | None = None) -> dict:
    """The ground truth to score raw detections against: the file at `path` restricted to the raw file's videos,
    else the one the evaluation saved in the file."""
    if path is None:
        if raw.ground_truth is None:
            raise ValueError("the raw detections file holds no ground truth; pass one")
        return raw.ground_truth
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
    database = data.get("database", data) if isinstance(data, dict) else None
    if not isinstance(database, dict):
        raise ValueError(f"{path}: not an OpenTAD ground truth ({{'database': {{video_id: ...}}}})")
    wanted = [v["video_id"] for v in raw.videos]
    absent = [vid for vid in wanted if vid not in database]
    if absent:
        raise ValueError(f"{path}: {len(absent)} evaluated videos are not in the ground truth, e.g. {absent[:3]}")
    return {"database": {vid: database[vid] for vid in wanted}}


def fuse_raw_detections(raws: list[RawDetections], weights: list[float] | None = None) -> RawDetections:
    """Score-level fusion of several checkpoints' raw windows before merging and NMS.

    Rule: weights are normalised to sum 1; each window's candidates from all checkpoints are pooled with scores
    multiplied by their checkpoint's weight, and identical candidates (same window, start, end and class) become one
    whose score is the sum, i.e. the weighted mean of the checkpoints' scores for it, a checkpoint that does not
    propose it counting 0. Pooled candidates are sorted by fused score (stable: first checkpoint first) and then go
    through the normal merge and soft-NMS. An ensemble of a checkpoint with itself is that checkpoint exactly.
    """
    if not raws:
        raise ValueError("nothing to fuse")
    weights = [1.0] * len(raws) if weights is None else [float(w) for w in weights]
    if len(weights) != len(raws) or any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"need one non-negative weight per input ({len(raws)}), not all zero; got {weights}")
    weights = [w / sum(weights) for w in weights]
    first = raws[0]
    table = [(v["video_id"], v["fps"], v["sample_stride"], v["duration"]) for v in first.videos]
    for i, raw in enumerate(raws[1:], 2):
        other = [(v["video_id"], v["fps"], v["sample_stride"], v["duration"]) for v in raw.videos]
        if other != table:
            raise ValueError(f"input {i} was evaluated on other videos (or fps/stride/duration) than input 1")
        if raw.class_names != first.class_names:
            raise ValueError(f"input {i} has classes {raw.class_names}, input 1 {first.class_names}")
    windows: dict[tuple, list] = {}
    for raw, weight in zip(raws, weights):
        for dets, key in zip(np.asarray(raw.detections), map(tuple, np.asarray(raw.meta).tolist())):
            valid = dets[(dets[:, 3] >= 0) & (dets[:, 2] >= 0)]
            # Identity of a candidate: start, end, class (float32 bits) and its rank among equal ones of the same
            # checkpoint, so that two points of one checkpoint decoding to the same segment stay two candidates.
            ident = np.zeros((len(valid), 4), dtype=np.float32)
            ident[:, :3] = valid[:, [0, 1, 3]]
            _, group = np.unique(ident[:, :3].view(np.dtype((np.void, 12))).ravel(), return_inverse=True)
            group = group.ravel()
            rank = np.zeros(len(valid), dtype=np.int64)
            for g in np.flatnonzero(np.bincount(group) > 1) if len(valid) else ():
                members = np.flatnonzero(group == g)
                rank[members] = np.arange(len(members))
            ident[:, 3] = rank
            rows = valid.astype(np.float64)
            rows[:, 2] *= weight
            windows.setdefault(key, []).append((ident, rows))
    fused_windows = []
    for parts in windows.values():
        ident = np.concatenate([p[0] for p in parts])
        rows = np.concatenate([p[1] for p in parts])
        _, first_index, inverse = np.unique(np.ascontiguousarray(ident).view(np.dtype((np.void, 16))).ravel(),
                                            return_index=True, return_inverse=True)
        scores = np.bincount(inverse.ravel(), weights=rows[:, 2], minlength=len(first_index))
        order = np.argsort(first_index, kind="stable")  # first occurrence order
        fused = rows[first_index[order]].copy()
        fused[:, 2] = scores[order]
        fused = fused[np.argsort(-fused[:, 2], kind="stable")]
        fused_windows.append(fused.astype(np.float32))
    width = max([len(w) for w in fused_windows] + [1])
    detections = np.tile(np.asarray([0.0, 0.0, -1.0, -1.0], dtype=np.float32), (len(fused_windows), width, 1))
    for i, fused in enumerate(fused_windows):
        detections[i, : len(fused)] = fused
    postprocess = {**first.postprocess, "pre_nms_topk": width}
    return RawDetections(detections=detections, meta=np.asarray(list(windows), dtype=np.int64).reshape(-1, 2),
                         videos=list(first.videos), class_names=list(first.class_names), postprocess=postprocess,
                         ground_truth=first.ground_truth, step=None)
