"""Check hf_vtrain's mmaction-style RandAugment against imgaug itself, operation by operation and as SomeOf(2).

imgaug is not a dependency of hf_vtrain (its 0.4.0 release needs numpy < 1.24); run this in a separate
environment holding what OpenTAD installs (numpy 1.23.5, imgaug 0.4.0) and the libraries imgaug calls:

    python -m venv /tmp/imgaug-env
    /tmp/imgaug-env/bin/pip install numpy==1.23.5 imgaug==0.4.0 scikit-image==0.24.0 \\
        opencv-python-headless==4.7.0.72 "Pillow<10" --no-deps
    /tmp/imgaug-env/bin/pip install scipy imageio six matplotlib shapely
    /tmp/imgaug-env/bin/python scripts/check_rand_augment_mmaction.py

It loads hf_vtrain/data/rand_augment_mmaction.py by path (numpy only, no torch needed) and prints, per operation
and sign, the largest absolute difference and the count of differing values over random, smooth and low-contrast
frames of several sizes; then, for SomeOf(2) built as mmaction's `default_transforms` builds it, how many draws one
ordered pair of hf_vtrain's operations reproduces exactly. Exit status 1 if anything differs.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import sys
import warnings

import numpy as np

warnings.filterwarnings("ignore")

HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location(
    "rand_augment_mmaction", os.path.join(HERE, "..", "hf_vtrain", "data", "rand_augment_mmaction.py")
)
ram = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ram)

import cv2  # noqa: E402
import imgaug  # noqa: E402
import imgaug.augmenters as iaa  # noqa: E402
import PIL  # noqa: E402
import skimage  # noqa: E402

LEVEL = 1.0 * 9 / 10  # mmaction's cur_level


def imgaug_children(signs: dict[str, int]) -> list:
    """mmaction2's ImgAug.default_transforms children, with the given signs in place of random.choice."""
    return [
        iaa.ShearX(shear=17.19 * LEVEL * signs["ShearX"]),
        iaa.ShearY(shear=17.19 * LEVEL * signs["ShearY"]),
        iaa.TranslateX(percent=0.2 * LEVEL * signs["TranslateX"]),
        iaa.TranslateY(percent=0.2 * LEVEL * signs["TranslateY"]),
        iaa.Rotate(rotate=30 * LEVEL * signs["Rotate"]),
        iaa.Posterize(nb_bits=max(1, int(4 * LEVEL))),
        iaa.Solarize(threshold=256 * LEVEL),
        iaa.pillike.EnhanceColor(factor=1.8 * LEVEL + 0.1),
        iaa.pillike.EnhanceContrast(factor=1.8 * LEVEL + 0.1),
        iaa.pillike.EnhanceBrightness(factor=1.8 * LEVEL + 0.1),
        iaa.pillike.EnhanceSharpness(factor=1.8 * LEVEL + 0.1),
        iaa.pillike.Autocontrast(cutoff=0),
        iaa.pillike.Equalize(),
        iaa.Invert(p=1.0),
        iaa.Cutout(nb_iterations=1, size=0.2 * LEVEL, squared=True),
    ]


def frames(height: int, width: int, rng) -> list[np.ndarray]:
    yy, xx = np.mgrid[0:height, 0:width]
    smooth = np.stack([xx * 255 // max(width - 1, 1), yy * 255 // max(height - 1, 1), (xx + yy) * 3 % 256], -1)
    return [
        rng.integers(0, 256, (height, width, 3), dtype=np.uint8),
        smooth.astype(np.uint8),
        rng.integers(40, 120, (height, width, 3), dtype=np.uint8),
    ]


def ours(op, image: np.ndarray) -> np.ndarray:
    return op(image.transpose(2, 0, 1)[None].copy())[0].transpose(1, 2, 0)


def main() -> int:
    print(
        f"imgaug {imgaug.__version__}, scikit-image {skimage.__version__}, OpenCV {cv2.__version__}, "
        f"Pillow {PIL.__version__}, numpy {np.__version__}"
    )
    rng = np.random.default_rng(0)
    failures = 0
    print(f"{'operation':20s} {'max |diff|':>10s} {'values differing':>17s} {'values compared':>16s}")
    for index, name in enumerate(ram.OPERATIONS):
        for sign in (-1, 1) if name in ram.SIGNED else (1,):
            signs = {s: sign if s == name else 1 for s in ram.SIGNED}
            worst, differing, compared = 0, 0, 0
            for height, width in ((160, 160), (97, 131), (64, 64), (120, 213)):
                for image in frames(height, width, rng):
                    aug = imgaug_children(signs)[index].to_deterministic()
                    center = (0.5, 0.5)
                    if name == "Cutout":  # the centre imgaug's deterministic copy will draw
                        samples = aug._draw_samples([image], aug.random_state.copy())
                        center = (float(samples.pos_x[0]), float(samples.pos_y[0]))
                    reference = aug.augment_image(image)
                    mine = ours(ram.MMActionRandAugment(signs).operation(name, height, width, center), image)
                    diff = np.abs(mine.astype(int) - reference.astype(int))
                    worst, differing, compared = max(worst, int(diff.max())), differing + int((diff > 0).sum()), compared + diff.size
            failures += differing > 0
            label = name + {-1: " -", 1: " +"}[sign] if name in ram.SIGNED else name
            print(f"{label:20s} {worst:10d} {differing:17d} {compared:16d}")

    # SomeOf(2) as mmaction builds it: which ordered pair of our operations reproduces each draw?
    signs = ram.draw_signs(0)
    augmenter = ram.MMActionRandAugment(signs)
    some_of = iaa.SomeOf(n=2, children=imgaug_children(signs))
    height, width = 96, 128
    image = frames(height, width, rng)[0]
    ops = {name: augmenter.operation(name, height, width) for name in ram.OPERATIONS if name != "Cutout"}
    matched = skipped = unmatched = 0
    in_list_order = 0
    for _ in range(60):
        reference = some_of.to_deterministic().augment_image(image)
        hits = [
            (a, b)
            for a, b in itertools.permutations(ops, 2)
            if np.array_equal(ours(ops[b], ours(ops[a], image)), reference)
        ]
        if not hits:
            # a draw that includes Cutout (its centre is not known here) or a real mismatch
            if np.any(np.all(reference == ram.CUTOUT_FILL, axis=-1)):
                skipped += 1
            else:
                unmatched += 1
            continue
        matched += 1
        in_list_order += any(ram.OPERATIONS.index(a) < ram.OPERATIONS.index(b) for a, b in hits)
    print(
        f"SomeOf(2), {signs}: {matched} draws reproduced by an ordered pair of operations ({in_list_order} of them "
        f"in list order), {skipped} with Cutout not checked, {unmatched} reproduced by no pair"
    )
    failures += unmatched + (matched - in_list_order)
    print("OK: bit-exact" if failures == 0 else f"DIFFERENCES: {failures}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
