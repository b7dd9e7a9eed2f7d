"""Focal and 1D DIoU losses against hand-computed values."""

import math

import pytest
import torch

from hf_vtrain.models.adatad.losses_adatad import diou_loss_1d, sigmoid_focal_loss


def test_focal_loss_hand_values():
    logits = torch.tensor([0.0, 0.0, math.log(3.0)])  # p = 0.5, 0.5, 0.75
    targets = torch.tensor([1.0, 0.0, 1.0])
    expected = [
        0.25 * 0.5**2 * math.log(2.0),  # positive: alpha * (1 - p)^2 * -log p
        0.75 * 0.5**2 * math.log(2.0),  # negative: (1 - alpha) * p^2 * -log(1 - p)
        0.25 * 0.25**2 * -math.log(0.75),
    ]
    loss = sigmoid_focal_loss(logits, targets, reduction="none")
    torch.testing.assert_close(loss, torch.tensor(expected), rtol=1e-6, atol=1e-8)
    assert sigmoid_focal_loss(logits, targets).item() == pytest.approx(sum(expected), rel=1e-6)
    assert sigmoid_focal_loss(logits, targets, reduction="mean").item() == pytest.approx(sum(expected) / 3, rel=1e-6)


def test_focal_loss_without_alpha_and_gamma_is_bce():
    logits = torch.tensor([[-1.5, 0.3], [2.0, -0.2]])
    targets = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="sum")
    assert sigmoid_focal_loss(logits, targets, alpha=-1, gamma=0.0).item() == pytest.approx(bce.item(), rel=1e-6)


def test_diou_loss_hand_values():
    # pred [-2, 2] vs target [-1, 3]: IoU 3/5, centres 0 and 1, enclosing length 5 -> 1 - 0.6 + 0.04.
    # pred [0, 4] vs target [-2, 2]: IoU 2/6, centres 2 and 0, enclosing 6 -> 1 - 1/3 + 1/9.
    pred = torch.tensor([[2.0, 2.0], [0.0, 4.0], [3.0, 5.0]])
    target = torch.tensor([[1.0, 3.0], [2.0, 2.0], [3.0, 5.0]])
    loss = diou_loss_1d(pred, target, reduction="none")
    torch.testing.assert_close(loss, torch.tensor([0.44, 1 - 1 / 3 + 1 / 9, 0.0]), rtol=1e-6, atol=1e-7)
    assert diou_loss_1d(pred, target).item() == pytest.approx(0.44 + 1 - 1 / 3 + 1 / 9, rel=1e-6)


def test_diou_loss_scale_invariant_and_empty():
    pred = torch.tensor([[1.0, 7.0], [0.5, 0.5]])
    target = torch.tensor([[2.0, 3.0], [1.0, 4.0]])
    torch.testing.assert_close(diou_loss_1d(pred, target), diou_loss_1d(pred * 8, target * 8))
    empty = torch.zeros(0, 2, requires_grad=True)
    assert diou_loss_1d(empty, empty).item() == 0.0
    assert diou_loss_1d(empty, empty, reduction="mean").item() == 0.0
