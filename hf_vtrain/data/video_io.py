"""Video decoding (decord), frame sampling and clip augmentation shared by every corpus loader; the
transforms draw their parameters once per clip from a `torch.Generator` and apply them to every frame."""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F


class VideoDecodeError(RuntimeError):
    """A video file is missing or cannot be decoded; the message names the file."""


@dataclass(frozen=True)
class VideoInfo:
    path: str
    num_frames: int
    fps: float
    height: int
    width: int

    @property
    def duration(self) -> float:
        return self.num_frames / self.fps if self.fps > 0 else 0.0


def _open(path: str, num_threads: int = 1, size: tuple[int, int] | None = None):
    if not os.path.isfile(path):
        raise VideoDecodeError(f"{path}: video file not found")
    import decord

    kwargs = {} if size is None else {"height": int(size[0]), "width": int(size[1])}
    try:
        return decord.VideoReader(path, num_threads=num_threads, **kwargs)
    except Exception as err:  # decord raises its own DECORDError or RuntimeError
        raise VideoDecodeError(f"{path}: cannot be decoded ({type(err).__name__}: {err})") from err


def probe_video(path: str, decode_last: bool = False, num_threads: int = 1) -> VideoInfo:
    """Frame count, fps and size of a video as the decoder sees them; what corpus validation runs on every file.

    Opening reads the container's index (no pixels): it catches garbage bytes and files cut before their index.
    Frame 0 is decoded for the size; `decode_last` also decodes the last frame (at most one GOP), which catches a
    file whose index still lists frames its data no longer holds (a cut "faststart" MP4). Corruption in the middle
    of the stream needs a full decode and is not looked for. Every failure is a VideoDecodeError naming the file.
    """
    reader = VideoReader(path, num_threads=num_threads)
    if reader.num_frames <= 0:
        raise VideoDecodeError(f"{path}: no frames decodable")
    if not reader.fps > 0:
        raise VideoDecodeError(f"{path}: fps reported as {reader.fps}")
    try:
        height, width = reader.get_frames([0]).shape[1:3]
        if decode_last:
            reader.get_frames([reader.num_frames - 1])
    except VideoDecodeError:
        raise
    except Exception as err:  # a decoder crash on one broken file must not stop the check of the others
        raise VideoDecodeError(f"{path}: cannot be decoded ({type(err).__name__}: {err})") from err
    return VideoInfo(path, reader.num_frames, reader.fps, int(height), int(width))


def _to_numpy(batch) -> np.ndarray:
    # DLPack hands over decord's buffer without a copy; `asnumpy` copies the whole batch into fresh
    # pages, which cost up to half the decode time of a 320x180 window.
    try:
        return torch.utils.dlpack.from_dlpack(batch.to_dlpack()).numpy()
    except Exception:
        return batch.asnumpy()


def video_size(path: str) -> tuple[int, int]:
    """(height, width) of a video's frames as stored, read from the container's header (PyAV; no decoding)."""
    import av

    try:
        with av.open(path) as container:
            stream = container.streams.video[0]
            return int(stream.codec_context.height), int(stream.codec_context.width)
    except Exception as err:  # PyAV's own errors, or no video stream
        raise VideoDecodeError(f"{path}: cannot read the frame size ({type(err).__name__}: {err})") from err


class VideoReader:
    """Random access to frames of one file through decord.

    `get_frames` sorts the indices before `get_batch` (decord was measured 10-15x slower on unsorted
    random indices) and returns the frames in the order asked for, repeats included. With `size` (height, width)
    the decoder scales each frame to it as it converts it to RGB (FFmpeg's swscale, bicubic): the full-size RGB
    frame is never made, which is most of the cost of large videos whose first transform shrinks them.

    decord's decoder thread runs ahead of `get_batch`: the packets it was handed past the last frame asked for are
    still decoded after the call returns, which only pays off when the next call goes on from there. With
    `read_ahead` False, `get_frames` stops it before returning (a seek to frame 0 clears decord's decoder): what a
    dataset reading one window per sample wants, since its next window lies elsewhere or in another video.
    Measured (`scripts/bench_video_io.py`, a 192-frame window at stride 4): that decoding is 14-22 ms of CPU a
    window at 320x180 and ~150 ms at 1280x720 (6-13 % of the window's decoding) against 1.5-4 ms for the stop.
    """

    def __init__(self, path: str, num_threads: int = 1, size: tuple[int, int] | None = None, read_ahead: bool = True):
        self.path = path
        self.size = None if size is None else (int(size[0]), int(size[1]))
        self.read_ahead = bool(read_ahead)
        self._threads = num_threads
        self._resize_after = False  # decord could not scale to `size`: frames are resized after decoding
        self._reader = _open(path, num_threads, self.size)
        self.num_frames = len(self._reader)
        self.fps = float(self._reader.get_avg_fps())

    def get_frames(self, indices) -> np.ndarray:
        """uint8 array (T, H, W, 3) for the given frame indices."""
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if indices.size == 0:
            raise ValueError(f"{self.path}: no frame indices requested")
        if indices.min() < 0 or indices.max() >= self.num_frames:
            raise VideoDecodeError(
                f"{self.path}: frame index out of range [0, {self.num_frames}) "
                f"(asked {int(indices.min())}..{int(indices.max())})"
            )
        increasing = bool(np.all(indices[1:] > indices[:-1]))
        if increasing:  # the common case: skip the reordering copy
            unique, inverse = indices, None
        else:
            unique, inverse = np.unique(indices, return_inverse=True)  # sorted, deduplicated
        try:
            frames = _to_numpy(self._reader.get_batch(unique.tolist()))
        except Exception as err:
            if self.size is not None and not self._resize_after and "size must exactly match" in str(err):
                # decord 0.6.0 fails to scale to some widths (8, 12, 16, 24, 48 and 72 px among the even ones up to
                # 400, whatever the height): decode as stored and resize here instead, for this reader.
                self._reader, self._resize_after = _open(self.path, self._threads), True
                return self.get_frames(indices)
            raise VideoDecodeError(f"{self.path}: decoding frames failed ({type(err).__name__}: {err})") from err
        if not self.read_ahead:
            self.stop_decoding()
        if self._resize_after:
            frames = resize(frames, self.size).permute(0, 2, 3, 1).numpy()
        return frames if inverse is None else frames[inverse]

    def stop_decoding(self) -> None:
        """Stop decord's decoder thread from decoding ahead of the last `get_batch` (see the class docstring); the
        next `get_frames` seeks from frame 0, as it does anyway unless it goes on where the last one ended."""
        try:
            self._reader.seek(0)
        except Exception as err:
            raise VideoDecodeError(f"{self.path}: cannot stop decoding ({type(err).__name__}: {err})") from err


