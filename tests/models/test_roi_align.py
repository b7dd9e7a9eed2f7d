"""Tests of `roi_align`: hand-worked values on a 4x4 map, a loop-by-loop transcription of torchvision's CPU kernel
(torchvision/csrc/ops/cpu/roi_align_kernel.cpp + roi_align_common.h) as the reference, gradients."""

import math

import pytest
import torch

from hf_vtrain.models.fgclip_video.roi_align import roi_align


def ramp(n=1, c=1, h=4, w=4, dtype=torch.float64):
    """f[i, j] = 4 i + j on a 4x4 map: linear, so a bilinear sample at (y, x) inside the map is 4 y + x."""
    ys = torch.arange(h, dtype=dtype).view(h, 1)
    xs = torch.arange(w, dtype=dtype).view(1, w)
    return (4 * ys + xs).expand(n, c, h, w).clone()


def one(features, box, output_size=1, **kw):
    return roi_align(features, torch.tensor([box], dtype=features.dtype), output_size, **kw)


# ----------------------------------------------------------------------------------------------- reference


def reference_roi_align(features, rois, out_h, out_w, spatial_scale, sampling_ratio, aligned):
    """torchvision's CPU forward kernel, transcribed loop for loop with Python floats."""
    n_rois = rois.shape[0]
    _, channels, height, width = features.shape
    f = features.tolist()
    out = torch.zeros((n_rois, channels, out_h, out_w), dtype=torch.float64)
    for n in range(n_rois):
        b, x1, y1, x2, y2 = rois[n].tolist()
        b = int(b)
        offset = 0.5 if aligned else 0.0
        roi_start_w, roi_start_h = x1 * spatial_scale - offset, y1 * spatial_scale - offset
        roi_end_w, roi_end_h = x2 * spatial_scale - offset, y2 * spatial_scale - offset
        roi_width, roi_height = roi_end_w - roi_start_w, roi_end_h - roi_start_h
        if not aligned:
            roi_width, roi_height = max(roi_width, 1.0), max(roi_height, 1.0)
        bin_h, bin_w = roi_height / out_h, roi_width / out_w
        grid_h = sampling_ratio if sampling_ratio > 0 else int(math.ceil(roi_height / out_h))
        grid_w = sampling_ratio if sampling_ratio > 0 else int(math.ceil(roi_width / out_w))
        count = max(grid_h * grid_w, 1)
        for c in range(channels):
            for ph in range(out_h):
                for pw in range(out_w):
                    val = 0.0
                    for iy in range(grid_h):
                        y = roi_start_h + ph * bin_h + (iy + 0.5) * bin_h / grid_h
                        for ix in range(grid_w):
                            x = roi_start_w + pw * bin_w + (ix + 0.5) * bin_w / grid_w
                            if not (-1.0 <= y <= height and -1.0 <= x <= width):
                                continue
                            yy, xx = max(y, 0.0), max(x, 0.0)
                            y_low, x_low = int(yy), int(xx)
                            if y_low >= height - 1:
                                y_high = y_low = height - 1
                                yy = float(y_low)
                            else:
                                y_high = y_low + 1
                            if x_low >= width - 1:
                                x_high = x_low = width - 1
                                xx = float(x_low)
                            else:
                                x_high = x_low + 1
                            ly, lx = yy - y_low, xx - x_low
                            hy, hx = 1.0 - ly, 1.0 - lx
                            m = f[b][c]
                            val += (hy * hx * m[y_low][x_low] + hy * lx * m[y_low][x_high]
                                    + ly * hx * m[y_high][x_low] + ly * lx * m[y_high][x_high])
                    out[n, c, ph, pw] = val / count
    return out


# ----------------------------------------------------------------------------------------------- hand-worked


def test_whole_map_aligned_true_is_the_mean():
    # aligned: start -0.5, bin 4, 2x2 samples at -0.5 + 1 = 0.5 and 2.5 -> f = 2.5, 4.5, 10.5, 12.5: mean 7.5.
    f = ramp()
    assert one(f, [0, 0, 0, 4, 4], sampling_ratio=2).item() == pytest.approx(7.5, abs=1e-12)
    assert one(f, [0, 0, 0, 4, 4], sampling_ratio=2).item() == pytest.approx(f.mean().item(), abs=1e-12)


def test_whole_map_aligned_false():
    # Legacy: start 0, samples at 1 and 3 -> f(1,1)=5, f(1,3)=7, f(3,1)=13, f(3,3)=15: mean 10.
    assert one(ramp(), [0, 0, 0, 4, 4], sampling_ratio=2, aligned=False).item() == pytest.approx(10.0, abs=1e-12)


