"""What the synthetic corpus generators share: H.264 MP4 writing checked against decord, a moving background, and
generation into a temporary folder renamed into place, with the parameters stored last (a complete corpus is one whose
parameters file exists; `ensure_*` regenerates when they differ). One generator per corpus writes its real on-disk
format: synthetic_thumos14.py, synthetic_ucf_crime.py."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import numpy as np

PARAMS_FILE = "synthetic_params.json"


def moving_background(rng: np.random.Generator, num_frames: int, height: int, width: int) -> np.ndarray:
    """Float (T, H, W, 3): drifting stripes plus a scrolling noise texture, low contrast, tinted per video."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    wavelength = rng.uniform(10, 20)
    speed = rng.uniform(0.3, 0.8) * rng.choice([-1, 1])  # pixels per frame
    proj = xx * np.cos(angle) + yy * np.sin(angle)
    t = np.arange(num_frames, dtype=np.float32)[:, None, None]
    stripes = 10.0 * np.sin(2 * np.pi * (proj[None] + speed * t) / wavelength)  # (T, H, W)
    texture = rng.uniform(-8, 8, size=(height, 2 * width)).astype(np.float32)
    cols = (np.arange(width)[None, :] + np.arange(num_frames)[:, None]) % (2 * width)  # scroll 1 px per frame
    noise = texture[:, cols].transpose(1, 0, 2)  # (T, H, W)
    tint = rng.uniform(95, 125, size=3).astype(np.float32)
    return (stripes + noise)[..., None] + tint


def write_mp4(path: str, frames_fn, num_frames: int, height: int, width: int, fps: int, chunk: int = 64) -> None:
    import av

    with av.open(path, "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        # One encoder thread: videos are encoded in parallel already, and it keeps the output reproducible.
        stream.options = {"preset": "ultrafast", "crf": "20", "g": str(2 * fps), "threads": "1"}
        for start in range(0, num_frames, chunk):
            for frame in frames_fn(start, min(start + chunk, num_frames)):
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def check_decodable(path: str, num_frames: int) -> None:
    """The loaders read with decord: make sure it sees every frame (decord 0.6 mis-decodes some widths, e.g. 48)."""
    import decord

    try:
        reader = decord.VideoReader(path, num_threads=1)
        count = len(reader)
        reader.get_batch([count - 1]).asnumpy()
    except Exception as err:
        raise RuntimeError(f"{path}: decord cannot decode the encoded video ({type(err).__name__}: {err}); "
                           "decord 0.6 fails on some frame widths (16, 48, 72...): try 64 or 96") from err  # fmt: skip
    if count != num_frames:
        raise RuntimeError(f"{path}: encoded {num_frames} frames but decord sees {count}")


def preflight(directory: Path, height: int, width: int, fps: int) -> None:
    path = str(directory / "preflight.mp4")
    frame = np.zeros((height, width, 3), np.uint8)
    write_mp4(path, lambda lo, hi: [frame] * (hi - lo), 3, height, width, fps)
    try:
        check_decodable(path, 3)
    except RuntimeError as err:
        raise ValueError(f"synthetic frame size {width}x{height} is not usable: {err}") from None
    finally:
        os.remove(path)


def read_params(root: Path) -> dict | None:
    try:
        with open(root / PARAMS_FILE) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def build_corpus(root: str | os.PathLike, params: dict, write, num_workers: int | None) -> Path:
    """Runs `write(tmp, params, num_workers)` in a temporary folder next to `root`, then renames it into place, so a
    killed generation never leaves a half corpus that looks complete. An existing synthetic corpus at `root` is
    replaced; anything else there is refused."""
    root = Path(root).absolute()
    if root.exists() and not (root / PARAMS_FILE).is_file() and any(root.iterdir()):
        raise FileExistsError(f"{root} exists and is not a synthetic corpus (no {PARAMS_FILE}); refusing to replace it")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        write(tmp, params, num_workers)
        _move_into_place(tmp, root, params)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root


def _move_into_place(tmp: Path, root: Path, params: dict) -> None:
    old = None
    if root.exists():
        old = root.parent / f".{root.name}.old-{uuid.uuid4().hex[:8]}"
        try:
            os.rename(root, old)
        except FileNotFoundError:  # another process moved it meanwhile
            old = None
    try:
        os.rename(tmp, root)
    except OSError:
        # Another process finished the same corpus first: keep theirs if it is the one we wanted.
        if read_params(root) != params:
            raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def default_kwargs(make) -> dict:
    """The generator's default parameters (what `ensure_*` compares a stored corpus against)."""
    import inspect

    return {k: p.default for k, p in inspect.signature(make).parameters.items() if k not in ("root", "num_workers")}
