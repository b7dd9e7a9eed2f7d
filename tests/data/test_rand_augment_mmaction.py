"""mmaction-style RandAugment (MMAction2's imgaug wrapper, as OpenTAD trains AdaTAD): one test per operation
against pixels worked out by hand on a small frame, then the draw (SomeOf(2), signs fixed per run, one draw per
clip) and its place in TrainClipTransform. scripts/check_rand_augment_mmaction.py compares with imgaug itself."""

import math
from collections import Counter

import numpy as np
import pytest
import torch

from hf_vtrain.data import rand_augment_mmaction as ram
from hf_vtrain.data.video_io import TrainClipTransform, clip_generator

ALL_PLUS = {name: 1 for name in ram.SIGNED}


def planar(hwc) -> np.ndarray:
    """(H, W, 3) or (H, W) -> (1, 3, H, W) uint8."""
    a = np.asarray(hwc, dtype=np.uint8)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    return a.transpose(2, 0, 1)[None].copy()


def op(name, height, width, sign=1, center=(0.5, 0.5)):
    return ram.MMActionRandAugment({**ALL_PLUS, name: sign} if name in ram.SIGNED else ALL_PLUS).operation(
        name, height, width, center
    )


def random_frame(height, width, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_levels_are_mmaction_default_transforms_at_magnitude_9():
    lv = ram.levels(9)
    assert lv["shear_degrees"] == pytest.approx(15.471)
    assert lv["translate_fraction"] == pytest.approx(0.18)
    assert lv["rotate_degrees"] == pytest.approx(27.0)
    assert lv["posterize_bits"] == 3  # max(1, int(3.6))
    assert lv["solarize_threshold"] == pytest.approx(230.4)
    assert lv["enhance_factor"] == pytest.approx(1.72)
    assert lv["cutout_fraction"] == pytest.approx(0.18)
    assert len(ram.OPERATIONS) == 15


# --- geometric: OpenCV warpAffine's 1/32-pixel grid, bilinear, 0 outside ---------------------------------------


@pytest.mark.parametrize("sign", [1, -1])
def test_translate_x_whole_pixels(sign):
    # 18 % of 50 px = 9 px exactly: a shift with black where nothing comes in.
    frame = random_frame(4, 50)
    out = op("TranslateX", 4, 50, sign)(planar(frame))[0].transpose(1, 2, 0)
    if sign > 0:
        assert (out[:, :9] == 0).all() and np.array_equal(out[:, 9:], frame[:, :41])
    else:
        assert (out[:, 41:] == 0).all() and np.array_equal(out[:, :41], frame[:, 9:])


def test_translate_y_whole_pixels():
    frame = random_frame(50, 3)
    out = op("TranslateY", 50, 3, 1)(planar(frame))[0].transpose(1, 2, 0)
    assert (out[:9] == 0).all() and np.array_equal(out[9:], frame[:41])


def test_translate_x_half_pixel_is_bilinear_rounded_half_up():
    # 18 % of 25 px = 4.5 px: every output is the mean of two source pixels, (a + b + 1) // 2 (OpenCV's
    # (16 a + 16 b + 16) >> 5); column 4 mixes the first pixel with the black outside.
    row = np.array([10, 21, 30, 41, 50, 61, 70, 81, 90, 101, 110, 121, 130, 141, 150, 161, 170, 181, 190, 201, 210,
                    221, 230, 241, 250])  # fmt: skip
    out = op("TranslateX", 1, 25, 1)(planar(row[None]))[0, 0, 0]
    assert out[:4].tolist() == [0, 0, 0, 0]
    assert out[4] == (0 + 10 + 1) // 2 == 5
    assert out[5] == (10 + 21 + 1) // 2 == 16
    assert out[6] == (21 + 30 + 1) // 2 == 26
    assert out[24] == (201 + 210 + 1) // 2 == 206  # in[19], in[20]


def test_shear_x_reads_rows_below_centre_to_the_right():
    # Height 9: centre row 4. Row 8 is read 4 tan(15.471 deg) = 1.107 px to the right: 35.4 -> 35 on the 1/32 grid,
    # i.e. 1 + 3/32 px: out = (29 in[x + 1] + 3 in[x + 2] + 16) >> 5. The centre row stays; row 0 reads to the left.
    frame = random_frame(9, 12)
    out = op("ShearX", 9, 12, 1)(planar(frame))[0].transpose(1, 2, 0).astype(int)
    src = frame.astype(int)
    assert round(4 * math.tan(math.radians(15.471)) * 32) == 35
    for x in range(9):
        assert out[8, x].tolist() == ((29 * src[8, x + 1] + 3 * src[8, x + 2] + 16) >> 5).tolist()
    assert np.array_equal(out[4], src[4])
    for x in range(2, 12):  # 1 + 3/32 px to the left: from x - 2 (weight 3) and x - 1 (weight 29)
        assert out[0, x].tolist() == ((3 * src[0, x - 2] + 29 * src[0, x - 1] + 16) >> 5).tolist()
    # negative sign: the other way
    flipped = op("ShearX", 9, 12, -1)(planar(frame))[0].transpose(1, 2, 0).astype(int)
    assert flipped[0, 3].tolist() == ((29 * src[0, 4] + 3 * src[0, 5] + 16) >> 5).tolist()


def test_shear_y_reads_columns_right_of_centre_upwards():
    # The y shear is an x shear between quarter turns (y' = y + tan(s) (x - cx)): column 8 of a 9-wide frame reads
    # 1 + 3/32 px up, the top two rows of it from outside (black).
    frame = random_frame(12, 9)
    out = op("ShearY", 12, 9, 1)(planar(frame))[0].transpose(1, 2, 0).astype(int)
    src = frame.astype(int)
    for y in range(2, 12):
        assert out[y, 8].tolist() == ((3 * src[y - 2, 8] + 29 * src[y - 1, 8] + 16) >> 5).tolist()
    assert (out[0, 8] == 0).all()
    assert np.array_equal(out[:, 4], src[:, 4])


def test_rotate_about_the_centre():
    # 9 x 9, centre (4, 4) stays. The output pixel 4 px right of it reads the source at the centre plus
    # (4 cos 27, -4 sin 27) = (3.564, -1.816) px: on the 1/32 grid (114, -58) = (3 + 18/32, -2 + 6/32), so
    # out = ((32 - 6) ((32 - 18) p[2, 7] + 18 p[2, 8]) + 6 ((32 - 18) p[3, 7] + 18 p[3, 8]) + 512) >> 10.
    frame = random_frame(9, 9, seed=3)
    out = op("Rotate", 9, 9, 1)(planar(frame))[0].transpose(1, 2, 0).astype(int)
    p = frame.astype(int)
    assert round(4 * math.cos(math.radians(27)) * 32) == 114 and round(-4 * math.sin(math.radians(27)) * 32) == -58
    assert np.array_equal(out[4, 4], p[4, 4])
    expected = (26 * (14 * p[2, 7] + 18 * p[2, 8]) + 6 * (14 * p[3, 7] + 18 * p[3, 8]) + 512) >> 10
    assert out[4, 8].tolist() == expected.tolist()
    # the corners come from outside the frame: black
    assert (out[0, 0] == 0).all() or (out[0, 8] == 0).all()


# --- per-pixel ------------------------------------------------------------------------------------------------


def test_posterize_keeps_3_bits():
    out = op("Posterize", 1, 5)(planar([[0, 31, 32, 100, 255]]))[0, 0, 0]
    assert out.tolist() == [0, 0, 32, 96, 224]


def test_solarize_inverts_from_int_230():
    out = op("Solarize", 1, 5)(planar([[229, 230, 231, 0, 255]]))[0, 0, 0]
    assert out.tolist() == [229, 25, 24, 0, 0]  # imgaug cuts its table at int(230.4) = 230


def test_invert():
    out = op("Invert", 1, 3)(planar([[0, 100, 255]]))[0, 0, 0]
    assert out.tolist() == [255, 155, 0]


def test_enhance_brightness_truncates_and_clips():
    # Pillow blends with black: 1.72 v, truncated: 7 -> 12.04 -> 12, 100 -> 172, 150 -> 258 -> 255
    out = op("EnhanceBrightness", 1, 3)(planar([[7, 100, 150]]))[0, 0, 0]
    assert out.tolist() == [12, 172, 255]


def test_enhance_color_blends_with_pillow_luma():
    # (200, 100, 50): L = (200*19595 + 100*38470 + 50*7471 + 32768) >> 16 = 8172318 >> 16 = 124;
    # R = 124 + 1.72 * 76 = 254.72 -> 254, G = 124 - 1.72 * 24 = 82.72 -> 82, B = 124 - 1.72 * 74 < 0 -> 0
    out = op("EnhanceColor", 1, 1)(planar(np.array([[[200, 100, 50]]])))[0, :, 0, 0]
    assert (200 * 19595 + 100 * 38470 + 50 * 7471 + 32768) >> 16 == 124
    assert out.tolist() == [254, 82, 0]


def test_enhance_contrast_blends_with_the_mean_luma():
    # greys 100 and 201: mean luma 150.5 -> int(150.5 + 0.5) = 151; 100 -> 151 - 1.72 * 51 = 63.28 -> 63,
    # 201 -> 151 + 1.72 * 50 = 237
    out = op("EnhanceContrast", 1, 2)(planar([[100, 201]]))[0, 0, 0]
    assert out.tolist() == [63, 237]


def test_enhance_sharpness_blends_with_pillow_smooth_inside_the_border():
    # 3 x 3, centre 130, rest 0: SMOOTH gives 5 * 130 / 13 = 50 at the centre; out = 50 + 1.72 * 80 = 187.6 -> 187.
    # The border is Pillow's copy of the input: blended with itself, unchanged.
    frame = np.zeros((3, 3), np.uint8)
    frame[1, 1] = 130
    out = op("EnhanceSharpness", 3, 3)(planar(frame))[0, 0]
    assert out[1, 1] == 187 and (out[0] == 0).all() and (out[:, 0] == 0).all()
    # 4 x 4 interior pixel (1, 1) with neighbours summing to 8 * 10 + 5 * 40 = 280: 280 / 13 = 21.54 -> 22;
    # out = 22 + 1.72 * (40 - 22) = 52.96 -> 52
    frame = np.full((4, 4), 10, np.uint8)
    frame[1, 1] = 40
    out = op("EnhanceSharpness", 4, 4)(planar(frame))[0, 0]
    assert out[1, 1] == 52


def test_autocontrast_per_channel_truncates_in_float64():
    # R channel 50, 100, 150: scale 2.55, offset -127.49999999999999: 100 -> 127.49999999999999 -> 127, 150 -> 255;
    # G constant: left alone; B already 0..255: unchanged.
    frame = np.zeros((1, 3, 3), np.uint8)
    frame[0, :, 0] = [50, 100, 150]
    frame[0, :, 1] = 77
    frame[0, :, 2] = [0, 128, 255]
    out = op("Autocontrast", 1, 3)(planar(frame))[0]
    assert out[0, 0].tolist() == [0, 127, 255]
    assert out[1, 0].tolist() == [77, 77, 77]
    assert out[2, 0].tolist() == [0, 128, 255]


def test_equalize_histogram_lut():
    # 512 pixels: 170 at 0, 170 at 50, 172 at 200. step = 512 // 255 = 2, lut[i] = (1 + count below i) // 2:
    # 0 -> 0, 50 -> 171 // 2 = 85, 200 -> 341 // 2 = 170.
    values = np.array([0] * 170 + [50] * 170 + [200] * 172).reshape(16, 32)
    out = op("Equalize", 16, 32)(planar(values))[0, 0]
    assert sorted(set(out.reshape(-1).tolist())) == [0, 85, 170]
    assert out[values == 50].tolist() == [85] * 170
    # fewer than 255 pixels below 255 (step 0) or a single value: identity
    small = np.arange(12).reshape(3, 4)
    assert np.array_equal(op("Equalize", 3, 4)(planar(small))[0, 0], small)


def test_cutout_square_of_the_height_filled_128():
    # 50 x 100, centre (0.5, 0.5): side 0.18 * 50 = 9 px: y 20.5..29.5 -> 20..29, x 45.5..54.5 -> 45..54
    frame = np.zeros((50, 100), np.uint8)
    out = op("Cutout", 50, 100, center=(0.5, 0.5))(planar(frame))[0, 0]
    ys, xs = np.nonzero(out == 128)
    assert (ys.min(), ys.max() + 1, xs.min(), xs.max() + 1) == (20, 29, 45, 54)
    # near a corner the box is cut by the frame (int() toward zero, then clipped)
    out = op("Cutout", 50, 100, center=(0.01, 0.99))(planar(frame))[0, 0]
    ys, xs = np.nonzero(out == 128)
    assert (ys.min(), ys.max() + 1, xs.min(), xs.max() + 1) == (45, 50, 0, 5)


# --- the draw -------------------------------------------------------------------------------------------------


def test_signs_are_fixed_by_the_seed_for_the_whole_run():
    assert ram.draw_signs(0) == ram.draw_signs(0)
    seen = {tuple(ram.draw_signs(seed).values()) for seed in range(40)}
    assert len(seen) > 10  # the seed picks them ...
    augmenter = ram.MMActionRandAugment(ram.draw_signs(7))
    matrices = set()
    for i in range(300):  # ... and every clip of the run uses the same ones
        for o in augmenter.draw(32, 32, clip_generator(0, 0, i)):
            if o.name == "Rotate":
                matrices.add(tuple(np.round(o.matrix.reshape(-1), 9)))
    assert len(matrices) == 1


def test_some_of_two_distinct_in_list_order_uniformly():
    augmenter = ram.MMActionRandAugment(ALL_PLUS)
    pairs = Counter()
    for i in range(3000):
        names = [o.name for o in augmenter.draw(16, 16, clip_generator(1, 0, i))]
        assert len(names) == 2 and names[0] != names[1]
        assert ram.OPERATIONS.index(names[0]) < ram.OPERATIONS.index(names[1])
        pairs[tuple(names)] += 1
    assert len(pairs) == 105  # every unordered pair of 15 occurs
    singles = Counter(n for pair, c in pairs.items() for n in pair for _ in range(c))
    for name in ram.OPERATIONS:  # each operation in 2/15 of the draws: 400 expected, sd ~ 18.6
        assert 320 < singles[name] < 480, (name, singles[name])


def test_one_draw_per_clip_every_frame_the_same():
    clip = np.repeat(random_frame(24, 24)[None], 5, axis=0)
    augmenter = ram.MMActionRandAugment(ALL_PLUS)
    for i in range(30):
        out = ram.apply(augmenter.draw(24, 24, clip_generator(2, 0, i)), clip.transpose(0, 3, 1, 2).copy())
        assert all(np.array_equal(out[0], out[k]) for k in range(1, 5))


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="magnitude"):
        ram.MMActionRandAugment(ALL_PLUS, magnitude=11)
    with pytest.raises(ValueError, match="num_ops"):
        ram.MMActionRandAugment(ALL_PLUS, num_ops=0)
    with pytest.raises(ValueError, match="signs"):
        ram.MMActionRandAugment({"ShearX": 1})
    with pytest.raises(ValueError, match="rand_augment_style"):
        TrainClipTransform(rand_augment_style="imgaug")


