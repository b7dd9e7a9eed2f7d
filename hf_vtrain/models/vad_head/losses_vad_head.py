"""Top-k multiple-instance learning on video-level labels (the weakly supervised anomaly-detection loss of
Sultani et al. as VadCLIP uses it): a video is a bag of snippets; its logit is the mean of its k highest snippet
logits, k = floor(length / k_divisor) + 1 (at most the length), and the bag logit meets the video label (1: anomalous,
0: normal) in a binary cross-entropy. A normal video pushes its highest snippets down, an anomalous one pulls its
highest up; padding never counts. Ties among snippet logits do not change the loss (the mean of the top k is the same
whichever of the equal snippets is taken)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def topk_counts(lengths: torch.Tensor, k_divisor: int) -> torch.Tensor:
    """k per video: floor(length / k_divisor) + 1, at most the length (VadCLIP: int(length / 16 + 1))."""
    return torch.minimum(lengths // int(k_divisor) + 1, lengths).clamp(min=1)


def topk_bag_logits(snippet_logits: torch.Tensor, mask: torch.Tensor, k_divisor: int = 16) -> torch.Tensor:
    """(B,) the mean of each video's k highest snippet logits over its real snippets (`mask` (B, T) bool)."""
    if snippet_logits.shape != mask.shape:
        raise ValueError(f"snippet logits {tuple(snippet_logits.shape)} and mask {tuple(mask.shape)} differ")
    lengths = mask.sum(dim=1)
    if bool((lengths == 0).any()):
        raise ValueError("a video without snippets has no bag logit")
    k = topk_counts(lengths, k_divisor)
    ranked = snippet_logits.float().masked_fill(~mask, float("-inf")).sort(dim=1, descending=True).values
    take = torch.arange(ranked.shape[1], device=ranked.device)[None, :] < k[:, None]
    return torch.where(take, ranked, torch.zeros_like(ranked)).sum(dim=1) / k.to(ranked.dtype)


def topk_mil_loss(snippet_logits: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor,
                  k_divisor: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, bag logits): the mean over videos of BCE(sigmoid(bag logit), label)."""
    bags = topk_bag_logits(snippet_logits, mask, k_divisor)
    return F.binary_cross_entropy_with_logits(bags, labels.to(bags.dtype)), bags


def topk_align_loss(class_logits: torch.Tensor, mask: torch.Tensor, class_labels: torch.Tensor,
                    k_divisor: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """VadCLIP's MIL-Align: (B, T, C) snippet-to-class logits; per class the mean of its k highest snippets (k as
    in topk_counts, over real snippets), then cross-entropy over the classes with the video's class. Returns (loss,
    (B, C) bag class logits)."""
    batch, length, classes = class_logits.shape
    flat = class_logits.permute(0, 2, 1).reshape(batch * classes, length)
    bags = topk_bag_logits(flat, mask.repeat_interleave(classes, dim=0), k_divisor).view(batch, classes)
    return F.cross_entropy(bags, class_labels.long()), bags
