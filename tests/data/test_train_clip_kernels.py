"""The compiled training-clip kernels against the numpy definitions they replace: every mmaction RandAugment
operation byte for byte (its numpy form is checked against imgaug by scripts/check_rand_augment_mmaction.py and by
hand-worked pixels in test_rand_augment_mmaction.py), the planar copy, and the colour map against a numpy float32
evaluation in the order the kernel documents."""

import numpy as np
import pytest
import torch

from hf_vtrain.data import rand_augment_mmaction as ram
from hf_vtrain.data import train_clip_kernels as kernels
from hf_vtrain.data.video_io import TrainClipTransform, clip_generator

SIZES = [(160, 160), (33, 50), (50, 33), (7, 5), (2, 2), (1, 4), (224, 224)]


def frames_for(kind, height, width, seed):
    rng = np.random.default_rng(seed)
    if kind == "noise":
        return rng.integers(0, 256, (3, 3, height, width), dtype=np.uint8)
    if kind == "levels":  # few values, a constant channel, a constant frame: the tables' special cases
        frames = (rng.integers(0, 4, (3, 3, height, width)) * 60 + 10).astype(np.uint8)
        frames[1, 2] = 77
        frames[2] = 200
        return frames
    # smooth: what video looks like (the enhance blends and equalize see mid-range, correlated values)
    yy, xx = np.mgrid[0:height, 0:width]
    base = 128 + 100 * np.sin(xx / 7.0 + seed) * np.cos(yy / 5.0)
    return np.stack([np.stack([base + 10 * c + 5 * i for c in range(3)]) for i in range(3)]).clip(0, 255).astype(
        np.uint8
    )


@pytest.fixture(params=["table lanes", "scalar"])
def table_path(request, monkeypatch):
    """Both ways the table operations run: the 64-byte lookup where numba's target has AVX-512 VBMI (this machine's
    default then) and the scalar loops every other CPU runs."""
    if request.param == "scalar":
        monkeypatch.setattr(kernels, "TABLE_LANES", False)
        monkeypatch.setattr(kernels, "apply_tables", kernels.apply_tables_scalar)
    elif not kernels.TABLE_LANES:
        pytest.skip("numba's target CPU has no AVX-512 VBMI: only the scalar table loops run here")
    return request.param


@pytest.mark.parametrize("sign", [1, -1])
@pytest.mark.parametrize("height,width", SIZES)
def test_every_operation_compiled_gives_the_numpy_bytes(height, width, sign, table_path):
    augmenter = ram.MMActionRandAugment({name: sign for name in ram.SIGNED})
    for k, name in enumerate(ram.OPERATIONS):
        center = tuple(np.random.default_rng(k).random(2))
        op = augmenter.operation(name, height, width, center)
        for kind in ("noise", "levels", "smooth"):
            frames = frames_for(kind, height, width, seed=k)
            expected = op(frames.copy())
            block, spare = frames.copy(), np.full_like(frames, 99)
            got = op.compiled(block, spare)
            assert got is (block if op.in_place else spare), name
            np.testing.assert_array_equal(got, expected, err_msg=f"{name} {kind} {height}x{width} sign {sign}")


def test_tables_at_every_strength_compiled_give_the_numpy_bytes():
    # the arithmetic kernels over the whole range of their parameter, not only magnitude 9's
    frames = frames_for("noise", 16, 16, seed=5)
    ops = [ram.posterize(bits) for bits in range(1, 9)] + [ram.solarize(t) for t in (0.0, 25.6, 230.4, 255.0, 256.0)]
    for op in ops + [ram.invert()]:
        np.testing.assert_array_equal(op.compiled(frames.copy(), None), op(frames), err_msg=op.name)