def test_train_clip_transform_mmaction_style():
    clip = np.random.default_rng(0).integers(0, 256, (6, 40, 60, 3), dtype=np.uint8)
    t = TrainClipTransform(resize=36, crop=32, rand_augment_style="mmaction", rand_augment_seed=5, color_jitter=None)
    a, b = t(clip, clip_generator(0, 0, 3)), t(clip, clip_generator(0, 0, 3))
    assert a.shape == (6, 3, 32, 32) and a.dtype == torch.uint8 and torch.equal(a, b)
    assert t.mmaction.signs == ram.draw_signs(5)
    assert "signs fixed for the run" in t.describe()
    # the RandAugment runs after crop and flip: the same draw applied by hand to the un-augmented output
    plain = TrainClipTransform(resize=36, crop=32, rand_augment=None, color_jitter=None)
    for i in range(20):
        base = plain(clip, clip_generator(0, 0, i))
        expected = ram.apply(t.mmaction.draw(32, 32, _after_crop_and_flip(clip, i)), base.numpy())
        assert np.array_equal(t(clip, clip_generator(0, 0, i)).numpy(), expected)


def _after_crop_and_flip(clip, index):
    """The generator of clip `index` advanced past the crop box and flip draws of TrainClipTransform."""
    from hf_vtrain.data import video_io as vio

    g = clip_generator(0, 0, index)
    height, width = clip.shape[1:3]
    resized = vio._short_side_shape(height, width, 36)
    vio._draw_resized_crop_box(*resized, (0.08, 1.0), (3 / 4, 4 / 3), g)
    vio._draw_flip(0.5, g)
    return g


def test_mmaction_color_jitter_order_is_fixed_per_run_and_hue_in_opencv_units():
    from hf_vtrain.data import video_io as vio

    order = vio.mmaction_jitter_order(3)
    assert sorted(order) == [0, 1, 2, 3] and order == vio.mmaction_jitter_order(3)
    assert len({tuple(vio.mmaction_jitter_order(seed)) for seed in range(30)}) > 5
    names = ["brightness", "contrast", "saturation", "hue"]
    for i in range(50):
        ops = vio._draw_color_jitter(0.5, 0.5, 0.5, 0.1, clip_generator(0, 0, i), fixed_order=order)
        assert [name for name, _ in ops] == [names[k] for k in order]  # every clip, the run's order
        hue = dict(ops)["hue"]
        assert round(hue * 180, 9) == int(round(hue * 180, 9)) and abs(hue * 180) <= 25  # int(255 h), h in +-0.1
    t = TrainClipTransform(rand_augment=None, color_jitter_style="mmaction", rand_augment_seed=3)
    assert t.jitter_order == order and "for the run" in t.describe()
    with pytest.raises(ValueError, match="color_jitter_style"):
        TrainClipTransform(color_jitter_style="cv2")
