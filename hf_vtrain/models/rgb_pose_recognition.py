"""What the RGB + pose action recognisers (EPAM-Net, RGBPoseConv3D) share: their output, the RGB input normalisation,
the per-stream losses and the train accuracy of a batch, and the MMAction2 initialisation of their layers."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.utils import ModelOutput


@dataclass
class RGBPoseRecognitionOutput(ModelOutput):
    """loss: the (weighted) sum of each present stream's cross-entropy; logits: what the model predicts (one stream's
    logits, or the sum of the two streams'); rgb_logits, pose_logits; batch_metrics: top1_acc (percent, as the
    evaluation's) of the batch, with labels: the curves' train accuracy."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    rgb_logits: torch.Tensor | None = None
    pose_logits: torch.Tensor | None = None
    rgb_loss: torch.Tensor | None = None
    pose_loss: torch.Tensor | None = None
    batch_metrics: dict | None = None


def normalized_rgb(pixel_values: torch.Tensor, mean, std) -> torch.Tensor:
    """(B, T, 3, H, W) uint8 frames (or floats on the 0-255 scale) to (B, 3, T, H, W), / 255, normalised. Read from
    the config at each call: a non-persistent buffer would be left uninitialised by from_pretrained."""
    x = pixel_values.permute(0, 2, 1, 3, 4).float() / 255.0
    mean = torch.tensor(mean, device=x.device).view(1, 3, 1, 1, 1)
    std = torch.tensor(std, device=x.device).view(1, 3, 1, 1, 1)
    return (x - mean) / std


def recognition_output(rgb_logits: torch.Tensor | None, pose_logits: torch.Tensor | None,
                       labels: torch.Tensor | None, loss_weights=(1.0, 1.0)) -> RGBPoseRecognitionOutput:
    present = [t for t in (rgb_logits, pose_logits) if t is not None]
    logits = present[0] if len(present) == 1 else present[0] + present[1]
    out = RGBPoseRecognitionOutput(logits=logits, rgb_logits=rgb_logits, pose_logits=pose_logits)
    if labels is not None:
        if rgb_logits is not None:
            out.rgb_loss = F.cross_entropy(rgb_logits.float(), labels)
        if pose_logits is not None:
            out.pose_loss = F.cross_entropy(pose_logits.float(), labels)
        out.loss = sum(w * t for w, t in zip(loss_weights, (out.rgb_loss, out.pose_loss)) if t is not None)
        out.batch_metrics = {"top1_acc": 100 * (logits.argmax(dim=-1) == labels).float().mean().detach()}
    return out


@torch.no_grad()
def init_recognition_layer(module: nn.Module, init_std: float) -> None:
    """MMAction2's initialisation: kaiming normal (fan_out, ReLU) 3D convolutions, BatchNorm to 1 / 0 with fresh
    statistics, N(0, init_std) linear layers with zero bias. transformers skips tensors loaded from a checkpoint."""
    if isinstance(module, nn.Conv3d):
        init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        if module.bias is not None:
            init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm3d):
        init.ones_(module.weight)
        init.zeros_(module.bias)
        if getattr(module, "running_mean", None) is not None:
            init.zeros_(module.running_mean)
            init.ones_(module.running_var)
            init.zeros_(module.num_batches_tracked)
    elif isinstance(module, nn.Linear):
        init.normal_(module.weight, std=init_std)
        if module.bias is not None:
            init.zeros_(module.bias)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = ["count_parameters", "RGBPoseRecognitionOutput", "init_recognition_layer", "normalized_rgb", "recognition_output"]
