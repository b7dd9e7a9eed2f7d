"""Run a trained model on videos: `python -m hf_vtrain.predict --model X VIDEO_OR_FOLDER [...] --output OUT`.

X is a run folder, a `checkpoint-N` folder or a store repo id (HF_ENDPOINT); its `preprocessing_config.json` names
the task and how frames are read, so no recipe is needed. The task's predictor (`TaskSpec.predictor`, in
hf_vtrain/tasks/<task>.py) reads each video as that task's evaluation does (sliding windows, snippets), at any
resolution, frame rate and length, and writes its files as soon as the video is done; `predict_summary.json` lists
every video, its figures and files, and those that failed. A file that cannot be decoded is named and skipped, the
others go on, and the command ends with status 2 (hf_vtrain.exit_codes) when any video failed.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import time
from typing import Sequence

from . import __version__
from .exit_codes import BAD_INPUT, OK
from .parser import RecipeError

logger = logging.getLogger("hf_vtrain")

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts")
SUMMARY_NAME = "predict_summary.json"


def build_parser(task_names: Sequence[str]) -> argparse.ArgumentParser:
    from .tasks import get_task

    parser = argparse.ArgumentParser(
        prog="python -m hf_vtrain.predict",
        description="Run a trained hf_vtrain model (run folder, checkpoint-N folder or store repo id) on videos; no "
                    "recipe needed. Files per video appear in --output as each video is done.",
    )
    parser.add_argument("videos", nargs="+", metavar="VIDEO_OR_FOLDER",
                        help=f"video files, or folders searched recursively for {', '.join(VIDEO_EXTENSIONS)}")
    parser.add_argument("--model", required=True,
                        help="a run folder, a checkpoint-N folder, or a store repo id owner/name (HF_ENDPOINT)")
    parser.add_argument("--output", required=True, help="folder for the results (created)")
    parser.add_argument("--weights", choices=("ema", "raw"), default="ema",
                        help="the folder's ema/ weights where it has them (default), or its raw weights")
    parser.add_argument("--revision", default=None, help="store revision (branch, tag or commit) of a repo id")
    parser.add_argument("--allow_pickled_weights", action="store_true",
                        help="load a model whose weights are only pickled (pytorch_model.bin): only from a source you "
                             "trust, unpickling can run code from the file")
    parser.add_argument("--device", default="auto", help="auto (the GPU when there is one), cpu, cuda, cuda:N")
    parser.add_argument("--precision", choices=("auto", "fp32", "fp16", "bf16"), default="auto",
                        help="autocast dtype; auto: fp16 on a GPU, fp32 on the CPU")
    parser.add_argument("--batch_size", type=int, default=None,
                        help="per forward: tad, windows (default 1); vad, windows of score_window_frames snippets "
                             "(default 32: a video up to 32 windows long in one piece, as evaluation "
                             "scores it; pieces agree to float rounding)")
    parser.add_argument("--decode_threads", type=int, default=1, help="decord threads (default 1)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="tad: segments with this score or more go into the .srt and timeline (default 0.3); "
                             "vad: the line on the score plot, and the count reported (default 0.5)")
    parser.add_argument("--skip_existing", action="store_true",
                        help="leave out videos whose result file is already in --output (continue a long batch)")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    for name in task_names:
        predictor = get_task(name).predictor
        if predictor is not None:
            predictor.add_arguments(parser.add_argument_group(f"task {name}"))
    return parser


def is_frame_folder(path: str) -> bool:
    """A folder holding image frames directly and no video: one input (a sequence of frames, e.g. FRED's RGB/)."""
    from .data.common import IMAGE_EXTENSIONS

    if not os.path.isdir(path):
        return False
    names = [n.lower() for n in os.listdir(path)]
    return any(n.endswith(IMAGE_EXTENSIONS) for n in names) and not any(n.endswith(VIDEO_EXTENSIONS) for n in names)


def _frame_folder_ids(folders: list[str]) -> dict[str, str]:
    """Ids of frame folders: their paths after the part all of them share, joined by "_" (1/RGB and 4/RGB become
    1_RGB and 4_RGB); one folder alone: its name."""
    parts = [os.path.normpath(os.path.abspath(f)).split(os.sep) for f in folders]
    common = 0
    while len(parts) > 1 and all(len(p) > common + 1 and p[common] == parts[0][common] for p in parts):
        common += 1
    return {f: "_".join(p[common:]) if len(parts) > 1 else p[-1] for f, p in zip(folders, parts)}


def find_videos(inputs: Sequence[str]) -> list[tuple[str, str]]:
    """(video id, path) of every input, folders searched recursively, in the order given (files of a folder sorted);
    a folder holding image frames and no video is one input of frames (for the tasks that read frames). A missing
    path, a folder without videos or frames, or two inputs with one id (file name without extension) is one
    RecipeError."""
    from .data.common import IMAGE_EXTENSIONS

    found: list[str] = []
    for item in inputs:
        if is_frame_folder(item):
            found.append(item)
        elif os.path.isdir(item):
            inside = sorted(os.path.join(root, name) for root, _, names in os.walk(item) for name in names
                            if name.lower().endswith(VIDEO_EXTENSIONS))
            if not inside:
                raise RecipeError(f"{item}: a folder with no video file ({', '.join(VIDEO_EXTENSIONS)}) and no "
                                  f"image frames ({', '.join(IMAGE_EXTENSIONS)})")
            found += inside
        elif os.path.isfile(item):
            found.append(item)
        else:
            raise RecipeError(f"{item}: no such file or folder")
    frame_ids = _frame_folder_ids([p for p in dict.fromkeys(found) if os.path.isdir(p)])
    seen: dict[str, str] = {}
    videos = []
    for path in dict.fromkeys(found):  # a file named twice runs once
        video_id = frame_ids[path] if path in frame_ids else os.path.splitext(os.path.basename(path))[0]
        if video_id in seen:
            raise RecipeError(f"{seen[video_id]} and {path} have the same name {video_id!r}, which names their result "
                              f"files; predict them into different --output folders")
        seen[video_id] = path
        videos.append((video_id, path))
    return videos


def make_runtime(args):
    import torch

    from .tasks.common import PredictRuntime

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(device)
    except (RuntimeError, ValueError):
        raise RecipeError(f"--device: {args.device!r} is not a device (auto, cpu, cuda, cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RecipeError(f"--device {args.device}: no GPU is visible here; use --device cpu (or auto)")
    precision = args.precision if args.precision != "auto" else ("fp16" if device.type == "cuda" else "fp32")
    if precision == "fp16" and device.type == "cpu":
        raise RecipeError("--precision fp16 needs a GPU; on the CPU use fp32 or bf16")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise RecipeError("--precision bf16: this GPU has no bf16; use fp16")
    dtype = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    for key in ("batch_size", "decode_threads"):
        if getattr(args, key) is not None and getattr(args, key) < 1:
            raise RecipeError(f"--{key} must be >= 1, got {getattr(args, key)}")
    return PredictRuntime(device=device, dtype=dtype, batch_size=args.batch_size, decode_threads=args.decode_threads,
                          threshold=args.threshold), precision


def main(argv: Sequence[str] | None = None) -> int:
    from .data.common import write_json_atomic
    from .data.video_io import VideoDecodeError
    from .model_folders import read_preprocessing_config, resolve_model_folder
    from .tasks import TASKS, get_task

    args = build_parser(list(TASKS)).parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    videos = find_videos(args.videos)  # a typo in a path ends here, before any weight is loaded
    runtime, precision = make_runtime(args)
    folder, kind, _ = resolve_model_folder(args.model, args.weights, key="--model", token=os.environ.get("HF_TOKEN"),
                                           revision=args.revision,
                                           pickle_flag=None if args.allow_pickled_weights else "--allow_pickled_weights")
    preprocessing = read_preprocessing_config(folder, args.model)
    spec = get_task(preprocessing["task"])
    if spec.predictor is None:
        raise RecipeError(f"task {preprocessing['task']} has no predict yet")
    if runtime.batch_size is None:
        runtime = dataclasses.replace(runtime, batch_size=spec.predictor.default_batch_size)
    started = time.perf_counter()
    predictor = spec.predictor(folder, preprocessing, args, runtime)
    load_seconds = time.perf_counter() - started
    out_dir = args.output
    os.makedirs(out_dir, exist_ok=True)
    print(f"{args.model} ({kind} weights, task {preprocessing['task']}) on {runtime.device} {precision}: "
          f"{predictor.describe()}", file=sys.stderr)

    summary = {"hf_vtrain_version": __version__, "model": args.model, "weights": kind, "folder": folder,
               "task": preprocessing["task"], "preprocessing": preprocessing, "device": str(runtime.device),
               "precision": precision, "batch_size": runtime.batch_size, "model_load_seconds": load_seconds,
               "videos": [], "failed": [], "skipped": []}
    summary_path = os.path.join(out_dir, SUMMARY_NAME)

    def fail(video_id: str, path: str, err: Exception) -> None:
        print(f"error: {err}", file=sys.stderr)
        summary["failed"].append({"video_id": video_id, "path": path, "error": str(err)})

    plans, skipped = [], {}
    for video_id, path in videos:
        if args.skip_existing and _done(out_dir, video_id, predictor):
            summary["skipped"].append({"video_id": video_id, "path": path})
            skipped[video_id] = predictor.read(out_dir, video_id)  # for the combined file
            continue
        try:
            plans.append(predictor.plan(path, video_id))
        except VideoDecodeError as err:
            fail(video_id, path, err)
    total = sum(plan.units for plan in plans)
    results = {}
    from tqdm.auto import tqdm

    with tqdm(total=total, unit=predictor.unit, disable=args.no_progress, file=sys.stderr, dynamic_ncols=True) as bar:
        for plan in plans:
            bar.set_description(plan.video_id[:24])
            done_before = bar.n
            clock = time.perf_counter()
            try:
                result = predictor.run(plan, bar.update)
            except VideoDecodeError as err:
                bar.update(plan.units - (bar.n - done_before))
                fail(plan.video_id, plan.path, err)
                continue
            seconds = time.perf_counter() - clock
            files, line = predictor.write(plan, result, out_dir)
            results[plan.video_id] = result
            summary["videos"].append({
                "video_id": plan.video_id, "path": plan.path, "num_frames": plan.num_frames, "fps": plan.fps,
                "duration": plan.duration, "size": [plan.width, plan.height], predictor.unit + "s": plan.units,
                "seconds": seconds, "units_per_second": plan.units / seconds if seconds > 0 else None,
                "files": [os.path.relpath(f, out_dir) for f in files],
            })
            write_json_atomic(summary_path, summary, indent=2)
            bar.write(f"{plan.video_id}: {line} ({plan.duration:.1f} s of video in {seconds:.1f} s) -> "
                      f"{files[0]}", file=sys.stderr)
    combined = {video_id: results.get(video_id, skipped.get(video_id)) for video_id, _ in videos}
    combined = {k: v for k, v in combined.items() if v is not None}
    if combined:
        summary["combined"] = [os.path.relpath(f, out_dir) for f in predictor.write_combined(combined, out_dir)]
    write_json_atomic(summary_path, summary, indent=2)
    failed = summary["failed"]
    done = len(summary["videos"])
    print(f"{done} of {len(videos)} videos predicted into {out_dir}" +
          (f", {len(summary['skipped'])} skipped (results already there)" if summary["skipped"] else ""),
          file=sys.stderr)
    if failed:
        names = "; ".join(f"{f['path']} ({f['error']})" for f in failed)
        print(f"error: {len(failed)} of {len(videos)} videos could not be read and have no result: {names}",
              file=sys.stderr)
        return BAD_INPUT
    return OK


def _done(out_dir: str, video_id: str, predictor) -> bool:
    return os.path.isfile(os.path.join(out_dir, video_id + predictor.result_suffix))


def cli() -> None:
    try:
        status = main()
    except RecipeError as err:
        print(f"error: {err}", file=sys.stderr)
        status = BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted: the videos finished so far have their files", file=sys.stderr)
        status = 130
    sys.exit(status)


if __name__ == "__main__":
    cli()
