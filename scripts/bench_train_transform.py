"""Benchmark: where TrainClipTransform's time goes, stage by stage, on one decoded window.

    python scripts/bench_train_transform.py --video /tmp/bench_videos/bench_320x180_30fps_30s_seed0.mp4
    python scripts/bench_train_transform.py --video clip.mp4 --clips 120 --frames 192 --stride 4

Decodes one window (--frames at --stride) as the loaders do, then runs the AdaTAD recipes' training transform
(mmaction RandAugment and colour jitter) on it for --clips draws (clip_generator(seed, 0, i)), and prints this thread's
CPU time per output frame: the whole transform, then each stage (the fused crop + resize + planar copy and its
plan where numba's target has AVX-512 VBMI, else torch's resize and the planar copy; each RandAugment
operation averaged over all clips, so that the rows add up, with how many clips drew it and its cost when drawn, the
colour map) and what is left (Python, allocation). The figures of one stage against another come from the same clips,
so they compare where a run-to-run comparison on a shared machine would not; `scripts/bench_video_io.py` gives the
ratio against decoding.
"""

from __future__ import annotations

import argparse
import collections
import time

import torch

from hf_vtrain.data import resize_kernels, train_clip_kernels, video_io
from hf_vtrain.data.video_io import ReaderCache, TrainClipTransform, clip_generator, sample_indices


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", required=True,
                        help="a video file (scripts/bench_video_io.py --video-dir writes some)")
    parser.add_argument("--clips", type=int, default=60, help="transform draws to average over")
    parser.add_argument("--frames", type=int, default=192)
    parser.add_argument("--stride", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)

    transform = TrainClipTransform(rand_augment_style="mmaction", color_jitter_style="mmaction",
                                   rand_augment_seed=args.seed)
    reader = ReaderCache(1, read_ahead=False).get_for(args.video, transform.decode_size)
    clip = reader.get_frames(sample_indices(0, args.frames, args.stride, reader.num_frames)[0])
    transform.mmaction.prepare(transform.crop, transform.crop)

    spent, calls, drawn = collections.defaultdict(float), collections.Counter(), collections.Counter()

    def timed(label, fn):
        def run(*a, **k):
            start = time.thread_time()
            try:
                return fn(*a, **k)
            finally:
                spent[label] += time.thread_time() - start
                calls[label] += 1
        return run

    # stages: the module and class attributes _run_compiled calls, and each drawn operation's compiled form
    fused = resize_kernels.CropResizePlanar
    patched = [(video_io.F, "interpolate", "resize (torch)"), (train_clip_kernels, "planarize", "planar copy"),
               (fused, "run", "crop+resize+planar (fused)"), (fused, "plan", "fused pass's plan"),
               (train_clip_kernels, "color_affine", "colour map")]
    saved = [(owner, name, vars(owner)[name]) for owner, name, _ in patched]
    for (owner, name, label), (_, _, original) in zip(patched, saved):
        if isinstance(original, classmethod):
            setattr(owner, name, classmethod(timed(label, original.__func__)))
        else:
            setattr(owner, name, timed(label, original))
    draw = transform.mmaction.draw

    def draw_timed(height, width, generator):
        ops = draw(height, width, generator)
        for op in ops:
            drawn[op.name] += 1
        return [_Timed(op, timed(f"RandAugment {op.name}", op.compiled)) for op in ops]

    transform.mmaction.draw = draw_timed
    try:
        transform(clip, clip_generator(args.seed, 0, 0))  # warm-up
        spent.clear(), calls.clear(), drawn.clear()
        start = time.thread_time()
        for i in range(args.clips):
            transform(clip, clip_generator(args.seed, 0, i))
        total = time.thread_time() - start
    finally:
        transform.mmaction.draw = draw
        for owner, name, original in saved:
            setattr(owner, name, original)

    frames = args.clips * clip.shape[0]
    height, width = clip.shape[1:3]
    print(f"== {args.video}: window of {clip.shape[0]} frames decoded at {width}x{height}, {args.clips} clips, "
          f"us of this thread's CPU per output frame")
    print(f"{'whole transform':34s} {total / frames * 1e6:7.1f}")
    for label, seconds in sorted(spent.items(), key=lambda kv: -kv[1]):
        line = f"{label:34s} {seconds / frames * 1e6:7.1f}"
        if label.startswith("RandAugment "):
            clips = drawn[label[len("RandAugment "):]]
            line += f"   drawn in {clips} clips, {seconds / (clips * clip.shape[0]) * 1e6:.0f} when drawn"
        print(line)
    print(f"{'rest (Python, allocation)':34s} {(total - sum(spent.values())) / frames * 1e6:7.1f}")


class _Timed:
    """An operation whose compiled form is timed; everything else is the operation's."""

    def __init__(self, op, compiled):
        self._op, self.compiled = op, compiled

    def __getattr__(self, name):
        return getattr(self._op, name)


if __name__ == "__main__":
    main()
