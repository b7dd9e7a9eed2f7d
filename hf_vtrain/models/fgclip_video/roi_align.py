"""Tensor ops the models need that would otherwise come from torchvision (which must not be installed next to
torch 2.13: PyPI's build fails to import there): `roi_align`, with the semantics of torchvision's CPU kernel, in plain torch."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def roi_align(
    features: torch.Tensor,
    boxes: torch.Tensor | Sequence[torch.Tensor],
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = True,
) -> torch.Tensor:
    """RoIAlign (Mask R-CNN) with average pooling, equal to `torchvision.ops.roi_align` (CPU kernel semantics).

    Args:
        features: (N, C, H, W).
        boxes: (K, 5) rows `[batch_index, x1, y1, x2, y2]`, or a list of N (L_i, 4) tensors of `[x1, y1, x2, y2]`
            (one per image). Coordinates are multiplied by `spatial_scale` to land on the feature map (1.0: they
            already are feature-map coordinates, where pixel (i, j) covers [j, j+1) x [i, i+1)).
        output_size: (h, w) bins per box, or one int for both.
        spatial_scale: box coordinates -> feature-map coordinates, e.g. 1/16 for boxes in input pixels on a
            stride-16 map.
        sampling_ratio: bilinear samples per bin along each axis; <= 0: adaptive, ceil(box height / h) rows and
            ceil(box width / w) columns, per box.
        aligned: shift boxes by -0.5 so a box [0, W] covers the map's pixel centres exactly (Detectron2 /
            torchvision `aligned=True`; torchvision's default is False, the legacy behaviour, which also forces
            boxes to be at least 1 x 1).

    Returns:
        (K, C, h, w), in the features' dtype, differentiable with respect to `features`.

    Each bin averages bilinear samples at the centres of a regular grid inside it. A sample with y < -1, y > H,
    x < -1 or x > W contributes 0 (but still counts in the average); a sample in [-1, 0] is clamped to 0, and one
    at or beyond the last row/column reads that row/column. A box whose adaptive grid is empty gives zeros.
    Bilinear weights factor into a row part and a column part, so each box reduces to two small matrix products
    with its image's feature map: no Python loop over boxes, images or samples, and no per-box copy of the map.
    """
    if features.dim() != 4:
        raise ValueError(f"features must be (N, C, H, W), got shape {tuple(features.shape)}")
    rois = _as_rois(boxes, features)
    out_h, out_w = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
    if out_h < 1 or out_w < 1:
        raise ValueError(f"output_size must be positive, got {(out_h, out_w)}")
    n, c, height, width = features.shape
    k = rois.shape[0]
    if k == 0:
        return features.new_zeros((0, c, out_h, out_w))
    batch_index = rois[:, 0].to(torch.long)  # truncation, as the kernel's (int) cast
    if bool((batch_index < 0).any()) or bool((batch_index >= n).any()):
        raise ValueError(f"box batch indices must be in [0, {n - 1}], got {batch_index.tolist()}")

    # Coordinates in the features' precision as the kernel computes them (float32 for half/bfloat16 features).
    dtype = features.dtype if features.dtype in (torch.float32, torch.float64) else torch.float32
    rois = rois.to(dtype)
    offset = 0.5 if aligned else 0.0
    start_w = rois[:, 1] * spatial_scale - offset
    start_h = rois[:, 2] * spatial_scale - offset
    end_w = rois[:, 3] * spatial_scale - offset
    end_h = rois[:, 4] * spatial_scale - offset
    roi_w = end_w - start_w
    roi_h = end_h - start_h
    if not aligned:
        roi_w = roi_w.clamp(min=1.0)
        roi_h = roi_h.clamp(min=1.0)
    bin_h = roi_h / out_h
    bin_w = roi_w / out_w

    if sampling_ratio > 0:
        grid_h = torch.full((k,), sampling_ratio, dtype=torch.long, device=rois.device)
        grid_w = grid_h.clone()
    else:
        grid_h = torch.ceil(roi_h / out_h).to(torch.long)
        grid_w = torch.ceil(roi_w / out_w).to(torch.long)
    # The kernel's loops `for iy < grid` run zero times for a grid <= 0.
    grid_h = grid_h.clamp(min=0)
    grid_w = grid_w.clamp(min=0)
    count = (grid_h * grid_w).clamp(min=1).to(dtype)

    row_weights = _axis_weights(start_h, bin_h, grid_h, out_h, height, dtype) / count.view(k, 1, 1)  # (K, h, H)
    col_weights = _axis_weights(start_w, bin_w, grid_w, out_w, width, dtype)  # (K, w, W)

    # Group the boxes by image into an (N, L) grid padded with all-zero weights, so one batched contraction
    # reads each feature map in place: copying a map per box would cost K x C x H x W memory.
    order = torch.argsort(batch_index, stable=True)
    counts = torch.bincount(batch_index, minlength=n)
    slots_per_image = int(counts.max())
    first = torch.cumsum(counts, 0) - counts
    sorted_batch = batch_index[order]
    slot = sorted_batch * slots_per_image + torch.arange(k, device=rois.device) - first[sorted_batch]
    rows = row_weights.new_zeros((n * slots_per_image, out_h, height))
    cols = col_weights.new_zeros((n * slots_per_image, out_w, width))
    rows[slot] = row_weights[order]
    cols[slot] = col_weights[order]
    work = features if features.dtype == dtype else features.to(dtype)
    rows = rows.view(n, slots_per_image, out_h, height)
    cols = cols.view(n, slots_per_image, out_w, width)
    pooled = torch.einsum("nlpa,ncab,nlqb->nlcpq", rows, work, cols).reshape(n * slots_per_image, c, out_h, out_w)
    out = torch.empty((k, c, out_h, out_w), dtype=dtype, device=features.device)
    out = out.index_copy(0, order, pooled[slot])
    return out.to(features.dtype)


def _axis_weights(
    start: torch.Tensor,
    bin_size: torch.Tensor,
    grid: torch.Tensor,
    pooled: int,
    size: int,
    dtype: torch.dtype,
) -> torch.Tensor:
    """(K, pooled, size): for each box and bin, the summed 1-D bilinear weights of the bin's samples on each
    row (or column) of the map, with the kernel's validity and clamping rules along this axis."""
    k = start.shape[0]
    device = start.device
    max_grid = int(grid.max()) if k else 0
    if max_grid == 0:
        return torch.zeros((k, pooled, size), dtype=dtype, device=device)
    p = torch.arange(pooled, device=device, dtype=dtype).view(1, pooled, 1)
    i = torch.arange(max_grid, device=device).view(1, 1, max_grid)
    grid_f = grid.to(dtype).clamp(min=1).view(k, 1, 1)
    # Same operation order as the kernel: start + p * bin + (i + .5) * bin / grid.
    coord = start.view(k, 1, 1) + p * bin_size.view(k, 1, 1) + (i.to(dtype) + 0.5) * bin_size.view(k, 1, 1) / grid_f
    used = i < grid.view(k, 1, 1)  # adaptive grids differ per box: extra samples are masked out
    valid = used & (coord >= -1.0) & (coord <= size)  # NaN coordinates fail both comparisons, as in the kernel
    coord = torch.where(valid, coord, torch.zeros_like(coord)).clamp(min=0.0)
    low = coord.floor().to(torch.long)  # coord >= 0 here, so floor is the kernel's (int) truncation
    at_end = low >= size - 1
    low = torch.where(at_end, torch.full_like(low, size - 1), low)
    high = torch.where(at_end, low, low + 1)
    coord = torch.where(at_end, low.to(dtype), coord)
    frac = coord - low.to(dtype)
    w_low = (1.0 - frac) * valid
    w_high = frac * valid
    weights = torch.zeros((k, pooled, max_grid, size), dtype=dtype, device=device)
    weights.scatter_add_(3, low.unsqueeze(-1), w_low.unsqueeze(-1))
    weights.scatter_add_(3, high.unsqueeze(-1), w_high.unsqueeze(-1))
    return weights.sum(dim=2)


def _as_rois(boxes, features: torch.Tensor) -> torch.Tensor:
    if isinstance(boxes, torch.Tensor):
        if boxes.dim() != 2 or boxes.shape[1] != 5:
            raise ValueError(f"boxes must be (K, 5) [batch_index, x1, y1, x2, y2], got shape {tuple(boxes.shape)}")
        return boxes.detach()
    parts = []
    for i, b in enumerate(boxes):
        if b.dim() != 2 or b.shape[1] != 4:
            raise ValueError(f"boxes[{i}] must be (L, 4) [x1, y1, x2, y2], got shape {tuple(b.shape)}")
        b = b.detach()
        parts.append(torch.cat([torch.full_like(b[:, :1], i), b], dim=1))
    if not parts:
        return features.new_zeros((0, 5))
    return torch.cat(parts, dim=0)


__all__ = ["roi_align"]
