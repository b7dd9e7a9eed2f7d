"""The crop, resize, flip and planar copy of uint8 (T, H, W, 3) frames in one pass a frame: torch's uint8 bilinear
`F.interpolate` (antialiased or not, align_corners=False), byte for byte, written planar (T, 3, h, w) for the
compiled training and evaluation transforms (`video_io._run_compiled`).

What torch computes (ATen's UpSampleKernel, `_compute_indices_int16_weights_aa` and the AVX kernels of
UpSampleKernelAVXAntialias.h, which follow Pillow-SIMD): per axis, each output position i reads `size[i]` inputs from
`start[i]` with double weights (a triangle filter, widened by the scale when antialiased, normalised to sum 1),
rounded to int16 at one precision p for the whole axis (the largest p < 22 at which the largest weight times 2^(p+1)
stays below 2^15). The horizontal pass runs first, into a uint8 buffer: clamp((2^(p-1) + sum w * x) >> p, 0, 255);
the vertical pass then does the same down the columns. `interp_weights` computes those int16 weights in torch's order
of double operations, and the two passes here do the same integer sums, so the bytes are torch's
(`tests/data/test_resize_kernels.py` compares them over hundreds of sizes).

Why: torch's uint8 path copies a cropped view to a contiguous one first, then runs the horizontal pass one output
pixel at a time (~18-60 us a 160x160 frame from a 320x180 crop), and the planar copy after it is another pass. Here
the horizontal pass does 16 or 32 output values with one AVX-512 VBMI byte permute (`vpermi2b` picks each output's
taps out of a 128-byte window of the source row) and one or two `vpmaddwd`, for one channel at a time, so it writes
planar rows directly, in flipped order when flipped; it prefetches the source rows three ahead, since the decoded clip
comes from memory. The vertical pass takes the rows two taps at a time, 32 outputs a `vpmaddwd` pair. Measured on
2 cores (AMD EPYC, AVX-512), min over 15 runs of a 192-frame clip: 42-77 -> 17-30 us a frame with the planar copy
(`scripts/bench_train_transform.py` gives it in the whole transform).

Compiled only where numba's target has AVX-512 BW and VBMI (`RESIZE_LANES`); `plan` returns None where the
window does not hold a group's taps (a source row under 128 bytes, or shrinking by more than ~2.2x), and the caller
then uses torch's interpolate and the planar copy: the same bytes.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from .train_clip_kernels import _c_array, _Codegen, _lanes_of, _target_has

RESIZE_LANES = _target_has("avx512f", "avx512bw", "avx512vbmi")
WINDOW = 128  # bytes of a source row one permute picks from (two 64-byte registers)
PREFETCH_ROWS = 3  # source rows read ahead of the horizontal pass (measured best of 1-8: 32 -> 15 us at 320x180)


@njit(cache=True, nogil=True)
def interp_weights(n_in, n_out, antialias):
    """torch's uint8 bilinear weights along one axis: (start, size, int16 weights (n_out, ksize), precision).

    The double arithmetic is ATen's, in its order (`_compute_weights_aa`, then the int16 rescale); a weight of 0 at
    either end of an output's taps is dropped (it adds nothing to the sum), which shortens the taps of an
    enlarged axis from 3 to 2."""
    scale = np.float64(n_in) / np.float64(n_out)
    if antialias:
        support = scale if scale >= 1.0 else 1.0
        ksize = int(np.ceil(support)) * 2 + 1
    else:
        support, ksize = 1.0, 2
    invscale = 1.0 / scale if (scale >= 1.0 and antialias) else 1.0
    start = np.zeros(n_out, np.int64)
    size = np.zeros(n_out, np.int64)
    wf = np.zeros((n_out, ksize), np.float64)
    for i in range(n_out):
        center = scale * (i + 0.5)
        lo = max(np.int64(center - support + 0.5), 0)
        n = min(np.int64(center + support + 0.5), n_in) - lo
        n = min(max(n, 0), ksize)
        total = 0.0
        for j in range(n):
            x = (j + lo - center + 0.5) * invscale
            if x < 0.0:
                x = -x
            w = 1.0 - x if x < 1.0 else 0.0
            wf[i, j] = w
            total += w
        if total != 0.0:
            for j in range(n):
                wf[i, j] /= total
        start[i], size[i] = lo, n
    w_max = wf[0, 0]
    for i in range(n_out):
        for j in range(ksize):
            w_max = max(w_max, wf[i, j])
    precision = 0
    while precision < 22:
        if np.int64(0.5 + w_max * (1 << (precision + 1))) >= (1 << 15):
            break
        precision += 1
    wi = np.zeros((n_out, ksize), np.int16)
    for i in range(n_out):
        for j in range(ksize):
            v = wf[i, j] * (1 << precision)
            wi[i, j] = np.int16(np.int64(-0.5 + v) if v < 0 else np.int64(0.5 + v))
    for i in range(n_out):  # drop zero weights at either end
        while size[i] > 0 and wi[i, size[i] - 1] == 0:
            size[i] -= 1
        while size[i] > 0 and wi[i, 0] == 0:
            wi[i, : ksize - 1] = wi[i, 1:].copy()
            wi[i, ksize - 1] = 0
            start[i] += 1
            size[i] -= 1
    return start, size, wi, precision


# --- the horizontal pass: one group of output values of one channel and row per permute --------------------------
# Tap k of a group's lane j sits at byte 32 * (k // 2) + 2 j + k % 2 of the permuted bytes, so that `vpmaddwd` on
# each 32-byte half (widened to int16) sums taps 2m and 2m + 1 into lane j. Mode 1 (at most 2 taps): 32 lanes, the
# two halves are lanes 0-15 and 16-31. Mode 2 (3-4 taps): 16 lanes, both halves add up. Mode 3 (5-8 taps): 16 lanes,
# two permutes.

_MODE_TAPS = (0, 2, 4, 8)  # per mode (0: none), the most taps of an output
_MODE_LANES = (0, 32, 16, 16)
_MODE_PERMUTES = (0, 1, 1, 2)


def _round_clamp(cg, total, shift):
    """uint8 lanes of clamp(total >> shift, 0, 255) (`total` already holds the 2^(shift-1))."""
    builder, v32 = cg.builder, total.type
    value = builder.ashr(total, cg.splat(v32, shift))
    zero, top = ir.Constant(v32, [0] * v32.count), ir.Constant(v32, [255] * v32.count)
    value = builder.select(builder.icmp_signed("<", value, zero), zero, value)
    value = builder.select(builder.icmp_signed(">", value, top), top, value)
    return builder.trunc(value, ir.VectorType(ir.IntType(8), v32.count))


def _half_up(cg, vector_type, shift):
    """2^(shift-1) in every lane: the rounding both passes start their sums from."""
    one = ir.Constant(ir.IntType(32), 1)
    return cg.splat(vector_type, cg.builder.shl(one, cg.builder.sub(shift, one)))


def _make_group(mode):
    lanes, permutes = _MODE_LANES[mode], _MODE_PERMUTES[mode]

    @intrinsic
    def group(typingctx, src, src_at, index, weights, g, shift, out, out_at):
        """out[out_at + l] for the group's lanes l from the WINDOW bytes at src[src_at:]; index (uint8) and weights
        (int16) hold 64 entries a permute, group g's at g * 64 * permutes. No bounds checks (`plan` guarantees
        them)."""
        if not (
            _c_array(src, types.uint8) and _c_array(index, types.uint8) and _c_array(weights, types.int16)
            and _c_array(out, types.uint8)
        ):
            return None
        sig = types.void(src, src_at, index, weights, g, shift, out, out_at)

        def codegen(context, builder, signature, args):
            cg = _Codegen(context, builder, signature, args)
            i32, i64 = ir.IntType(32), ir.IntType(64)
            b64, w32, d16 = ir.VectorType(ir.IntType(8), 64), ir.VectorType(ir.IntType(16), 32), ir.VectorType(i32, 16)
            window = cg.address(0, cg.scalar(1))
            low = cg.load(window, b64)
            high = cg.load(builder.add(window, ir.Constant(i64, 64)), b64)
            entry = builder.mul(cg.scalar(4), ir.Constant(i64, 64 * permutes))
            index_at, weights_at = cg.address(2, entry), cg.address(3, entry, 2)
            permute = cg.function("llvm.x86.avx512.vpermi2var.qi.512", b64, [b64, b64, b64])
            madd = cg.function("llvm.x86.avx512.pmaddw.d.512", d16, [w32, w32])
            shift = cg.scalar(5, types.int32)
            totals = [_half_up(cg, d16, shift)] * (2 if lanes == 32 else 1)
            for p in range(permutes):
                idx = cg.load(builder.add(index_at, ir.Constant(i64, 64 * p)), b64)
                picked = builder.call(permute, [low, idx, high])
                for half in range(2):
                    part = builder.shuffle_vector(picked, ir.Constant(b64, ir.Undefined),
                                                  _lanes_of(range(32 * half, 32 * half + 32)))
                    w = cg.load(builder.add(weights_at, ir.Constant(i64, 128 * p + 64 * half)), w32)
                    k = half if lanes == 32 else 0
                    totals[k] = builder.add(totals[k], builder.call(madd, [builder.zext(part, w32), w]))
            values = [_round_clamp(cg, total, shift) for total in totals]
            if lanes == 32:
                values = [builder.shuffle_vector(values[0], values[1], _lanes_of(range(32)))]
            cg.store(values[0], cg.address(6, cg.scalar(7)))
            return context.get_dummy_value()

        return sig, codegen

    return group


_group1, _group2, _group3 = _make_group(1), _make_group(2), _make_group(3)


@intrinsic
def _prefetch(typingctx, array, at):
    """Prefetch the cache line of array[at] (prefetcht0; never faults)."""
    if not (isinstance(array, types.Array) and isinstance(at, types.Integer)):
        return None
    sig = types.void(array, at)

    def codegen(context, builder, signature, args):
        cg = _Codegen(context, builder, signature, args)
        i8, i32 = ir.IntType(8), ir.IntType(32)
        fn = cg.function("llvm.prefetch.p0", ir.VoidType(), [ir.PointerType(i8), i32, i32, i32])
        builder.call(fn, [builder.inttoptr(cg.address(0, cg.scalar(1)), ir.PointerType(i8)), ir.Constant(i32, 0),
                          ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return sig, codegen


# --- the vertical pass: 32 outputs of a row, two rows (taps) at a time ---------------------------------------------


@intrinsic
def _vertical_lanes(typingctx, buf, at, stride, pairs, weights, w_at, shift, out, out_at, valid):
    """out[out_at + l] = clamp((2^(shift-1) + sum over taps k of w_k * buf[at + k * stride + l]) >> shift) for
    l < valid (<= 32): `pairs` pairs of rows, their two int16 weights packed in one int32 of weights[w_at + m]
    (low half for row 2m). No bounds checks (`crop_resize_planar` guarantees them)."""
    if not (_c_array(buf, types.uint8) and _c_array(weights, types.int32) and _c_array(out, types.uint8)):
        return None
    sig = types.void(buf, at, stride, pairs, weights, w_at, shift, out, out_at, valid)

    def codegen(context, builder, signature, args):
        cg = _Codegen(context, builder, signature, args)
        i1, i8, i32, i64 = ir.IntType(1), ir.IntType(8), ir.IntType(32), ir.IntType(64)
        b32, w32, d16 = ir.VectorType(i8, 32), ir.VectorType(ir.IntType(16), 32), ir.VectorType(i32, 16)
        base, stride, shift = cg.address(0, cg.scalar(1)), cg.scalar(2), cg.scalar(6, types.int32)
        weights_at = cg.address(4, cg.scalar(5), 4)
        madd = cg.function("llvm.x86.avx512.pmaddw.d.512", d16, [w32, w32])
        totals = [cgutils.alloca_once_value(builder, _half_up(cg, d16, shift)) for _ in range(2)]
        interleave = [_lanes_of([v for lane in range(16 * h, 16 * h + 16) for v in (lane, 32 + lane)])
                      for h in range(2)]
        with cgutils.for_range(builder, cg.scalar(3)) as loop:
            row = builder.add(base, builder.mul(loop.index, builder.mul(stride, ir.Constant(i64, 2))))
            a, b = cg.load(row, b32), cg.load(builder.add(row, stride), b32)
            pair = cg.load(builder.add(weights_at, builder.mul(loop.index, ir.Constant(i64, 4))), i32)
            w = builder.bitcast(cg.splat(d16, pair), w32)
            for h in range(2):
                ab = builder.zext(builder.shuffle_vector(a, b, interleave[h]), w32)  # a_l, b_l, a_l+1, b_l+1, ...
                builder.store(builder.add(builder.load(totals[h]), builder.call(madd, [ab, w])), totals[h])
        values = [_round_clamp(cg, builder.load(total), shift) for total in totals]
        value = builder.shuffle_vector(values[0], values[1], _lanes_of(range(32)))
        target = builder.inttoptr(cg.address(7, cg.scalar(8)), ir.PointerType(b32))
        valid = cg.splat(ir.VectorType(i32, 32), cg.scalar(9, types.int32))
        mask = builder.icmp_signed("<", _lanes_of(range(32)), valid)
        store = cg.function("llvm.masked.store.v32i8.p0", ir.VoidType(), [b32, ir.PointerType(b32), i32,
                                                                           ir.VectorType(i1, 32)])
        builder.call(store, [value, target, ir.Constant(i32, 1), mask])
        return context.get_dummy_value()

    return sig, codegen


@njit(cache=True, nogil=True)
def horizontal_plan(row_bytes_in, start, size, weights, n_out, flip):
    """The horizontal pass's groups for one output row of each channel: (mode, base (byte of the window in the
    cropped source row, per group), index, weights); mode 0 where a group's taps do not fit one window."""
    taps = 0
    for i in range(n_out):
        taps = max(taps, size[i])
    mode = 0
    for m in range(len(_MODE_TAPS) - 1, 0, -1):  # the mode with the fewest lanes' work that holds the taps
        if taps <= _MODE_TAPS[m]:
            mode = m
    if mode == 0 or row_bytes_in < WINDOW:
        return 0, np.zeros(0, np.int64), np.zeros(0, np.uint8), np.zeros(0, np.int16)
    lanes, permutes = _MODE_LANES[mode], _MODE_PERMUTES[mode]
    per_channel = (n_out + lanes - 1) // lanes
    count = 3 * per_channel
    base = np.zeros(count, np.int64)
    index = np.zeros(count * 64 * permutes, np.uint8)
    wts = np.zeros(count * 64 * permutes, np.int16)
    for c in range(3):
        for gx in range(per_channel):
            g = c * per_channel + gx
            lo, hi = 1 << 62, -1
            for j in range(lanes):
                xo = gx * lanes + j
                if xo < n_out:
                    x = n_out - 1 - xo if flip else xo
                    if size[x] > 0:
                        lo = min(lo, 3 * start[x] + c)
                        hi = max(hi, 3 * (start[x] + size[x] - 1) + c)
            if hi < 0:  # every lane padding or weightless
                lo = hi = 0
            b = min(lo, row_bytes_in - WINDOW)
            if hi - b >= WINDOW:
                return 0, np.zeros(0, np.int64), np.zeros(0, np.uint8), np.zeros(0, np.int16)
            base[g] = b
            first = g * 64 * permutes
            for j in range(lanes):
                xo = gx * lanes + j
                if xo >= n_out:
                    continue
                x = n_out - 1 - xo if flip else xo
                for k in range(size[x]):
                    at = first + 32 * (k // 2) + 2 * j + k % 2
                    index[at] = 3 * (start[x] + k) + c - b
                    wts[at] = weights[x, k]
    return mode, base, index, wts


@njit(cache=True, nogil=True)
def _vertical_pairs(size, weights):
    """Each output row's taps in pairs, the two int16 weights packed as int32 (the odd last pair's second 0)."""
    n_out = size.shape[0]
    pairs_max = (weights.shape[1] + 1) // 2
    packed = np.zeros((n_out, pairs_max), np.int32)
    pairs = np.zeros(n_out, np.int64)
    for y in range(n_out):
        pairs[y] = (size[y] + 1) // 2
        for m in range(pairs[y]):
            low = np.int32(weights[y, 2 * m]) & 0xFFFF
            high = np.int32(weights[y, 2 * m + 1]) if 2 * m + 1 < size[y] else np.int32(0)
            packed[y, m] = low | (high << 16)
    return pairs, packed


@njit(cache=True, nogil=True)
def _crop_resize_planar(frames, y0, x0, rows, cols, mode, base, index, h_weights, h_shift, y_start, pairs,
                        v_weights, v_shift, buf, out):
    """The two passes over frames (n, H, W, 3) (C order) into out (n, 3, h, w); buf holds one frame's horizontal
    pass, planar (3 rows + 1, width rounded up to 64)."""
    n, height, width, _ = frames.shape
    out_h, out_w = out.shape[2], out.shape[3]
    flat = frames.reshape(-1)
    dst = out.reshape(-1)
    row_stride = 3 * width
    frame_bytes = height * row_stride
    lanes = _MODE_LANES[mode]
    per_channel = (out_w + lanes - 1) // lanes
    padded = buf.shape[0] // (3 * rows + 1)
    line_bytes = 3 * cols
    pairs_max = v_weights.shape[1]
    packed = v_weights.reshape(-1)
    for i in range(n):
        for y in range(rows):
            ahead = y + PREFETCH_ROWS  # the source row read PREFETCH_ROWS rows from now (the next frame's at the end)
            ahead_at = (i + ahead // rows) * frame_bytes + (y0 + ahead % rows) * row_stride + 3 * x0
            if ahead_at + line_bytes <= flat.shape[0]:
                for b in range(0, line_bytes + 63, 64):
                    _prefetch(flat, ahead_at + b)
            row = i * frame_bytes + (y0 + y) * row_stride + 3 * x0
            for c in range(3):
                line = (c * rows + y) * padded
                for gx in range(per_channel):
                    g = c * per_channel + gx
                    if mode == 1:
                        _group1(flat, row + base[g], index, h_weights, g, h_shift, buf, line + lanes * gx)
                    elif mode == 2:
                        _group2(flat, row + base[g], index, h_weights, g, h_shift, buf, line + lanes * gx)
                    else:
                        _group3(flat, row + base[g], index, h_weights, g, h_shift, buf, line + lanes * gx)
        for c in range(3):
            for y in range(out_h):
                at = (c * rows + y_start[y]) * padded
                o = ((i * 3 + c) * out_h + y) * out_w
                for x in range(0, out_w, 32):
                    _vertical_lanes(buf, at + x, padded, pairs[y], packed, y * pairs_max, v_shift, dst, o + x,
                                    min(32, out_w - x))


class CropResizePlanar:
    """The fused crop + resize + flip + planar copy for one clip's box: `plan(...)` (None where it does not apply),
    then `run(frames, out)` per block of frames. Bytes: F.interpolate(crop, out_hw, bilinear, align_corners=False,
    antialias=antialias), flipped left-right when `flip`, as (n, 3, h, w)."""

    def __init__(self, box, out_hw, horizontal, vertical):
        self.box, self.out_hw = box, out_hw
        self.mode, self.base, self.index, self.h_weights, self.h_shift = horizontal
        self.y_start, self.pairs, self.v_weights, self.v_shift = vertical
        x0, y0, x1, y1 = box
        lanes = _MODE_LANES[self.mode]
        width = max(out_hw[1] + 31, lanes * ((out_hw[1] + lanes - 1) // lanes))  # the vertical pass reads 32 a row
        self.padded = 64 * ((width + 63) // 64)
        # one spare row: an odd last tap pair reads the row after the taps (with weight 0)
        self.buf = np.zeros((3 * (y1 - y0) + 1) * self.padded, np.uint8)

    @classmethod
    def plan(cls, frame_hw, box, out_hw, flip: bool, antialias: bool):
        """The pass for `box` of height x width frames, or None where it does not apply and the caller keeps torch's
        interpolate + `planarize`: a CPU without VBMI; a box not inside the frame (slicing clips it there); a box
        already at the output size (nothing to resize: the planar copy alone is ~3x cheaper than identity weights);
        taps that do not fit the window."""
        if not RESIZE_LANES:
            return None
        x0, y0, x1, y1 = (int(v) for v in box)
        height, width = frame_hw
        out_h, out_w = (int(v) for v in out_hw)
        if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height) or (y1 - y0, x1 - x0) == (out_h, out_w):
            return None
        start, size, weights, shift = interp_weights(x1 - x0, out_w, antialias)
        horizontal = horizontal_plan(3 * (x1 - x0), start, size, weights, out_w, flip)
        if horizontal[0] == 0:
            return None
        y_start, y_size, y_weights, y_shift = interp_weights(y1 - y0, out_h, antialias)
        pairs, packed = _vertical_pairs(y_size, y_weights)
        return cls((x0, y0, x1, y1), (out_h, out_w), (*horizontal, shift), (y_start, pairs, packed, y_shift))

    def run(self, frames: np.ndarray, out: np.ndarray) -> None:
        """frames: uint8 (n, H, W, 3), C-contiguous (the whole frames, not the crop); out: uint8 (n, 3, h, w)."""
        if not (frames.flags.c_contiguous and out.flags.c_contiguous and frames.dtype == np.uint8
                and out.dtype == np.uint8 and frames.ndim == 4 and frames.shape[3] == 3
                and out.shape == (frames.shape[0], 3, *self.out_hw)):
            raise ValueError(f"need C-contiguous uint8 frames (n, H, W, 3) and out (n, 3, {self.out_hw}), got "
                             f"{frames.shape} {frames.dtype} and {out.shape} {out.dtype}")
        x0, y0, x1, y1 = self.box
        if x1 > frames.shape[2] or y1 > frames.shape[1]:
            raise ValueError(f"box {self.box} is not inside frames of {frames.shape[1]}x{frames.shape[2]}")
        _crop_resize_planar(frames, y0, x0, y1 - y0, x1 - x0, self.mode, self.base, self.index, self.h_weights,
                            self.h_shift, self.y_start, self.pairs, self.v_weights, self.v_shift, self.buf, out)
