"""Benchmark: training-sample preparation (decode + TrainClipTransform) against raw decord `get_batch`.

    python scripts/bench_video_io.py                      # 320x180, 1280x720 and 1920x1080 H.264 videos (written)
    python scripts/bench_video_io.py --sizes 1920x1080 --video-dir /tmp/bench_videos   # keep the videos for reruns
    python scripts/bench_video_io.py --video clip.mp4 --frames 192 --stride 4 --repeats 20
    python scripts/bench_video_io.py --style torchvision    # torchvision's RandAugment instead of mmaction's

Prints frames/s of (a) decord `get_batch` at full size on the sorted indices, (b) the training sample as the
loaders make it: the reader the transform asks for (`ReaderCache.get_for`: decoded straight at the transform's
short-side resize when that shrinks the frame) + `TrainClipTransform` to 160x160, (c) the same with
`EvalClipTransform`, and the ratios (b)/(a), (c)/(a),
by wall clock and by process CPU time (all threads; steadier on a shared machine). Each is a loop over the
same windows, back to back as a data loader would run them, and the loops alternate for --rounds rounds.
decord keeps decoding ahead on a background thread for a few tens of ms after each `get_batch`; in a loop,
that read-ahead overlaps the loop's own next window, so each loop pays for its own. The readers of (b) and (c) are
opened as the datasets open theirs (`ReaderCache(read_ahead=False)`), so `get_frames` stops that decoding before it
returns; the last line prints how much of it (a) leaves running after each window and (b)'s reader after the stop.
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
    parser.add_argument("--settle", type=float, default=0.1, help="pause (s) around each timed loop")
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


def run_case(path: str, args) -> None:
    import decord

    raw = decord.VideoReader(path, num_threads=args.threads)
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
    # each reader is put back at frame 0 between sections through its decord object, as `raw`
    sections = {
        "raw": (raw, lambda i, indices: raw.get_batch(np.unique(indices).tolist())),  # decord wants sorted
        "train": (train_reader._reader,
                  lambda i, indices: train(train_reader.get_frames(indices), clip_generator(args.seed, 0, i))),
        "eval": (eval_reader._reader, lambda i, indices: evaluate(eval_reader.get_frames(indices))),
        "decode": (train_reader._reader, lambda i, indices: train_reader.get_frames(indices)),
    }
    if train_reader.size is not None:  # the same transform on frames decoded as stored: what it was before
        sections["train_full"] = (full._reader, lambda i, indices: train(full.get_frames(indices),
                                                                         clip_generator(args.seed, 0, i)))
    if train.mmaction is not None:  # numba loads the RandAugment kernels once per process: not part of the rate
        train.mmaction.prepare(train.crop, train.crop)
    for _, fn in sections.values():  # warm-up, untimed
        fn(0, windows[0])
    wall = {key: [] for key in sections}
    cpu = {key: [] for key in sections}
    for _ in range(args.rounds):
        for key, (decoder, fn) in sections.items():
            decoder.get_batch([0])  # each loop starts from the same decoder position
            time.sleep(args.settle)  # and not during the previous loop's read-ahead
            w0, c0 = time.perf_counter(), time.process_time()
            for i, indices in enumerate(windows):
                out = fn(i, indices)
                if key in ("train", "eval", "train_full"):
                    assert out.shape == (args.frames, 3, 160, 160) and out.dtype == torch.uint8
            wall[key].append(time.perf_counter() - w0)
            time.sleep(args.settle)  # the loop's trailing read-ahead counts in its CPU time
            cpu[key].append(time.process_time() - c0)

    # The transforms alone, on a decoded clip, by this thread's CPU time: what they cost without
    # decord's threads and caches in the way.
    clip = train_reader.get_frames(windows[0])
    alone = {}
    for key, transform in (("train", train), ("eval", evaluate)):
        c0 = time.thread_time()
        for i in range(args.repeats):
            transform(clip, clip_generator(args.seed, 1, i))
        alone[key] = (time.thread_time() - c0) / (args.repeats * len(windows[0]))

    # decord's decoder thread after a call: what (a) leaves running, against get_frames with read_ahead=False
    behind = {"raw": [], "stopped": []}
    for i, indices in enumerate(windows[:5]):
        for key, section in (("raw", "raw"), ("stopped", "decode")):
            sections[section][1](i, indices)
            c0 = time.process_time()
            time.sleep(max(args.settle, 0.15))
            behind[key].append(time.process_time() - c0)

    for name, seconds in (("wall clock", wall), ("process CPU time", cpu)):
        total = {key: sum(value) for key, value in seconds.items()}
        frames = frames_per_loop * args.rounds
        fps = {key: frames / value for key, value in total.items()}
        print(f"-- frames/s by {name}")
        print(f"(a) decord get_batch (sorted)               {fps['raw']:8.0f}")
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
