"""The top-k MIL loss on hand-worked cases: the k of each video, the top-k selection over real snippets only, normal
bags, ties, and its gradient reaching only the selected snippets."""

import math

import pytest
import torch

from hf_vtrain.models.vad_head.losses_vad_head import topk_bag_logits, topk_counts, topk_mil_loss


def test_k_per_video_as_vadclip():
    assert topk_counts(torch.tensor([1, 15, 16, 33, 200]), 16).tolist() == [1, 1, 2, 3, 13]
    assert topk_counts(torch.tensor([3, 2]), 1).tolist() == [3, 2]  # never more than the length


def test_hand_worked_bags_padding_normal_and_anomalous():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0, 9.0],  # 4 real snippets (the 9 is padding), k = 4 // 2 + 1 = 3
                           [-1.0, -2.0, 5.0, -3.0, -4.0]])  # 5 real, k = 3
    mask = torch.tensor([[True, True, True, True, False], [True] * 5])
    bags = topk_bag_logits(logits, mask, k_divisor=2)
    assert bags.tolist() == pytest.approx([(3 + 2 + 1) / 3, (5 - 1 - 2) / 3])
    loss, _ = topk_mil_loss(logits, mask, torch.tensor([1.0, 0.0]), k_divisor=2)
    # anomalous: -log sigmoid(2); normal: -log(1 - sigmoid(2/3))
    want = (-math.log(1 / (1 + math.exp(-2.0))) - math.log(1 - 1 / (1 + math.exp(-2 / 3)))) / 2
    assert loss.item() == pytest.approx(want, rel=1e-6)


def test_ties_do_not_change_the_loss_and_the_gradient_reaches_the_top_k_only():
    logits = torch.tensor([[1.0, 4.0, 4.0, 4.0, 0.0, 2.0]], requires_grad=True)  # k = 6 // 4 + 1 = 2 of three 4s
    mask = torch.ones(1, 6, dtype=torch.bool)
    loss, bags = topk_mil_loss(logits, mask, torch.tensor([1.0]), k_divisor=4)
    assert bags.item() == 4.0
    loss.backward()
    grad = logits.grad[0]
    assert int((grad != 0).sum()) == 2 and set(torch.nonzero(grad).flatten().tolist()) <= {1, 2, 3}
    assert grad[[0, 4, 5]].abs().sum() == 0


def test_a_video_without_snippets_is_refused():
    with pytest.raises(ValueError, match="without snippets"):
        topk_bag_logits(torch.zeros(2, 3), torch.tensor([[True, False, False], [False] * 3]))


from hf_vtrain.models.vad_head import VADHeadConfig, VADHeadForAnomalyScoring  # noqa: E402

TINY = dict(feature_dim=16, hidden_size=32, num_heads=2, local_layers=1, global_layers=1, local_window=4,
            dropout=0.0, topk_divisor=4)


def test_save_load_and_padding_does_not_change_a_video_scores(tmp_path):
    torch.manual_seed(0)
    head = VADHeadForAnomalyScoring(VADHeadConfig(**TINY)).eval()
    head.save_pretrained(tmp_path / "h")
    again = VADHeadForAnomalyScoring.from_pretrained(tmp_path / "h").eval()
    features = torch.randn(1, 7, 16)
    padded = torch.cat([features, torch.randn(1, 5, 16)], dim=1)
    mask = torch.tensor([[True] * 7 + [False] * 5])
    with torch.no_grad():
        alone = head(features).scores
        assert torch.allclose(again(features).scores, alone)
        out = head(padded, mask)
    assert torch.allclose(out.scores[:, :7], alone, atol=1e-6) and out.scores[:, 7:].abs().sum() == 0


def test_local_layers_see_only_their_window():
    torch.manual_seed(0)
    head = VADHeadForAnomalyScoring(VADHeadConfig(**{**TINY, "global_layers": 0})).eval()
    features = torch.randn(1, 12, 16)
    changed = features.clone()
    changed[0, 11] += 5.0  # far from snippet 0 (window 4: at most 2 away)
    with torch.no_grad():
        a, b = head(features).logits, head(changed).logits
    assert torch.allclose(a[0, :9], b[0, :9]) and not torch.allclose(a[0, 9:], b[0, 9:])


def test_learns_which_snippets_are_anomalous_from_video_labels_only():
    """Bags of 24 snippets; anomalous bags hide 4 snippets from another distribution among normal ones (k = 24 // 16
    + 1 = 2 of them count, as when an anomaly lasts longer than 1/16 of its video). Trained on video labels only, the
    head ranks those snippets above every normal one (snippet AUC)."""
    g = torch.Generator().manual_seed(0)
    normal_mean, anomalous_mean = torch.randn(16, generator=g), torch.randn(16, generator=g)

    def bags(n):
        x = normal_mean + 0.5 * torch.randn(n, 24, 16, generator=g)
        labels = (torch.arange(n) % 2 == 0).long()  # the even bags hide the anomalies
        where = torch.zeros(n, 24, dtype=torch.bool)
        for i in range(0, n, 2):
            start = int(torch.randint(0, 21, (1,), generator=g))
            where[i, start: start + 4] = True
        x[where] = anomalous_mean + 0.5 * torch.randn(int(where.sum()), 16, generator=g)
        return x, labels.float(), where

    torch.manual_seed(0)
    head = VADHeadForAnomalyScoring(VADHeadConfig(**{**TINY, "topk_divisor": 16}))
    optimizer = torch.optim.AdamW(head.parameters(), lr=3e-3)
    for _ in range(60):
        x, y, _ = bags(16)
        loss = head(x, labels=y).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    head.eval()
    x, _, where = bags(32)
    with torch.no_grad():
        scores = head(x).scores
    positive, negative = scores[where], scores[~where]
    auc = (positive[:, None] > negative[None, :]).float().mean().item()
    assert auc > 0.95, auc


def test_mil_align_by_hand_and_the_class_embeddings_saved_with_the_head(tmp_path):
    from hf_vtrain.models.vad_head import topk_align_loss

    # 1 video of 3 real snippets (the 4th padding), 2 classes, k = 3 // 16 + 1 = 1: each class's best snippet
    class_logits = torch.tensor([[[2.0, 0.0], [0.0, 1.0], [1.0, 0.5], [9.0, 9.0]]])
    mask = torch.tensor([[True, True, True, False]])
    loss, bags = topk_align_loss(class_logits, mask, torch.tensor([0]))
    assert bags.tolist() == [[2.0, 1.0]]
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-1.0)), rel=1e-6)

    torch.manual_seed(0)
    head = VADHeadForAnomalyScoring(VADHeadConfig(**TINY, num_align_classes=3))
    embeds = torch.randn(3, 16)
    head.set_class_embeddings(embeds)
    out = head(torch.randn(2, 6, 16), labels=torch.tensor([1.0, 0.0]), class_labels=torch.tensor([0, 2]))
    assert out.align_loss is not None and torch.allclose(out.loss, out.mil_loss + out.align_loss)
    out.loss.backward()
    assert head.align_proj.weight.grad.abs().sum() > 0
    head.save_pretrained(tmp_path / "aligned")
    again = VADHeadForAnomalyScoring.from_pretrained(tmp_path / "aligned")
    assert torch.allclose(again.class_embeds, torch.nn.functional.normalize(embeds, dim=-1))
    with pytest.raises(ValueError, match="class embeddings"):
        head.set_class_embeddings(torch.randn(2, 16))
