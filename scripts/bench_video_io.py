"""Benchmark: training-sample preparation (decode + TrainClipTransform) against raw decord `get_batch`.

    python scripts/bench_video_io.py                      # 320x180, 1280x720 and 1920x1080 H.264 videos (written)
    python scripts/bench_video_io.py --sizes 1920x1080 --video-dir /tmp/bench_videos   # keep the videos for reruns
    python scripts/bench_video_io.py --video clip.mp4 --frames 192 --stride 4 --repeats 20
    python scripts/bench_video_io.py --style torchvision    # torchvision's RandAugment instead of mmaction's

Prints frames/s of (a) decord `get_batch` at full size on the sorted indices, (b) the training sample as the
loaders make it: the reader the transform asks for (`ReaderCache.get_for`: decoded straight at the transform's
short-side resize when that shrinks the frame) + `TrainClipTransform` to 160x160, (c) the same with
`EvalClipTransform`, and the ratios (b)/(a), (c)/(a),
by wall clock and by process CPU time (all threads). Each section reads the same --repeats windows on its own
reader, and the sections take turns window by window (for --rounds rounds), so that a shared machine's slow and
fast seconds fall on all of them alike. Each round is an epoch: the training transform draws its crop, flip,
RandAugment operations and jitter afresh, so the --repeats x --rounds clips sample its cost, which varies 3-5x with
the operations drawn (10 windows alone gave 0.82 in one round and 0.93 in another). Wall clock is the call's own time; CPU time runs on until the process is
idle again. decord keeps decoding ahead on a background thread for tens of ms after each `get_batch` (work a data
loader pays for while it transforms the window): (a) is spared it, its read-ahead cut short untimed right after each
call as the next window's seek cuts it when (a) runs back to back (printed beside it: the same with the read-ahead
left to run out, as a loader that transforms each window sees it); the readers of (b) and (c) are opened as the
datasets open theirs (`ReaderCache(read_ahead=False)`), so `get_frames` stops it before it returns, timed. The last
line prints how much of it (a) leaves running after a window and (b)'s reader after the stop.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import torch

from hf_vtrain.data.video_io import EvalClipTransform, ReaderCache, TrainClipTransform, clip_generator, sample_indices


def write_video(path: str, height: int, width: int, fps: int, seconds: float, seed: int = 0) -> None:
    """H.264 (libx264, yuv420p) with a panning texture, fine noise and a moving square: realistic decode work."""
    import av

    rng = np.random.default_rng(seed)
    tex_h, tex_w = height * 2, width * 3
    yy, xx = np.mgrid[0:tex_h, 0:tex_w].astype(np.float32)
    texture = np.zeros((tex_h, tex_w, 3), np.float32)
    for c in range(3):
        for _ in range(6):
            fx, fy = rng.uniform(0.01, 0.2, 2)
            texture[..., c] += np.sin(fx * xx + fy * yy + rng.uniform(0, 2 * np.pi))
    coarse = rng.normal(size=(tex_h // 4 + 1, tex_w // 4 + 1, 3)).astype(np.float32)
    coarse = np.kron(coarse, np.ones((4, 4, 1), np.float32))[:tex_h, :tex_w]
    texture = texture / 6 * 60 + 128 + coarse * 20
    num = int(round(fps * seconds))
    with av.open(path, "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(num):
            ox = int(i * 0.6 * width / 320) % (tex_w - width)
            oy = int((tex_h - height) / 2 * (1 + 0.8 * np.sin(i / 40)))
            frame = texture[oy : oy + height, ox : ox + width].copy()
            frame += rng.normal(0, 6, frame.shape).astype(np.float32)  # sensor noise: costs bits, like real video
            cy = int(height / 2 + height / 4 * np.sin(i / 15))
            cx = int(width / 2 + width / 3 * np.cos(i / 20))
            s = max(4, height // 12)
            frame[max(cy - s, 0) : cy + s, max(cx - s, 0) : cx + s] = (230, 40, 40)
            image = av.VideoFrame.from_ndarray(frame.clip(0, 255).astype(np.uint8), format="rgb24")
            for packet in stream.encode(image):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", help="an existing video; default: write synthetic ones at --sizes")
    parser.add_argument("--sizes", default="320x180,1280x720,1920x1080", help="synthetic videos' WIDTHxHEIGHT")
    parser.add_argument("--video-dir", help="where the synthetic videos are written and reused (default: a temp dir)")
    parser.add_argument("--frames", type=int, default=192, help="frames per training window (AdaTAD: 768)")
    parser.add_argument("--stride", type=int, default=4, help="take every n-th frame (AdaTAD THUMOS: 4)")
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=30.0, help="synthetic video length (1920x1080: ~5 s to "
                        "encode per second of video)")
    parser.add_argument("--repeats", type=int, default=10, help="windows per timed loop")
    parser.add_argument("--rounds", type=int, default=3, help="times each loop runs, alternating with the others")
    parser.add_argument("--threads", type=int, default=1, help="decord decode threads")
    parser.add_argument("--torch-threads", type=int, default=1, help="torch intra-op threads (1 = a DataLoader worker)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--style", choices=["mmaction", "torchvision"], default="mmaction",
                        help="RandAugment and colour-jitter style of the training transform (the AdaTAD recipes: "
                        "mmaction)")
    parser.add_argument("--settle", type=float, default=0.02, help="pause (s) after each timed window, before waiting "
                        "for the process to go idle")
    args = parser.parse_args()
    torch.set_num_threads(args.torch_threads)

    with tempfile.TemporaryDirectory() as tmp:
        if args.video:
            run_case(args.video, args)
            return
        for size in args.sizes.split(","):
            width, height = (int(v) for v in size.lower().split("x"))
            folder = args.video_dir or tmp
            os.makedirs(folder, exist_ok=True)
            path = os.path.join(folder, f"bench_{width}x{height}_{args.fps}fps_{args.seconds:g}s_seed{args.seed}.mp4")
            if not os.path.exists(path):
                t0 = time.perf_counter()
                write_video(path + ".tmp.mp4", height, width, args.fps, args.seconds, args.seed)
                os.replace(path + ".tmp.mp4", path)
                print(f"wrote {path} in {time.perf_counter() - t0:.1f} s")
            run_case(path, args)


def settle(at_least: float) -> None:
    """Sleep `at_least` seconds, then until this process's threads stop using CPU (decord's decoder thread runs on
    after a call returns: ~20 ms at 320x180, ~130 ms at 1920x1080)."""
    time.sleep(at_least)
    last = time.process_time()
    for _ in range(100):
        time.sleep(0.01)
        now = time.process_time()
        if now - last < 0.001:
            return
        last = now


def run_case(path: str, args) -> None:
    import decord

    raw = decord.VideoReader(path, num_threads=args.threads)
    raw_ahead = decord.VideoReader(path, num_threads=args.threads)
    # the style's colour jitter too: the AdaTAD recipes set both to mmaction
    train = TrainClipTransform(rand_augment_style=args.style, rand_augment_seed=args.seed, color_jitter_style=args.style)
    evaluate = EvalClipTransform()
    cache = ReaderCache(args.threads, keep=3, read_ahead=False)  # as the datasets, which read one window per sample
    full = cache.get(path)
    train_reader, eval_reader = cache.get_for(path, train.decode_size), cache.get_for(path, evaluate.decode_size)
    height, width = raw[0].shape[:2]
    kbps = os.path.getsize(path) * 8 / 1000 / (len(raw) / raw.get_avg_fps())
    print(f"== video: {width}x{height}, {len(raw)} frames at {raw.get_avg_fps():.2f} fps, {kbps:.0f} kbit/s; "
          f"decoded at {train_reader.size or 'full size'} for training, {eval_reader.size or 'full size'} for "
          f"evaluation")
    print(f"window: {args.frames} frames at stride {args.stride}; decode threads {args.threads}, "
          f"torch threads {torch.get_num_threads()}; {args.rounds} rounds of {args.repeats} windows per loop")

    print(f"train transform: {train.describe()}")
    rng = np.random.default_rng(args.seed)
    span = args.frames * args.stride
    windows = []
    for _ in range(args.repeats):
        start = int(rng.integers(0, max(1, full.num_frames - span + 1)))
        windows.append(sample_indices(start, args.frames, args.stride, full.num_frames)[0])
    frames_per_loop = sum(len(indices) for indices in windows)
    # each round is an epoch: the training transform draws afresh (crop, flip, RandAugment's two operations, the
    # jitter), so --rounds x --repeats clips sample its cost, which varies 3-5x with the operations drawn
    epoch = [0]
    sections = {
        "raw": lambda i, indices: raw.get_batch(np.unique(indices).tolist()),  # decord wants sorted indices
        # the same, its read-ahead left to run out as in a loader that transforms each window: not the baseline
        "raw_ahead": lambda i, indices: raw_ahead.get_batch(np.unique(indices).tolist()),
        "train": lambda i, indices: train(train_reader.get_frames(indices), clip_generator(args.seed, epoch[0], i)),
        "eval": lambda i, indices: evaluate(eval_reader.get_frames(indices)),
        "decode": lambda i, indices: train_reader.get_frames(indices),
    }
    if train_reader.size is not None:  # the same transform on frames decoded as stored: what it was before
        sections["train_full"] = lambda i, indices: train(full.get_frames(indices),
                                                          clip_generator(args.seed, epoch[0], i))
    if train.mmaction is not None:  # numba loads the RandAugment kernels once per process: not part of the rate
        train.mmaction.prepare(train.crop, train.crop)
    for fn in sections.values():  # warm-up, untimed
        fn(0, windows[0])
    wall = {key: [] for key in sections}
    cpu = {key: [] for key in sections}
    for round_ in range(args.rounds):
        epoch[0] = round_
        for key in sections:
            wall[key].append(0.0)
            cpu[key].append(0.0)
        # window by window, each section in turn: a shared machine's slow and fast seconds fall on all of them alike
        for i, indices in enumerate(windows):
            for key, fn in sections.items():
                w0, c0 = time.perf_counter(), time.process_time()
                out = fn(i, indices)
                wall[key][-1] += time.perf_counter() - w0
                if key == "raw":  # cut its read-ahead short, as its next window's seek does when back to back
                    raw.seek(0)
                settle(args.settle)  # what decord's thread still decodes counts in the CPU time
                cpu[key][-1] += time.process_time() - c0
                if key in ("train", "eval", "train_full"):
                    assert out.shape == (args.frames, 3, 160, 160) and out.dtype == torch.uint8

    # The transforms alone, on a decoded clip, by this thread's CPU time: what they cost without
    # decord's threads and caches in the way.
    alone = {}
    for key, transform, reader in (("train", train, train_reader), ("eval", evaluate, eval_reader)):
        clip = reader.get_frames(windows[0])  # decoded at the size this transform's reader decodes at
        c0 = time.thread_time()
        for round_ in range(args.rounds):  # the loop's draws
            for i in range(args.repeats):
                transform(clip, clip_generator(args.seed, round_, i))
        alone[key] = (time.thread_time() - c0) / (args.rounds * args.repeats * len(windows[0]))

    # decord's decoder thread after a call: what (a) leaves running, against get_frames with read_ahead=False
    behind = {"raw": [], "stopped": []}
    for i, indices in enumerate(windows[:5]):
        for key, section in (("raw", "raw"), ("stopped", "decode")):
            sections[section](i, indices)
            c0 = time.process_time()
            time.sleep(0.15)
            behind[key].append(time.process_time() - c0)

    for name, seconds in (("wall clock", wall), ("process CPU time", cpu)):
        total = {key: sum(value) for key, value in seconds.items()}
        frames = frames_per_loop * args.rounds
        fps = {key: frames / value for key, value in total.items()}
        print(f"-- frames/s by {name}")
        print(f"(a) decord get_batch (sorted)               {fps['raw']:8.0f}   (read-ahead left running: "
              f"{fps['raw_ahead']:.0f})")
        transform_us = (total["train"] - total["decode"]) / frames * 1e6
        print(f"(b) get_frames + TrainClipTransform 160x160 {fps['train']:8.0f}   "
              f"(its get_frames alone {fps['decode']:.0f}; transform {transform_us:.0f} us/frame)")
        print(f"(c) get_frames + EvalClipTransform 160x160  {fps['eval']:8.0f}")
        if "train_full" in fps:
            print(f"(d) as (b), decoded as stored (before)     {fps['train_full']:8.0f}   "
                  f"ratio (d)/(a) = {fps['train_full'] / fps['raw']:.2f}")
        rounds = [f"{a / b:.2f}" for a, b in zip(seconds["raw"], seconds["train"])]
        print(f"ratio train (b)/(a) = {fps['train'] / fps['raw']:.2f} (rounds: {', '.join(rounds)})   "
              f"ratio eval (c)/(a) = {fps['eval'] / fps['raw']:.2f}")
    print(f"-- decoding after the call returns (process CPU while idle, mean of {len(behind['raw'])} windows): "
          f"{np.mean(behind['raw']) * 1e3:.1f} ms a window after (a) (decord's read-ahead), "
          f"{np.mean(behind['stopped']) * 1e3:.1f} ms after get_frames (read_ahead=False, as the datasets)")
    decode = total["raw"] / frames
    print(f"-- transforms alone on a decoded clip: train {alone['train'] * 1e6:.0f} us/frame, eval "
          f"{alone['eval'] * 1e6:.0f} us/frame; with decoding at (a)'s CPU rate that would make the ratios "
          f"{decode / (decode + alone['train']):.2f} and {decode / (decode + alone['eval']):.2f}")


if __name__ == "__main__":
    main()
