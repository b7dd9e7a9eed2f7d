"""Post-processing for temporal action detection: decode per-window outputs, merge windows per video, soft-NMS, and
write OpenTAD's prediction format. Pure functions, never called inside `forward` (STYLE principle 6).

Semantics follow OpenTAD (`SingleStageDetector.post_processing`, `batched_nms`, `softnms_1d_cpu`, `seg_voting`).
"""

import numpy as np
import torch


def _point_positions(config, num_points: int, device) -> torch.Tensor:
    # Imported here: the model module is heavy and only this helper needs it.
    from .models.adatad.modeling_adatad import build_point_table

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
    their decayed scores in selection order (non-increasing). Ties go to the lowest index."""
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


def soft_nms(
    segments,
    scores,
    labels,
    sigma: float = 0.7,
    max_segments: int = 2000,
    min_score: float = 0.0,
    class_agnostic: bool = False,
    voting_threshold: float = 0.0,
):
    """Gaussian soft-NMS with OpenTAD's `batched_nms` semantics (use_soft_nms=True, method 2).

    Multiclass (default): each class independently, at most `max_segments` each; then all classes together sorted
    by score and cut to `max_segments`. Class-agnostic: one pass over all segments, then, if `voting_threshold` > 0,
    segment voting against all input segments. `min_score` drops segments whose decayed score falls below it
    (OpenTAD's default 0 drops nothing). Returns (segments (M, 2), scores (M,), labels (M,)) as numpy arrays,
    sorted by score (stable).
    """
    segments = np.asarray(segments, dtype=np.float64).reshape(-1, 2)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    if len(scores) == 0:
        return np.zeros((0, 2)), np.zeros((0,)), np.zeros((0,), dtype=np.int64)

    if class_agnostic:
        kept, kept_scores = _soft_nms_single(segments, scores, sigma, max_segments, min_score)
        new_segments, new_labels = segments[kept], labels[kept]
        if voting_threshold > 0:
            new_segments = _segment_voting(new_segments, segments, scores, voting_threshold)
    else:
        parts = []
        for label in np.unique(labels):
            index = np.flatnonzero(labels == label)
            kept, kept_scores = _soft_nms_single(segments[index], scores[index], sigma, max_segments, min_score)
            parts.append((segments[index[kept]], kept_scores, labels[index[kept]]))
        new_segments = np.concatenate([p[0] for p in parts])
        kept_scores = np.concatenate([p[1] for p in parts])
        new_labels = np.concatenate([p[2] for p in parts])

    order = np.argsort(-kept_scores, kind="stable")
    if max_segments > 0:
        order = order[:max_segments]
    return new_segments[order], kept_scores[order], new_labels[order]


def merge_video_detections(windows, fps: float, sample_stride: int, duration: float, config) -> dict[str, np.ndarray]:
    """Merges the decoded windows of one video and applies soft-NMS.

    windows: iterable of (detections (K, 4) [start, end, score, class] in window frame units, window_start in
    sampled frames). Padding rows (class < 0) are dropped; times become seconds with
    (window_start + x) * sample_stride / fps, are clipped to [0, duration], and zero-length segments are dropped.
    Soft-NMS uses the config's nms_sigma, max_segments, class_agnostic and voting_threshold.
    Returns {"segments": (M, 2) seconds, "scores": (M,), "labels": (M,)}.
    """
    all_segments, all_scores, all_labels = [], [], []
    for detections, window_start in windows:
        if isinstance(detections, torch.Tensor):
            detections = detections.detach().cpu().numpy()
        detections = np.asarray(detections, dtype=np.float64).reshape(-1, 4)
        detections = detections[(detections[:, 3] >= 0) & (detections[:, 2] >= 0)]
        seconds = (float(window_start) + detections[:, :2]) * sample_stride / fps
        all_segments.append(np.clip(seconds, 0.0, duration))
        all_scores.append(detections[:, 2])
        all_labels.append(detections[:, 3].astype(np.int64))
    segments = np.concatenate(all_segments) if all_segments else np.zeros((0, 2))
    scores = np.concatenate(all_scores) if all_scores else np.zeros((0,))
    labels = np.concatenate(all_labels) if all_labels else np.zeros((0,), dtype=np.int64)
    keep = segments[:, 1] > segments[:, 0]
    segments, scores, labels = soft_nms(
        segments[keep],
        scores[keep],
        labels[keep],
        sigma=config.nms_sigma,
        max_segments=config.max_segments,
        class_agnostic=config.class_agnostic,
        voting_threshold=config.voting_threshold,
    )
    return {"segments": segments, "scores": scores, "labels": labels}


def to_opentad_results(video_detections: dict, id2label: dict) -> dict:
    """{video_id: merged detections} -> {"results": {video_id: [{"segment": [s, e], "label": name, "score": p}]}}.

    Values are plain floats, unrounded (OpenTAD rounds to 2 and 4 decimals, which creates score ties).
    """
    names = {int(key): value for key, value in id2label.items()}
    results = {}
    for video_id, merged in video_detections.items():
        results[video_id] = [
            {"segment": [float(start), float(end)], "label": names[int(label)], "score": float(score)}
            for (start, end), score, label in zip(merged["segments"], merged["scores"], merged["labels"])
        ]
    return {"results": results}
