import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hf_vtrain.data import video_io as vio
from hf_vtrain.data.video_io import (
    EvalClipTransform,
    TrainClipTransform,
    VideoDecodeError,
    VideoReader,
    center_crop,
    clip_generator,
    color_jitter,
    horizontal_flip,
    probe_video,
    rand_augment,
    random_resized_crop,
    resize_short_side,
    sample_indices,
)

NUM_FRAMES, FPS, HEIGHT, WIDTH = 20, 10, 48, 64


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    # As in a DataLoader worker; on a busy 2-core machine, 2 intra-op threads make each small op wait for a
    # descheduled worker and the module takes 5x longer.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def gray_level(i: int) -> int:
    return 20 + 10 * i  # frame i is uniformly this grey: the content check reads the frame index back


def write_mp4(path, frames: np.ndarray, fps: int) -> None:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"crf": "1"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    frames = np.stack([np.full((HEIGHT, WIDTH, 3), gray_level(i), np.uint8) for i in range(NUM_FRAMES)])
    path = tmp_path_factory.mktemp("video") / "ramp.mp4"
    write_mp4(path, frames, FPS)
    return str(path)


def frame_levels(frames: np.ndarray) -> list[int]:
    return [int(round(float(f[8:-8, 8:-8].mean()))) for f in frames]


