"""The fused crop + resize + flip + planar copy against torch's uint8 `F.interpolate` (which the reference path of
the transforms calls): byte for byte over random sizes, boxes, flips and both antialias settings, in each of the
horizontal pass's three modes; what it declines; what it checks."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hf_vtrain.data import resize_kernels
from hf_vtrain.data.resize_kernels import CropResizePlanar, interp_weights

pytestmark = pytest.mark.skipif(not resize_kernels.RESIZE_LANES,
                                reason="numba's target CPU has no AVX-512 VBMI: the transforms use torch's resize")


def torch_planar(frames, box, out_hw, flip, antialias):
    x0, y0, x1, y1 = box
    crop = torch.from_numpy(frames).permute(0, 3, 1, 2)[:, :, y0:y1, x0:x1]
    out = F.interpolate(crop, size=out_hw, mode="bilinear", align_corners=False, antialias=antialias).contiguous()
    return (out.flip(-1) if flip else out).numpy()


def fused_planar(frames, box, out_hw, flip, antialias):
    plan = CropResizePlanar.plan(frames.shape[1:3], box, out_hw, flip, antialias)
    if plan is None:
        return None, None
    out = np.full((frames.shape[0], 3, *out_hw), 7, np.uint8)
    plan.run(frames, out)
    return plan.mode, out


def test_random_boxes_give_torch_bytes():
    rng = np.random.default_rng(0)
    modes, ran = set(), 0
    for trial in range(240):
        height, width = int(rng.integers(20, 400)), int(rng.integers(44, 400))
        frames = rng.integers(0, 256, (2, height, width, 3), dtype=np.uint8)
        x0 = int(rng.integers(0, width - 43))
        x1 = int(rng.integers(x0 + 43, width + 1))
        y0 = int(rng.integers(0, height - 1))
        y1 = int(rng.integers(y0 + 1, height + 1))
        out_hw = [(160, 160), (224, 224), (37, 101), (1, 64), (100, 33), (182, 323)][trial % 6]
        flip = bool(trial % 2)
        shrinks = y1 - y0 > out_hw[0] or x1 - x0 > out_hw[1]
        antialias = True if shrinks else bool(rng.integers(0, 2))  # enlarging, both settings give torch's bytes
        mode, got = fused_planar(frames, (x0, y0, x1, y1), out_hw, flip, antialias)
        if mode is None:
            continue
        ran += 1
        modes.add(mode)
        want = torch_planar(frames, (x0, y0, x1, y1), out_hw, flip, antialias)
        np.testing.assert_array_equal(got, want, err_msg=f"{height}x{width} box {(x0, y0, x1, y1)} -> {out_hw} "
                                      f"flip {flip} antialias {antialias} mode {mode}")
    assert ran >= 200 and modes == {1, 2, 3}


@pytest.mark.parametrize("box", [(0, 0, 320, 180), (100, 40, 190, 130), (3, 7, 300, 179), (40, 0, 200, 180),
                                 (0, 0, 340, 180), (60, 10, 104, 40)])
@pytest.mark.parametrize("flip", [False, True])
def test_recipe_boxes_give_torch_bytes(box, flip):
    """Boxes of the training crop at 320x180 (and 340 wide: a 2.1x shrink, the 2-permute mode): shrinking, enlarging,
    one axis at the output size (identity weights), on a clip whose frames differ."""
    frames = np.random.default_rng(1).integers(0, 256, (5, 180, 340, 3), dtype=np.uint8)
    antialias = box[3] - box[1] > 160 or box[2] - box[0] > 160
    mode, got = fused_planar(frames, box, (160, 160), flip, antialias)
    assert mode is not None
    np.testing.assert_array_equal(got, torch_planar(frames, box, (160, 160), flip, antialias))


def test_weights_are_torchs_on_a_hand_worked_axis():
    """4 -> 2 antialiased: scale 2, so the triangle filter spans +-2 inputs at half slope. Output 0 is centred at
    input 1.0 and reads inputs 0-2, at distances 0.5, 0.5, 1.5 pixel centres: filter 0.75, 0.75, 0.25, normalised
    3/7, 3/7, 1/7; output 1 (centre 3.0) reads inputs 1-3: 1/7, 3/7, 3/7. The largest weight 3/7 x 2^17 is the first
    to reach 2^15: precision 16, int16 weights round(3/7 x 2^16) = 28087 and round(1/7 x 2^16) = 9362."""
    start, size, weights, precision = interp_weights(4, 2, True)
    assert precision == 16
    assert list(start) == [0, 1] and list(size) == [3, 3]
    assert list(weights[0, :3]) == [28087, 28087, 9362] and list(weights[1, :3]) == [9362, 28087, 28087]
    assert not weights[:, 3:].any()
    # enlarging 2 -> 4: plain bilinear, two taps, the zero third one dropped
    start, size, weights, precision = interp_weights(2, 4, False)
    assert list(size) == [1, 2, 2, 1] and list(start) == [0, 0, 0, 1]
    assert precision == 14 and weights[1, 0] == 3 * 2**12 and weights[1, 1] == 2**12


def test_plan_declines_what_its_window_cannot_hold():
    assert CropResizePlanar.plan((180, 320), (0, 0, 42, 100), (160, 160), False, False) is None  # 126-byte rows
    assert CropResizePlanar.plan((180, 320), (0, 0, 43, 100), (160, 160), False, False) is not None
    assert CropResizePlanar.plan((180, 640), (0, 0, 640, 180), (160, 160), False, True) is None  # a 4x shrink
    # torch's path keeps these: slicing clips a box outside the frame; a box at the output size is only copied
    assert CropResizePlanar.plan((180, 320), (0, 0, 321, 100), (160, 160), False, False) is None
    assert CropResizePlanar.plan((180, 320), (-1, 0, 100, 100), (160, 160), False, False) is None
    assert CropResizePlanar.plan((180, 320), (5, 10, 165, 170), (160, 160), True, False) is None
    assert CropResizePlanar.plan((180, 320), (5, 10, 165, 171), (160, 160), True, True) is not None


def test_run_checks_its_arrays():
    plan = CropResizePlanar.plan((180, 320), (0, 0, 320, 180), (160, 160), False, True)
    frames = np.zeros((2, 180, 320, 3), np.uint8)
    with pytest.raises(ValueError, match="C-contiguous"):
        plan.run(frames[:, :, ::-1], np.zeros((2, 3, 160, 160), np.uint8))
    with pytest.raises(ValueError, match="C-contiguous"):
        plan.run(frames, np.zeros((2, 3, 160, 161), np.uint8))
    with pytest.raises(ValueError, match="not inside"):
        plan.run(np.zeros((2, 100, 320, 3), np.uint8), np.zeros((2, 3, 160, 160), np.uint8))
