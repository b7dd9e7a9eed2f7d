"""Compiled (numba) loops of the training-clip transform: the planar copy with its flip, MMAction2's RandAugment
operations (`rand_augment_mmaction`) and the folded colour jitter (`video_io._compile`'s affine step), on blocks of
uint8 planar (n, 3, H, W) frames small enough to stay in cache. (The crop and resize before them, fused with the
planar copy where the CPU has AVX-512 VBMI: `resize_kernels`.)

Every RandAugment kernel gives the bytes of the numpy operation it stands for (`tests/data/test_train_clip_kernels.py`
compares them on random frames of several sizes), and so imgaug's bytes; each says below why the arithmetic is the
same. The colour jitter kernel defines its own float32 order (written out in `color_affine`), which numpy's matmul
does not pin down.

Why compiled: at 320x180 decoding is cheap (~1.3 ms a training frame at stride 4), and the numpy operations, each a
few passes over the frame with int64 gathers, cost ~290 us a frame on average for the two drawn per clip; this file's
loops touch each value once or twice and let the compiler vectorise the contiguous ones. Where it will not, three
kernels are written as LLVM vector code (numba intrinsics): Rotate's neighbour reads as one vector gather
(`warp_gather`, generic LLVM, any CPU), 256-entry table lookups 64 bytes at a time (`apply_tables`, AVX-512
VBMI only, the scalar loop elsewhere), and ShearY's transposes by 8x8 byte tiles (`_tile8`, generic LLVM). The two
operations drawn per clip then average ~37 us a 160x160 frame (62 before those; `scripts/bench_train_transform.py`,
60 clips): Rotate ~69-84 us, ShearY ~29 (~66-91 with byte-by-byte transposes), the enhance blends ~25-50, the table
operations 3-30 (Equalize's histogram is the 30), the row shifts ~17-25.

Two things found measuring them, kept throughout: sums stay int32 (a literal 512 makes them int64, which AVX2
multiplies slowly), and a hot loop's reads go through slices or unsigned offsets, because for a signed index numba
tests for a negative one and adds the length, which stops vectorisation (the planar copy: 21 against 4.4 us a frame).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

# --- codegen helpers of the intrinsics (here, in resize_kernels) -------------------------------------------------


def _c_array(ty, dtype) -> bool:
    """Whether numba type `ty` is a 1-D C array of `dtype` (what the intrinsics take)."""
    return isinstance(ty, types.Array) and ty.layout == "C" and ty.ndim == 1 and ty.dtype == dtype


class _Codegen:
    """An intrinsic's arguments and builder: array k's data address as an i64 (plus an element offset), scalar k cast
    to a numba type, a vector loaded from an address, an LLVM intrinsic's declaration, a vector of one value."""

    def __init__(self, context, builder, signature, args):
        self.context, self.builder, self.signature, self.args = context, builder, signature, args

    def scalar(self, k, ty=types.int64):
        return self.context.cast(self.builder, self.args[k], self.signature.args[k], ty)

    def address(self, k, offset=None, itemsize: int = 1):
        """The address of array k's element `offset` (an i64 value) of `itemsize` bytes; its data without one."""
        array = cgutils.create_struct_proxy(self.signature.args[k])(self.context, self.builder, value=self.args[k])
        address = self.builder.ptrtoint(array.data, ir.IntType(64))
        if offset is None:
            return address
        if itemsize != 1:
            offset = self.builder.mul(offset, ir.Constant(ir.IntType(64), itemsize))
        return self.builder.add(address, offset)

    def load(self, address, vector_type):
        return self.builder.load(self.builder.inttoptr(address, ir.PointerType(vector_type)), align=1)

    def store(self, value, address):
        self.builder.store(value, self.builder.inttoptr(address, ir.PointerType(value.type)), align=1)

    def function(self, name, ret, params):
        return cgutils.get_or_insert_function(self.builder.module, ir.FunctionType(ret, params), name)

    def splat(self, vector_type, value):
        """A vector of `vector_type` whose lanes are all the (run-time) value."""
        undefined = ir.Constant(vector_type, ir.Undefined)
        first = self.builder.insert_element(undefined, value, ir.Constant(ir.IntType(32), 0))
        return self.builder.shuffle_vector(first, undefined, _lanes_of([0] * vector_type.count))


def _lanes_of(values):
    """A constant <n x i32> (a shuffle mask, lane numbers)."""
    return ir.Constant(ir.VectorType(ir.IntType(32), len(values)), list(values))


# --- layout ------------------------------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def planarize(hwc, flip, out):
    """out[i, c, y, x] = hwc[i, y, W - 1 - x if flip else x, c]: (n, H, W, 3) uint8 -> (n, 3, H, W) uint8.

    The reads go through unsigned flat offsets: with signed ones numba tests each for a negative (wraparound) index,
    which here costs 5x (21 against 4.4 us a 160x160 frame)."""
    n, height, width, _ = hwc.shape
    one, two = np.uint64(1), np.uint64(2)
    for i in range(n):
        for y in range(height):
            s = hwc[i, y].reshape(-1)
            d0, d1, d2 = out[i, 0, y], out[i, 1, y], out[i, 2, y]
            for x in range(width):
                k = np.uint64(3 * (width - 1 - x if flip else x))
                d0[x] = s[k]
                d1[x] = s[k + one]
                d2[x] = s[k + two]


