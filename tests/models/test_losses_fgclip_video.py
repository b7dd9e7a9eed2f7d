"""Contrastive losses: hand-worked values, normalisation, hard negatives, named parts, and the global-batch gather
(a fake 2-rank world through monkeypatched torch.distributed, and a real 2-process gloo run)."""

import math

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F

from hf_vtrain.models.fgclip_video.losses_fgclip_video import clip_contrastive_loss, fgclip_losses, gather_features, hard_negative_loss
from tests.distributed import spawn_two_ranks


def _ce(logits_row, target):
    return -logits_row[target] + math.log(sum(math.exp(v) for v in logits_row))


def test_clip_contrastive_loss_hand_computed():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    s = 2.0
    # logits a->b = s * a @ b.T = [[2, 1.2], [0, 1.6]]; b->a is its transpose [[2, 0], [1.2, 1.6]].
    a_to_b = [_ce([2.0, 1.2], 0), _ce([0.0, 1.6], 1)]
    b_to_a = [_ce([2.0, 0.0], 0), _ce([1.2, 1.6], 1)]
    expected = (sum(a_to_b) / 2 + sum(b_to_a) / 2) / 2
    loss = clip_contrastive_loss(a, b, torch.tensor(s))
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    # Features are normalised inside: scaling rows changes nothing.
    scaled = clip_contrastive_loss(a * torch.tensor([[3.0], [0.5]]), b * 7.0, torch.tensor(s))
    assert scaled.item() == pytest.approx(expected, abs=1e-6)


def test_clip_contrastive_loss_empty_is_zero_with_graph():
    scale = torch.tensor(5.0, requires_grad=True)
    a = torch.zeros(0, 4, requires_grad=True)
    loss = clip_contrastive_loss(a, torch.zeros(0, 4), scale)
    assert loss.item() == 0.0
    loss.backward()
    assert scale.grad is not None and scale.grad.item() == 0.0


def test_hard_negative_loss_hand_computed():
    anchors = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    positives = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    negatives = torch.tensor([[[0.0, 1.0], [-1.0, 0.0]], [[0.0, 1.0], [1.0, 0.0]]])
    s = 3.0
    # Row 0: cosines [1, 0, -1]; row 1: [1, 1, 0] (a negative identical to the positive).
    expected = (_ce([3.0, 0.0, -3.0], 0) + _ce([3.0, 3.0, 0.0], 0)) / 2
    loss = hard_negative_loss(anchors, positives, negatives, torch.tensor(s))
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    empty = hard_negative_loss(torch.zeros(0, 2), torch.zeros(0, 2), torch.zeros(0, 2, 2), torch.tensor(s))
    assert empty.item() == 0.0


def test_fgclip_losses_named_parts_and_weighted_total():
    torch.manual_seed(0)
    v, t, r, rt = torch.randn(3, 8), torch.randn(3, 8), torch.randn(5, 8), torch.randn(5, 8)
    neg = torch.randn(2, 4, 8)
    scales = {"global": torch.tensor(10.0), "region": torch.tensor(5.0), "hard_negative": torch.tensor(2.0)}
    short = torch.randn(3, 8)
    weights = {"global": 1.0, "short_global": 1.0, "region": 0.1, "hard_negative": 0.5}
    parts = fgclip_losses(v, t, scales, weights, region_embeds=r, region_text_embeds=rt,
                          negative_anchor_embeds=r[:2], negative_positive_embeds=rt[:2], negative_text_embeds=neg,
                          short_text_embeds=short)
    assert set(parts) == {"loss", "global_loss", "short_global_loss", "region_loss", "hard_negative_loss"}
    assert parts["global_loss"].item() == pytest.approx(clip_contrastive_loss(v, t, scales["global"]).item())
    # FG-CLIP's second global term: the short captions, with the same (global) temperature
    assert parts["short_global_loss"].item() == pytest.approx(clip_contrastive_loss(v, short, scales["global"]).item())
    assert parts["region_loss"].item() == pytest.approx(clip_contrastive_loss(r, rt, scales["region"]).item())
    hard = hard_negative_loss(r[:2], rt[:2], neg, scales["hard_negative"]).item()
    assert parts["hard_negative_loss"].item() == pytest.approx(hard)
    total = (parts["global_loss"] + parts["short_global_loss"] + 0.1 * parts["region_loss"]
             + 0.5 * parts["hard_negative_loss"])
    assert parts["loss"].item() == pytest.approx(total.item())
    only_global = fgclip_losses(v, t, scales, weights)
    assert only_global["region_loss"].item() == 0.0 and only_global["hard_negative_loss"].item() == 0.0
    assert only_global["loss"].item() == pytest.approx(parts["global_loss"].item())


