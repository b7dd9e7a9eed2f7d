"""Training-step time, evaluation windows/s and peak memory of the AdaTAD THUMOS model (VideoMAE-S dims, random weights).

On a GPU this measures the real recipe shape (768 x 160 px, batch 8, fp16, activation checkpointing; the reference run
reports 12.2 GB at batch 8). On a CPU pass a smaller --window/--batch to get figures in minutes. Prints figures only.

    python scripts/bench_adatad_step.py                       # GPU: recipe shape
    python scripts/bench_adatad_step.py --window 64 --batch 1 --steps 2 --eval-batches 2   # CPU smoke figures
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from hf_vtrain.models.adatad import AdaTADConfig, AdaTADForActionDetection
from hf_vtrain.trainers.arguments import VTrainingArguments
from hf_vtrain.trainers.optimization import assign_param_groups, build_optimizer_groups


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=int, default=768)
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5, help="timed training steps (after 1 warm-up step)")
    parser.add_argument("--eval-batches", type=int, default=5)
    parser.add_argument("--precision", choices=["fp16", "bf16", "fp32"], default="fp16")
    parser.add_argument("--no-checkpointing", action="store_true")
    args = parser.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": None}[args.precision]
    if device.type == "cpu" and dtype is torch.float16:
        dtype = None  # fp16 autocast is a GPU feature; CPU figures are fp32
    config = AdaTADConfig(window_size=args.window, num_labels=20)
    config.backbone_config.image_size = args.size
    model = AdaTADForActionDetection(config).to(device)
    if not args.no_checkpointing:
        model.activation_checkpointing_enable()
    targs = VTrainingArguments(output_dir="/tmp/bench_adatad", learning_rate=1e-4, weight_decay=0.05,
                               param_groups=[{"name": "backbone", "patterns": ["^videomae\\."], "lr": 0},
                                             {"name": "adapters", "patterns": ["^adapters\\."], "lr": 2e-4}],
                               use_cpu=device.type == "cpu", report_to="none")
    table = assign_param_groups(model, targs)
    optimizer = torch.optim.AdamW(build_optimizer_groups(table, targs))
    scaler = torch.amp.GradScaler(device.type, enabled=dtype is torch.float16)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    adapters = sum(p.numel() for n, p in model.named_parameters() if n.startswith("adapters."))

    g = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (args.batch, args.window, 3, args.size, args.size), dtype=torch.uint8, generator=g)
    batch = {
        "pixel_values": pixels.to(device),
        "pixel_mask": torch.ones(args.batch, args.window, dtype=torch.bool, device=device),
        "class_labels": torch.tensor([[3, 7]] * args.batch, device=device),
        "segment_labels": torch.tensor([[[10.0, 60.0], [args.window * 0.5, args.window * 0.7]]] * args.batch,
                                       device=device),
    }

    def autocast():
        return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)

    def step():
        with autocast():
            loss = model(**batch).loss
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    model.train()
    step()
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync()
    train_time = (time.perf_counter() - start) / args.steps
    train_peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None

    model.eval()
    eval_batch = {k: v for k, v in batch.items() if k.startswith("pixel")}
    with torch.no_grad(), autocast():
        model(**eval_batch)
        sync()
        start = time.perf_counter()
        for _ in range(args.eval_batches):
            model(**eval_batch)
        sync()
    eval_rate = args.eval_batches * args.batch / (time.perf_counter() - start)

    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    print(f"device: {name}; window {args.window} x {args.size}px, batch {args.batch}, "
          f"precision {args.precision if dtype is not None else 'fp32'}, "
          f"activation checkpointing {'off' if args.no_checkpointing else 'on'}")
    print(f"trainable parameters: {trainable:,} (adapters {adapters:,}); backbone frozen")
    print(f"training: {train_time:.3f} s/step ({args.batch / train_time:.2f} windows/s)")
    print(f"evaluation: {eval_rate:.2f} windows/s")
    if train_peak is not None:
        print(f"peak GPU memory (training): {train_peak:.2f} GiB  (reference run: 12.2 GB at batch 8)")
    else:
        print(f"peak process RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")


if __name__ == "__main__":
    main()