def smooth_clip(num=4, height=180, width=320, seed=0) -> np.ndarray:
    """Slowly varying colours inside [40, 215]: interpolation differences stay small and nothing clips."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    frames = []
    for t in range(num):
        channels = [
            128 + 40 * np.sin(xx / rng.uniform(15, 30) + t * 0.3 + c) * np.cos(yy / rng.uniform(15, 30) - c)
            + 30 * np.sin((xx + yy) / 50 + c)
            for c in range(3)
        ]
        frames.append(np.stack(channels, -1))
    return np.clip(np.stack(frames), 0, 255).round().astype(np.uint8)


def noise_clip(num=3, height=40, width=48, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (num, height, width, 3), dtype=np.uint8)


def g(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def planar(clip: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(clip).permute(0, 3, 1, 2)


def run_ops(clip: np.ndarray, ops) -> torch.Tensor:
    """Apply explicit ops (no crop, no resize) through the same executor the transforms use."""
    x = vio._as_clip(clip)
    return vio._run(x, (0, 0, x.shape[2], x.shape[1]), tuple(x.shape[1:3]), ops=ops)


# --- decoding --------------------------------------------------------------------------------------


def test_probe_video(video):
    info = probe_video(video)
    assert (info.num_frames, info.height, info.width) == (NUM_FRAMES, HEIGHT, WIDTH)
    assert info.fps == pytest.approx(FPS)
    assert info.duration == pytest.approx(NUM_FRAMES / FPS)


def test_get_frames_returns_requested_order_with_repeats(video):
    reader = VideoReader(video)
    assert reader.num_frames == NUM_FRAMES
    asked = [5, 1, 5, 19, 0, 0, 7]
    frames = reader.get_frames(asked)
    assert frames.shape == (len(asked), HEIGHT, WIDTH, 3) and frames.dtype == np.uint8
    levels = frame_levels(frames)
    assert all(abs(level - gray_level(i)) <= 3 for level, i in zip(levels, asked)), levels
    sorted_frames = reader.get_frames(np.arange(0, NUM_FRAMES, 3))  # the no-reorder path
    assert all(abs(lv - gray_level(i)) <= 3 for lv, i in zip(frame_levels(sorted_frames), range(0, NUM_FRAMES, 3)))


@pytest.mark.parametrize("indices", [[0, NUM_FRAMES], [-1, 2]])
def test_get_frames_out_of_range_names_the_file(video, indices):
    with pytest.raises(VideoDecodeError, match="ramp.mp4.*out of range"):
        VideoReader(video).get_frames(indices)


def test_get_frames_rejects_empty_request(video):
    with pytest.raises(ValueError, match="no frame indices"):
        VideoReader(video).get_frames([])


def test_missing_and_corrupt_files_raise_with_path(tmp_path):
    missing = tmp_path / "missing.mp4"
    with pytest.raises(VideoDecodeError, match="missing.mp4"):
        VideoReader(str(missing))
    with pytest.raises(VideoDecodeError, match="missing.mp4"):
        probe_video(str(missing))
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(VideoDecodeError, match="corrupt.mp4"):
        VideoReader(str(corrupt))
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(VideoDecodeError, match="empty.mp4"):
        probe_video(str(empty))


# --- sampling --------------------------------------------------------------------------------------


def test_sample_indices_pads_past_the_end():
    indices, mask = sample_indices(start=10, num=5, stride=4, num_frames=20)
    assert indices.dtype == np.int64 and mask.dtype == np.bool_
    assert indices.tolist() == [10, 14, 18, 19, 19]
    assert mask.tolist() == [True, True, True, False, False]
    indices, mask = sample_indices(0, 3, 1, 10)
    assert indices.tolist() == [0, 1, 2] and mask.all()
    with pytest.raises(ValueError):
        sample_indices(0, 3, 0, 10)
    with pytest.raises(ValueError):
        sample_indices(0, 3, 1, 0)


def test_clip_generator_is_reproducible_and_distinct():
    draw = lambda gen: torch.rand(4, generator=gen)  # noqa: E731
    assert torch.equal(draw(clip_generator(1, 2, 3)), draw(clip_generator(1, 2, 3)))
    assert not torch.equal(draw(clip_generator(1, 2, 3)), draw(clip_generator(1, 2, 4)))
    assert not torch.equal(draw(clip_generator(1, 2, 3)), draw(clip_generator(1, 3, 2)))


# --- transforms: shapes, determinism, one draw per clip ----------------------------------------------


def test_train_transform_output_and_input_layouts():
    clip = smooth_clip(num=3)
    out = TrainClipTransform()(clip, g(0))
    assert out.dtype == torch.uint8 and out.shape == (3, 3, 160, 160) and out.is_contiguous()
    assert torch.equal(TrainClipTransform()(torch.from_numpy(clip), g(0)), out)  # torch input
    assert torch.equal(TrainClipTransform()(planar(clip).contiguous(), g(0)), out)  # (T, 3, H, W) input
    with pytest.raises(TypeError):
        TrainClipTransform()(clip.astype(np.float32), g(0))


def test_train_transform_is_deterministic_per_seed():
    clip = smooth_clip(num=2)
    transform = TrainClipTransform()
    assert torch.equal(transform(clip, g(3)), transform(clip, g(3)))
    assert not torch.equal(transform(clip, g(3)), transform(clip, g(4)))


@pytest.mark.parametrize("seed", range(30))
def test_train_transform_applies_the_same_draw_to_every_frame(seed):
    # Frames transformed together equal frames transformed alone with the same generator state: the draw
    # (box, flip, RandAugment ops, jitter factors and order) is per clip. 14 frames span several chunks.
    clip = np.concatenate([smooth_clip(num=7, seed=seed), noise_clip(num=7, height=180, width=320, seed=seed)])
    transform = TrainClipTransform()
    together = transform(clip, g(seed))
    for t in (0, 6, 7, 13):
        assert torch.equal(together[t], transform(clip[t : t + 1], g(seed))[0]), t
    same = np.repeat(clip[:1], 8, axis=0)
    out = transform(same, g(seed))
    assert all(torch.equal(out[t], out[0]) for t in range(8))


def test_moving_marker_keeps_consistent_geometry():
    num, step = 5, 6
    clip = np.zeros((num, 180, 320, 3), np.uint8)
    for t in range(num):
        clip[t, 70:110, 120 + step * t : 160 + step * t] = 255
    checked = 0
    for seed in range(20):
        out = TrainClipTransform(rand_augment=None, color_jitter=None)(clip, g(seed)).float()[:, 0]
        mass = out.sum(dim=(1, 2))
        if mass.min() < 0.95 * mass.max() or mass.min() < 255 * 50:  # the crop cut the marker off
            continue
        ys, xs = torch.meshgrid(torch.arange(160.0), torch.arange(160.0), indexing="ij")
        cx = (out * xs).sum(dim=(1, 2)) / mass
        cy = (out * ys).sum(dim=(1, 2)) / mass
        dx = cx[1:] - cx[:-1]
        assert (dx - dx.mean()).abs().max() < 0.5 and dx.abs().min() > 1.0  # same displacement every frame
        assert (cy - cy.mean()).abs().max() < 0.5
        checked += 1
    assert checked >= 5


def test_eval_transform_is_not_random_and_matches_resize_then_centre_crop():
    clip = smooth_clip(num=2)
    out = EvalClipTransform()(clip)
    assert out.shape == (2, 3, 160, 160) and out.dtype == torch.uint8
    assert torch.equal(out, EvalClipTransform()(clip, g(5)))
    naive = center_crop(resize_short_side(clip, 160), 160)
    assert (out.float() - naive.float()).abs().max() <= 2


# --- transforms: hand-checked geometry -----------------------------------------------------------------


def test_horizontal_flip_really_flips():
    clip = noise_clip(num=2, height=6, width=9)
    clip[0, 2, 0] = (255, 0, 0)
    out = horizontal_flip(clip, p=1.0, generator=g(0))
    assert out.shape == (2, 3, 6, 9)
    assert out[0, :, 2, 8].tolist() == [255, 0, 0]
    assert torch.equal(out, planar(clip).flip(-1))
    assert torch.equal(horizontal_flip(clip, p=0.0, generator=g(0)), planar(clip))


def test_center_crop_picks_the_centre():
    values = np.arange(10 * 12, dtype=np.uint8).reshape(10, 12)
    clip = np.stack([values, values + 1, values + 2], -1)[None]
    out = center_crop(clip, (4, 6))
    assert out.shape == (1, 3, 4, 6)
    assert out[0, 0].numpy().tolist() == values[3:7, 3:9].tolist()
    assert out[0, 2].numpy().tolist() == (values[3:7, 3:9] + 2).tolist()
    assert center_crop(clip, 5)[0, 0].numpy().tolist() == values[2:7, 3:8].tolist()
    with pytest.raises(ValueError):
        center_crop(clip, 11)


def test_resize_short_side_shapes_and_constant_frames():
    assert resize_short_side(smooth_clip(num=1), 160).shape == (1, 3, 160, 284)
    portrait = np.full((2, 320, 180, 3), 77, np.uint8)
    out = resize_short_side(portrait, 160)
    assert out.shape == (2, 3, 284, 160) and bool((out == 77).all())
    assert resize_short_side(smooth_clip(num=1, height=100, width=150), 182).shape == (1, 3, 182, 273)


def test_fused_random_resized_crop_equals_resize_crop_resize():
    clip = smooth_clip(num=2)
    for seed in range(10):
        fused = TrainClipTransform(rand_augment=None, color_jitter=None, flip_prob=0.0)(clip, g(seed))
        naive = random_resized_crop(resize_short_side(clip, 182), 160, generator=g(seed))
        diff = (fused.float() - naive.float()).abs()
        assert diff.mean() < 0.8 and diff.max() <= 6, (seed, diff.mean(), diff.max())  # another box: mean > 10


def test_random_resized_crop_box_follows_mmaction():
    sides = []
    for seed in range(200):
        x0, y0, x1, y1 = vio._draw_resized_crop_box(182, 324, (0.08, 1.0), (3 / 4, 4 / 3), g(seed))
        assert 0 <= x0 < x1 <= 324 and 0 <= y0 < y1 <= 182
        area = (x1 - x0) * (y1 - y0) / (182 * 324)
        aspect = (x1 - x0) / (y1 - y0)
        fallback = (x1 - x0, y1 - y0) == (182, 182)
        assert fallback or (0.07 < area <= 1.0 and 3 / 4 - 0.05 < aspect < 4 / 3 + 0.05)
        sides.append(x1 - x0)
    assert min(sides) < 80 and max(sides) > 220  # the full area range is used (aspect caps width at 242)


def test_train_transform_equals_the_chain_of_public_functions():
    clip = smooth_clip(num=2)
    diffs = []
    for seed in range(12):
        fused = TrainClipTransform()(clip, g(seed))
        gen = g(seed)
        x = random_resized_crop(resize_short_side(clip, 182), 160, generator=gen)
        x = horizontal_flip(x, 0.5, generator=gen)
        x = rand_augment(x, 2, 9, generator=gen)
        x = color_jitter(x, 0.5, 0.5, 0.5, 0.1, generator=gen)
        diffs.append(float((fused.float() - x.float()).abs().mean()))
    # Equal up to interpolation and the rounding between steps; posterize, solarize and equalize
    # turn small differences into an occasional jump, so judge the typical draw.
    assert np.median(diffs) < 1.0 and max(diffs) < 3.0, diffs


# --- transforms: ops against hand-written references ---------------------------------------------------


def test_posterize_and_solarize_exact():
    clip = noise_clip()
    assert torch.equal(run_ops(clip, [("posterize", 4)]), planar(clip) & 0xF0)
    x = planar(clip)
    assert torch.equal(run_ops(clip, [("solarize", 128.0)]), torch.where(x >= 128, 255 - x, x))


def _equalize_reference(channel: np.ndarray) -> np.ndarray:
    """torchvision's _scale_channel, in numpy."""
    hist = np.bincount(channel.reshape(-1), minlength=256)
    nonzero = hist[hist != 0]
    step = nonzero[:-1].sum() // 255
    if step == 0:
        return channel
    lut = (np.cumsum(hist) + step // 2) // step
    lut = np.clip(np.concatenate([[0], lut[:-1]]), 0, 255)
    return lut[channel].astype(np.uint8)


def test_equalize_matches_torchvision_algorithm():
    clip = noise_clip()
    clip[1] = clip[1] // 4 + 30  # a narrow histogram
    clip[2, ..., 1] = 99  # a constant channel stays as it is
    out = run_ops(clip, [("equalize",)]).permute(0, 2, 3, 1).numpy()
    for t in range(clip.shape[0]):
        for c in range(3):
            assert np.array_equal(out[t, ..., c], _equalize_reference(clip[t, ..., c])), (t, c)


def test_autocontrast_stretches_each_channel():
    clip = (noise_clip() // 2 + 40).astype(np.uint8)
    out = run_ops(clip, [("autocontrast",)]).permute(0, 2, 3, 1).numpy().astype(np.float64)
    x = clip.astype(np.float64)
    low, high = x.min(axis=(1, 2), keepdims=True), x.max(axis=(1, 2), keepdims=True)
    assert np.abs(out - (x - low) * 255 / (high - low)).max() <= 1.0


def test_sharpness_matches_torchvision_formula():
    clip = noise_clip()
    x = planar(clip).float()
    kernel = torch.tensor([[1.0, 1, 1], [1, 5, 1], [1, 1, 1]]) / 13
    blurred = x.clone()
    blurred[..., 1:-1, 1:-1] = F.conv2d(x.reshape(-1, 1, *x.shape[2:]), kernel[None, None]).view(3, 3, 38, 46)
    for factor in (0.4, 1.9):
        expected = (factor * x + (1 - factor) * blurred).clamp(0, 255)
        assert (run_ops(clip, [("sharpness", factor)]).float() - expected).abs().max() <= 1.0


def test_brightness_contrast_saturation_match_torchvision_formulas():
    clip = noise_clip()
    x = planar(clip).float()
    gray = (0.2989 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2])[:, None]
    cases = {
        ("brightness", 1.3): x * 1.3,
        ("contrast", 0.6): 0.6 * x + 0.4 * gray.mean(dim=(1, 2, 3), keepdim=True),
        ("saturation", 0.3): 0.3 * x + 0.7 * gray,
    }
    for op, expected in cases.items():
        assert (run_ops(clip, [op]).float() - expected.clamp(0, 255)).abs().max() <= 1.0, op
    # a run of them folds into one map: the same as applying them one after the other without clamping
    expected = 1.3 * (0.6 * x + 0.4 * gray.mean(dim=(1, 2, 3), keepdim=True))
    out = run_ops(clip, [("contrast", 0.6), ("brightness", 1.3)]).float()
    assert (out - expected.clamp(0, 255)).abs().max() <= 1.0


def test_hue_rotation_keeps_grey_and_turns_red_towards_green():
    grey = np.full((1, 4, 4, 3), 120, np.uint8)
    assert (run_ops(grey, [("hue", 0.3)]).float() - 120).abs().max() <= 1
    red = np.zeros((1, 4, 4, 3), np.uint8)
    red[..., 0] = 200
    out = run_ops(red, [("hue", 1 / 3)])[0, :, 0, 0]
    assert int(out.argmax()) == 1, out  # green, as a third of a turn in HSV
    clip = smooth_clip(num=1, height=8, width=8)
    assert (run_ops(clip, [("hue", 0.5), ("hue", 0.5)]).float() - planar(clip).float()).abs().max() <= 1


def _warp(name: str, magnitude: float, size: int):
    return vio._rand_augment_op(name, magnitude, size, size)


def test_translate_moves_content_by_whole_pixels():
    clip = noise_clip(num=2, height=20, width=20)
    x = planar(clip)
    out = run_ops(clip, [_warp("TranslateX", 5.0, 20)])
    assert torch.equal(out[..., 5:], x[..., :-5]) and bool((out[..., :5] == 0).all())
    out = run_ops(clip, [_warp("TranslateY", -3.0, 20)])
    assert torch.equal(out[..., :-3, :], x[..., 3:, :]) and bool((out[..., -3:, :] == 0).all())


def test_rotate_90_is_a_quarter_turn_counter_clockwise():
    clip = noise_clip(num=2, height=16, width=16)
    op = ("warp", vio._warp_op(16, 16, vio._inverse_affine(16, 16, angle=90.0)))
    assert torch.equal(run_ops(clip, [op]), torch.rot90(planar(clip), 1, dims=(-2, -1)))


@pytest.mark.parametrize(
    "name,magnitude",
    [("ShearX", 0.09), ("ShearX", -0.27), ("ShearY", 0.09), ("ShearY", -0.13), ("TranslateX", -21.0),
     ("TranslateY", 21.0), ("Rotate", 9.0), ("Rotate", -30.0)],
)
def test_warps_equal_grid_sample_nearest(name, magnitude):
    # The band copies and the gather must sample where grid_sample(mode="nearest") does with torchvision's
    # affine matrix (as torchvision's RandAugment warps, fill 0). Shears whose offsets land exactly on .5
    # (e.g. 0.2) break ties per column rather than per pixel, so the magnitudes here avoid them.
    size = 160
    clip = noise_clip(num=2, height=size, width=size)
    op = _warp(name, magnitude, size)
    if name.startswith("Shear"):
        angle = math.degrees(math.atan(magnitude))
        shear = (angle, 0.0) if name == "ShearX" else (0.0, angle)
        matrix = vio._inverse_affine(size, size, shear=shear, center=(0, 0))
    elif name.startswith("Translate"):
        shift = (int(magnitude), 0) if name == "TranslateX" else (0, int(magnitude))
        matrix = vio._inverse_affine(size, size, translate=shift)
    else:
        matrix = vio._inverse_affine(size, size, angle=magnitude)
    a, b, c, d, e, f = matrix
    theta = torch.tensor([[a, b, c / (size * 0.5)], [d, e, f / (size * 0.5)]], dtype=torch.float32)
    grid = F.affine_grid(theta[None].expand(2, 2, 3), [2, 3, size, size], align_corners=False)
    expected = F.grid_sample(planar(clip).float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)
    out = run_ops(clip, [op])
    assert (out != expected.to(torch.uint8)).float().mean() < 2e-3
    # the same warp in the float stage (after a colour op) samples the same pixels
    after = run_ops(clip, [("brightness", 1.0), op])
    assert (after != out).float().mean() < 2e-3


def test_rand_augment_and_color_jitter_draw_once_per_clip():
    clip = np.repeat(smooth_clip(num=1, height=60, width=60), 5, axis=0)
    for seed in range(20):
        for out in (rand_augment(clip, 2, 9, generator=g(seed)), color_jitter(clip, generator=g(seed))):
            assert out.shape == (5, 3, 60, 60) and out.dtype == torch.uint8
            assert all(torch.equal(out[t], out[0]) for t in range(5))
    assert not torch.equal(color_jitter(clip, generator=g(0)), color_jitter(clip, generator=g(1)))
    assert torch.equal(color_jitter(clip, 0, 0, 0, 0, generator=g(0)), planar(clip))


def test_bench_script_runs(tmp_path, monkeypatch, capsys):
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "scripts" / "bench_video_io.py"
    spec = importlib.util.spec_from_file_location("bench_video_io", script)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    path = tmp_path / "bench.mp4"
    bench.write_video(str(path), 36, 64, 10, 1.2, seed=0)
    argv = ["bench", "--video", str(path), "--frames", "4", "--stride", "2", "--repeats", "2", "--rounds", "1"]
    argv += ["--settle", "0"]
    monkeypatch.setattr("sys.argv", argv)
    bench.main()
    printed = capsys.readouterr().out
    assert "video: 64x36, 12 frames" in printed and "ratio train (b)/(a)" in printed


@pytest.mark.parametrize("fused", [True, False])
def test_transform_stage_bench_runs_and_puts_everything_back(tmp_path, monkeypatch, capsys, fused):
    import importlib.util
    from pathlib import Path

    import torch.nn.functional as F

    from hf_vtrain.data import resize_kernels, train_clip_kernels

    if fused and not resize_kernels.RESIZE_LANES:
        pytest.skip("numba's target CPU has no AVX-512 VBMI: no fused crop + resize here")
    if not fused:
        monkeypatch.setattr(resize_kernels, "RESIZE_LANES", False)
    scripts = Path(__file__).resolve().parents[2] / "scripts"
    loaded = {}
    for name in ("bench_video_io", "bench_train_transform"):
        spec = importlib.util.spec_from_file_location(name, scripts / f"{name}.py")
        loaded[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(loaded[name])
    path = tmp_path / "bench.mp4"
    loaded["bench_video_io"].write_video(str(path), 180, 320, 10, 1.2, seed=0)
    cls = resize_kernels.CropResizePlanar
    originals = (F.interpolate, train_clip_kernels.planarize, train_clip_kernels.color_affine, vars(cls)["run"],
                 vars(cls)["plan"])
    monkeypatch.setattr("sys.argv", ["bench", "--video", str(path), "--clips", "6", "--frames", "4", "--stride", "2"])
    loaded["bench_train_transform"].main()
    printed = capsys.readouterr().out
    assert "window of 4 frames decoded at 320x180, 6 clips" in printed
    rows = {line[:34].strip(): line[34:].split() for line in printed.splitlines()[1:]}
    assert {"whole transform", "colour map", "rest (Python, allocation)"} <= set(rows)
    # at 320x180 every box of the crop is at least 58 pixels wide (43 fit the fused pass): it takes them all
    resize_rows = {"crop+resize+planar (fused)", "fused pass's plan"} if fused else {"resize (torch)", "planar copy"}
    assert resize_rows <= set(rows) and not ({"resize (torch)", "crop+resize+planar (fused)"} - resize_rows) & set(rows)
    # six clips draw two operations each: every one drawn is listed with its clip count
    assert sum(int(v[3]) for k, v in rows.items() if k.startswith("RandAugment ")) == 12
    assert (F.interpolate, train_clip_kernels.planarize, train_clip_kernels.color_affine, vars(cls)["run"],
            vars(cls)["plan"]) == originals


# --- decoding at the size the transform needs ------------------------------------------------------------------


@pytest.fixture(scope="module")
def smooth_video(tmp_path_factory):
    path = tmp_path_factory.mktemp("smooth") / "smooth_640x360.mp4"
    write_mp4(path, smooth_clip(num=6, height=360, width=640, seed=3), FPS)
    return str(path)


def test_video_size_reads_the_header(smooth_video, tmp_path):
    assert vio.video_size(smooth_video) == (360, 640)
    (tmp_path / "junk.mp4").write_bytes(b"not a video")
    with pytest.raises(vio.VideoDecodeError, match="junk.mp4"):
        vio.video_size(str(tmp_path / "junk.mp4"))


@pytest.mark.parametrize("size", [(182, 324), (160, 284), (24, 48)])  # 48 px: decord cannot scale to it
def test_decoding_at_a_size_matches_decoding_then_resizing(smooth_video, size):
    full = VideoReader(smooth_video).get_frames([0, 2, 5, 2])
    scaled_reader = VideoReader(smooth_video, size=size)
    scaled = scaled_reader.get_frames([0, 2, 5, 2])
    assert scaled.shape == (4, *size, 3) and scaled.dtype == np.uint8
    assert scaled_reader._resize_after == (size[1] == 48)
    ours = vio.resize(full, size).permute(0, 2, 3, 1).numpy()
    # the decoder's bicubic and our antialiased bilinear differ by a few levels on smooth content, no more
    assert np.abs(scaled.astype(int) - ours.astype(int)).mean() < 2.0
    np.testing.assert_array_equal(scaled[1], scaled[3])  # repeats and order kept


@pytest.mark.parametrize("transform", [
    TrainClipTransform(resize=182, crop=160, rand_augment=None, color_jitter=None),
    TrainClipTransform(resize=182, crop=160, rand_augment_style="mmaction", color_jitter_style="mmaction"),
    EvalClipTransform(resize=160, crop=160),
])
def test_a_clip_decoded_at_the_transforms_size_gets_the_same_crop(smooth_video, transform):
    # decode_size is the transform's short-side resize; the box is drawn on that shape either way, so the output of
    # the small decode matches the full-size one up to resampling (a crop off by a few pixels would not)
    height, width = vio.video_size(smooth_video)
    size = transform.decode_size(height, width)
    assert size == vio._short_side_shape(height, width, transform.resize)
    full = VideoReader(smooth_video).get_frames([0, 3, 5])
    small = VideoReader(smooth_video, size=size).get_frames([0, 3, 5])
    for seed in range(4):
        a, b = transform(full, g(seed)), transform(small, g(seed))
        assert a.shape == b.shape == (3, 3, 160, 160)
        assert np.abs(a.numpy().astype(int) - b.numpy().astype(int)).mean() < 3.0, seed
    shifted = transform(small[:, 4:, 4:], g(0))  # the same content four pixels off is much further away
    assert np.abs(transform(full, g(0)).numpy().astype(int) - shifted.numpy().astype(int)).mean() > 4.0


def test_decode_size_only_shrinks():
    assert TrainClipTransform(resize=182).decode_size(180, 320) is None  # THUMOS: the train resize enlarges
    assert EvalClipTransform(resize=160).decode_size(180, 320) is None  # 284x160: too small a shrink to pay
    assert EvalClipTransform(resize=160).decode_size(360, 640) == (160, 284)
    assert TrainClipTransform(resize=182).decode_size(1080, 1920) == (182, 324)


def test_reader_cache_opens_the_reader_at_the_transforms_size(smooth_video):
    cache = vio.ReaderCache(threads=1, keep=2)
    transform = EvalClipTransform(resize=160, crop=160)
    reader = cache.get_for(smooth_video, transform.decode_size)
    assert reader.size == (160, 284) and cache.get_for(smooth_video, transform.decode_size) is reader
    assert cache.get(smooth_video).size is None and cache.get_for(smooth_video, transform.decode_size) is reader  # both
    assert cache.get_for(smooth_video, None).size is None  # no decode size: as stored
    assert cache.get_for(smooth_video, lambda height, width: None).size is None


@pytest.fixture(scope="module")
def gop_video(tmp_path_factory):
    """40 frames of noise (every frame different) in GOPs of 8 with B-frames: seeks land between keyframes."""
    import av

    frames = np.random.default_rng(5).integers(0, 256, (40, 32, 64, 3), dtype=np.uint8)
    path = tmp_path_factory.mktemp("gop") / "noise_gop8.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = 64, 32, "yuv420p"
        stream.options = {"crf": "10", "x264-params": "keyint=8:min-keyint=8:scenecut=0:bframes=3"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return str(path)


def test_stopping_decords_read_ahead_keeps_every_frame(gop_video):
    # forward and backward jumps, a window going on where the last ended, repeats, unsorted, the whole video
    windows = [list(range(3, 40, 4)), [0, 1, 2], [3, 4], [30, 31], [8, 9, 10], [12, 13, 30], [5, 5, 1], list(range(40))]
    plain, stopped = VideoReader(gop_video), VideoReader(gop_video, read_ahead=False)
    assert plain.read_ahead and not stopped.read_ahead
    kept = []
    for window in windows:
        got = stopped.get_frames(window)
        np.testing.assert_array_equal(got, plain.get_frames(window), err_msg=str(window))
        np.testing.assert_array_equal(got, VideoReader(gop_video).get_frames(window), err_msg=str(window))
        kept.append((got, got.copy()))
    assert all(np.array_equal(a, b) for a, b in kept)  # the stop leaves the frames handed out untouched
    assert len({frame.tobytes() for frame in kept[-1][0]}) == 40  # the frames do differ: the check can fail


def test_reader_cache_hands_its_read_ahead_setting_to_its_readers(gop_video):
    import pickle

    cache = vio.ReaderCache(threads=1, read_ahead=False)
    assert cache.get(gop_video).read_ahead is False and vio.ReaderCache(threads=1).get(gop_video).read_ahead
    again = pickle.loads(pickle.dumps(cache))  # as a spawned DataLoader worker receives it
    assert again.read_ahead is False and again.get(gop_video).read_ahead is False
