"""Training clips per second of the full-size `har` models at their recipe's clip sizes (EPAM-Net: 16 RGB frames at
224 px and 48 heatmap frames at 56 px, 17 joints; RGBPoseConv3D: 8 at 224 and 32 at 56), random weights and inputs:
forward, backward and an SGD step per batch, after warm-up steps; each model in fp32 and, on a GPU, under bf16 and
fp16 autocast (fp16 with a GradScaler, as the Trainer does). Prints clips/s, seconds per step and the peak memory (GPU:
torch's peak allocation; CPU: the process's peak resident set), and each dtype's clips/s as a ratio to fp32 in the
same process. A figure, not a test.

    python scripts/bench_har_step.py [--models epam,rgbpose_conv3d] [--batch 8] [--steps 5] [--warmup 2]

The recipes' batches: EPAM-Net 8 per GPU (epam_ntu60_xsub_*.yaml), RGBPoseConv3D 6 per GPU
(rgbpose_conv3d_ntu60_xsub.yaml); --batch 0 uses each model's.
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402

from hf_vtrain.tasks.har import MODEL_TYPES, model_classes  # noqa: E402

RECIPE_BATCH = {"epam": 8, "rgbpose_conv3d": 6}


def clip_inputs(config, batch: int, device) -> dict:
    g = torch.Generator().manual_seed(0)
    size, small = config.rgb_image_size, config.pose_image_size
    return {
        "pixel_values": torch.randint(0, 256, (batch, config.rgb_frames, 3, size, size), dtype=torch.uint8,
                                      generator=g).to(device),
        "heatmaps": torch.rand(batch, 17, config.pose_frames, small, small, generator=g).to(device),
        "labels": torch.randint(0, config.num_labels, (batch,), generator=g).to(device),
    }


def peak_memory_gib(device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def bench(model_type: str, batch: int, dtype: str, steps: int, warmup: int, device) -> dict:
    config_class, model_class = model_classes(model_type)
    torch.manual_seed(0)
    model = model_class(config_class()).to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    scaler = torch.amp.GradScaler(device.type) if dtype == "fp16" else None
    autocast = (torch.autocast(device.type, dtype={"bf16": torch.bfloat16, "fp16": torch.float16}[dtype])
                if dtype != "fp32" else contextlib.nullcontext())
    inputs = clip_inputs(model.config, batch, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for step in range(warmup + steps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        with autocast:
            loss = model(**inputs).loss
        if scaler is not None:
            scaler.scale(loss).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 40.0)
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 40.0)
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if step >= warmup:
            times.append(time.perf_counter() - start)
    seconds = sorted(times)[len(times) // 2]
    return {"model": MODEL_TYPES[model_type].name, "dtype": dtype, "batch": batch, "sec_per_step": seconds,
            "clips_per_s": batch / seconds, "peak_gib": peak_memory_gib(device),
            "parameters": sum(p.numel() for p in model.parameters())}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="epam,rgbpose_conv3d")
    parser.add_argument("--batch", type=int, default=0, help="0: each model's recipe batch (8 / 6)")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--dtypes", default=None, help="default: fp32 on a CPU; fp32,bf16,fp16 on a GPU")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtypes = (args.dtypes or ("fp32,bf16,fp16" if device.type == "cuda" else "fp32")).split(",")
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {where}; median of {args.steps} steps after {args.warmup} warm-up steps")
    for model_type in args.models.split(","):
        base = None
        for dtype in dtypes:
            r = bench(model_type, args.batch or RECIPE_BATCH[model_type], dtype, args.steps, args.warmup, device)
            base = base or r["clips_per_s"]
            print(f"{r['model']:14s} {r['parameters'] / 1e6:5.1f} M  {r['dtype']:4s} batch {r['batch']}: "
                  f"{r['clips_per_s']:8.2f} clips/s ({r['sec_per_step']:.3f} s/step, x{r['clips_per_s'] / base:.2f} "
                  f"of fp32), peak {'GPU' if device.type == 'cuda' else 'RSS'} {r['peak_gib']:.2f} GiB", flush=True)
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