def sample_indices(start: int, num: int, stride: int, num_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Frames start, start + stride, ... (`num` of them) and a mask that is False past the video's end.

    Padded positions repeat the last frame so that every window has the same length (fixed shapes across
    the model boundary); the mask tells the model and the loss to ignore them.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if stride < 1 or num < 0 or start < 0:
        raise ValueError(f"need start >= 0, num >= 0, stride >= 1; got start={start} num={num} stride={stride}")
    indices = start + stride * np.arange(num, dtype=np.int64)
    mask = indices < num_frames
    return np.minimum(indices, num_frames - 1), mask


def clip_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """A generator for one training sample, so that a resumed run draws the same augmentations."""
    # SeedSequence mixes the three numbers; seed + epoch + index collide, (seed, epoch, index) do not.
    state = np.random.SeedSequence([int(seed), int(epoch), int(index)]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


# ----------------------------------------------------------------------------------------------------
# Clip transforms. Internally a clip is a (T, H, W, 3) uint8 tensor; a transform is a crop box in
# source pixels, an output size, a flip flag and a list of ops (warps, colour ops), all drawn before any
# pixel is touched. `_run` then does the crop and resize in ONE interpolate per chunk of frames and the colour
# ops in float32 on the 160x160 result, chunk by chunk so that the float working set stays in cache.
# ----------------------------------------------------------------------------------------------------

_GRAY = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights
_RGB_TO_YIQ = torch.tensor(
    [[0.299, 0.587, 0.114], [0.59590059, -0.27455667, -0.32134392], [0.2115, -0.52273617, 0.31119955]],
    dtype=torch.float64,
)
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)
_CHUNK_FLOATS = 1 << 19  # float32 per chunk buffer (2 MiB): the colour passes then run out of L2, not DRAM


def _as_clip(clip) -> torch.Tensor:
    """(T, H, W, 3) uint8 tensor view of a numpy/torch clip given as (T, H, W, 3) or (T, 3, H, W)."""
    if isinstance(clip, np.ndarray):
        with warnings.catch_warnings():  # a read-only array is fine: transforms never write to their input
            warnings.simplefilter("ignore", UserWarning)
            clip = torch.from_numpy(clip)
    if not isinstance(clip, torch.Tensor):
        raise TypeError(f"clip must be a numpy array or torch tensor, got {type(clip).__name__}")
    if clip.dtype != torch.uint8:
        raise TypeError(f"clip must be uint8 (frames stay uint8; the model normalises), got {clip.dtype}")
    if clip.dim() != 4:
        raise ValueError(f"clip must be (T, H, W, 3) or (T, 3, H, W), got shape {tuple(clip.shape)}")
    if clip.shape[-1] == 3:
        thwc = clip
    elif clip.shape[1] == 3:
        thwc = clip.permute(0, 2, 3, 1)
    else:
        raise ValueError(f"clip must be (T, H, W, 3) or (T, 3, H, W), got shape {tuple(clip.shape)}")
    if thwc.shape[0] == 0:
        raise ValueError("clip has no frames")
    return thwc


def _pair(size) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    height, width = size
    return int(height), int(width)


def _short_side_shape(height: int, width: int, size: int) -> tuple[int, int]:
    # mmcv.rescale_size rounding, as mmaction's Resize(scale=(-1, size)) does.
    scale = size / min(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def decode_smaller(shape: tuple[int, int], height: int, width: int) -> tuple[int, int] | None:
    """`shape` as the size to decode a height x width video at when it has at most half the frame's pixels, else None
    (decode as stored). Below that, decoding as stored and resizing here is faster (scripts/bench_video_io.py:
    decord scaling 320x180 to 284x160 ran at 0.80x of decoding as stored, against 0.94x for decoding then
    resizing)."""
    return (int(shape[0]), int(shape[1])) if 2 * shape[0] * shape[1] <= height * width else None


def shrinking_short_side(height: int, width: int, size: int) -> tuple[int, int] | None:
    """The decode size of transforms that start with a short-side resize to `size` (`decode_smaller`)."""
    return decode_smaller(_short_side_shape(height, width, size), height, width)


def _scale_box(box, height: int, width: int, from_hw: tuple[int, int]) -> tuple[int, int, int, int]:
    """A box (x0, y0, x1, y1) drawn on a frame resized to `from_hw`, in pixels of the height x width source."""
    sy, sx = height / from_hw[0], width / from_hw[1]
    x0, y0, x1, y1 = box
    x0, x1 = min(max(round(x0 * sx), 0), width - 1), min(max(round(x1 * sx), 1), width)
    y0, y1 = min(max(round(y0 * sy), 0), height - 1), min(max(round(y1 * sy), 1), height)
    return x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)


def _rand_uniform(low: float, high: float, generator, size: int = 1) -> torch.Tensor:
    return torch.rand(size, generator=generator) * (high - low) + low


def _draw_resized_crop_box(height, width, scale, ratio, generator, max_attempts: int = 10):
    """mmaction's RandomResizedCrop.get_crop_bbox: 10 tries at (area, log-uniform aspect), else centre square."""
    if not 0 < scale[0] <= scale[1] <= 1 or not 0 < ratio[0] <= ratio[1]:
        raise ValueError(f"bad crop scale {scale} or ratio {ratio}")
    area = height * width
    aspect = torch.exp(_rand_uniform(math.log(ratio[0]), math.log(ratio[1]), generator, max_attempts))
    target = _rand_uniform(scale[0], scale[1], generator, max_attempts) * area
    crop_w = torch.round(torch.sqrt(target * aspect)).long().tolist()
    crop_h = torch.round(torch.sqrt(target / aspect)).long().tolist()
    for cw, ch in zip(crop_w, crop_h):
        if 0 < cw <= width and 0 < ch <= height:
            x0 = int(torch.randint(0, width - cw + 1, (1,), generator=generator))
            y0 = int(torch.randint(0, height - ch + 1, (1,), generator=generator))
            return x0, y0, x0 + cw, y0 + ch
    side = min(height, width)
    x0, y0 = (width - side) // 2, (height - side) // 2
    return x0, y0, x0 + side, y0 + side


def _center_box(height, width, crop_hw) -> tuple[int, int, int, int]:
    ch, cw = crop_hw
    if ch > height or cw > width:
        raise ValueError(f"centre crop {ch}x{cw} is larger than the {height}x{width} frame")
    x0, y0 = (width - cw) // 2, (height - ch) // 2  # mmaction's CenterCrop offsets
    return x0, y0, x0 + cw, y0 + ch


def _draw_flip(p: float, generator) -> bool:
    return bool(torch.rand(1, generator=generator) < p)


# --- geometric ops (nearest neighbour, fill 0, as torchvision's RandAugment) -------------------------


def _inverse_affine(height, width, angle=0.0, translate=(0.0, 0.0), shear=(0.0, 0.0), center=None):
    """torchvision's F.affine/F.rotate inverse matrix (output -> input) in pixel coordinates centred on the image.

    `center` is in pixels from the top-left corner (None: the image centre), as torchvision takes it.
    """
    cx, cy = (0.0, 0.0) if center is None else (center[0] - width * 0.5, center[1] - height * 0.5)
    tx, ty = translate
    rot, sx, sy = math.radians(-angle), math.radians(shear[0]), math.radians(shear[1])
    a = math.cos(rot - sy) / math.cos(sy)
    b = -math.cos(rot - sy) * math.tan(sx) / math.cos(sy) - math.sin(rot)
    c = math.sin(rot - sy) / math.cos(sy)
    d = -math.sin(rot - sy) * math.tan(sx) / math.cos(sy) + math.cos(rot)
    m = [d, -b, 0.0, -c, a, 0.0]
    m[2] += m[0] * (-cx - tx) + m[1] * (-cy - ty) + cx
    m[5] += m[3] * (-cx - tx) + m[4] * (-cy - ty) + cy
    return m


def _warp_op(height, width, matrix):
    """A nearest-neighbour warp for `matrix` (from `_inverse_affine`), specialised where it is a shift.

    A shear or translation along x moves each row by a whole number of pixels (round(j + s) = j + round(s)),
    so it is a few band copies ("shift", dim, [(start, end, shift)]) instead of a per-pixel gather; rotations
    gather ("gather", index, invalid) through the index map F.grid_sample(mode="nearest") would use.
    """
    a, b, c, d, e, f = matrix
    if a == 1.0 and d == 0.0 and e == 1.0 and f == 0.0:  # x' = x + b*y + c: shift rows
        v = torch.arange(height, dtype=torch.float32) + 0.5 - height * 0.5
        return ("shift", 2, _bands(torch.round(b * v + c).long().tolist()))
    if a == 1.0 and b == 0.0 and c == 0.0 and e == 1.0:  # y' = d*x + y + f: shift columns
        u = torch.arange(width, dtype=torch.float32) + 0.5 - width * 0.5
        return ("shift", 3, _bands(torch.round(d * u + f).long().tolist()))
    # The same map in affine_grid's normalised coordinates (align_corners=False).
    theta = torch.tensor(
        [[a, b * height / width, c / (width * 0.5)], [d * width / height, e, f / (height * 0.5)]], dtype=torch.float32
    )
    grid = F.affine_grid(theta[None], [1, 1, height, width], align_corners=False)[0]
    gx = ((grid[..., 0] + 1) * width - 1) * 0.5  # grid_sample's unnormalisation
    gy = ((grid[..., 1] + 1) * height - 1) * 0.5
    ix, iy = torch.round(gx).long(), torch.round(gy).long()  # nearbyint, as grid_sample
    valid = (ix >= 0) & (ix < width) & (iy >= 0) & (iy < height)
    index = (iy.clamp(0, height - 1) * width + ix.clamp(0, width - 1)).reshape(-1)
    return ("gather", index, torch.nonzero(~valid.reshape(-1)).reshape(-1))


def _bands(shifts: list[int]) -> list[tuple[int, int, int]]:
    bands, start = [], 0
    for i in range(1, len(shifts) + 1):
        if i == len(shifts) or shifts[i] != shifts[start]:
            bands.append((start, i, shifts[start]))
            start = i
    return bands


def _shift_copy(src: np.ndarray, dst: np.ndarray, dim: int, bands) -> None:
    """dst[:, :, i, j] = src[:, :, i, j + s] for the rows i of each band (dim=2), zero outside; dim=3: columns.

    numpy views, so that `src` may be a transposed or flipped view (the fused uint8 path) and slicing is cheap.
    """
    if dim == 3:
        src, dst = src.swapaxes(2, 3), dst.swapaxes(2, 3)
    length = src.shape[3]
    for start, end, s in bands:
        d, sv = dst[:, :, start:end], src[:, :, start:end]
        if abs(s) >= length:
            d[...] = 0
        elif s >= 0:
            np.copyto(d[..., : length - s], sv[..., s:])
            d[..., length - s :] = 0
        else:
            np.copyto(d[..., -s:], sv[..., : length + s])
            d[..., :-s] = 0


def _apply_warp(x: torch.Tensor, warp, out: torch.Tensor | None = None) -> torch.Tensor:
    """Nearest-neighbour warp of a contiguous (n, C, H, W) tensor (uint8 or float32), fill 0."""
    if warp[0] == "shift":
        out = torch.empty_like(x) if out is None else out
        _shift_copy(x.numpy(), out.numpy(), warp[1], warp[2])
        return out
    _, index, invalid = warp
    n, channels, height, width = x.shape
    flat = x.reshape(n * channels, height * width)
    if x.dtype == torch.uint8:  # numpy's take is 4x torch's index_select on bytes, torch's wins on floats
        flat = torch.from_numpy(np.take(flat.numpy(), index.numpy(), axis=1))
    else:
        flat = flat.index_select(1, index)
    if invalid.numel():
        flat.index_fill_(1, invalid, 0)
    return flat.view(n, channels, height, width)


# --- per-pixel ops ------------------------------------------------------------------------------------
# Drawn ops are tuples: ("brightness" | "saturation" | "contrast" | "hue", factor), ("warp", warp),
# ("posterize", bits), ("solarize", threshold), ("sharpness", factor), ("autocontrast",), ("equalize",).
# `_compile` folds each run of consecutive affine colour ops into one step before any pixel is touched.


def _hue_matrix(hue: float) -> list[list[float]]:
    # Rotation of the chroma plane of YIQ; the sign makes +1/3 turn send red towards green, as HSV does.
    theta = -2.0 * math.pi * hue
    rot = torch.tensor(
        [[1.0, 0.0, 0.0], [0.0, math.cos(theta), -math.sin(theta)], [0.0, math.sin(theta), math.cos(theta)]],
        dtype=torch.float64,
    )
    return (_YIQ_TO_RGB @ rot @ _RGB_TO_YIQ).tolist()


def _mm3(a, b):
    return [[sum(a[i][k] * b[k][j] for k in range(3)) for j in range(3)] for i in range(3)]


def _mv3(a, v):
    return [sum(a[i][k] * v[k] for k in range(3)) for i in range(3)]


_EYE3 = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
_ZERO3 = [[0.0] * 3 for _ in range(3)]


def _compile(ops: Sequence) -> list:
    """Fold runs of affine colour ops into ("affine", M, P^T, q): y = M x + P mean(x) + q per frame.

    Brightness, saturation and hue are linear in RGB and contrast adds (1 - c) * the frame's mean grey, which
    is linear in the frame's channel means, so any run of them is one 3x3 map plus a per-frame offset: one
    pass over the pixels and one clamp, as mmaction's ColorJitter clamps once; torchvision clamps after every
    op, which differs only where an intermediate value leaves [0, 255]. The last step also adds 0.5 so that
    the final truncating cast to uint8 rounds.
    """
    runs, affine = [], None
    for op in ops:
        name = op[0]
        if name in ("brightness", "saturation", "hue", "contrast"):
            m, p, q = affine or (_EYE3, _ZERO3, [0.0, 0.0, 0.0])
            f = op[1]
            if name == "contrast":
                gray = [sum(_GRAY[i] * (m[i][j] + p[i][j]) for i in range(3)) for j in range(3)]
                gray_q = sum(_GRAY[i] * q[i] for i in range(3))
                m = [[f * v for v in row] for row in m]
                p = [[f * p[i][j] + (1.0 - f) * gray[j] for j in range(3)] for i in range(3)]
                q = [f * v + (1.0 - f) * gray_q for v in q]
            else:
                if name == "brightness":
                    a = [[f * v for v in row] for row in _EYE3]
                elif name == "saturation":  # blend with torchvision's grey
                    a = [[f * (i == j) + (1.0 - f) * _GRAY[j] for j in range(3)] for i in range(3)]
                else:
                    a = _hue_matrix(f)
                m, p, q = _mm3(a, m), _mm3(a, p), _mv3(a, q)
            affine = (m, p, q)
            continue
        if affine is not None:
            runs.append(("affine", *affine))
            affine = None
        runs.append(op)
    if affine is not None:
        runs.append(("affine", *affine))
    steps = []
    for k, run in enumerate(runs):
        if run[0] != "affine":
            steps.append(run)
            continue
        _, m, p, q = run
        rounding = 0.5 if k == len(runs) - 1 else 0.0
        has_p = any(v != 0.0 for row in p for v in row)
        steps.append(
            (
                "affine",
                np.array(m, dtype=np.float32),
                torch.tensor(p, dtype=torch.float32).T if has_p else None,
                torch.tensor([v + rounding for v in q], dtype=torch.float32),
            )
        )
    return steps


def _apply_affine(x: torch.Tensor, out: torch.Tensor, step) -> torch.Tensor:
    """out = clamp(M x + P mean(x) + q) on float32 (n, 3, H, W)."""
    _, m, p_t, q = step
    n = x.shape[0]
    if p_t is None:
        offset = q.view(1, 3, 1, 1)
    else:
        # q + mean @ P^T written out: addmm's GEMM kernel depends on n (measured: the last bit of a frame's offset
        # changed with the frames beside it, and a pixel at .5 rounded the other way), these elementwise ops do not.
        means = x.mean(dim=(2, 3))
        offset = (q + means[:, 0:1] * p_t[0] + means[:, 1:2] * p_t[1] + means[:, 2:3] * p_t[2]).view(n, 3, 1, 1)
    # numpy's matmul (OpenBLAS sgemm, 3x3 @ 3xHW per frame) reads each pixel once: 4x faster than
    # nine scalar multiply-adds over the colour planes.
    np.matmul(m, x.numpy().reshape(n, 3, -1), out=out.numpy().reshape(n, 3, -1))
    return out.add_(offset).clamp_(0.0, 255.0)


# The float ops below write into preallocated chunk buffers: torch's CPU allocator does not cache, and a
# fresh 2 MiB temporary per op costs more in page faults than the arithmetic it holds.


def _equalize(x: torch.Tensor, scratch: torch.Tensor) -> torch.Tensor:
    """torchvision's equalize (a histogram LUT per frame and channel) on float32 (n, 3, H, W) in [0, 255], in place."""
    n, channels, height, width = x.shape
    rows = n * channels
    values = scratch.view(torch.int32)[:n].view(rows, height * width)
    values.copy_(x.view(rows, -1))  # truncation, as the uint8 image would hold
    values += (torch.arange(rows, dtype=torch.int32) * 256)[:, None]
    hist = torch.bincount(values.view(-1), minlength=rows * 256).view(rows, 256)
    last = 255 - (hist > 0).flip(1).to(torch.uint8).argmax(1)  # highest occupied bin
    step = (height * width - hist.gather(1, last[:, None])[:, 0]) // 255
    safe = step.clamp(min=1)[:, None]
    lut = (torch.cumsum(hist, 1) + torch.div(safe, 2, rounding_mode="floor")).div(safe, rounding_mode="floor")
    lut = F.pad(lut, [1, 0])[:, :-1].clamp(0, 255)
    lut = torch.where((step == 0)[:, None], torch.arange(256)[None], lut).to(torch.float32)
    torch.index_select(lut.view(-1), 0, values.view(-1), out=x.view(-1))
    return x


def _sharpness(x: torch.Tensor, factor: float, scratch: torch.Tensor, scratch2: torch.Tensor) -> torch.Tensor:
    """torchvision's adjust_sharpness, in place: blend with a 3x3 smoothing (centre 5, rest 1) of the interior."""
    n, channels, height, width = x.shape
    if height <= 2 or width <= 2:
        return x
    # A 3x3 box sum by shifted adds: far cheaper than conv2d here.
    rows = scratch.view(-1)[: n * channels * height * (width - 2)].view(n, channels, height, width - 2)
    torch.add(x[..., :, :-2], x[..., :, 1:-1], out=rows).add_(x[..., :, 2:])
    box = scratch2.view(-1)[: n * channels * (height - 2) * (width - 2)].view(n, channels, height - 2, width - 2)
    torch.add(rows[..., :-2, :], rows[..., 1:-1, :], out=box).add_(rows[..., 2:, :])
    # f * x + (1 - f) * (box + 4 x) / 13 on the interior; the border keeps its pixels.
    x[..., 1:-1, 1:-1].mul_(factor + 4.0 * (1.0 - factor) / 13.0).add_(box, alpha=(1.0 - factor) / 13.0)
    return x.clamp_(0.0, 255.0)


def _solarize(x: torch.Tensor, threshold: float, scratch: torch.Tensor) -> torch.Tensor:
    """x >= t ? 255 - x : x, in place, as x (1 - 2s) + 255 s with s a 0/1 step: CPU float compares are slow."""
    step = torch.add(torch.tensor(1.0 - threshold * 1e4), x, alpha=1e4, out=scratch).clamp_(0.0, 1.0)
    return x.addcmul_(step, x, value=-2.0).add_(step, alpha=255.0)  # step is 0 below t - 1e-4


def _autocontrast(x: torch.Tensor) -> torch.Tensor:
    n = x.shape[0]
    low, high = x.view(n, 3, -1).amin(-1), x.view(n, 3, -1).amax(-1)  # aminmax(dim=) is 20x slower here
    flat = high <= low  # a constant channel stays as it is, as torchvision's
    scale = torch.where(flat, torch.ones_like(low), 255.0 / (high - low).clamp(min=1e-6))
    low = torch.where(flat, torch.zeros_like(low), low)
    return x.sub_(low.view(n, 3, 1, 1)).mul_(scale.view(n, 3, 1, 1)).clamp_(0.0, 255.0)


def _posterize(x: torch.Tensor, bits: int) -> torch.Tensor:
    step = float(2 ** (8 - bits))
    return x.mul_(1.0 / step).floor_().mul_(step)


def _run(
    clip: torch.Tensor,
    box,
    out_hw,
    flip: bool = False,
    ops: Sequence = (),
    uint8_ops: Sequence = (),
    compiled: bool = True,
) -> torch.Tensor:
    """Crop `box` (x0, y0, x1, y1) of every frame, resize to `out_hw`, flip, apply `uint8_ops` (callables on uint8
    (n, 3, h, w) numpy frames, e.g. rand_augment_mmaction's) then `ops`: uint8 (T, 3, h, w).

    Resizing, flipping and the warps that come before any colour op run on uint8, ~2 MiB of frames at a time;
    the colour ops then run in float32 on a few frames at a time, so that their many passes hit the cache.
    With `compiled`, uint8 operations that have a compiled form and a colour jitter that folds into one map run
    through `_run_compiled` instead, and so does a crop, resize and flip with no operation (evaluation: the same
    bytes, 80 -> 65 us a 320x180 frame with the planar copy done per block in cache rather than numpy's strided
    copy, ~35 with the fused crop + resize + planar copy of `resize_kernels`).
    """
    num = clip.shape[0]
    x0, y0, x1, y1 = box
    out_h, out_w = out_hw
    src = clip.permute(0, 3, 1, 2)[:, :, y0:y1, x0:x1]  # channels-last view: the fast uint8 interpolate path
    resize = (y1 - y0, x1 - x0) != (out_h, out_w)
    antialias = (y1 - y0) > out_h or (x1 - x0) > out_w  # only matters (and only costs) when shrinking
    steps = _compile(ops)
    if compiled and (
        not (ops or uint8_ops)  # crop, resize and flip only (evaluation): the same bytes, copied per block in cache
        or uint8_ops and all(hasattr(op, "compiled") for op in uint8_ops) and all(s[0] == "affine" for s in steps)
    ):
        return _run_compiled(clip, box, (out_h, out_w), resize, antialias, flip, uint8_ops, steps)
    lead = 0
    while lead < len(steps) and steps[lead][0] == "warp":
        lead += 1
    out = torch.empty((num, 3, out_h, out_w), dtype=torch.uint8)
    out_np = out.numpy()
    frame = 3 * out_h * out_w
    float_chunk = max(1, _CHUNK_FLOATS // frame)
    chunk = float_chunk * max(1, 4 * _CHUNK_FLOATS // (frame * float_chunk))
    if lead < len(steps):
        buffers = [torch.empty((float_chunk, 3, out_h, out_w), dtype=torch.float32) for _ in range(3)]
    for i in range(0, num, chunk):
        x = src[i : i + chunk]
        if resize:
            x = F.interpolate(x, size=(out_h, out_w), mode="bilinear", align_corners=False, antialias=antialias)
        # To planar (T, 3, h, w) with numpy: its negative strides make the flip free, and a leading shift
        # warp rides on the same copy.
        hwc = x.permute(0, 2, 3, 1).numpy()
        planar_src = (hwc[:, :, ::-1] if flip else hwc).transpose(0, 3, 1, 2)
        dst = out_np[i : i + chunk]
        first = 0
        if lead and steps[0][1][0] == "shift":
            _shift_copy(planar_src, dst, steps[0][1][1], steps[0][1][2])
            first = 1
        else:
            np.copyto(dst, planar_src)
        for step in steps[first:lead]:
            planar = out[i : i + chunk]
            if step[1][0] == "shift":
                _apply_warp(planar.clone(), step[1], out=planar)
            else:
                planar.copy_(_apply_warp(planar, step[1]))
        for j in range(0, dst.shape[0], float_chunk) if uint8_ops else ():  # a few frames at a time: in cache
            block = dst[j : j + float_chunk]
            result = block
            for op in uint8_ops:
                result = op(result)
            if result is not block:
                np.copyto(block, result)
        for j in range(i, min(i + chunk, num), float_chunk) if lead < len(steps) else ():
            _float_steps(out[j : j + float_chunk], steps[lead:], buffers)
    return out


_BLOCK_BYTES = 1 << 19  # uint8 frames per block of the compiled path (512 KiB; measured best of 2-12 frames at 160x160)


def _run_compiled(clip, box, out_hw, resize: bool, antialias: bool, flip: bool, uint8_ops, steps) -> torch.Tensor:
    """`_run` for uint8 operations that have a `compiled` form (rand_augment_mmaction's) followed by at most one
    folded colour step: per block of a few frames, the resize, the planar copy (with the flip), each operation and
    the colour map are each one pass over frames in cache (train_clip_kernels).

    The crop, resize, flip and planar copy are one pass (`resize_kernels.CropResizePlanar`: torch's interpolate
    bytes, ~42-77 -> 17-30 us a 160x160 frame) where numba's target has AVX-512 VBMI and the box fits its
    windows; elsewhere torch's interpolate, then `planarize`, which alone copies a box already at the output size
    (evaluation's centre crop of frames decoded at 284x160; `CropResizePlanar.plan` lists where it declines).

    An operation runs in place or writes the block's second buffer (`in_place`); the planar copy goes to whichever
    buffer makes the last operation's result land where the colour map reads it from the other one (a kernel that
    reads and writes one array does not vectorise) and writes the output."""
    from . import train_clip_kernels as kernels
    from .resize_kernels import CropResizePlanar

    num = clip.shape[0]
    x0, y0, x1, y1 = box
    src = clip.permute(0, 3, 1, 2)[:, :, y0:y1, x0:x1]  # channels-last view: the fast uint8 interpolate path
    out_h, out_w = out_hw
    out = torch.empty((num, 3, out_h, out_w), dtype=torch.uint8)
    out_np = out.numpy()
    block = max(1, _BLOCK_BYTES // (3 * out_h * out_w))
    spare = np.empty((block, 3, out_h, out_w), dtype=np.uint8)
    color = None
    if steps:
        _, m, p_t, q = steps[0]
        p = np.zeros((3, 3), np.float32) if p_t is None else np.ascontiguousarray(p_t.numpy().T)
        color = (np.ascontiguousarray(m), p, q.numpy().astype(np.float32), p_t is not None)
    swaps = sum(not op.in_place for op in uint8_ops)
    start = (swaps + (color is not None)) % 2  # 0: the copy goes to the output block, 1: to the spare
    # the fused pass reads whole rows of the (T, H, W, 3) frames; `plan` says where it applies
    fused = CropResizePlanar.plan(clip.shape[1:3], box, out_hw, flip, antialias) if clip.is_contiguous() else None
    frames = clip.numpy() if fused is not None else None
    for i in range(0, num, block):
        dst = out_np[i : i + block]
        pair = (dst, spare[: dst.shape[0]])
        current = start
        if fused is not None:
            fused.run(frames[i : i + block], pair[current])
        else:
            x = src[i : i + block]
            if resize:
                x = F.interpolate(x, size=(out_h, out_w), mode="bilinear", align_corners=False, antialias=antialias)
            kernels.planarize(np.ascontiguousarray(x.permute(0, 2, 3, 1).numpy()), flip, pair[current])
        for op in uint8_ops:
            op.compiled(pair[current], pair[1 - current])
            current = current if op.in_place else 1 - current
        if color is not None:
            kernels.color_affine(pair[current], *color, dst)  # from the spare (current is 1 here)
    return out


def _float_steps(planar: torch.Tensor, steps, buffers) -> None:
    """Run `steps` in float32 on a uint8 (n, 3, h, w) chunk, in place."""
    n = planar.shape[0]
    xf, spare, scratch = (b[:n] for b in buffers)
    xf.copy_(planar)
    for k, step in enumerate(steps):
        name = step[0]
        if name == "affine":
            xf, spare = _apply_affine(xf, spare, step), xf
            continue
        if name == "warp":
            if step[1][0] == "shift":
                xf, spare = _apply_warp(xf, step[1], out=spare), xf
            else:
                _, index, invalid = step[1]
                flat = torch.index_select(xf.view(3 * n, -1), 1, index, out=spare.view(3 * n, -1))
                flat.index_fill_(1, invalid, 0.0)
                xf, spare = spare, xf
        elif name == "posterize":
            _posterize(xf, step[1])
        elif name == "solarize":
            _solarize(xf, step[1], scratch)
        elif name == "autocontrast":
            _autocontrast(xf)
        elif name == "equalize":
            _equalize(xf, scratch)
        elif name == "sharpness":
            _sharpness(xf, step[1], spare, scratch)
        else:
            raise ValueError(f"unknown op {name!r}")
        if k == len(steps) - 1:
            xf.add_(0.5).clamp_(0.0, 255.0)  # round on the uint8 cast
    np.copyto(planar.numpy(), xf.numpy(), casting="unsafe")  # a truncating cast, 5x faster than torch's


# --- random parameter draws (one per clip) ------------------------------------------------------------


def _jitter_range(value, name: str, hue: bool = False):
    """torchvision's ColorJitter ranges: v -> [max(0, 1 - v), 1 + v] ([-v, v] for hue) or a (low, high) pair."""
    if value is None:
        return None
    if isinstance(value, (int, float)):
        if value < 0 or (hue and value > 0.5):
            raise ValueError(f"{name} must be in [0, {0.5 if hue else 'inf'}], got {value}")
        if value == 0:
            return None  # torchvision draws nothing for a disabled op
        return (-float(value), float(value)) if hue else (max(0.0, 1.0 - value), 1.0 + value)
    low, high = map(float, value)
    if low > high or (hue and not -0.5 <= low <= high <= 0.5) or (not hue and low < 0):
        raise ValueError(f"bad {name} range {(low, high)}")
    return low, high


def _draw_color_jitter(brightness, contrast, saturation, hue, generator, fixed_order=None) -> list:
    """torchvision's ColorJitter draw (a random op order per clip); with `fixed_order` (a permutation of 0..3 drawn
    once per run), mmaction's: that order for every clip, and its hue shift of int(255 h) OpenCV hue units
    (2 degrees each, so h = 0.1 turns 50 degrees, not 36) applied as a turn of int(255 h) / 180."""
    ranges = [
        ("brightness", _jitter_range(brightness, "brightness")),
        ("contrast", _jitter_range(contrast, "contrast")),
        ("saturation", _jitter_range(saturation, "saturation")),
        ("hue", _jitter_range(hue, "hue", hue=True)),
    ]
    order = torch.randperm(4, generator=generator).tolist() if fixed_order is None else list(fixed_order)
    factors = [None if r is None else float(_rand_uniform(r[0], r[1], generator)) for _, r in ranges]
    if fixed_order is not None and factors[3] is not None:
        factors[3] = int(factors[3] * 255) / 180.0
    return [(ranges[k][0], factors[k]) for k in order if factors[k] is not None]


def mmaction_jitter_order(seed: int) -> list[int]:
    """The op order mmaction's ColorJitter draws once when the pipeline is built (np.random.permutation(4));
    here from the run's seed: 0 brightness, 1 contrast, 2 saturation, 3 hue."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), 0x434A4954])).permutation(4).tolist()  # 'CJIT'


# torchvision's RandAugment space: (name, magnitudes over num_bins, signed)
def _rand_augment_space(num_bins: int, height: int, width: int):
    return [
        ("Identity", None, False),
        ("ShearX", torch.linspace(0.0, 0.3, num_bins), True),
        ("ShearY", torch.linspace(0.0, 0.3, num_bins), True),
        ("TranslateX", torch.linspace(0.0, 150.0 / 331.0 * width, num_bins), True),
        ("TranslateY", torch.linspace(0.0, 150.0 / 331.0 * height, num_bins), True),
        ("Rotate", torch.linspace(0.0, 30.0, num_bins), True),
        ("Brightness", torch.linspace(0.0, 0.9, num_bins), True),
        ("Color", torch.linspace(0.0, 0.9, num_bins), True),
        ("Contrast", torch.linspace(0.0, 0.9, num_bins), True),
        ("Sharpness", torch.linspace(0.0, 0.9, num_bins), True),
        ("Posterize", 8 - (torch.arange(num_bins) / ((num_bins - 1) / 4)).round().int(), False),
        ("Solarize", torch.linspace(255.0, 0.0, num_bins), False),
        ("AutoContrast", None, False),
        ("Equalize", None, False),
    ]


def _rand_augment_op(name: str, magnitude: float, height: int, width: int):
    """The op torchvision's RandAugment._apply_op applies for `name` at a signed `magnitude`."""
    if name in ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate"):
        if name.startswith("Shear"):  # about the top-left corner, as torchvision does (center=[0, 0])
            angle = math.degrees(math.atan(magnitude))
            shear = (angle, 0.0) if name == "ShearX" else (0.0, angle)
            matrix = _inverse_affine(height, width, shear=shear, center=(0, 0))
        elif name.startswith("Translate"):
            shift = int(magnitude)
            matrix = _inverse_affine(height, width, translate=(shift, 0) if name == "TranslateX" else (0, shift))
        else:
            matrix = _inverse_affine(height, width, angle=magnitude)
        return ("warp", _warp_op(height, width, matrix))
    return {
        "Identity": None,
        "Brightness": ("brightness", 1.0 + magnitude),
        "Color": ("saturation", 1.0 + magnitude),
        "Contrast": ("contrast", 1.0 + magnitude),
        "Sharpness": ("sharpness", 1.0 + magnitude),
        "Posterize": ("posterize", int(magnitude)),
        "Solarize": ("solarize", float(magnitude)),
        "AutoContrast": ("autocontrast",),
        "Equalize": ("equalize",),
    }[name]


def _draw_rand_augment(num_ops, magnitude, num_bins, height, width, generator) -> list:
    if not 0 <= magnitude < num_bins:
        raise ValueError(f"magnitude must be in [0, {num_bins}), got {magnitude}")
    space = _rand_augment_space(num_bins, height, width)
    ops = []
    for _ in range(num_ops):
        name, magnitudes, signed = space[int(torch.randint(len(space), (1,), generator=generator))]
        value = float(magnitudes[magnitude]) if magnitudes is not None else 0.0
        if signed and int(torch.randint(2, (1,), generator=generator)):
            value = -value
        op = _rand_augment_op(name, value, height, width)
        if op is not None:
            ops.append(op)
    return ops


# --- public transforms ----------------------------------------------------------------------------------


def resize_short_side(clip, size: int) -> torch.Tensor:
    """Bilinear resize so that the short side is `size` (antialiased when shrinking): uint8 (T, 3, h, w)."""
    x = _as_clip(clip)
    height, width = x.shape[1:3]
    return _run(x, (0, 0, width, height), _short_side_shape(height, width, size))


def resize(clip, size) -> torch.Tensor:
    """Bilinear resize of whole frames to `size` (int or (h, w)), aspect ratio not kept (antialiased when
    shrinking): uint8 (T, 3, h, w)."""
    x = _as_clip(clip)
    height, width = x.shape[1:3]
    return _run(x, (0, 0, width, height), _pair(size))


def center_crop(clip, size) -> torch.Tensor:
    """Centre crop of `size` (int or (h, w)) with mmaction's offsets ((H - h) // 2, (W - w) // 2)."""
    x = _as_clip(clip)
    crop_hw = _pair(size)
    return _run(x, _center_box(x.shape[1], x.shape[2], crop_hw), crop_hw)


def random_resized_crop(
    clip, size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), generator: torch.Generator | None = None
) -> torch.Tensor:
    """mmaction's RandomResizedCrop (area fraction `scale`, aspect `ratio`) then a resize to `size`."""
    x = _as_clip(clip)
    box = _draw_resized_crop_box(x.shape[1], x.shape[2], scale, ratio, generator)
    return _run(x, box, _pair(size))


def horizontal_flip(clip, p: float = 0.5, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mirror every frame left-right with probability `p` (one draw per clip)."""
    x = _as_clip(clip)
    return _run(x, (0, 0, x.shape[2], x.shape[1]), x.shape[1:3], flip=_draw_flip(p, generator))


def color_jitter(
    clip, brightness=0.5, contrast=0.5, saturation=0.5, hue=0.1, generator: torch.Generator | None = None
) -> torch.Tensor:
    """torchvision's ColorJitter, with one random op order and one set of factors per clip.

    Factors are drawn from [1 - v, 1 + v] (hue from [-v, v], in turns) or from a (low, high) pair; defaults are
    mmaction's ColorJitter, which the AdaTAD recipe uses. Two differences from torchvision, both for speed:
    the four ops are composed into one affine colour map and clamped once (as mmaction does), and hue is a
    rotation of the YIQ chroma plane (the linear approximation NVIDIA DALI's `hsv` and tf-addons'
    `adjust_hsv_in_yiq` use) instead of a shift of the HSV hue.
    """
    x = _as_clip(clip)
    ops = _draw_color_jitter(brightness, contrast, saturation, hue, generator)
    return _run(x, (0, 0, x.shape[2], x.shape[1]), x.shape[1:3], ops=ops)


def rand_augment(
    clip, num_ops: int = 2, magnitude: int = 9, generator: torch.Generator | None = None, num_magnitude_bins: int = 31
) -> torch.Tensor:
    """torchvision's RandAugment (same 14 ops and magnitude bins), one op draw per clip.

    Geometric ops use nearest neighbour with fill 0 (torchvision's defaults); Brightness, Color and Contrast
    are composed with any following colour op before clamping (see `color_jitter`).
    """
    x = _as_clip(clip)
    height, width = x.shape[1:3]
    ops = _draw_rand_augment(num_ops, magnitude, num_magnitude_bins, height, width, generator)
    return _run(x, (0, 0, width, height), (height, width), ops=ops)


class TrainClipTransform:
    """AdaTAD's THUMOS training augmentation: resize short side -> random resized crop -> flip -> RandAugment
    -> colour jitter, one draw per clip: `(clip, generator) -> uint8 (T, 3, crop, crop)`.

    Defaults: the recipe's sizes, mmaction's RandomResizedCrop ranges and ColorJitter factors
    (brightness, contrast, saturation, hue), RandAugment (num_ops, magnitude) = (2, 9); None leaves a step
    out. `rand_augment_style` "torchvision" is torchvision's RandAugment (magnitude of 31 bins, `rand_augment`
    here); "mmaction" is MMAction2's imgaug RandAugment as OpenTAD trains AdaTAD (magnitude of 10, the five
    geometric signs drawn once from `rand_augment_seed`; `rand_augment_mmaction`). `color_jitter_style` "mmaction"
    fixes the four ops' order once per run (from the same seed) and shifts hue in OpenCV's units, as mmaction's
    ColorJitter. The short-side resize and the
    crop are fused: the box is drawn on the resized frame's shape (as mmaction does), mapped back to source
    pixels, and the source frames are interpolated once, straight to `crop` x `crop`.
    """

    STYLES = ("torchvision", "mmaction")
    # mmaction RandAugment runs through train_clip_kernels; False runs its numpy definitions and the float32 colour
    # pass (the reference the tests compare with: the same bytes up to the colour map's float order)
    compiled = True

    def __init__(
        self,
        resize: int = 182,
        crop: int = 160,
        crop_scale=(0.08, 1.0),
        crop_ratio=(3 / 4, 4 / 3),
        flip_prob: float = 0.5,
        rand_augment: tuple[int, int] | None = (2, 9),
        color_jitter: tuple | None = (0.5, 0.5, 0.5, 0.1),
        rand_augment_style: str = "torchvision",
        rand_augment_seed: int = 0,
        color_jitter_style: str = "torchvision",
    ):
        if rand_augment_style not in self.STYLES:
            raise ValueError(f"rand_augment_style must be one of {self.STYLES}, got {rand_augment_style!r}")
        if color_jitter_style not in self.STYLES:
            raise ValueError(f"color_jitter_style must be one of {self.STYLES}, got {color_jitter_style!r}")
        self.color_jitter_style = color_jitter_style
        self.jitter_order = mmaction_jitter_order(rand_augment_seed) if color_jitter_style == "mmaction" else None
        self.resize, self.crop = resize, crop
        self.crop_scale, self.crop_ratio = tuple(crop_scale), tuple(crop_ratio)
        self.flip_prob = flip_prob
        self.rand_augment = rand_augment
        self.color_jitter = color_jitter
        self.rand_augment_style = rand_augment_style
        self.mmaction = None
        if rand_augment is not None and rand_augment_style == "mmaction":
            from .rand_augment_mmaction import MMActionRandAugment, draw_signs

            self.mmaction = MMActionRandAugment(draw_signs(rand_augment_seed), *rand_augment)

    def __call__(self, clip, generator: torch.Generator | None = None) -> torch.Tensor:
        x = _as_clip(clip)
        height, width = x.shape[1:3]
        resized = _short_side_shape(height, width, self.resize)
        box = _draw_resized_crop_box(*resized, self.crop_scale, self.crop_ratio, generator)
        box = _scale_box(box, height, width, resized)
        flip = _draw_flip(self.flip_prob, generator)
        ops, uint8_ops = [], []
        if self.mmaction is not None:
            uint8_ops = self.mmaction.draw(self.crop, self.crop, generator)
        elif self.rand_augment is not None:
            num_ops, magnitude = self.rand_augment
            ops += _draw_rand_augment(num_ops, magnitude, 31, self.crop, self.crop, generator)
        if self.color_jitter is not None:
            ops += _draw_color_jitter(*self.color_jitter, generator, fixed_order=self.jitter_order)
        return _run(x, box, (self.crop, self.crop), flip=flip, ops=ops, uint8_ops=uint8_ops, compiled=self.compiled)

    def decode_size(self, height: int, width: int) -> tuple[int, int] | None:
        """The size to decode a height x width video at: the short-side resize this transform starts with, when it
        shrinks (None: decode as stored). The crop box is drawn on that shape either way, so a clip decoded at it
        gets the same crop of the scene and the same draws; only the resampling differs (the decoder's bicubic
        instead of this module's antialiased bilinear)."""
        return shrinking_short_side(height, width, self.resize)

    def describe(self) -> str:
        """One line for the start-of-run report."""
        if self.rand_augment is None:
            augment = "RandAugment off"
        elif self.mmaction is not None:
            augment = self.mmaction.describe()
        else:
            augment = f"torchvision RandAugment {self.rand_augment[0]} ops at magnitude {self.rand_augment[1]}/30"
        jitter = "off" if self.color_jitter is None else "brightness/contrast/saturation/hue " + "/".join(
            f"{v:g}" for v in self.color_jitter
        )
        if self.color_jitter is not None and self.jitter_order is not None:
            names = ("brightness", "contrast", "saturation", "hue")
            jitter += f" (mmaction: order {' > '.join(names[k] for k in self.jitter_order)} for the run, hue in 2-degree units)"
        return (
            f"resize short side {self.resize}, random resized crop {self.crop} (scale {self.crop_scale[0]:g}-"
            f"{self.crop_scale[1]:g}), flip p={self.flip_prob:g}; {augment}; colour jitter {jitter}"
        )

    def __repr__(self) -> str:
        return (
            f"TrainClipTransform(resize={self.resize}, crop={self.crop}, crop_scale={self.crop_scale}, "
            f"crop_ratio={self.crop_ratio}, flip_prob={self.flip_prob}, rand_augment={self.rand_augment}, "
            f"color_jitter={self.color_jitter}, rand_augment_style={self.rand_augment_style!r}, "
            f"color_jitter_style={self.color_jitter_style!r}"
            + (f", signs={self.mmaction.signs}" if self.mmaction is not None else "")
            + ")"
        )


class EvalClipTransform:
    """AdaTAD's test transform: resize short side to `resize`, centre crop `crop`; fused into one resize."""

    def __init__(self, resize: int = 160, crop: int = 160):
        self.resize, self.crop = resize, crop

    def __call__(self, clip, generator: torch.Generator | None = None) -> torch.Tensor:
        x = _as_clip(clip)
        height, width = x.shape[1:3]
        resized = _short_side_shape(height, width, self.resize)
        box = _scale_box(_center_box(*resized, _pair(self.crop)), height, width, resized)
        return _run(x, box, _pair(self.crop))

    def decode_size(self, height: int, width: int) -> tuple[int, int] | None:
        """As TrainClipTransform.decode_size: the short-side resize when it shrinks, else None."""
        return shrinking_short_side(height, width, self.resize)

    def __repr__(self) -> str:
        return f"EvalClipTransform(resize={self.resize}, crop={self.crop})"


class ReaderCache:
    """Open decord readers of this process, the last `keep` (path, size) pairs: consecutive windows of a video reuse
    theirs, and so do the few decode sizes of one video (`size`: see VideoReader).

    Readers are kept per pid. A forked DataLoader worker opens its own and must never destroy one inherited from
    its parent: decord's destructor joins decoder threads that do not exist in the child and hangs for ever.
    """

    def __init__(self, threads: int, keep: int = 2, read_ahead: bool = True):
        self.threads = threads
        self.keep = keep
        self.read_ahead = read_ahead  # VideoReader's: False for datasets that read one window per sample
        self._readers: dict[int, dict[tuple, VideoReader]] = {}
        self._sizes: dict[str, tuple[int, int]] = {}

    def get(self, path: str, size: tuple[int, int] | None = None) -> VideoReader:
        pid = os.getpid()
        readers = self._readers.get(pid)
        if readers is None:
            readers = self._readers[pid] = {}
        key = (path, None if size is None else (int(size[0]), int(size[1])))
        reader = readers.pop(key, None)
        if reader is None:
            while len(readers) >= self.keep:  # opened by this process: safe to close
                readers.pop(next(iter(readers)))
            reader = VideoReader(path, num_threads=self.threads, size=key[1], read_ahead=self.read_ahead)
        readers[key] = reader  # most recent last
        return reader

    def get_for(self, path: str, decode_size) -> VideoReader:
        """The reader at `decode_size(height, width)` of this video's stored size (a transform's `decode_size`; None,
        or a function returning None: as stored)."""
        if decode_size is None:
            return self.get(path)
        return self.get(path, decode_size(*self.source_size(path)))

    def source_size(self, path: str) -> tuple[int, int]:
        """(height, width) as stored (`video_size`), read once per path."""
        if path not in self._sizes:
            self._sizes[path] = video_size(path)
        return self._sizes[path]

    def __getstate__(self):  # readers are not picklable (spawned workers, deepcopy): start empty
        return {"threads": self.threads, "keep": self.keep, "read_ahead": self.read_ahead, "_readers": {},
                "_sizes": dict(self._sizes)}