@pytest.mark.parametrize("shape", [(2, 3, 160, 160), (1, 3, 33, 50), (2, 1, 7, 5), (1, 2, 1, 64), (1, 1, 3, 43)])
def test_table_lookups_are_the_tables(shape, table_path):
    # every entry of random tables, on planes that are and are not whole 64-byte blocks
    rng = np.random.default_rng(sum(shape))
    frames = rng.integers(0, 256, shape, dtype=np.uint8)
    frames.reshape(-1)[:256] = np.arange(256)[: frames.size]
    tables = rng.integers(0, 256, shape[:2] + (256,), dtype=np.uint8)
    expected = np.take_along_axis(tables, frames.reshape(shape[:2] + (-1,)), axis=2).reshape(shape)
    got = frames.copy()
    kernels.apply_tables(got, tables)
    np.testing.assert_array_equal(got, expected)
    for short in (tables[..., :128], tables[:, :1], tables[:1]):  # reading past a table would read other memory
        if short.shape != tables.shape:
            with pytest.raises(ValueError, match="256"):
                kernels.apply_tables(frames.copy(), np.ascontiguousarray(short))


@pytest.mark.parametrize("height,width", [(160, 160), (33, 50), (224, 224)])
def test_row_and_column_warps_equal_the_general_kernel(height, width):
    # ShearX and the translations move whole rows, ShearY whole columns: their fast kernels must agree with the
    # pixel-by-pixel one on the same grid, and the grids must be classified as such at these sizes
    frames = frames_for("noise", height, width, seed=3)
    n, c = frames.shape[:2]
    for sign in (1, -1):
        augmenter = ram.MMActionRandAugment({name: sign for name in ram.SIGNED})
        modes = {}
        for name in ram.SIGNED:
            warp = augmenter.operation(name, height, width)
            modes[name] = warp.mode
            general = np.empty_like(frames)
            kernels.warp_general(frames.reshape(n * c, height, width), general.reshape(n * c, height, width),
                                 *warp.grid)
            np.testing.assert_array_equal(warp.compiled(frames, np.empty_like(frames)), general, err_msg=name)
        assert modes == {"ShearX": "rows", "ShearY": "columns", "TranslateX": "rows", "TranslateY": "rows",
                         "Rotate": "pixels"}


@pytest.mark.parametrize("flip", [False, True])
def test_planarize_is_the_transposed_copy(flip):
    hwc = np.random.default_rng(0).integers(0, 256, (4, 9, 13, 3), dtype=np.uint8)
    out = np.empty((4, 3, 9, 13), np.uint8)
    kernels.planarize(hwc, flip, out)
    expected = (hwc[:, :, ::-1] if flip else hwc).transpose(0, 3, 1, 2)
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("use_means", [False, True])
def test_color_affine_is_its_documented_float32_order(use_means):
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (5, 3, 17, 23), dtype=np.uint8)
    m = rng.uniform(-0.5, 1.5, (3, 3)).astype(np.float32)
    p = rng.uniform(-0.3, 0.3, (3, 3)).astype(np.float32) if use_means else np.zeros((3, 3), np.float32)
    q = rng.uniform(-20, 20, 3).astype(np.float32) + np.float32(0.5)
    out = np.empty_like(frames)
    kernels.color_affine(frames, m, p, q, use_means, out)

    x = frames.astype(np.float32)
    means = (frames.reshape(5, 3, -1).astype(np.int64).sum(-1) / (17 * 23)).astype(np.float32)
    if not use_means:
        means[:] = 0
    offset = ((q + p[:, 0] * means[:, 0:1]) + p[:, 1] * means[:, 1:2]) + p[:, 2] * means[:, 2:3]  # (5, 3)
    mixed = ((m[None, :, 0, None, None] * x[:, 0:1] + m[None, :, 1, None, None] * x[:, 1:2])
             + m[None, :, 2, None, None] * x[:, 2:3]) + offset[:, :, None, None]
    expected = np.clip(mixed, np.float32(0), np.float32(255)).astype(np.uint8)
    np.testing.assert_array_equal(out, expected)
    # in place is allowed (and gives the same bytes)
    same = frames.copy()
    kernels.color_affine(same, m, p, q, use_means, same)
    np.testing.assert_array_equal(same, expected)


def clip_of(num, height, width, seed=0):
    yy, xx = np.mgrid[0:height, 0:width]
    frames = []
    for t in range(num):
        base = 128 + 90 * np.sin((xx + 3 * t) / 9.0 + seed) * np.cos(yy / 6.0)
        frame = np.stack([base, 255 - base, base / 2 + 60], axis=-1)
        frames.append(frame + np.random.default_rng(seed + t).normal(0, 8, frame.shape))
    return np.stack(frames).clip(0, 255).astype(np.uint8)


