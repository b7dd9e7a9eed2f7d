"""Contrastive losses (CLIP InfoNCE, FG-CLIP region and hard-negative losses) that contrast against the global batch.

Under torch.distributed every rank gathers every rank's features and computes the same loss over the whole global
batch (open_clip's `gather_features` with `local_loss=False`). The rows a rank computed itself carry the gradient,
multiplied by the world size: the other ranks compute the same loss and their gradient for these rows is identical,
so after DDP/DeepSpeed average the gradients every parameter receives exactly the gradient of the global-batch loss,
as one process holding the whole batch would (open_clip gets the same from an all_gather with gradient). Logit
scales are used whole on every rank and need no correction. Without an initialised process group (or with
`gather=False`) everything is local.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; the gradient is multiplied by `scale` (see the module docstring)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad * ctx.scale, None


def gather_features(features: torch.Tensor, gather: bool = True) -> tuple[torch.Tensor, int]:
    """Concatenates every rank's `features` (N_r, ...) in rank order; ranks may hold different N_r (0 included).

    Returns (all_features, offset): the local rows are `all_features[offset : offset + N_local]` and are the only
    ones carrying gradient (scaled by the world size, see the module docstring). Every rank must call this the same
    number of times. Without distributed (or `gather=False`) returns (features, 0).
    """
    rank, world = _world()
    if not gather or world == 1:
        return features, 0
    local_n = torch.tensor([features.shape[0]], device=features.device, dtype=torch.long)
    sizes = [torch.zeros_like(local_n) for _ in range(world)]
    dist.all_gather(sizes, local_n)
    sizes = [int(s.item()) for s in sizes]
    max_n = max(sizes)
    padded = features.detach().new_zeros((max_n, *features.shape[1:]))
    padded[: features.shape[0]] = features.detach()
    buffers = [torch.zeros_like(padded) for _ in range(world)]
    dist.all_gather(buffers, padded.contiguous())
    parts = [buffer[:n] for buffer, n in zip(buffers, sizes)]
    parts[rank] = _ScaleGrad.apply(features, float(world))
    return torch.cat(parts, dim=0), sum(sizes[:rank])


def _zero_like_graph(*tensors: torch.Tensor) -> torch.Tensor:
    """A scalar 0 connected to every input, so that an empty loss part still reaches its parameters (DDP)."""
    return sum(t.sum() for t in tensors) * 0.0


def clip_contrastive_loss(
    a: torch.Tensor,
    b: torch.Tensor,
    logit_scale: torch.Tensor,
    gather: bool = True,
) -> torch.Tensor:
    """Symmetric InfoNCE of CLIP: row i of `a` matches row i of `b`, every other row of the global batch is a negative.

    Args:
        a, b: (N, D) paired features (L2-normalised here).
        logit_scale: the multiplier exp(t) of the cosine similarities (a scalar tensor, as open_clip passes it).
        gather: contrast against all ranks' rows (see `gather_features`).

    Returns the mean of the a->b and b->a cross-entropies over the global N rows; 0 (with graph) when the global
    batch is empty.
    """
    if a.shape != b.shape or a.dim() != 2:
        raise ValueError(f"a and b must be (N, D) of the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    a = F.normalize(a.float(), dim=-1)
    b = F.normalize(b.float(), dim=-1)
    all_a, _ = gather_features(a, gather)
    all_b, _ = gather_features(b, gather)
    n = all_a.shape[0]
    if n == 0:
        return _zero_like_graph(a, b, logit_scale)
    logits = logit_scale.float() * all_a @ all_b.t()
    labels = torch.arange(n, device=logits.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2


def hard_negative_loss(
    anchors: torch.Tensor,
    positives: torch.Tensor,
    negatives: torch.Tensor,
    logit_scale: torch.Tensor,
    gather: bool = True,
) -> torch.Tensor:
    """FG-CLIP's hard-negative loss: each anchor picks its positive among (1 + K) texts (its positive, K negatives).

    Args:
        anchors: (N, D) region features; positives: (N, D) their captions; negatives: (N, K, D) hard negatives.
        logit_scale: multiplier exp(t) (FG-CLIP's own `logit_scale_hardneg`).
        gather: under torch.distributed the mean is taken over the global number of anchors (an all-reduce of the
            count), so that the gradient averaged by DDP equals the single-process one; the returned value is then
            this rank's share (sum of local terms x world / global count), whose mean over ranks is the global mean.

    Returns the mean cross-entropy with target 0; 0 (with graph) when there is no anchor anywhere.
    """
    if anchors.dim() != 2 or positives.shape != anchors.shape or negatives.dim() != 3:
        raise ValueError("anchors/positives must be (N, D) and negatives (N, K, D)")
    if negatives.shape[0] != anchors.shape[0] or negatives.shape[2] != anchors.shape[1]:
        raise ValueError(f"negatives {tuple(negatives.shape)} do not match anchors {tuple(anchors.shape)}")
    anchors = F.normalize(anchors.float(), dim=-1)
    texts = F.normalize(torch.cat([positives.float()[:, None], negatives.float()], dim=1), dim=-1)
    logits = logit_scale.float() * torch.einsum("nd,nkd->nk", anchors, texts)
    if logits.shape[0]:
        targets = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
        local_sum = F.cross_entropy(logits, targets, reduction="sum")
    else:
        local_sum = _zero_like_graph(anchors, texts, logit_scale)
    _, world = _world()
    count = torch.tensor(float(anchors.shape[0]), device=anchors.device)
    if gather and world > 1:
        dist.all_reduce(count)
        return local_sum * world / count.clamp(min=1.0)
    return local_sum / count.clamp(min=1.0)


def fgclip_losses(
    video_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    logit_scales: dict[str, torch.Tensor],
    weights: dict[str, float],
    region_embeds: torch.Tensor | None = None,
    region_text_embeds: torch.Tensor | None = None,
    negative_anchor_embeds: torch.Tensor | None = None,
    negative_positive_embeds: torch.Tensor | None = None,
    negative_text_embeds: torch.Tensor | None = None,
    short_text_embeds: torch.Tensor | None = None,
    gather: bool = True,
) -> dict[str, torch.Tensor]:
    """The FG-CLIP training objective, as named parts and their weighted sum.

    Args:
        video_embeds, text_embeds: (B, D) clip embeddings and their global (long) captions.
        short_text_embeds: (B, D) the short captions (FG-CLIP's second global term, same temperature); None: none.
        logit_scales: multipliers {"global", "region", "hard_negative"} (each already exp'd).
        weights: {"global", "short_global", "region", "hard_negative"} loss weights.
        region_embeds, region_text_embeds: (N, D) the valid regions of the local batch and their captions; None
            when the batch has no region inputs.
        negative_anchor_embeds, negative_positive_embeds, negative_text_embeds: (M, D), (M, D), (M, K, D) for the
            regions with hard negatives; None when the batch has none.

    Returns {"loss", "global_loss", "short_global_loss", "region_loss", "hard_negative_loss"}; a part whose inputs are
    None is 0 (still connected to its logit scale; the task refuses to train with a weight > 0 on a part no data
    feeds).
    """
    if gather and _world()[1] > 1:
        # Every rank must run the same collectives: a rank whose local batch has no regions (or no hard negatives)
        # while another has some contributes an empty set instead of skipping the part (a skipped gather on one
        # rank pairs the others' gather with the next collective, DDP's gradient all-reduce, and gloo aborts).
        empty = video_embeds.new_zeros(0, video_embeds.shape[-1])
        if region_embeds is None:
            region_embeds, region_text_embeds = empty, empty
        if negative_anchor_embeds is None:
            negative_anchor_embeds, negative_positive_embeds = empty, empty
            negative_text_embeds = empty[:, None]
    parts = {"global_loss": clip_contrastive_loss(video_embeds, text_embeds, logit_scales["global"], gather)}
    if short_text_embeds is not None:
        parts["short_global_loss"] = clip_contrastive_loss(video_embeds, short_text_embeds, logit_scales["global"],
                                                           gather)
    else:
        parts["short_global_loss"] = logit_scales["global"] * 0.0
    if region_embeds is not None:
        parts["region_loss"] = clip_contrastive_loss(region_embeds, region_text_embeds, logit_scales["region"], gather)
    else:
        parts["region_loss"] = logit_scales["region"] * 0.0
    if negative_anchor_embeds is not None:
        parts["hard_negative_loss"] = hard_negative_loss(
            negative_anchor_embeds, negative_positive_embeds, negative_text_embeds, logit_scales["hard_negative"],
            gather,
        )
    else:
        parts["hard_negative_loss"] = logit_scales["hard_negative"] * 0.0
    parts["loss"] = (
        weights["global"] * parts["global_loss"]
        + weights.get("short_global", 0.0) * parts["short_global_loss"]
        + weights["region"] * parts["region_loss"]
        + weights["hard_negative"] * parts["hard_negative_loss"]
    )
    return parts


__all__ = ["clip_contrastive_loss", "fgclip_losses", "gather_features", "hard_negative_loss"]