# --- warps: OpenCV's warpAffine taps (rand_augment_mmaction.warp_taps) --------------------------------------------
# An output value is (512 + sum of (wy * wx) * source) >> 10 over the four neighbours of its source position on the
# 1/32-pixel grid, a neighbour outside the frame counting as 0: integer arithmetic, the same sums as the numpy
# reference's exact float32 ones (every partial sum is an integer below 2^24).


@njit(cache=True, nogil=True)
def _value(row, col):
    if col < 0 or col >= row.shape[0]:
        return np.int32(0)
    return np.int32(row[col])


@njit(cache=True, nogil=True)
def _border_sum(top, bottom, col, w00, w01, w10, w11):
    """An output value whose neighbours may lie outside: columns outside the row read as 0 (a row outside the frame
    is passed as a row of zeros)."""
    return (
        np.int32(512)
        + w00 * _value(top, col)
        + w01 * _value(top, col + 1)
        + w10 * _value(bottom, col)
        + w11 * _value(bottom, col + 1)
    ) >> 10


@njit(cache=True, nogil=True)
def _row_edges(top, bottom, sx, w00, w01, w10, w11, lo, hi, out):
    """The columns of an output row left and right of its interior [lo, hi) (where both source columns exist):
    those whose two source columns both lie outside are 0 ((512 + 0) >> 10); the one column on each side that
    straddles the border is summed with the outside read as 0."""
    width = out.shape[0]
    zero_lo = min(max(0, -sx - 1), lo)
    zero_hi = max(min(width, width - sx), hi)
    out[:zero_lo] = 0
    out[zero_hi:] = 0
    for x in range(zero_lo, lo):
        out[x] = _border_sum(top, bottom, sx + x, w00, w01, w10, w11)
    for x in range(hi, zero_hi):
        out[x] = _border_sum(top, bottom, sx + x, w00, w01, w10, w11)


@njit(cache=True, nogil=True)
def _shift_row(top, bottom, sx, w00, w01, w10, w11, lo, hi, out):
    """One output row from its two source rows (zero rows where outside the frame), all four taps."""
    # the interior, where both columns exist, as one loop over slices (it vectorises)
    a, b, c, d = top[sx + lo : sx + hi], top[sx + lo + 1 : sx + hi + 1], bottom[sx + lo : sx + hi], \
        bottom[sx + lo + 1 : sx + hi + 1]
    o = out[lo:hi]
    half = np.int32(512)  # int32 throughout: a literal 512 would make the sums int64, which AVX2 multiplies slowly
    for k in range(hi - lo):
        o[k] = (half + w00 * np.int32(a[k]) + w01 * np.int32(b[k]) + w10 * np.int32(c[k]) + w11 * np.int32(d[k])) >> 10
    _row_edges(top, bottom, sx, w00, w01, w10, w11, lo, hi, out)


@njit(cache=True, nogil=True)
def _pair_sum(s, i, off, n, wa, wb, d, o):
    """d[o + k] = (16 + wa s[i + k] + wb s[i + off + k]) >> 5 for k < n (unsigned flat offsets): the four-tap sum when
    one of the two fractions is 0. Then two of the weights are 0 and the others 32 (32 - a) and 32 a, so
    (512 + 32 t) >> 10 is (16 + t) >> 5 exactly, and t fits 13 bits, which lets the compiler work in 16-bit lanes."""
    for k in range(n):
        j = i + k
        d[o + k] = (np.int32(16) + wa * np.int32(s[j]) + wb * np.int32(s[j + off])) >> 5