@pytest.fixture(params=["fused", "torch resize"])
def resize_path(request, monkeypatch):
    """Both ways the compiled transforms crop and resize: the fused pass (resize_kernels) where numba's target has
    AVX-512 VBMI, counted so that a test sees it ran, and torch's interpolate + the planar copy elsewhere."""
    from hf_vtrain.data import resize_kernels

    runs = []
    if request.param == "torch resize":
        monkeypatch.setattr(resize_kernels, "RESIZE_LANES", False)
    elif not resize_kernels.RESIZE_LANES:
        pytest.skip("numba's target CPU has no AVX-512 VBMI: only torch's resize runs here")
    else:
        run = resize_kernels.CropResizePlanar.run
        monkeypatch.setattr(resize_kernels.CropResizePlanar, "run", lambda *a: runs.append(1) or run(*a))
    return request.param, runs


@pytest.mark.parametrize("jitter", [None, (0.5, 0.5, 0.5, 0.1)])
def test_train_transform_compiled_equals_the_reference_path(jitter, resize_path):
    """The whole mmaction-style transform, compiled against numpy: bit for bit without colour jitter; with it the
    colour map's float order differs from numpy's matmul, so a value at a rounding boundary may move by one."""
    clip = clip_of(14, 180, 320)
    compiled = TrainClipTransform(rand_augment_style="mmaction", color_jitter_style="mmaction", color_jitter=jitter)
    reference = TrainClipTransform(rand_augment_style="mmaction", color_jitter_style="mmaction", color_jitter=jitter)
    reference.compiled = False
    drawn = compiled.mmaction.draw
    seen = set()

    def recording_draw(*args):
        ops = drawn(*args)
        seen.update(op.name for op in ops)
        return ops

    compiled.mmaction.draw = recording_draw
    differing = 0
    for i in range(40):  # 40 draws: every one of the 15 operations appears (checked below)
        a = compiled(clip, clip_generator(0, 0, i))
        b = reference(clip, clip_generator(0, 0, i))
        assert a.shape == b.shape == (14, 3, 160, 160) and a.dtype == b.dtype == torch.uint8
        diff = (a.int() - b.int()).abs()
        if jitter is None:
            assert int(diff.max()) == 0, f"draw {i}"
        else:
            assert int(diff.max()) <= 1, f"draw {i}"
            differing += int((diff > 0).sum())
    if jitter is not None:
        assert differing / (40 * a.numel()) < 1e-3
    assert seen == set(ram.OPERATIONS)  # every operation was compared
    path, runs = resize_path
    assert (len(runs) >= 40) == (path == "fused")  # every clip's boxes fit the fused pass's windows at 320x180


@pytest.mark.parametrize("box,out_hw", [((70, 0, 250, 180), (160, 160)), ((10, 20, 90, 120), (160, 160)),
                                         ((0, 0, 320, 180), (180, 320)), ((3, 5, 163, 165), (160, 160))])
@pytest.mark.parametrize("flip", [False, True])
def test_crop_resize_flip_alone_compiled_equals_the_reference_path(box, out_hw, flip, resize_path):
    """Evaluation's transform (and training's with RandAugment and jitter off): with no operation the compiled path
    (resize and planar copy per block) gives the bytes of the numpy copy, for shrinking, enlarging and copying boxes
    and a clip that is not a whole number of blocks."""
    from hf_vtrain.data import video_io

    clip = torch.from_numpy(clip_of(14, 180, 320))
    compiled = video_io._run(clip, box, out_hw, flip=flip)
    reference = video_io._run(clip, box, out_hw, flip=flip, compiled=False)
    assert compiled.shape == (14, 3, *out_hw) and compiled.dtype == torch.uint8
    assert torch.equal(compiled, reference)
    path, runs = resize_path
    resized = (box[3] - box[1], box[2] - box[0]) != out_hw  # a box at the output size is only copied
    assert bool(runs) == (path == "fused" and resized)
    if box == (0, 0, 320, 180) and not flip:
        assert torch.equal(compiled, clip.permute(0, 3, 1, 2))
