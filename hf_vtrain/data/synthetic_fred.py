"""A synthetic corpus in FRED's on-disk format (FIELD_NOTES): per sequence folder `RGB/Video_<seq>_HH_MM_SS.ffffff.jpg`
(wall-clock capture times, jittered, some frames dropped), `Event/Frames/Video_<seq>_frame_<microseconds>.png` (every
33,333 us on the sequence clock, 3-colour event frames), `coordinates.txt` (`time: x1, y1, x2, y2, id, class`, boxes
unclipped), per-frame YOLO labels in `RGB_YOLO/` and `Event_YOLO/` (an empty file: no drone), and the split lists
`dataset_splits/canonical/{train,test}_split.txt` and `dataset_splits/challenging/...` (drawing on sequences of both
canonical lists). The signal: a small dark quadcopter flying a smooth path over a textured sky with drifting clouds,
leaving the frame at times (empty frames); in the event frames its moving edges, one colour per polarity, over sparse
noise. Frames are small (192 x 108 by default, FRED's 16:9) so that a CPU trains on them; `PADDED_RGB/` is not
written (the loader reads `RGB/` by default).

The first RGB frame is never dropped and is captured with the first event frame: the clocks' common origin the loader
assumes (`rgb_clock_offset_ms` for another).

    python -m hf_vtrain.data.synthetic_fred OUT_DIR [--sequences 8] [--seconds 2.0]
"""

from __future__ import annotations

import argparse
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np

from .synthetic import PARAMS_FILE, build_corpus, default_kwargs, read_params

EVENT_BACKGROUND = (30, 37, 52)
EVENT_COLOURS = ((64, 126, 200), (255, 255, 255))  # negative, positive polarity
EVENT_PERIOD_US = 33_333
CLASS_NAME = "DJI Mini 2"


def wall_clock_name(seq: str, start_s: float, t_us: int) -> str:
    """`Video_<seq>_HH_MM_SS.ffffff` of the wall-clock time `start_s` (seconds after midnight) + t_us."""
    total_us = int(round(start_s * 1e6)) + int(t_us)
    seconds, micro = divmod(total_us, 1_000_000)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"Video_{seq}_{hours:02d}_{minutes:02d}_{secs:02d}.{micro:06d}"


def _sky(rng, height, width):
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    top, bottom = rng.uniform([90, 130, 190], [130, 170, 230]), rng.uniform([160, 190, 220], [200, 220, 250])
    sky = top + (bottom - top) * (yy / height)[..., None]
    sky += rng.normal(0, 4, (height, width, 1)).astype(np.float32)
    clouds = [(rng.uniform(0, width), rng.uniform(0, height), rng.uniform(width / 10, width / 4), rng.uniform(-0.4, 0.4))
              for _ in range(4)]
    return sky, clouds, yy, xx


def _frame_at(sky, clouds, yy, xx, t_s, box):
    img = sky.copy()
    for cx, cy, r, speed in clouds:
        img += 45 * np.exp(-(((xx - cx - speed * 30 * t_s) ** 2) + (yy - cy) ** 2) / (2 * r * r))[..., None]
    mask = drone_mask(yy, xx, box) if box is not None else None
    if mask is not None:
        img[mask] = img[mask] * 0.15 + 15
    return np.clip(img, 0, 255).astype(np.uint8), mask