@njit(cache=True, nogil=True)
def shift_rows(src, dst, fixed_y, fixed_x):
    """A warp that moves every row as a whole: output row y reads source rows fixed_y[y] >> 5 and the next, with
    vertical weight fixed_y[y] & 31, from column (fixed_x[y] >> 5) + x with horizontal weight fixed_x[y] & 31
    (src, dst: (planes, H, W) uint8; ShearX, TranslateX/Y).

    A row whose weighted source rows both lie outside is 0. ShearX and TranslateX have no vertical fraction and
    TranslateY no horizontal one, so their interiors are two-tap sums (`_pair_sum`; with the flat offsets, 34 -> 17 us a frame);
    a row with both fractions, or with one of its two weighted rows outside, takes all four (`_shift_row`)."""
    planes, height, width = src.shape
    size = height * width
    s, d = src.reshape(-1), dst.reshape(-1)
    zero = np.zeros(width, np.uint8)
    for y in range(height):
        fy, fx = fixed_y[y], fixed_x[y]
        sy, ay = fy >> 5, np.int32(fy & 31)
        sx, ax = fx >> 5, np.int32(fx & 31)
        w00, w01 = np.int32((32 - ay) * (32 - ax)), np.int32((32 - ay) * ax)
        w10, w11 = np.int32(ay * (32 - ax)), np.int32(ay * ax)
        top_in, bottom_in = 0 <= sy < height, 0 <= sy + 1 < height
        if not top_in and not (bottom_in and ay > 0):
            for p in range(planes):
                dst[p, y, :] = 0
            continue
        lo = min(max(0, -sx), width)
        hi = max(min(width, width - 1 - sx), lo)
        pair, off, wa, wb = False, 0, np.int32(0), np.int32(0)
        if ay == 0:  # the row itself (inside, as the zero test above leaves it), columns x and x + 1
            pair, off, wa, wb = True, 1, np.int32(32 - ax), np.int32(ax)
        elif ax == 0 and top_in and bottom_in:  # rows sy and sy + 1, one column
            pair, off, wa, wb = True, width, np.int32(32 - ay), np.int32(ay)
        for p in range(planes):
            top = src[p, sy] if top_in else zero
            bottom = src[p, sy + 1] if bottom_in else zero
            out = dst[p, y]
            if pair:
                _pair_sum(s, np.uint64(p * size + sy * width + sx + lo), np.uint64(off), np.uint64(hi - lo), wa, wb, d,
                          np.uint64(p * size + y * width + lo))
                _row_edges(top, bottom, sx, w00, w01, w10, w11, lo, hi, out)
            else:
                _shift_row(top, bottom, sx, w00, w01, w10, w11, lo, hi, out)


@njit(cache=True, nogil=True)
def shift_columns(src, dst, fixed_y, fixed_x, scratch_in, scratch_out):
    """A warp that moves every column as a whole (ShearY): `shift_rows` on the transposed planes, with the roles of
    x and y exchanged (fixed_y[x] is the source row at y = 0 of column x, fixed_x[x] its source column). The four
    products wy * wx are the same numbers, so are the sums. scratch_*: (planes, W, H) uint8."""
    planes, height, width = src.shape
    for p in range(planes):
        _transpose(src[p].reshape(-1), scratch_in[p].reshape(-1), height, width)
    shift_rows(scratch_in, scratch_out, fixed_x, fixed_y)
    for p in range(planes):
        _transpose(scratch_out[p].reshape(-1), dst[p].reshape(-1), width, height)


@intrinsic
def _tile8(typingctx, src, src_at, src_stride, dst, dst_at, dst_stride):
    """The 8x8 byte tile at dst[dst_at] (rows dst_stride apart) = the one at src[src_at] (rows src_stride apart)
    transposed: eight 8-byte loads into one 64-byte vector, one constant byte shuffle (VBMI's vpermb where the CPU
    has it; generic LLVM, lowered on any CPU), eight 8-byte stores. 1-D C uint8 arrays; no bounds checks."""
    if not (_c_array(src, types.uint8) and _c_array(dst, types.uint8)):
        return None
    sig = types.void(src, src_at, src_stride, dst, dst_at, dst_stride)

    def codegen(context, builder, signature, args):
        cg = _Codegen(context, builder, signature, args)
        i32, i64 = ir.IntType(32), ir.IntType(64)
        words, bytes_ = ir.VectorType(i64, 8), ir.VectorType(ir.IntType(8), 64)
        source, target = cg.address(0, cg.scalar(1)), cg.address(3, cg.scalar(4))
        tile = ir.Constant(words, ir.Undefined)
        for r in range(8):
            word = builder.load(builder.inttoptr(builder.add(source, builder.mul(cg.scalar(2), ir.Constant(i64, r))),
                                                 ir.PointerType(i64)), align=1)
            tile = builder.insert_element(tile, word, ir.Constant(i32, r))
        order = _lanes_of([8 * k + i for i in range(8) for k in range(8)])  # output row i, byte k = row k, byte i
        moved = builder.shuffle_vector(builder.bitcast(tile, bytes_), ir.Constant(bytes_, ir.Undefined), order)
        moved = builder.bitcast(moved, words)
        for r in range(8):
            cg.store(builder.extract_element(moved, ir.Constant(i32, r)),
                     builder.add(target, builder.mul(cg.scalar(5), ir.Constant(i64, r))))
        return context.get_dummy_value()

    return sig, codegen


@njit(cache=True, nogil=True)
def _transpose(src, dst, height, width):
    """dst (width x height) = src (height x width) transposed, flat: 8x8 tiles (`_tile8`: 27.7 -> 8.4 us a 3-plane
    160x160 frame against the byte loop), the rows and columns past the last whole tile byte by byte."""
    h8, w8 = height - height % 8, width - width % 8
    for ty in range(0, h8, 8):
        for tx in range(0, w8, 8):
            _tile8(src, ty * width + tx, width, dst, tx * height + ty, height)
    for y in range(height):
        row = np.uint64(y * width)
        for x in range(w8 if y < h8 else 0, width):  # the columns right of the tiles; below them, every column
            dst[np.uint64(x * height + y)] = src[row + np.uint64(x)]


