"""Loss functions shared by the models: dense-detection classification and 1D segment regression.

Each function takes plain tensors and a `reduction`; models combine them and return the named parts.
"""

import torch
import torch.nn.functional as F


def _reduce(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        # An empty selection (no positives) gives 0 with a graph, not NaN.
        return loss.mean() if loss.numel() > 0 else loss.sum() * 0.0
    if reduction == "none":
        return loss
    raise ValueError(f"reduction must be 'none', 'mean' or 'sum', got {reduction!r}")


def sigmoid_focal_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    alpha: float = 0.25,
    gamma: float = 2.0,
    reduction: str = "sum",
) -> torch.Tensor:
    """Sigmoid focal loss (RetinaNet, Lin et al. 2017), elementwise over any shape.

    loss = alpha_t * (1 - p_t) ** gamma * BCE(logits, targets), with p_t = p if target = 1 else 1 - p and
    alpha_t = alpha for positives, 1 - alpha for negatives (alpha < 0 disables the weighting). Targets may be soft
    (0..1). Computed in float32 so that fp16 autocast does not underflow the modulating factor.
    """
    logits = logits.float()
    targets = targets.float()
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return _reduce(loss, reduction)


def diou_loss_1d(
    pred: torch.Tensor,
    target: torch.Tensor,
    reduction: str = "sum",
    eps: float = 1e-8,
) -> torch.Tensor:
    """Distance-IoU loss for 1D segments given as (left, right) distances from the same anchor point.

    pred, target: (N, 2) non-negative distances. With segments [-l, r] around the shared point:
    loss = 1 - IoU + (centre distance / enclosing length) ** 2. Scale-invariant, so offsets may be in frames or
    in stride units. Matches ActionFormer's ctr_diou_loss_1d and OpenTAD's DIOULoss on the decoded segments.
    """
    pred = pred.float()
    target = target.float()
    lp, rp = pred[:, 0], pred[:, 1]
    lg, rg = target[:, 0], target[:, 1]
    intersection = torch.minimum(lp, lg) + torch.minimum(rp, rg)
    union = (lp + rp) + (lg + rg) - intersection
    iou = intersection / union.clamp(min=eps)
    enclosing = torch.maximum(lp, lg) + torch.maximum(rp, rg)
    centre_distance = 0.5 * ((rp - lp) - (rg - lg))
    loss = 1.0 - iou + (centre_distance / enclosing.clamp(min=eps)) ** 2
    return _reduce(loss, reduction)