def drone_mask(yy, xx, box) -> np.ndarray:
    """A quadcopter seen from below: a body and four rotors on an X, filling most of the box (x1, y1, x2, y2)."""
    x1, y1, x2, y2 = box
    cx, cy, w, h = (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1
    u, v = (xx - cx) / (w / 2), (yy - cy) / (h / 2)
    body = (np.abs(u) < 0.35) & (np.abs(v) < 0.35)
    arms = ((np.abs(u - v) < 0.25) | (np.abs(u + v) < 0.25)) & (np.abs(u) < 0.8) & (np.abs(v) < 0.8)
    rotors = np.zeros_like(body)
    for su in (-0.72, 0.72):
        for sv in (-0.72, 0.72):
            rotors |= (u - su) ** 2 + (v - sv) ** 2 < 0.28**2
    return body | arms | rotors


def _path(rng, seconds, width, height):
    """Box (x1, y1, x2, y2) of the drone at time t (s), None while it is out of view; boxes are not clipped."""
    size = rng.uniform(0.07, 0.12) * width
    x0, y0 = rng.uniform(0.2, 0.8) * width, rng.uniform(0.25, 0.75) * height
    ax, ay = rng.uniform(0.3, 0.55) * width, rng.uniform(0.15, 0.3) * height
    fx, fy, phase = rng.uniform(0.25, 0.5), rng.uniform(0.3, 0.7), rng.uniform(0, 2 * np.pi)
    gone = (rng.uniform(0.2, 0.7) * seconds, rng.uniform(0.1, 0.25) * seconds)  # a stretch without the drone

    def box(t):
        if gone[0] <= t < gone[0] + gone[1]:
            return None
        cx = x0 + ax * np.sin(2 * np.pi * fx * t + phase)
        cy = y0 + ay * np.sin(2 * np.pi * fy * t)
        w = size * (1 + 0.15 * np.sin(2 * np.pi * 0.5 * t))
        h = 0.6 * w
        b = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
        if b[2] <= 0 or b[0] >= width or b[3] <= 0 or b[1] >= height:
            return None
        return b

    return box


def yolo_line(box, width, height) -> str:
    """`0 cx cy w h` of the box clipped to the frame (what the published labels hold), normalised."""
    x1, y1, x2, y2 = max(box[0], 0), max(box[1], 0), min(box[2], width), min(box[3], height)
    return f"0 {(x1 + x2) / 2 / width:.6f} {(y1 + y2) / 2 / height:.6f} {(x2 - x1) / width:.6f} {(y2 - y1) / height:.6f}"


def _write_sequence(root: Path, seq: str, params: dict, seed: int) -> dict:
    from PIL import Image

    rng = np.random.default_rng(seed)
    width, height, seconds = params["width"], params["height"], params["seconds"]
    folder = root / seq
    for sub in ("RGB", "RGB_YOLO", "Event/Frames", "Event_YOLO"):
        (folder / sub).mkdir(parents=True)
    sky, clouds, yy, xx = _sky(rng, height, width)
    box_at = _path(rng, seconds, width, height)
    start_s = rng.uniform(9 * 3600, 17 * 3600)
    coordinates, counts = [], {"rgb": 0, "event": 0, "dropped": 0}
    num = int(seconds * 1e6 // EVENT_PERIOD_US)
    previous_mask = None
    for k in range(num):  # event frames: every period on the sequence clock
        t_us = k * EVENT_PERIOD_US
        box = box_at(t_us / 1e6)
        _, mask = _frame_at(sky, clouds, yy, xx, t_us / 1e6, box)
        event = np.empty((height, width, 3), np.uint8)
        event[:] = EVENT_BACKGROUND
        noise = rng.random((height, width)) < 0.003
        event[noise] = EVENT_COLOURS[1]
        now = mask if mask is not None else np.zeros((height, width), bool)
        before = previous_mask if previous_mask is not None else now
        event[now & ~before] = EVENT_COLOURS[1]
        event[before & ~now] = EVENT_COLOURS[0]
        if box is not None:  # the body itself fires too (texture, rotors)
            event[now & (rng.random((height, width)) < 0.5)] = EVENT_COLOURS[rng.integers(0, 2)]
        previous_mask = now
        stem = f"Video_{seq}_frame_{t_us}"
        Image.fromarray(event).save(folder / "Event" / "Frames" / f"{stem}.png")
        (folder / "Event_YOLO" / f"{stem}.txt").write_text(yolo_line(box, width, height) + "\n" if box else "")
        if box is not None:
            coordinates.append(f"{t_us / 1e6:.5f}: {box[0]:.1f}, {box[1]:.1f}, {box[2]:.1f}, {box[3]:.1f}, 1, "
                               f"{CLASS_NAME}")
        counts["event"] += 1
    for k in range(num):  # RGB frames: the same rate, jittered capture times, some dropped (never the first)
        if k > 0 and rng.random() < params["drop_rate"]:
            counts["dropped"] += 1
            continue
        t_us = k * EVENT_PERIOD_US + (int(rng.integers(-params["jitter_us"], params["jitter_us"] + 1)) if k else 0)
        box = box_at(t_us / 1e6)
        image, _ = _frame_at(sky, clouds, yy, xx, t_us / 1e6, box)
        stem = wall_clock_name(seq, start_s, t_us)
        Image.fromarray(image).save(folder / "RGB" / f"{stem}.jpg", quality=92)
        (folder / "RGB_YOLO" / f"{stem}.txt").write_text(yolo_line(box, width, height) + "\n" if box else "")
        counts["rgb"] += 1
    (folder / "coordinates.txt").write_text("\n".join(coordinates) + "\n")
    return counts


def _write(out: Path, params: dict, num_workers: int | None) -> None:
    out.mkdir(parents=True)
    n = params["sequences"]
    seqs = [str(3 * i + 1) for i in range(n)]  # ids not contiguous, as FRED's
    with ThreadPoolExecutor(max_workers=num_workers or min(4, os.cpu_count() or 1)) as pool:
        counts = list(pool.map(lambda i: _write_sequence(out, seqs[i], params, params["seed"] * 1000 + i), range(n)))
    test = seqs[:: max(2, round(1 / params["test_fraction"]))]
    train = [s for s in seqs if s not in test]
    challenging_test = train[: max(1, len(test) // 2)] + test[len(test) // 2:]  # from both canonical lists
    challenging_train = [s for s in seqs if s not in challenging_test]
    for name, (tr, te) in {"canonical": (train, test), "challenging": (challenging_train, challenging_test)}.items():
        split_dir = out / "dataset_splits" / name
        split_dir.mkdir(parents=True)
        (split_dir / "train_split.txt").write_text("".join(f"{s}/\n" for s in tr))
        (split_dir / "test_split.txt").write_text("".join(f"{s}/\n" for s in te))
    with open(out / PARAMS_FILE, "w") as handle:
        json.dump({**params, "counts": dict(zip(seqs, counts))}, handle, indent=1)


def _params(sequences, seconds, width, height, drop_rate, jitter_us, test_fraction, seed) -> dict:
    if sequences < 3 or seconds <= 0.2 or not 0 <= drop_rate < 0.5 or not 0 < test_fraction < 1:
        raise ValueError("sequences >= 3, seconds > 0.2, 0 <= drop_rate < 0.5 and 0 < test_fraction < 1")
    return {"sequences": sequences, "seconds": seconds, "width": width, "height": height, "drop_rate": drop_rate,
            "jitter_us": jitter_us, "test_fraction": test_fraction, "seed": seed, "version": 1}


def make_synthetic_fred(root: str | os.PathLike, sequences: int = 8, seconds: float = 2.0, width: int = 192,
                        height: int = 108, drop_rate: float = 0.12, jitter_us: int = 4000, test_fraction: float = 0.25,
                        seed: int = 0, num_workers: int | None = None) -> str:
    params = _params(sequences, seconds, width, height, drop_rate, jitter_us, test_fraction, seed)
    return str(build_corpus(root, params, _write, num_workers))


def ensure_synthetic_fred(root: str | os.PathLike, **params) -> str:
    """Reuse the synthetic corpus at `root` when its stored parameters match `params`, else (re)generate it."""
    num_workers = params.pop("num_workers", None)
    wanted = _params(**{**default_kwargs(make_synthetic_fred), **params})
    stored = read_params(Path(root).absolute())
    if stored is not None and {k: v for k, v in stored.items() if k != "counts"} == wanted:
        return str(Path(root).absolute())
    return make_synthetic_fred(root, num_workers=num_workers, **params)


def main(argv: Sequence[str] | None = None) -> str:
    p = argparse.ArgumentParser(prog="python -m hf_vtrain.data.synthetic_fred", description=__doc__.split("\n\n")[0])
    p.add_argument("out_dir")
    p.add_argument("--sequences", type=int, default=8)
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--width", type=int, default=192, help="frame width (FRED: 1280)")
    p.add_argument("--height", type=int, default=108, help="frame height (FRED: 720)")
    args = p.parse_args(argv)
    root = ensure_synthetic_fred(args.out_dir, sequences=args.sequences, seconds=args.seconds, seed=args.seed,
                                 width=args.width, height=args.height)
    print(root)
    return root


if __name__ == "__main__":
    main()