@njit(cache=True, nogil=True)
def warp_general(src, dst, x_row, y_row, x_col, y_col):
    """Any affine warp (Rotate): output (y, x) samples at fixed (x_row[y] + x_col[x], y_row[y] + y_col[x]) >> 5
    (warp_taps' x0 + adelta, y0 + bdelta); src, dst (planes, H, W) uint8. A pixel's position and weights are worked
    out once for all the planes; inside the frame its four reads step from plane to plane by unsigned flat offsets
    (no negative-index wraparound to test; ~8% faster than indexing each plane)."""
    planes, height, width = src.shape
    size = height * width
    s, d = src.reshape(-1), dst.reshape(-1)
    step, row, one = np.uint64(size), np.uint64(width), np.uint64(1)
    zero = np.zeros(width, np.uint8)
    half = np.int32(512)
    for y in range(height):
        for x in range(width):
            fx = (x_row[y] + x_col[x]) >> 5
            fy = (y_row[y] + y_col[x]) >> 5
            sx, sy = fx >> 5, fy >> 5
            ax, ay = np.int32(fx & 31), np.int32(fy & 31)
            w00, w01 = np.int32((32 - ay) * (32 - ax)), np.int32((32 - ay) * ax)
            w10, w11 = np.int32(ay * (32 - ax)), np.int32(ay * ax)
            o = np.uint64(y * width + x)
            if 0 <= sx < width - 1 and 0 <= sy < height - 1:
                b = np.uint64(sy * width + sx)
                for _ in range(planes):
                    d[o] = (
                        half + w00 * np.int32(s[b]) + w01 * np.int32(s[b + one]) + w10 * np.int32(s[b + row])
                        + w11 * np.int32(s[b + row + one])
                    ) >> 10
                    b += step
                    o += step
            elif sx < -1 or sx >= width or sy < -1 or sy >= height:
                for _ in range(planes):
                    d[o] = 0
                    o += step
            else:
                for p in range(planes):
                    top = src[p, sy] if 0 <= sy < height else zero
                    bottom = src[p, sy + 1] if 0 <= sy + 1 < height else zero
                    d[o] = _border_sum(top, bottom, sx, w00, w01, w10, w11)
                    o += step


# --- warps by vector gather: one 32-bit load brings a pixel's four neighbours ------------------------------------
# For a warp whose grid is fixed per frame size (Rotate), `rand_augment_mmaction.Warp` works out once where every
# output pixel reads: `index` into the plane's quads (below) and its two 1/32 fractions. Per frame, `pack_quads`
# writes each source position's four neighbours as the bytes of one uint32, and `warp_gather` reads 16 output pixels'
# quads with one vector gather (`_warp_lanes`), then weighs the bytes as `warp_general` does: the same sums, so the
# same bytes. LLVM does not vectorise a gather by itself here (its cost model keeps `warp_general` scalar: 12 byte
# loads a pixel), hence the intrinsic; `llvm.masked.gather` is generic, lowered to whatever the CPU has.

LANES = 16


@intrinsic
def _warp_lanes(typingctx, quads, index, frac_x, frac_y, out, start):
    """out[start + l] = (512 + sum over the four neighbours of weight * byte) >> 10 of quads[index[start + l]] for
    l < LANES, the weights (32 - ay)(32 - ax), (32 - ay) ax, ay (32 - ax), ay ax from frac_x/frac_y[start + l]: one
    gather. 1-D C arrays (uint32, int32, uint8, uint8, uint8); no bounds checks (warp_gather's caller guarantees
    them)."""
    if not (
        _c_array(quads, types.uint32) and _c_array(index, types.int32) and _c_array(frac_x, types.uint8)
        and _c_array(frac_y, types.uint8) and _c_array(out, types.uint8) and isinstance(start, types.Integer)
    ):
        return None
    sig = types.void(quads, index, frac_x, frac_y, out, start)

    def codegen(context, builder, signature, args):
        cg = _Codegen(context, builder, signature, args)
        i1, i8, i32, i64 = ir.IntType(1), ir.IntType(8), ir.IntType(32), ir.IntType(64)
        v32, v64 = ir.VectorType(i32, LANES), ir.VectorType(i64, LANES)

        def constant(vector_type, value):
            return ir.Constant(vector_type, [value] * LANES)

        first = cg.scalar(5)
        idx = cg.load(cg.address(1, first, 4), v32)
        addresses = builder.add(builder.shl(builder.zext(idx, v64), constant(v64, 2)), cg.splat(v64, cg.address(0)))
        pointers = ir.VectorType(ir.PointerType(i32), LANES)
        gather = cg.function(f"llvm.masked.gather.v{LANES}i32.v{LANES}p0", v32,
                             [pointers, i32, ir.VectorType(i1, LANES), v32])
        quad = builder.call(gather, [builder.inttoptr(addresses, pointers), ir.Constant(i32, 4),
                                     constant(ir.VectorType(i1, LANES), 1), ir.Constant(v32, ir.Undefined)])
        ax = builder.zext(cg.load(cg.address(2, first), ir.VectorType(i8, LANES)), v32)
        ay = builder.zext(cg.load(cg.address(3, first), ir.VectorType(i8, LANES)), v32)
        bx, by = builder.sub(constant(v32, 32), ax), builder.sub(constant(v32, 32), ay)
        total = constant(v32, 512)
        weights = (builder.mul(by, bx), builder.mul(by, ax), builder.mul(ay, bx), builder.mul(ay, ax))
        for k, weight in enumerate(weights):
            byte = builder.and_(builder.lshr(quad, constant(v32, 8 * k)), constant(v32, 255))
            total = builder.add(total, builder.mul(weight, byte))
        cg.store(builder.trunc(builder.ashr(total, constant(v32, 10)), ir.VectorType(i8, LANES)), cg.address(4, first))
        return context.get_dummy_value()

    return sig, codegen


