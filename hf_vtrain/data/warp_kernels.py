"""Compiled (numba) bilinear sampling of OpenCV's warpAffine, as `rand_augment_mmaction.warp_taps` defines it, bit
for bit: an output value is (512 + sum of weight * source) >> 10 over the four neighbours of its source position, with
integer weights wy * wx in 1/1024 (wx = 32 - fx or fx, wy = 32 - fy or fy; OpenCV's (sum * 32 + 2^14) >> 15) and 0
for a neighbour outside the frame. The numpy reference (`Warp(..., compiled=False)`) sums the same products in float32,
where every partial sum is an integer below 2^24 and so exact: both give the same bytes.

The frame is padded with one zero pixel on each side, so that a neighbour just outside it reads 0; a position whose
four neighbours all lie outside gives (512 + 0) >> 10 = 0 directly. Per output pixel that is one flat offset and two
fractions (6 bytes, ~150 KB for 160x160: in cache), read once per plane.
"""

from __future__ import annotations

import numpy as np
from numba import njit


def bilinear_plan(sx: np.ndarray, sy: np.ndarray, fx: np.ndarray, fy: np.ndarray):
    """From each output pixel's top-left source neighbour (sx, sy) and fractions (fx, fy) in 1/32 (H, W) arrays:
    (flat offsets into the padded (H + 2) x (W + 2) plane, -1 where every neighbour lies outside; fx; fy; W + 2)."""
    height, width = sx.shape
    padded_width = width + 2
    near = (sx >= -1) & (sx <= width - 1) & (sy >= -1) & (sy <= height - 1)
    base = np.where(near, (sy + 1) * padded_width + (sx + 1), -1).astype(np.int32).reshape(-1)
    return base, fx.astype(np.uint8).reshape(-1), fy.astype(np.uint8).reshape(-1), padded_width


@njit(cache=True, nogil=True)
def _bilinear(padded, base, fx, fy, padded_width, out):
    planes = padded.shape[0]
    pixels = base.shape[0]
    for p in range(planes):
        src = padded[p]
        dst = out[p]
        for i in range(pixels):
            b = base[i]
            if b < 0:
                dst[i] = 0
                continue
            x = np.int32(fx[i])
            y = np.int32(fy[i])
            top = (32 - x) * np.int32(src[b]) + x * np.int32(src[b + 1])
            bottom = (32 - x) * np.int32(src[b + padded_width]) + x * np.int32(src[b + padded_width + 1])
            dst[i] = (512 + (32 - y) * top + y * bottom) >> 10


def warp_bilinear(frames: np.ndarray, base: np.ndarray, fx: np.ndarray, fy: np.ndarray,
                  padded_width: int) -> np.ndarray:
    """uint8 (n, c, H, W) frames warped by a `bilinear_plan`."""
    n, channels, height, width = frames.shape
    padded = np.zeros((n * channels, height + 2, padded_width), dtype=np.uint8)
    padded[:, 1:-1, 1:-1] = frames.reshape(n * channels, height, width)
    out = np.empty((n * channels, height * width), dtype=np.uint8)
    _bilinear(padded.reshape(n * channels, -1), base, fx, fy, padded_width, out)
    return out.reshape(frames.shape)
