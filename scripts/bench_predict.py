"""Benchmark: `python -m hf_vtrain.predict` on a long clip: wall seconds, windows/s and the real-time factor, against
the decoding + resizing of the same windows alone (run first, in the same process: the share the model adds).

    python scripts/bench_predict.py                                   # the demo model, a 60 s 640x360 30 fps clip
    python scripts/bench_predict.py --model outputs/adatad_thumos14_demo --seconds 60 --size 640x360 --fps 30
    python scripts/bench_predict.py --full_config --precision fp16   # AdaTAD VideoMAE-S, 768 x 160, random weights

`--full_config` writes a randomly initialised model of the full THUMOS-14 recipe's size (VideoMAE-S with adapters,
768-frame windows at 160 px, sample stride 4, evaluation stride 384) into a temp folder with its preprocessing
config, and times predict with it: the figure for the real recipe without its weights (the speed does not depend
on the weights). On a GPU it also prints the peak GPU memory.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_video_io import write_video  # noqa: E402

from hf_vtrain import predict as predict_module  # noqa: E402
from hf_vtrain.model_folders import read_preprocessing_config, resolve_model_folder, write_preprocessing_config  # noqa: E402


def full_size_model(folder: str) -> str:
    from hf_vtrain.models.adatad import AdaTADConfig, AdaTADForActionDetection

    config = AdaTADConfig(id2label={i: f"class_{i}" for i in range(20)})
    AdaTADForActionDetection(config).save_pretrained(folder)
    write_preprocessing_config(folder, {"task": "tad", "sample_stride": 4, "window_size": 768,
                                        "eval_window_stride": 384, "eval_resize": 160, "eval_crop": 160})
    return folder


def decode_only(model: str, video: str, batch_size: int) -> tuple[float, int]:
    """The windows predict reads, decoded and resized as it does, without the model."""
    from hf_vtrain.data.thumos14 import EvalWindowTransform, collate_tad, eval_window_starts, num_sampled_frames
    from hf_vtrain.data.video_io import EvalClipTransform, probe_video

    folder, _, _ = resolve_model_folder(model)
    pre = read_preprocessing_config(folder)
    transform = EvalWindowTransform(pre["window_size"], pre["sample_stride"],
                                    clip_transform=EvalClipTransform(pre["eval_resize"], pre["eval_crop"]))
    info = probe_video(video)
    starts = eval_window_starts(num_sampled_frames(info.num_frames, pre["sample_stride"]), pre["window_size"],
                                pre["eval_window_stride"])
    row = {"path": video, "num_frames": info.num_frames, "fps": info.fps, "video_index": 0, "segments": [],
           "labels": []}
    clock = time.perf_counter()
    for i in range(0, len(starts), batch_size):
        collate_tad([transform.transform_row({**row, "window_start": s}) for s in starts[i: i + batch_size]])
    return time.perf_counter() - clock, len(starts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="outputs/adatad_thumos14_demo")
    parser.add_argument("--full_config", action="store_true", help="a random full-size AdaTAD (see above)")
    parser.add_argument("--video", default=None, help="a clip to use instead of the generated one")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--size", default="640x360", help="WIDTHxHEIGHT of the generated clip")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--batch_size", type=int, default=1)
    args = parser.parse_args()

    work = tempfile.mkdtemp(prefix="bench_predict_")
    model = full_size_model(os.path.join(work, "adatad_full")) if args.full_config else args.model
    video = args.video
    if video is None:
        width, height = (int(v) for v in args.size.split("x"))
        video = os.path.join(work, f"clip_{int(args.seconds)}s.mp4")
        write_video(video, height, width, args.fps, args.seconds)
    decode_seconds, windows = decode_only(model, video, args.batch_size)

    out = os.path.join(work, "predictions")
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    clock = time.perf_counter()
    status = predict_module.main(["--model", model, video, "--output", out, "--device", args.device, "--precision",
                                  args.precision, "--batch_size", str(args.batch_size), "--no_progress"])
    wall = time.perf_counter() - clock
    with open(os.path.join(out, predict_module.SUMMARY_NAME)) as handle:
        summary = json.load(handle)
    entry = summary["videos"][0]
    print(f"\nmodel {model} ({'random full-size AdaTAD VideoMAE-S 768x160' if args.full_config else 'as saved'}), "
          f"{summary['device']} {summary['precision']}, batch {summary['batch_size']}, status {status}")
    print(f"clip: {entry['duration']:.1f} s, {entry['size'][0]}x{entry['size'][1]} at {entry['fps']:g} fps, "
          f"{entry['num_frames']} frames, {entry['windows']} windows")
    print(f"wall (model load + probe + windows + post-processing + files): {wall:.2f} s; "
          f"real-time factor {entry['duration'] / wall:.1f}x")
    print(f"windows: {entry['seconds']:.2f} s = {entry['windows'] / entry['seconds']:.2f} windows/s "
          f"(model load {summary['model_load_seconds']:.2f} s)")
    print(f"decode + resize alone: {decode_seconds:.2f} s = {windows / decode_seconds:.2f} windows/s; "
          f"predict / decode-only = {entry['seconds'] / decode_seconds:.2f}")
    if torch.cuda.is_available():
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
