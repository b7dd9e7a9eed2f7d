"""One training step's forward and backward of the full FG-CLIP video recipe's model (recipes/fgclip_ucf.yaml: CLIP
ViT-B/16 sizes, random weights, 256 frames per clip, 4 regions with boxes on every frame, 10 hard negatives each,
248-token captions), with activation checkpointing, under bf16 autocast (CPU, or the GPU when there is one). Prints
the seconds of the forward and of the backward and the peak memory (GPU: torch's peak allocation; CPU: the process's
peak resident set). A figure, not a test.

    python scripts/bench_fgclip_step.py [--frames 256] [--batch 2] [--no-checkpointing] [--dtype bf16|fp32]
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402
from transformers import CLIPConfig  # noqa: E402

from hf_vtrain.models.fgclip_video import FGCLIPVideoConfig, FGCLIPVideoModel  # noqa: E402


def vit_b16_config() -> CLIPConfig:
    """openai/clip-vit-base-patch16's sizes (text 512 x 12 layers, vision 768 x 12 layers, patch 16, 224 px)."""
    return CLIPConfig(
        text_config=dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8,
                         max_position_embeddings=77),
        vision_config=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                           image_size=224, patch_size=16),
        projection_dim=512, logit_scale_init_value=4.6052,
    )


def batch(b: int, frames: int, regions: int, negatives: int, device) -> dict:
    g = torch.Generator().manual_seed(0)

    def ids(*shape):
        x = torch.randint(1000, 40000, shape, generator=g)
        x[..., 0], x[..., -1] = 49406, 49407
        return x.to(device), torch.ones(shape, dtype=torch.long, device=device)

    caption, caption_mask = ids(b, 248)
    short, short_mask = ids(b, 77)
    region, region_mask = ids(b, regions, 77)
    negative, negative_mask = ids(b, regions, negatives, 77)
    boxes = torch.tensor([0.1, 0.1, 0.6, 0.7]).expand(b, regions, frames, 4).contiguous()
    return {
        "pixel_values": torch.randint(0, 256, (b, frames, 3, 224, 224), dtype=torch.uint8, generator=g).to(device),
        "pixel_mask": torch.ones(b, frames, dtype=torch.bool, device=device),
        "input_ids": caption, "attention_mask": caption_mask,
        "short_input_ids": short, "short_attention_mask": short_mask,
        "region_boxes": boxes.to(device), "region_box_mask": torch.ones(b, regions, frames, dtype=torch.bool,
                                                                        device=device),
        "region_mask": torch.ones(b, regions, dtype=torch.bool, device=device),
        "region_input_ids": region, "region_attention_mask": region_mask,
        "negative_input_ids": negative, "negative_attention_mask": negative_mask,
        "negative_mask": torch.ones(b, regions, dtype=torch.bool, device=device),
    }


def peak_memory_gib(device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=256)
    parser.add_argument("--batch", type=int, default=2, help="clips per forward (the recipe's chunk)")
    parser.add_argument("--regions", type=int, default=4)
    parser.add_argument("--negatives", type=int, default=10)
    parser.add_argument("--no-checkpointing", action="store_true")
    parser.add_argument("--dtype", choices=("bf16", "fp32"), default="bf16")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    model = FGCLIPVideoModel(FGCLIPVideoConfig(clip_config=vit_b16_config(), max_frames=max(256, args.frames),
                                               frame_chunk_size=64)).to(device).train()
    if not args.no_checkpointing:
        model.activation_checkpointing_enable()
    params = sum(p.numel() for p in model.parameters())
    inputs = batch(args.batch, args.frames, args.regions, args.negatives, device)
    before = peak_memory_gib(device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.dtype == "bf16")
    start = time.perf_counter()
    with autocast:
        out = model(**inputs)
    forward = time.perf_counter() - start
    start = time.perf_counter()
    out.loss.backward()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    backward = time.perf_counter() - start
    parts = {k: round(float(out[k]), 4) for k in ("global_loss", "short_global_loss", "region_loss",
                                                   "hard_negative_loss")}
    peak = peak_memory_gib(device)
    print(f"FGCLIPVideoModel with CLIP ViT-B/16 sizes ({params / 1e6:.1f} M parameters), {args.batch} clips x "
          f"{args.frames} frames, {args.regions} regions x {args.negatives} negatives, {args.dtype} autocast, "
          f"activation checkpointing {'off' if args.no_checkpointing else 'on'}, on {device} "
          f"({torch.get_num_threads()} threads)")
    print(f"forward {forward:.1f} s, backward {backward:.1f} s; peak memory {peak:.2f} GiB (before the step "
          f"{before:.2f} GiB); loss parts {parts}")
    return {"forward_s": forward, "backward_s": backward, "peak_gib": peak, "parts": parts}


if __name__ == "__main__":
    main()