@njit(cache=True, nogil=True)
def pack_quads(src, quads):
    """quads[p, (y + 1) * (W + 1) + x + 1] = plane p's values at (y, x), (y, x + 1), (y + 1, x), (y + 1, x + 1) as
    the bytes of a uint32, low to high, for y in [-1, H - 1] and x in [-1, W - 1], a position outside the plane
    giving 0; quads[p, (H + 1) * (W + 1)] = 0, the quad of a pixel whose neighbours all lie outside.
    src (planes, H, W) uint8, quads (planes, >= (H + 1) * (W + 1) + 1) uint32."""
    planes, height, width = src.shape
    stride = width + 1
    zero = np.zeros(width, np.uint8)
    for p in range(planes):
        q = quads[p]
        for yy in range(height + 1):
            top = src[p, yy - 1] if yy >= 1 else zero
            bottom = src[p, yy] if yy < height else zero
            row = q[yy * stride : (yy + 1) * stride]
            row[0] = (np.uint32(top[0]) << 8) | (np.uint32(bottom[0]) << 24)  # x = -1
            t0, t1, b0, b1, inner = top[: width - 1], top[1:], bottom[: width - 1], bottom[1:], row[1:width]
            for x in range(width - 1):
                inner[x] = np.uint32(t0[x]) | (np.uint32(t1[x]) << 8) | (np.uint32(b0[x]) << 16) | (
                    np.uint32(b1[x]) << 24)
            row[width] = np.uint32(top[width - 1]) | (np.uint32(bottom[width - 1]) << 16)  # x = W - 1
        q[(height + 1) * stride] = 0


@njit(cache=True, nogil=True)
def warp_gather(src, dst, quads, index, frac_x, frac_y):
    """`warp_general`'s bytes for a warp given per output pixel (flat, H * W) as `index` into `pack_quads`' layout
    and the fractions frac_x, frac_y (0-31) of its position on the 1/32-pixel grid; src, dst (planes, H, W) uint8,
    quads a (planes, (H + 1) * (W + 1) + 1) uint32 scratch."""
    planes, height, width = src.shape
    size = height * width
    need = (height + 1) * (width + 1) + 1
    if index.shape[0] != size or frac_x.shape[0] != size or frac_y.shape[0] != size:
        raise ValueError("warp_gather: index and fractions must have one entry per output pixel")
    if quads.shape[0] < planes or quads.shape[1] < need:
        raise ValueError("warp_gather: quads scratch too small")
    lo, hi = np.int32(0), np.int32(0)
    for k in range(size):  # a min/max reduction (vectorised, ~1 us): the gathers themselves check nothing
        lo, hi = min(lo, index[k]), max(hi, index[k])
    if lo < 0 or hi >= need:
        raise ValueError("warp_gather: index outside the quads")
    pack_quads(src, quads)
    end = size - size % LANES
    for p in range(planes):
        q, d = quads[p], dst[p].reshape(-1)
        for o in range(0, end, LANES):
            _warp_lanes(q, index, frac_x, frac_y, d, o)
        for k in range(end, size):
            v, ax, ay = q[index[k]], np.int32(frac_x[k]), np.int32(frac_y[k])
            d[k] = (
                np.int32(512) + (32 - ay) * (32 - ax) * np.int32(v & 255) + (32 - ay) * ax * np.int32((v >> 8) & 255)
                + ay * (32 - ax) * np.int32((v >> 16) & 255) + ay * ax * np.int32(v >> 24)
            ) >> 10


