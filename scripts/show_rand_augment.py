"""Save a PNG grid of one frame under each RandAugment operation, to look at what training sees.

    python scripts/show_rand_augment.py                         # a drawn 160x160 test scene, mmaction style
    python scripts/show_rand_augment.py --video clip.mp4 --frame 100 --out grid.png
    python scripts/show_rand_augment.py --style torchvision

The mmaction style shows the 15 operations of MMAction2's imgaug RandAugment (both signs of the five geometric
ones); torchvision shows its 14 at magnitude 9 of 30 (both signs where signed). Frames are centre-cropped and
resized to --size as the evaluation transform does.
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import torch


def test_scene(size: int) -> np.ndarray:
    """Gradient sky, a horizon, coloured shapes, a checkerboard and fine stripes: every operation shows."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    frame = np.zeros((size, size, 3), np.float32)
    frame[..., 0], frame[..., 1], frame[..., 2] = 90 + 80 * xx, 120 + 60 * yy, 200 - 60 * yy
    ground = yy > 0.62
    frame[ground] = np.stack([70 + 40 * xx, 110 + 30 * xx, 40 + 0 * xx], -1)[ground]
    disc = (xx - 0.3) ** 2 + (yy - 0.35) ** 2 < 0.012
    frame[disc] = (235, 60, 40)
    box = (np.abs(xx - 0.7) < 0.1) & (np.abs(yy - 0.4) < 0.14)
    frame[box] = (40, 70, 200)
    checker = (xx > 0.1) & (xx < 0.4) & (yy > 0.7) & (yy < 0.92)
    frame[checker] = (((xx * size // 6).astype(int) + (yy * size // 6).astype(int)) % 2 * 200 + 30)[checker, None]
    stripes = (xx > 0.55) & (xx < 0.9) & (yy > 0.72) & (yy < 0.9)
    frame[stripes] = ((np.sin(xx * size * 1.2) > 0) * 180 + 40)[stripes, None]
    return frame.clip(0, 255).astype(np.uint8)


def video_frame(path: str, index: int, size: int) -> np.ndarray:
    from hf_vtrain.data.video_io import EvalClipTransform, VideoReader

    frames = VideoReader(path).get_frames(np.array([index]))
    return EvalClipTransform(size, size)(frames)[0].permute(1, 2, 0).numpy()


def mmaction_panels(frame: np.ndarray) -> list[tuple[str, np.ndarray]]:
    from hf_vtrain.data import rand_augment_mmaction as ram

    height, width = frame.shape[:2]
    planar = frame.transpose(2, 0, 1)[None].copy()
    panels = []
    for name in ram.OPERATIONS:
        for sign in (1, -1) if name in ram.SIGNED else (1,):
            augmenter = ram.MMActionRandAugment({s: sign if s == name else 1 for s in ram.SIGNED})
            out = augmenter.operation(name, height, width, cutout_center=(0.62, 0.38))(planar)
            label = f"{name} {'+' if sign > 0 else '-'}" if name in ram.SIGNED else name
            panels.append((label, out[0].transpose(1, 2, 0)))
    return panels


def torchvision_panels(frame: np.ndarray) -> list[tuple[str, np.ndarray]]:
    from hf_vtrain.data import video_io as vio

    height, width = frame.shape[:2]
    clip = torch.from_numpy(frame[None].copy())
    panels = []
    for name, magnitudes, signed in vio._rand_augment_space(31, height, width):
        for sign in (1, -1) if signed else (1,):
            value = float(magnitudes[9]) * sign if magnitudes is not None else 0.0
            op = vio._rand_augment_op(name, value, height, width)
            out = vio._run(clip, (0, 0, width, height), (height, width), ops=[op] if op else [])
            panels.append((f"{name} {'+' if sign > 0 else '-'}" if signed else name, out[0].permute(1, 2, 0).numpy()))
    return panels


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--video", help="take the frame from this video (default: a drawn test scene)")
    parser.add_argument("--frame", type=int, default=0, help="frame index in --video")
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--style", choices=["mmaction", "torchvision"], default="mmaction")
    parser.add_argument("--out", default="rand_augment_grid.png")
    args = parser.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frame = video_frame(args.video, args.frame, args.size) if args.video else test_scene(args.size)
    panels = [("original", frame)] + (mmaction_panels if args.style == "mmaction" else torchvision_panels)(frame)
    cols = 7
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 2.0, rows * 2.2))
    for ax in axes.reshape(-1):
        ax.axis("off")
    for ax, (label, image) in zip(axes.reshape(-1), panels):
        ax.imshow(image, interpolation="nearest")
        ax.set_title(label, fontsize=9)
    fig.suptitle(f"RandAugment, {args.style} style, one frame per operation ({args.size}x{args.size})")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out} ({len(panels) - 1} operations)")


if __name__ == "__main__":
    main()