def test_box_on_exact_pixel_reads_that_pixel():
    # Pixel (row 1, col 2) covers x in [2, 3), y in [1, 2); aligned puts the one adaptive sample on its centre.
    f = ramp()
    assert one(f, [0, 2, 1, 3, 2]).item() == pytest.approx(6.0, abs=1e-12)
    # The same box without alignment samples at (1.5, 2.5): 4 * 1.5 + 2.5.
    assert one(f, [0, 2, 1, 3, 2], aligned=False).item() == pytest.approx(8.5, abs=1e-12)


def test_two_by_two_output_bins():
    out = roi_align(ramp(), torch.tensor([[0, 0, 0, 4, 4]], dtype=torch.float64), (2, 2), sampling_ratio=1)
    assert out.shape == (1, 1, 2, 2)
    assert torch.allclose(out[0, 0], torch.tensor([[2.5, 4.5], [10.5, 12.5]], dtype=torch.float64))


def test_box_partly_outside_the_map():
    # Legacy box [2, 6] x [2, 6] on a 4x4 map, 2x2 samples at 3 and 5: only (3, 3) is inside [-1, 4];
    # it reads f(3, 3) = 15, and the three zero samples still count: 15 / 4.
    assert one(ramp(), [0, 2, 2, 6, 6], sampling_ratio=2, aligned=False).item() == pytest.approx(3.75, abs=1e-12)
    # Samples in [-1, 0) are clamped to row/column 0: samples at -0.5 and 0.5 -> f 0, 0.5, 2, 2.5: mean 1.25.
    assert one(ramp(), [0, -1, -1, 1, 1], sampling_ratio=2, aligned=False).item() == pytest.approx(1.25, abs=1e-12)


def test_border_rules_y_equal_to_height_reads_last_row_and_beyond_is_zero():
    f = ramp()
    # One sample at y = 4.0 (== H, still valid): row 3, x = 0.5 -> 12.5.
    assert one(f, [0, 0, 3.5, 1, 4.5], sampling_ratio=1, aligned=False).item() == pytest.approx(12.5, abs=1e-12)
    # At y = 4.25 (> H) it contributes 0.
    assert one(f, [0, 0, 3.75, 1, 4.75], sampling_ratio=1, aligned=False).item() == 0.0
    # At y = -1.0 exactly it is clamped to row 0; below -1 it is 0.
    assert one(f, [0, 0, -1.5, 1, -0.5], sampling_ratio=1, aligned=False).item() == pytest.approx(0.5, abs=1e-12)
    assert one(f, [0, 0, -1.75, 1, -0.75], sampling_ratio=1, aligned=False).item() == 0.0


def test_adaptive_sampling_ratio():
    f = ramp()
    # Legacy whole map, 1x1 output: adaptive grid ceil(4 / 1) = 4 -> samples 0.5, 1.5, 2.5, 3.5 (3.5 reads row 3
    # as 3.0): mean coordinate 1.875 on both axes -> 5 * 1.875 = 9.375 (sampling_ratio=2 gives 10).
    assert one(f, [0, 0, 0, 4, 4], aligned=False).item() == pytest.approx(9.375, abs=1e-12)
    assert one(f, [0, 0, 0, 4, 4], aligned=False, sampling_ratio=0).item() == pytest.approx(9.375, abs=1e-12)
    # Aligned: samples 0, 1, 2, 3 -> 5 * 1.5 = 7.5.
    assert one(f, [0, 0, 0, 4, 4]).item() == pytest.approx(7.5, abs=1e-12)
    # Boxes with different adaptive grids in one call equal separate calls.
    g = torch.randn(2, 3, 9, 11, dtype=torch.float64)
    boxes = torch.tensor([[0, 0.3, 0.1, 10.2, 8.7], [1, 2.0, 3.0, 3.4, 4.1], [0, 1, 1, 1.5, 7.9]], dtype=torch.float64)
    together = roi_align(g, boxes, (2, 3))
    apart = torch.cat([roi_align(g, boxes[i : i + 1], (2, 3)) for i in range(3)])
    assert torch.allclose(together, apart, atol=1e-13)


def test_degenerate_boxes():
    f = ramp()
    # Legacy mode forces a zero-size box to 1x1: one sample at (1.5, 1.5).
    assert one(f, [0, 1, 1, 1, 1], aligned=False).item() == pytest.approx(7.5, abs=1e-12)
    # Aligned mode keeps it zero-size: the adaptive grid is empty -> 0.
    assert one(f, [0, 1, 1, 1, 1]).item() == 0.0
    # A reversed box with a fixed grid still samples (the kernel does not reorder corners).
    ref = reference_roi_align(f, torch.tensor([[0, 3, 3, 1, 1]], dtype=torch.float64), 1, 1, 1.0, 2, True)
    assert one(f, [0, 3, 3, 1, 1], sampling_ratio=2).item() == pytest.approx(ref.item(), abs=1e-12)