def gather_taps(grid, height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`warp_gather`'s (index, frac_x, frac_y) for `rand_augment_mmaction.warp_grid`'s grid."""
    x_row, y_row, x_col, y_col = grid
    fixed_x = (x_row[:, None] + x_col[None, :]) >> 5
    fixed_y = (y_row[:, None] + y_col[None, :]) >> 5
    sx, sy = fixed_x >> 5, fixed_y >> 5
    touches = (sx >= -1) & (sx < width) & (sy >= -1) & (sy < height)  # some neighbour inside the frame
    index = np.where(touches, (sy + 1) * (width + 1) + sx + 1, (height + 1) * (width + 1))
    frac_x = np.where(touches, fixed_x & 31, 0)
    frac_y = np.where(touches, fixed_y & 31, 0)
    return index.astype(np.int32).reshape(-1), frac_x.astype(np.uint8).reshape(-1), frac_y.astype(np.uint8).reshape(-1)


# --- per-value operations, in place on (n, 3, H, W) -------------------------------------------------------------


@njit(cache=True, nogil=True)
def posterize(frames, mask):
    flat = frames.reshape(-1)
    for k in range(flat.shape[0]):
        flat[k] = flat[k] & mask


@njit(cache=True, nogil=True)
def solarize(frames, threshold):
    """v >= threshold -> 255 - v (the numpy table's `values >= int(threshold)`; threshold an int, above 255 for
    none)."""
    if threshold > 255:
        return
    cut = np.uint8(max(threshold, 0))  # a uint8 compare vectorises 32 wide (an int64 one: 6x slower here)
    flat = frames.reshape(-1)
    for k in range(flat.shape[0]):
        v = flat[k]
        flat[k] = 255 - v if v >= cut else v


@njit(cache=True, nogil=True)
def invert(frames):
    flat = frames.reshape(-1)
    for k in range(flat.shape[0]):
        flat[k] = 255 - flat[k]


@njit(cache=True, nogil=True)
def _lookup(flat, table, start):
    """flat[k] = table[flat[k]] for k >= start, one value at a time."""
    for k in range(start, flat.shape[0]):
        flat[k] = table[flat[k]]


@njit(cache=True, nogil=True)
def _check_tables(frames, tables):
    """One table of 256 entries per frame and channel: numba checks no index, and the 64-byte lookup reads 256."""
    if tables.shape[0] != frames.shape[0] or tables.shape[1] != frames.shape[1] or tables.shape[2] != 256:
        raise ValueError("apply_tables: tables must be (frames, channels, 256)")


@njit(cache=True, nogil=True)
def apply_tables_scalar(frames, tables):
    """tables (n, 3, 256): frame i's channel c through tables[i, c], one value at a time (~40 us a 160x160 frame)."""
    n, channels = frames.shape[0], frames.shape[1]
    _check_tables(frames, tables)
    for i in range(n):
        for c in range(channels):
            _lookup(frames[i, c].reshape(-1), tables[i, c], 0)


# A 256-entry table lookup of 64 bytes at once: AVX-512 VBMI's vpermi2b looks 64 bytes up in two 64-byte registers
# (the index's bit 6 picks the register), so two of them cover entries 0-127 and 128-255 and the index's top bit
# selects between the two results (~2.5 against ~40 us a 160x160 frame for `apply_tables_scalar`). An x86 intrinsic:
# compiled only where numba's target CPU has VBMI (`TABLE_LANES`), the scalar loop elsewhere.

TABLE_BYTES = 64


def _target_has(*features: str) -> bool:
    """Whether numba compiles for a CPU with every one of `features` (LLVM names, e.g. "avx512vbmi"): its
    NUMBA_CPU_FEATURES when set, else the host's."""
    import llvmlite.binding as ll
    from numba.core import config

    have = config.CPU_FEATURES if config.CPU_FEATURES is not None else ll.get_host_cpu_features().flatten()
    flags = set(have.split(","))
    return all(f"+{name}" in flags for name in features)


TABLE_LANES = _target_has("avx512f", "avx512bw", "avx512vbmi")


@intrinsic
def _table_lanes(typingctx, table, values, out, start):
    """out[start + l] = table[values[start + l]] for l < 64: two vpermi2b and a select. 1-D C uint8 arrays, table
    256 entries; no bounds checks."""
    if not (
        _c_array(table, types.uint8) and _c_array(values, types.uint8) and _c_array(out, types.uint8)
        and isinstance(start, types.Integer)
    ):
        return None
    sig = types.void(table, values, out, start)

    def codegen(context, builder, signature, args):
        cg = _Codegen(context, builder, signature, args)
        v8 = ir.VectorType(ir.IntType(8), TABLE_BYTES)
        first = cg.scalar(3)
        quarters = [cg.load(cg.address(0, ir.Constant(ir.IntType(64), TABLE_BYTES * k)), v8) for k in range(4)]
        index = cg.load(cg.address(1, first), v8)
        permute = cg.function("llvm.x86.avx512.vpermi2var.qi.512", v8, [v8, v8, v8])
        low = builder.call(permute, [quarters[0], index, quarters[1]])
        high = builder.call(permute, [quarters[2], index, quarters[3]])
        upper = builder.icmp_signed("<", index, ir.Constant(v8, [0] * TABLE_BYTES))  # index >= 128
        cg.store(builder.select(upper, high, low), cg.address(2, first))
        return context.get_dummy_value()

    return sig, codegen


def _apply_tables_lanes(frames, tables):
    """`apply_tables_scalar` 64 bytes at a time (TABLE_LANES only)."""
    n, channels = frames.shape[0], frames.shape[1]
    _check_tables(frames, tables)
    for i in range(n):
        for c in range(channels):
            flat = frames[i, c].reshape(-1)
            table = tables[i, c]
            size = flat.shape[0]
            end = size - size % TABLE_BYTES
            for o in range(0, end, TABLE_BYTES):
                _table_lanes(table, flat, flat, o)
            _lookup(flat, table, end)


# compiled (and cached) only for a target that has the instruction
apply_tables_lanes = njit(cache=True, nogil=True)(_apply_tables_lanes) if TABLE_LANES else None
apply_tables = apply_tables_lanes if TABLE_LANES else apply_tables_scalar


@njit(cache=True, nogil=True)
def _blend(d, v, factor, clip):
    """Pillow's blend of degenerate d and value v (rand_augment_mmaction.blend_table): d + factor * (v - d) in double,
    stored as float32, then (factor outside [0, 1]) floored and clipped to [0, 255], or (inside) truncated."""
    mixed = np.float32(np.float64(d) + factor * (np.float64(v) - np.float64(d)))
    if clip:
        mixed = min(max(np.floor(mixed), np.float32(0.0)), np.float32(255.0))
    return np.uint8(mixed)


@njit(cache=True, nogil=True)
def _luma(r, g, b):
    """Pillow's RGB -> L: (19595 R + 38470 G + 7471 B + 2^15) >> 16."""
    return (np.int32(r) * 19595 + np.int32(g) * 38470 + np.int32(b) * 7471 + 0x8000) >> 16


@njit(cache=True, nogil=True)
def enhance_color(frames, factor, clip):
    """ImageEnhance.Color: each value blended with its pixel's luma."""
    n, _, height, width = frames.shape
    for i in range(n):
        r, g, b = frames[i, 0].reshape(-1), frames[i, 1].reshape(-1), frames[i, 2].reshape(-1)
        for k in range(height * width):
            d = _luma(r[k], g[k], b[k])
            r[k] = _blend(d, r[k], factor, clip)
            g[k] = _blend(d, g[k], factor, clip)
            b[k] = _blend(d, b[k], factor, clip)


@njit(cache=True, nogil=True)
def mean_luma_rounded(frames):
    """Per frame, int(mean luma + 0.5): the luma sum is an exact integer, as numpy's float64 sum of it is."""
    n, _, height, width = frames.shape
    out = np.empty(n, np.int32)
    for i in range(n):
        r, g, b = frames[i, 0].reshape(-1), frames[i, 1].reshape(-1), frames[i, 2].reshape(-1)
        total = 0
        for k in range(height * width):
            total += _luma(r[k], g[k], b[k])
        out[i] = np.int32(np.floor(np.float64(total) / (height * width) + 0.5))
    return out


@njit(cache=True, nogil=True)
def blend_with(frames, degenerate, factor, clip):
    """frames = blend(degenerate, frames) value by value, in place (degenerate: frames' shape, uint8)."""
    flat, dflat = frames.reshape(-1), degenerate.reshape(-1)
    for k in range(flat.shape[0]):
        flat[k] = _blend(dflat[k], flat[k], factor, clip)


@njit(cache=True, nogil=True)
def blend_with_constants(frames, degenerate, factor, clip):
    """Frame i blended with the constant degenerate[i], in place."""
    for i in range(frames.shape[0]):
        flat = frames[i].reshape(-1)
        d = degenerate[i]
        for k in range(flat.shape[0]):
            flat[k] = _blend(d, flat[k], factor, clip)


@njit(cache=True, nogil=True)
def smooth(frames, out):
    """Pillow's ImageFilter.SMOOTH as ImageEnhance.Sharpness uses it: inside the one-pixel border (2 * total + 13) // 26
    of the 3x3 sum with the centre counted 5 times; the border copied (out: frames' shape, uint8)."""
    n, channels, height, width = frames.shape
    for i in range(n):
        for c in range(channels):
            plane, dst = frames[i, c], out[i, c]
            dst[0, :] = plane[0, :]
            dst[height - 1, :] = plane[height - 1, :]
            for y in range(1, height - 1):
                up, mid, down, o = plane[y - 1], plane[y], plane[y + 1], dst[y]
                o[0] = mid[0]
                o[width - 1] = mid[width - 1]
                u0, u1, u2 = up[: width - 2], up[1 : width - 1], up[2:]
                m0, m1, m2 = mid[: width - 2], mid[1 : width - 1], mid[2:]
                d0, d1, d2 = down[: width - 2], down[1 : width - 1], down[2:]
                inner = o[1 : width - 1]
                for k in range(width - 2):
                    total = (
                        np.int32(u0[k]) + np.int32(u1[k]) + np.int32(u2[k])
                        + np.int32(m0[k]) + 5 * np.int32(m1[k]) + np.int32(m2[k])
                        + np.int32(d0[k]) + np.int32(d1[k]) + np.int32(d2[k])
                    )
                    inner[k] = (2 * total + 13) // 26


@njit(cache=True, nogil=True)
def autocontrast_tables(frames):
    """pillike.autocontrast (cutoff 0) tables per frame and channel: uint8(clip(v * s - lo * s, 0, 255)) in float64
    with s = 255 / (hi - lo), as the numpy operation computes them; identity for a constant channel."""
    n, channels = frames.shape[0], frames.shape[1]
    tables = np.empty((n, channels, 256), np.uint8)
    for i in range(n):
        for c in range(channels):
            flat = frames[i, c].reshape(-1)
            lo, hi = flat[0], flat[0]
            for k in range(flat.shape[0]):
                lo = min(lo, flat[k])
                hi = max(hi, flat[k])
            if hi <= lo:
                for v in range(256):
                    tables[i, c, v] = v
                continue
            scale = 255.0 / (np.float64(hi) - np.float64(lo))
            offset = -np.float64(lo) * scale
            for v in range(256):
                mixed = np.float64(v) * scale + offset
                tables[i, c, v] = np.uint8(min(max(mixed, 0.0), 255.0))
    return tables


@njit(cache=True, nogil=True)
def equalize_tables(frames):
    """imgaug's pillike.equalize tables per frame and channel (rand_augment_mmaction.Equalize)."""
    n, channels = frames.shape[0], frames.shape[1]
    tables = np.empty((n, channels, 256), np.uint8)
    hist = np.zeros((4, 256), np.int64)
    for i in range(n):
        for c in range(channels):
            flat = frames[i, c].reshape(-1)
            hist[:] = 0
            size = flat.shape[0]
            k = 0
            while k + 4 <= size:  # four histograms: fewer stalls on repeated values
                hist[0, flat[k]] += 1
                hist[1, flat[k + 1]] += 1
                hist[2, flat[k + 2]] += 1
                hist[3, flat[k + 3]] += 1
                k += 4
            while k < size:
                hist[0, flat[k]] += 1
                k += 1
            counts = hist[0] + hist[1] + hist[2] + hist[3]
            occupied = 0
            for v in range(256):
                if counts[v] > 0:
                    occupied += 1
            step = (size - counts[255]) // 255
            if occupied <= 1 or step == 0:
                for v in range(256):
                    tables[i, c, v] = v
                continue
            below = 0
            for v in range(256):
                tables[i, c, v] = min((step // 2 + below) // step, 255)
                below += counts[v]
    return tables


# --- the folded colour jitter ----------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def color_affine(frames, m, p, q, use_means, out):
    """out = uint8(clamp(M x + P mean(x) + q, 0, 255)) per pixel of (n, 3, H, W) uint8 frames (out may be frames).

    float32 throughout, in this order: the frame's channel means (exact integer sums / pixels, rounded once to
    float32), offset_c = ((q_c + P_c0 mean_0) + P_c1 mean_1) + P_c2 mean_2, then ((M_c0 r + M_c1 g) + M_c2 b) +
    offset_c, clamped and truncated (q carries the + 0.5 that makes the truncation round). Nothing is fused into
    FMAs (numba's default), so every machine gives these bytes."""
    n, _, height, width = frames.shape
    size = height * width
    m00, m01, m02 = m[0, 0], m[0, 1], m[0, 2]
    m10, m11, m12 = m[1, 0], m[1, 1], m[1, 2]
    m20, m21, m22 = m[2, 0], m[2, 1], m[2, 2]
    lo, hi = np.float32(0.0), np.float32(255.0)
    means = np.zeros(3, np.float32)
    for i in range(n):
        r, g, b = frames[i, 0].reshape(-1), frames[i, 1].reshape(-1), frames[i, 2].reshape(-1)
        if use_means:
            for c in range(3):
                flat = frames[i, c].reshape(-1)
                total = 0
                for k in range(size):
                    total += np.int64(flat[k])
                means[c] = np.float32(np.float64(total) / size)
        o0 = ((q[0] + p[0, 0] * means[0]) + p[0, 1] * means[1]) + p[0, 2] * means[2]
        o1 = ((q[1] + p[1, 0] * means[0]) + p[1, 1] * means[1]) + p[1, 2] * means[2]
        o2 = ((q[2] + p[2, 0] * means[0]) + p[2, 1] * means[1]) + p[2, 2] * means[2]
        d0, d1, d2 = out[i, 0].reshape(-1), out[i, 1].reshape(-1), out[i, 2].reshape(-1)
        for k in range(size):
            fr, fg, fb = np.float32(r[k]), np.float32(g[k]), np.float32(b[k])
            v0 = ((m00 * fr + m01 * fg) + m02 * fb) + o0
            v1 = ((m10 * fr + m11 * fg) + m12 * fb) + o1
            v2 = ((m20 * fr + m21 * fg) + m22 * fb) + o2
            d0[k] = np.uint8(min(max(v0, lo), hi))
            d1[k] = np.uint8(min(max(v1, lo), hi))
            d2[k] = np.uint8(min(max(v2, lo), hi))