# ---------------------------------------------------------------------------------------------------------------------
# Gathering across processes


def test_gather_without_distributed_is_identity():
    x = torch.randn(3, 4)
    gathered, offset = gather_features(x)
    assert gathered is x and offset == 0


class _FakeWorld:
    """Rank 1 of a 2-rank world; rank 0 holds `remote` tensors, served to all_gather calls in order."""

    def __init__(self, monkeypatch, remote_calls):
        self.remote = list(remote_calls)
        monkeypatch.setattr(dist, "is_available", lambda: True)
        monkeypatch.setattr(dist, "is_initialized", lambda: True)
        monkeypatch.setattr(dist, "get_world_size", lambda group=None: 2)
        monkeypatch.setattr(dist, "get_rank", lambda group=None: 1)
        monkeypatch.setattr(dist, "all_gather", self.all_gather)
        monkeypatch.setattr(dist, "all_reduce", self.all_reduce)

    def all_gather(self, out, tensor, group=None, async_op=False):
        remote = self.remote.pop(0)
        if tensor.dtype == torch.long:  # the size exchange
            out[0].copy_(torch.tensor([remote.shape[0]]))
        else:  # the padded features
            out[0].zero_()
            out[0][: remote.shape[0]] = remote
        out[1].copy_(tensor)

    def all_reduce(self, tensor, op=None, group=None, async_op=False):
        tensor.add_(self.remote.pop(0))


def test_fake_two_rank_gather_equals_one_process_on_the_global_batch(monkeypatch):
    torch.manual_seed(0)
    remote_a, remote_b = torch.randn(3, 6), torch.randn(3, 6)  # rank 0 holds 3 rows, this rank 2
    local_a = torch.randn(2, 6, requires_grad=True)
    local_b = torch.randn(2, 6, requires_grad=True)
    scale = torch.tensor(4.0, requires_grad=True)

    ref_a = torch.cat([remote_a, local_a.detach()]).requires_grad_()
    ref_b = torch.cat([remote_b, local_b.detach()]).requires_grad_()
    ref_scale = torch.tensor(4.0, requires_grad=True)
    reference = clip_contrastive_loss(ref_a, ref_b, ref_scale, gather=False)
    reference.backward()

    norm = lambda x: F.normalize(x, dim=-1)  # noqa: E731 - the loss gathers normalised features
    _FakeWorld(monkeypatch, [remote_a, norm(remote_a), remote_b, norm(remote_b)])
    loss = clip_contrastive_loss(local_a, local_b, scale)
    loss.backward()
    assert loss.item() == pytest.approx(reference.item(), abs=1e-6)
    # Local rows get world_size x the global-batch gradient (DDP then averages over the 2 ranks);
    # the logit scale gets it once.
    torch.testing.assert_close(local_a.grad, 2 * ref_a.grad[3:])
    torch.testing.assert_close(local_b.grad, 2 * ref_b.grad[3:])
    torch.testing.assert_close(scale.grad, ref_scale.grad)


def test_fake_two_rank_hard_negative_mean_over_global_count(monkeypatch):
    torch.manual_seed(1)
    anchors, positives, negatives = torch.randn(2, 4), torch.randn(2, 4), torch.randn(2, 3, 4)
    local_sum = hard_negative_loss(anchors, positives, negatives, torch.tensor(2.0), gather=False).item() * 2
    _FakeWorld(monkeypatch, [torch.tensor(3.0)])  # rank 0 has 3 anchors
    loss = hard_negative_loss(anchors, positives, negatives, torch.tensor(2.0))
    assert loss.item() == pytest.approx(local_sum * 2 / 5, rel=1e-6)