# ----------------------------------------------------------------------------------------------- reference


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [-1, 0, 1, 2, 3])
def test_matches_kernel_transcription(aligned, sampling_ratio):
    gen = torch.Generator().manual_seed(7 + sampling_ratio + 10 * aligned)
    features = torch.randn(3, 2, 7, 9, generator=gen, dtype=torch.float64)
    k = 24
    xy = torch.rand(k, 2, generator=gen, dtype=torch.float64) * 14 - 3  # corners from -3 to 11: some outside
    wh = torch.rand(k, 2, generator=gen, dtype=torch.float64) * 8 - 0.5  # a few reversed boxes
    boxes = torch.cat([xy, xy + wh], dim=1) * 2.0  # input coordinates, halved by spatial_scale
    batch = torch.randint(0, 3, (k, 1), generator=gen).to(torch.float64)
    rois = torch.cat([batch, boxes], dim=1)
    for out_size in [(1, 1), (2, 3), (4, 4)]:
        got = roi_align(features, rois, out_size, spatial_scale=0.5, sampling_ratio=sampling_ratio, aligned=aligned)
        ref = reference_roi_align(features, rois, *out_size, 0.5, sampling_ratio, aligned)
        assert got.shape == (k, 2, *out_size)
        assert torch.allclose(got, ref, atol=1e-12, rtol=0), (got - ref).abs().max()


def test_float32_and_list_of_boxes():
    gen = torch.Generator().manual_seed(0)
    features = torch.randn(2, 4, 6, 6, generator=gen)
    per_image = [torch.tensor([[0.5, 0.5, 4.0, 5.0]]), torch.tensor([[1.0, 0.0, 6.0, 3.0], [2.0, 2.0, 3.0, 3.5]])]
    rois = torch.tensor([[0, 0.5, 0.5, 4.0, 5.0], [1, 1.0, 0.0, 6.0, 3.0], [1, 2.0, 2.0, 3.0, 3.5]])
    a = roi_align(features, per_image, 3)
    b = roi_align(features, rois, (3, 3))
    assert a.dtype == torch.float32 and a.shape == (3, 4, 3, 3)
    assert torch.equal(a, b)
    ref = reference_roi_align(features.double(), rois.double(), 3, 3, 1.0, -1, True)
    assert torch.allclose(a.double(), ref, atol=1e-5)
    assert roi_align(features.bfloat16(), rois, 3).dtype == torch.bfloat16


def test_empty_and_invalid_inputs():
    features = torch.randn(1, 2, 4, 4)
    assert roi_align(features, torch.zeros(0, 5), (2, 2)).shape == (0, 2, 2, 2)
    with pytest.raises(ValueError, match="batch indices"):
        roi_align(features, torch.tensor([[1.0, 0, 0, 2, 2]]), 1)
    with pytest.raises(ValueError, match=r"\(K, 5\)"):
        roi_align(features, torch.zeros(3, 4), 1)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        roi_align(features[0], torch.zeros(1, 5), 1)


# ----------------------------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("sampling_ratio", [-1, 2])
def test_gradcheck(sampling_ratio):
    gen = torch.Generator().manual_seed(3)
    features = torch.randn(2, 2, 5, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor(
        [[0, 0.2, 0.4, 4.3, 3.9], [1, -1.2, 2.0, 7.5, 5.6], [1, 1.0, 1.0, 2.5, 2.0]], dtype=torch.float64
    )
    assert torch.autograd.gradcheck(
        lambda x: roi_align(x, rois, (2, 2), sampling_ratio=sampling_ratio), (features,), eps=1e-6, atol=1e-8
    )


def test_gradient_distributes_bilinear_weights():
    # One sample at (y, x) = (1.25, 2.5) (legacy box [2, 3] x [0.75, 1.75], 1 sample): weights
    # 0.75*0.5 on (1,2) and (1,3), 0.25*0.5 on (2,2) and (2,3).
    features = torch.zeros(1, 1, 4, 4, dtype=torch.float64, requires_grad=True)
    one(features, [0, 2, 0.75, 3, 1.75], sampling_ratio=1, aligned=False).sum().backward()
    expected = torch.zeros(4, 4, dtype=torch.float64)
    expected[1, 2] = expected[1, 3] = 0.375
    expected[2, 2] = expected[2, 3] = 0.125
    assert torch.allclose(features.grad[0, 0], expected)
