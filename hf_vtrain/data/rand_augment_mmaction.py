"""RandAugment as MMAction2's `ImgAug(transforms="default")` applies it, which is what OpenTAD's AdaTAD trains with.

MMAction2 builds `iaa.SomeOf(2, [15 augmenters])` at level 9/10 with imgaug 0.4.0 and applies one deterministic
draw to every frame of a clip. What that means, pixel for pixel (read from imgaug 0.4.0 with scikit-image >= 0.21,
OpenCV and Pillow; `scripts/check_rand_augment_mmaction.py` compares against them and found every operation
bit-exact with OpenCV 4.7 / 4.11 / 4.12 and Pillow 9.5 / 11.3):

- two distinct operations drawn uniformly of the 15, applied in the list's order (SomeOf, random_order=False);
- the five geometric ones carry a sign drawn ONCE when the pipeline is built (`random.choice([-1, 1])` in
  `default_transforms`), not per clip: ShearX / ShearY 15.471 deg, TranslateX / TranslateY 18 % of the side,
  Rotate 27 deg, all about the image centre with bilinear sampling and black (0) outside, as imgaug's `Affine`
  does with OpenCV's `warpAffine` (its 1/32-pixel fixed-point grid and integer weights are reproduced, and the
  angles pass through float32 as imgaug samples them); scikit-image < 0.21 built a different shear matrix;
- Posterize to 3 bits; Solarize inverts values >= 230 (imgaug cuts the table at int(230.4));
- EnhanceColor / Contrast / Brightness / Sharpness at factor 1.72 through Pillow's ImageEnhance: a blend
  `degenerate + 1.72 * (image - degenerate)` truncated to uint8, the degenerate image being the luma (ITU-R 601,
  Pillow's integer weights), a grey frame at the rounded mean luma, black, and the 3x3 smoothing
  [[1,1,1],[1,5,1],[1,1,1]] / 13 (rounded, border pixels kept);
- Autocontrast (cutoff 0): per frame and channel, `uint8(v * 255 / (hi - lo) - lo * 255 / (hi - lo))` in float64;
- Equalize: imgaug's own histogram LUT (used for frames of 64x64 pixels and more; below that imgaug calls Pillow,
  whose step differs slightly: not reproduced);
- Invert: 255 - v; Cutout: one square of side 18 % of the height, centre uniform in the frame, filled with 128.

Operations are uint8 -> uint8 on planar (n, 3, H, W) numpy frames, each rounding as imgaug does, so two chosen
operations compose exactly as upstream. Each operation's `__call__` is the numpy definition; its `compiled(frames,
spare)` gives the same bytes through `train_clip_kernels` (in place, or into `spare`, returning the array that holds
the result), which is what `TrainClipTransform` runs. The draw takes the caller's generator.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

from . import train_clip_kernels as kernels

NUM_OPS = 2  # mmaction's default_transforms: SomeOf(2) ...
MAGNITUDE = 9  # ... at magnitude 9 of max 10

OPERATIONS = (
    "ShearX",
    "ShearY",
    "TranslateX",
    "TranslateY",
    "Rotate",
    "Posterize",
    "Solarize",
    "EnhanceColor",
    "EnhanceContrast",
    "EnhanceBrightness",
    "EnhanceSharpness",
    "Autocontrast",
    "Equalize",
    "Invert",
    "Cutout",
)
SIGNED = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")
CUTOUT_FILL = 128


def levels(magnitude: int = MAGNITUDE) -> dict[str, float]:
    """Each operation's strength at `magnitude` (of 10), mmaction's formulas (level 0.9 at the default 9)."""
    level = 1.0 * magnitude / 10
    return {
        "shear_degrees": 17.19 * level,
        "translate_fraction": 0.2 * level,
        "rotate_degrees": 30 * level,
        "posterize_bits": max(1, int(4 * level)),
        "solarize_threshold": 256 * level,
        "enhance_factor": 1.8 * level + 0.1,
        "cutout_fraction": 0.2 * level,
    }


Op = Callable[[np.ndarray], np.ndarray]


# --- geometry: imgaug 0.4.0's Affine matrix, OpenCV's warpAffine sampling ---------------------------------------


def _skimage_affine(rotation=0.0, shear=0.0, translation=(0.0, 0.0)) -> np.ndarray:
    """scikit-image (>= 0.21) AffineTransform(scale=1, rotation, shear, translation).params."""
    return np.array(
        [
            [math.cos(rotation), -(math.tan(shear) * math.cos(rotation) + math.sin(rotation)), translation[0]],
            [math.sin(rotation), -(math.tan(shear) * math.sin(rotation) - math.cos(rotation)), translation[1]],
            [0.0, 0.0, 1.0],
        ]
    )


def imgaug_affine_matrix(
    height: int, width: int, rotate_rad=0.0, shear_x_rad=0.0, shear_y_rad=0.0, translate_px=(0.0, 0.0)
) -> np.ndarray:
    """The forward (source -> output) pixel matrix imgaug 0.4.0's `_AffineSamplingResult.to_matrix` builds.

    Pixel centres are at integer coordinates; the image centre is ((W - 1) / 2, (H - 1) / 2) (its shift_add 0.5).
    The y shear is an x shear between two quarter turns, with imgaug's 3.141592 for pi.
    """
    shift_x, shift_y = width / 2.0 - 0.5, height / 2.0 - 0.5
    chain = [
        _skimage_affine(translation=(-shift_x, -shift_y)),
        _skimage_affine(rotation=-3.141592 / 2),
        _skimage_affine(shear=shear_y_rad),
        _skimage_affine(rotation=3.141592 / 2),
        _skimage_affine(rotation=rotate_rad, shear=shear_x_rad, translation=translate_px),
        _skimage_affine(translation=(shift_x, shift_y)),
    ]
    matrix = np.eye(3)
    for step in chain:  # skimage's `a + b` is b.params @ a.params
        matrix = step @ matrix
    return matrix


# imgaug samples its parameters as float32 and converts them as below; kept, so that the matrix is its matrix.


def _rotate_rad(degrees: float) -> float:
    return float(np.deg2rad(np.float32(degrees)))  # all-float32 [rotate, 0.0, 0.0] list: float32 radians


def _shear_rad(degrees: float) -> float:
    return float(np.deg2rad(np.float64(np.float32(degrees))))  # mixed with an integer 0: float64 radians


def _translate_px(fraction: float, side: int) -> float:
    return float(np.float32(fraction)) * side


def _cv_round(x: np.ndarray) -> np.ndarray:
    return np.rint(x).astype(np.int64)  # cvRound: round half to even


def warp_grid(matrix: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """OpenCV's warpAffine source grid for a forward `matrix`: (x_row, y_row, x_col, y_col), int64, such that output
    pixel (y, x) samples at ((x_row[y] + x_col[x]) >> 5, (y_row[y] + y_col[x]) >> 5) in 1/32 pixel.

    OpenCV inverts the matrix, maps each output pixel to the source on a grid of 1/32 pixel (10-bit fixed point,
    rounded, then shifted down by 5).
    """
    m = matrix
    det = m[0, 0] * m[1, 1] - m[0, 1] * m[1, 0]
    det = 1.0 / det if det != 0 else 0.0
    a11, a22 = m[1, 1] * det, m[0, 0] * det
    a12, a21 = -m[0, 1] * det, -m[1, 0] * det
    b1 = -a11 * m[0, 2] - a12 * m[1, 2]
    b2 = -a21 * m[0, 2] - a22 * m[1, 2]
    xs, ys = np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64)
    adelta, bdelta = _cv_round(a11 * xs * 1024), _cv_round(a21 * xs * 1024)
    x0, y0 = _cv_round((a12 * ys + b1) * 1024) + 16, _cv_round((a22 * ys + b2) * 1024) + 16
    return x0, y0, adelta, bdelta


def warp_taps(matrix: np.ndarray, height: int, width: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """OpenCV's warpAffine(INTER_LINEAR, BORDER_CONSTANT 0) for a forward `matrix`, as (index, weight) taps.

    On `warp_grid`'s 1/32-pixel positions OpenCV blends the four neighbours with integer weights; a neighbour
    outside the frame counts as 0. Each tap is a flat source index (H*W,) and a weight in 1/1024 (H*W,) float32; an
    output value is floor((sum of weight * source + 512) / 1024), what OpenCV's (sum * 32 + 2^14) >> 15 gives.
    """
    x0, y0, adelta, bdelta = warp_grid(matrix, height, width)
    fixed_x = (x0[:, None] + adelta[None, :]) >> 5  # (H, W), in 1/32 pixel
    fixed_y = (y0[:, None] + bdelta[None, :]) >> 5
    sx, sy = fixed_x >> 5, fixed_y >> 5
    fx, fy = fixed_x & 31, fixed_y & 31
    taps = []
    for dy, wy in ((0, 32 - fy), (1, fy)):
        for dx, wx in ((0, 32 - fx), (1, fx)):
            px, py = sx + dx, sy + dy
            inside = (px >= 0) & (px < width) & (py >= 0) & (py < height)
            weight = np.where(inside, wy * wx, 0)
            if not weight.any():
                continue
            index = np.clip(py, 0, height - 1) * width + np.clip(px, 0, width - 1)
            taps.append((index.reshape(-1), weight.reshape(-1).astype(np.float32)))
    return taps


class Warp:
    """A fixed affine warp of every frame: `__call__` through `warp_taps` (numpy, the reference), `compiled` through
    `train_clip_kernels` on the same grid. A warp whose grid moves whole rows (ShearX, TranslateX / Y: every row at
    one source row and one 1/32 column offset) or whole columns (ShearY) runs as contiguous row loops; any other
    (Rotate) gathers each pixel's four neighbours with one 32-bit load (`warp_gather`, its reads worked out here once:
    ~140 -> ~60-90 us a 160x160 frame against the pixel-by-pixel `warp_general`)."""

    in_place = False  # `compiled` writes into spare

    def __init__(self, name: str, matrix: np.ndarray, height: int, width: int):
        self.name, self.matrix = name, matrix
        self.size = (height, width)
        self._taps = None  # the numpy form's taps (~1.2 MB at 160x160), built when it is first called
        x_row, y_row, x_col, y_col = self.grid = warp_grid(matrix, height, width)
        fixed_x = (x_row[:, None] + x_col[None, :]) >> 5
        fixed_y = (y_row[:, None] + y_col[None, :]) >> 5
        if (fixed_y == fixed_y[:, :1]).all() and (fixed_x - 32 * np.arange(width) == fixed_x[:, :1]).all():
            self.mode, self.fixed = "rows", (fixed_y[:, 0].copy(), fixed_x[:, 0].copy())
        elif (fixed_x == fixed_x[:1]).all() and (fixed_y - 32 * np.arange(height)[:, None] == fixed_y[:1]).all():
            self.mode, self.fixed = "columns", (fixed_y[0].copy(), fixed_x[0].copy())
        else:
            self.mode, self.fixed = "pixels", kernels.gather_taps(self.grid, height, width)
        self._scratch = None  # the transposed planes of a "columns" warp, the packed quads of a "pixels" one

    def __getstate__(self):
        return {**self.__dict__, "_scratch": None}

    @property
    def taps(self) -> list[tuple[np.ndarray, np.ndarray]]:
        if self._taps is None:
            self._taps = warp_taps(self.matrix, *self.size)
        return self._taps

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        n, channels, height, width = frames.shape
        flat = frames.reshape(n * channels, height * width)
        acc = np.full(flat.shape, 512.0, dtype=np.float32)
        for index, weight in self.taps:  # weights are multiples of 1/1024: every sum is exact in float32
            acc += np.take(flat, index, axis=1) * weight
        acc *= 1.0 / 1024.0
        np.floor(acc, out=acc)
        out = np.empty_like(frames)
        np.copyto(out.reshape(flat.shape), acc, casting="unsafe")
        return out

    def compiled(self, frames: np.ndarray, spare: np.ndarray) -> np.ndarray:
        """The same bytes as `__call__`, written into `spare` (C-contiguous, frames' shape), which is returned."""
        n, channels, height, width = frames.shape
        src = frames.reshape(n * channels, height, width)
        dst = spare.reshape(n * channels, height, width)
        if self.mode == "rows":
            kernels.shift_rows(src, dst, *self.fixed)
        elif self.mode == "columns":
            if self._scratch is None or self._scratch.shape[1] < n * channels:  # kept: a fresh one page-faults
                self._scratch = np.empty((2, n * channels, width, height), np.uint8)
            scratch = self._scratch[:, : n * channels]
            kernels.shift_columns(src, dst, *self.fixed, scratch[0], scratch[1])
        else:
            need = (height + 1) * (width + 1) + 1
            if self._scratch is None or self._scratch.shape[0] < n * channels:
                self._scratch = np.empty((n * channels, need), np.uint32)
            kernels.warp_gather(src, dst, self._scratch[: n * channels], *self.fixed)
        return spare


def shear_x(height: int, width: int, degrees: float) -> Warp:
    return Warp("ShearX", imgaug_affine_matrix(height, width, shear_x_rad=_shear_rad(degrees)), height, width)


def shear_y(height: int, width: int, degrees: float) -> Warp:
    return Warp("ShearY", imgaug_affine_matrix(height, width, shear_y_rad=_shear_rad(degrees)), height, width)


def translate_x(height: int, width: int, fraction: float) -> Warp:
    matrix = imgaug_affine_matrix(height, width, translate_px=(_translate_px(fraction, width), 0.0))
    return Warp("TranslateX", matrix, height, width)


def translate_y(height: int, width: int, fraction: float) -> Warp:
    matrix = imgaug_affine_matrix(height, width, translate_px=(0.0, _translate_px(fraction, height)))
    return Warp("TranslateY", matrix, height, width)


def rotate(height: int, width: int, degrees: float) -> Warp:
    return Warp("Rotate", imgaug_affine_matrix(height, width, rotate_rad=_rotate_rad(degrees)), height, width)


# --- per-pixel tables -------------------------------------------------------------------------------------------


class Lut:
    """A fixed 256-entry table applied to every value; `kernel` (frames in place) computes the same values
    arithmetically (each table here is a mask, a threshold or an inversion)."""

    in_place = True  # `compiled` writes into frames

    def __init__(self, name: str, table: np.ndarray, kernel: Callable[[np.ndarray], None]):
        self.name, self.table = name, table.astype(np.uint8)
        self.kernel = kernel

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        return np.take(self.table, frames)

    def compiled(self, frames: np.ndarray, spare: np.ndarray) -> np.ndarray:
        self.kernel(frames)
        return frames


def posterize(bits: int) -> Lut:
    """imgaug's uniform quantization to 2^bits bins without centring: v & ~(2^(8-bits) - 1)."""
    mask = 256 - 2 ** (8 - bits)
    return Lut("Posterize", np.arange(256) & mask, lambda frames: kernels.posterize(frames, np.uint8(mask)))


def solarize(threshold: float) -> Lut:
    values = np.arange(256)
    cut = int(threshold)
    return Lut("Solarize", np.where(values >= cut, 255 - values, values), lambda frames: kernels.solarize(frames, cut))


def invert() -> Lut:
    return Lut("Invert", 255 - np.arange(256), kernels.invert)


def blend_table(factor: float) -> np.ndarray:
    """Pillow's Image.blend(degenerate, image, factor) for factor outside [0, 1]: table[degenerate, value].

    C computes d + factor * (v - d) in double, stores it in a float, clips to [0, 255] and truncates.
    """
    d, v = np.meshgrid(np.arange(256, dtype=np.float64), np.arange(256, dtype=np.float64), indexing="ij")
    mixed = (d + factor * (v - d)).astype(np.float32)
    if 0.0 <= factor <= 1.0:  # Pillow's interpolation branch: the same truncation without the clip
        return mixed.astype(np.uint8)
    return np.clip(np.floor(mixed), 0, 255).astype(np.uint8)


def _luma(frames: np.ndarray) -> np.ndarray:
    """Pillow's RGB -> L: (19595 R + 38470 G + 7471 B + 2^15) >> 16, (n, H, W) int32."""
    r, g, b = (frames[:, c].astype(np.int32) for c in range(3))
    return (r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16


class Enhance:
    """Pillow's ImageEnhance.Color / Contrast / Brightness / Sharpness(frame).enhance(factor), frame by frame."""

    in_place = True  # `compiled` writes into frames

    KINDS = ("Color", "Contrast", "Brightness", "Sharpness")

    def __init__(self, kind: str, factor: float):
        if kind not in self.KINDS:
            raise ValueError(f"unknown enhancement {kind!r}; expected one of {self.KINDS}")
        self.name, self.kind, self.factor = "Enhance" + kind, kind, factor
        self.table = blend_table(factor)

    def _degenerate(self, frames: np.ndarray) -> np.ndarray:
        n, _, height, width = frames.shape
        if self.kind == "Brightness":
            return np.zeros((n, 1, 1, 1), dtype=np.int32)
        if self.kind == "Color":
            return _luma(frames)[:, None]
        if self.kind == "Contrast":  # a grey frame at int(mean luma + 0.5)
            mean = _luma(frames).reshape(n, -1).mean(axis=1)
            return np.floor(mean + 0.5).astype(np.int32).reshape(n, 1, 1, 1)
        # Sharpness: ImageFilter.SMOOTH, [[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13 rounded, border pixels unchanged
        x = frames.astype(np.int32)
        if height < 3 or width < 3:
            return x
        rows = x[..., :, :-2] + x[..., :, 1:-1] + x[..., :, 2:]
        total = rows[..., :-2, :] + rows[..., 1:-1, :] + rows[..., 2:, :] + 4 * x[..., 1:-1, 1:-1]
        x[..., 1:-1, 1:-1] = (2 * total + 13) // 26  # floor(total / 13 + 0.5), exact: total / 13 is never k + 1/2
        return x

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        degenerate = np.broadcast_to(self._degenerate(frames), frames.shape)
        return np.take(self.table.reshape(-1), degenerate * 256 + frames)

    def compiled(self, frames: np.ndarray, spare: np.ndarray) -> np.ndarray:
        """In place; `blend_table`'s arithmetic per value (kernels._blend) instead of its 64K table. Brightness and
        Contrast blend every value of a frame with one constant, so they are one row of the table per frame: where
        numba's target has the 64-byte table lookup (kernels.TABLE_LANES) they go through it (~25-30 -> ~3 us a
        160x160 frame)."""
        factor, clip = float(self.factor), not 0.0 <= self.factor <= 1.0
        n, _, height, width = frames.shape
        if kernels.TABLE_LANES and self.kind in ("Brightness", "Contrast"):
            rows = np.zeros(n, np.int64) if self.kind == "Brightness" else kernels.mean_luma_rounded(frames)
            tables = np.repeat(self.table[rows][:, None, :], frames.shape[1], axis=1)  # (n, channels, 256)
            kernels.apply_tables(frames, tables)
        elif self.kind == "Brightness":
            kernels.blend_with_constants(frames, np.zeros(n, np.int32), factor, clip)
        elif self.kind == "Color":
            kernels.enhance_color(frames, factor, clip)
        elif self.kind == "Contrast":
            kernels.blend_with_constants(frames, kernels.mean_luma_rounded(frames), factor, clip)
        elif height < 3 or width < 3:  # no interior: every value blended with itself
            kernels.blend_with(frames, frames.copy(), factor, clip)
        else:
            kernels.smooth(frames, spare)
            kernels.blend_with(frames, spare, factor, clip)
        return frames


class Autocontrast:
    """imgaug's pillike.autocontrast with cutoff 0: each frame's channel stretched from [lo, hi] to [0, 255]."""

    in_place = True  # `compiled` writes into frames

    name = "Autocontrast"

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        n, channels = frames.shape[:2]
        flat = frames.reshape(n * channels, -1)
        lo, hi = flat.min(axis=1).astype(np.float64), flat.max(axis=1).astype(np.float64)
        values = np.arange(256, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            scale = 255.0 / (hi - lo)
            tables = np.clip(values[None] * scale[:, None] + (-lo * scale)[:, None], 0, 255).astype(np.uint8)
        tables[hi <= lo] = np.arange(256, dtype=np.uint8)  # a constant channel is left alone
        return _apply_tables(tables, flat).reshape(frames.shape)

    def compiled(self, frames: np.ndarray, spare: np.ndarray) -> np.ndarray:
        kernels.apply_tables(frames, kernels.autocontrast_tables(frames))
        return frames


class Equalize:
    """imgaug's pillike.equalize (its non-Pillow path): per frame and channel, lut[i] = (step // 2 +
    count(values < i)) // step with step = count(values < 255) // 255; identity for one value or step 0."""

    in_place = True  # `compiled` writes into frames

    name = "Equalize"

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        n, channels = frames.shape[:2]
        flat = frames.reshape(n * channels, -1)
        rows = flat.shape[0]
        offsets = (np.arange(rows, dtype=np.int64) * 256)[:, None]
        hist = np.bincount((flat + offsets).reshape(-1), minlength=rows * 256).reshape(rows, 256)
        step = hist[:, :-1].sum(axis=1) // 255
        below = np.concatenate([np.zeros((rows, 1), np.int64), np.cumsum(hist, axis=1)[:, :-1]], axis=1)
        safe = np.maximum(step, 1)[:, None]
        tables = np.minimum((safe // 2 + below) // safe, 255).astype(np.uint8)
        identity = ((hist > 0).sum(axis=1) <= 1) | (step == 0)
        tables[identity] = np.arange(256, dtype=np.uint8)
        return _apply_tables(tables, flat).reshape(frames.shape)

    def compiled(self, frames: np.ndarray, spare: np.ndarray) -> np.ndarray:
        kernels.apply_tables(frames, kernels.equalize_tables(frames))
        return frames


def _apply_tables(tables: np.ndarray, flat: np.ndarray) -> np.ndarray:
    """Row r of `flat` through table r."""
    offsets = (np.arange(flat.shape[0], dtype=np.int64) * 256)[:, None]
    return np.take(tables.reshape(-1), flat + offsets)


class Cutout:
    """imgaug's Cutout(nb_iterations=1, size, squared=True, fill 128) at a drawn centre (relative x, y)."""

    in_place = True  # `compiled` writes into frames

    name = "Cutout"

    def __init__(self, height: int, width: int, center: tuple[float, float], size: float):
        pos_x, pos_y = center
        x1, x2 = (pos_x - size / 2) * width, (pos_x + size / 2) * width
        y1, y2 = (pos_y - size / 2) * height, (pos_y + size / 2) * height
        half, x_center = (y2 - y1) / 2, x1 + (x2 - x1) / 2  # squared: the side is the height's
        x1, x2 = x_center - half, x_center + half
        self.box = (
            min(max(int(x1), 0), width),
            min(max(int(y1), 0), height),
            min(max(int(x2), 0), width),
            min(max(int(y2), 0), height),
        )

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        x1, y1, x2, y2 = self.box
        if x2 > x1 and y2 > y1:
            frames = frames.copy()
            frames[:, :, y1:y2, x1:x2] = CUTOUT_FILL
        return frames

    def compiled(self, frames: np.ndarray, spare: np.ndarray) -> np.ndarray:
        x1, y1, x2, y2 = self.box
        frames[:, :, y1:y2, x1:x2] = CUTOUT_FILL
        return frames


# --- the augmenter ----------------------------------------------------------------------------------------------


def draw_signs(seed: int) -> dict[str, int]:
    """The five signs mmaction draws when it builds the pipeline; here from the run's seed, once per run."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x52414E44]))  # 'RAND'
    return {name: int(rng.choice([-1, 1])) for name in SIGNED}


class MMActionRandAugment:
    """SomeOf(num_ops) of the 15 operations at magnitude/10, signs fixed at construction; `draw` once per clip.

    mmaction's default is num_ops 2, magnitude 9; other values follow its formulas (`levels`).
    """

    def __init__(self, signs: dict[str, int], num_ops: int = NUM_OPS, magnitude: int = MAGNITUDE):
        if set(signs) != set(SIGNED) or any(s not in (-1, 1) for s in signs.values()):
            raise ValueError(f"signs must give -1 or 1 for each of {SIGNED}, got {signs}")
        if not 1 <= num_ops <= len(OPERATIONS):
            raise ValueError(f"num_ops must be in [1, {len(OPERATIONS)}], got {num_ops}")
        if not 0 <= magnitude <= 10:
            raise ValueError(f"magnitude must be in [0, 10] (mmaction's max_magnitude is 10), got {magnitude}")
        self.signs, self.num_ops, self.magnitude = dict(signs), int(num_ops), magnitude
        self.levels = levels(magnitude)
        self._built: dict[tuple[str, int, int], Op] = {}  # all but Cutout are fixed per frame size: built once

    def __getstate__(self):  # workers rebuild what they use
        return {**self.__dict__, "_built": {}}

    def operation(self, name: str, height: int, width: int, cutout_center=(0.5, 0.5)) -> Op:
        """Operation `name` for frames of height x width, with this augmenter's signs and levels."""
        sign, lv = self.signs.get(name, 1), self.levels
        if name == "ShearX":
            return shear_x(height, width, lv["shear_degrees"] * sign)
        if name == "ShearY":
            return shear_y(height, width, lv["shear_degrees"] * sign)
        if name == "TranslateX":
            return translate_x(height, width, lv["translate_fraction"] * sign)
        if name == "TranslateY":
            return translate_y(height, width, lv["translate_fraction"] * sign)
        if name == "Rotate":
            return rotate(height, width, lv["rotate_degrees"] * sign)
        if name == "Posterize":
            return posterize(lv["posterize_bits"])
        if name == "Solarize":
            return solarize(lv["solarize_threshold"])
        if name.startswith("Enhance"):
            return Enhance(name[len("Enhance") :], lv["enhance_factor"])
        if name == "Autocontrast":
            return Autocontrast()
        if name == "Equalize":
            return Equalize()
        if name == "Invert":
            return invert()
        if name == "Cutout":
            return Cutout(height, width, cutout_center, lv["cutout_fraction"])
        raise ValueError(f"unknown operation {name!r}; expected one of {OPERATIONS}")

    def draw(self, height: int, width: int, generator) -> list[Op]:
        """`num_ops` distinct operations in list order (and Cutout's centre) from a torch.Generator."""
        import torch

        chosen = sorted(torch.randperm(len(OPERATIONS), generator=generator)[: self.num_ops].tolist())
        center = tuple(torch.rand(2, generator=generator, dtype=torch.float64).tolist())
        ops = []
        for name in (OPERATIONS[k] for k in chosen):
            if name == "Cutout":
                ops.append(self.operation(name, height, width, center))
                continue
            key = (name, height, width)
            if key not in self._built:
                self._built[key] = self.operation(name, height, width)
            ops.append(self._built[key])
        return ops

    def prepare(self, height: int, width: int) -> None:
        """Run every operation's compiled form once on a blank block of height x width frames, so that numba loads
        its kernels now (~0.5 s; the first time on a machine it compiles them, ~10 s) rather than inside the first
        clips: what a benchmark of steady-state speed wants."""
        frames = np.zeros((2, 3, height, width), np.uint8)
        spare = np.empty_like(frames)
        for name in OPERATIONS:
            self.operation(name, height, width).compiled(frames, spare)

    def describe(self) -> str:
        lv = self.levels
        signs = " ".join(f"{name}{'+' if s > 0 else '-'}" for name, s in self.signs.items())
        return (
            f"mmaction RandAugment: SomeOf({self.num_ops}) of {len(OPERATIONS)} at magnitude {self.magnitude}/10 "
            f"(shear {lv['shear_degrees']:.3f} deg, translate {lv['translate_fraction']:.0%}, rotate "
            f"{lv['rotate_degrees']:g} deg, posterize {lv['posterize_bits']} bits, solarize >= "
            f"{int(lv['solarize_threshold'])}, enhance x{lv['enhance_factor']:.2f}, cutout {lv['cutout_fraction']:.0%}); "
            f"signs fixed for the run: {signs}"
        )

    def __repr__(self) -> str:
        return f"MMActionRandAugment(signs={self.signs}, num_ops={self.num_ops}, magnitude={self.magnitude})"


def apply(ops: Sequence[Op], frames: np.ndarray) -> np.ndarray:
    """Run `ops` in order on uint8 (n, 3, H, W) frames."""
    for op in ops:
        frames = op(frames)
    return frames