def _gloo_worker(rank, world, init_file, result_file):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.manual_seed(0)
    encoder_a, encoder_b = torch.nn.Linear(5, 4), torch.nn.Linear(5, 4)
    scale = torch.nn.Parameter(torch.tensor(1.5))
    params = [*encoder_a.parameters(), *encoder_b.parameters(), scale]
    x, y = torch.randn(7, 5), torch.randn(7, 5)
    # One process holding the global batch of 7.
    full = clip_contrastive_loss(encoder_a(x), encoder_b(y), scale.exp(), gather=False)
    reference = torch.autograd.grad(full, params)
    # Uneven split (4 + 3 rows); gradients averaged over the ranks as DDP does.
    rows = slice(0, 4) if rank == 0 else slice(4, 7)
    loss = clip_contrastive_loss(encoder_a(x[rows]), encoder_b(y[rows]), scale.exp())
    grads = torch.autograd.grad(loss, params)
    for grad in grads:
        dist.all_reduce(grad)
        grad /= world
    ok = abs(loss.item() - full.item()) < 1e-5 and all(
        torch.allclose(g, r, atol=1e-6, rtol=1e-5) for g, r in zip(grads, reference)
    )
    with open(f"{result_file}.{rank}", "w") as f:
        f.write("ok" if ok else f"loss {loss.item()} vs {full.item()}")
    dist.destroy_process_group()


@pytest.mark.multiprocess
def test_gloo_two_processes_give_the_one_process_gradient(tmp_path):
    spawn_two_ranks(_gloo_worker, tmp_path)


def _gloo_uneven_parts_worker(rank, world, init_file, result_file):
    """Rank 1's local batch has no regions and no hard negatives (normal videos only); rank 0 has both."""
    import datetime

    # a collective mismatch aborts or hangs: fail within a minute instead of gloo's default 30
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=60))
    torch.manual_seed(0)
    video, text = torch.randn(4, 8), torch.randn(4, 8)
    regions, region_texts = torch.randn(3, 8), torch.randn(3, 8)
    anchors, positives, negatives = torch.randn(2, 8), torch.randn(2, 8), torch.randn(2, 5, 8)
    scales = {"global": torch.tensor(10.0), "region": torch.tensor(5.0), "hard_negative": torch.tensor(2.0)}
    weights = {"global": 1.0, "region": 0.1, "hard_negative": 0.5}
    reference = fgclip_losses(video, text, scales, weights, regions, region_texts, anchors, positives, negatives,
                              gather=False)
    rows = slice(0, 2) if rank == 0 else slice(2, 4)
    local = (regions, region_texts, anchors, positives, negatives) if rank == 0 else (None,) * 5
    parts = fgclip_losses(video[rows], text[rows], scales, weights, *local)
    marker = torch.tensor([float(rank + 1)])
    dist.all_reduce(marker)  # the next collective still pairs up (a skipped gather on one rank breaks this)
    values = {k: torch.tensor([v.item()]) for k, v in parts.items()}
    for value in values.values():
        dist.all_reduce(value)
        value /= world  # the mean over ranks of each rank's share is the global value
    ok = marker.item() == 3.0 and all(abs(values[k].item() - reference[k].item()) < 1e-5 for k in reference)
    with open(f"{result_file}.{rank}", "w") as f:
        f.write("ok" if ok else f"{ {k: v.item() for k, v in values.items()} } vs { {k: v.item() for k, v in reference.items()} }")
    dist.destroy_process_group()


@pytest.mark.multiprocess
def test_gloo_rank_without_regions_or_negatives_runs_the_same_collectives(tmp_path):
    spawn_two_ranks(_gloo_uneven_parts_worker, tmp_path)
