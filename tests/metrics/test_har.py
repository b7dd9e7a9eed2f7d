"""Recognition metrics against hand-worked cases and a loop-for-loop reading of MMAction2's definitions."""

import json

import numpy as np
import pytest

from hf_vtrain.metrics import har

# 4 samples, 5 classes. Top-1: 0 (hit), 1 (label 0), 3 (label 1), 2 (hit). Class 1 is labelled, never predicted;
# class 3 predicted, never labelled; class 4 neither.
LABELS = [0, 0, 1, 2]
SCORES = [[0.9, 0.1, 0.0, 0.0, 0.0],
          [0.2, 0.7, 0.1, 0.0, 0.0],
          [0.1, 0.2, 0.0, 0.7, 0.0],
          [0.3, 0.1, 0.5, 0.1, 0.0]]


def test_hand_worked_case():
    result = har.evaluate_recognition(LABELS, SCORES)
    assert result.top1 == 0.5
    assert har.top_k_accuracy(LABELS, SCORES, (2,))[2] == 1.0  # samples 2 and 3 have their label second
    assert result.top5 == 1.0
    # classes labelled or predicted: 0 (1 of 2), 1 (0 of 1), 2 (1 of 1), 3 (predicted, never labelled: 0); not 4
    assert result.mean_class_accuracy == pytest.approx((0.5 + 0.0 + 1.0 + 0.0) / 4)
    assert result.confusion.tolist() == [[1, 1, 0, 0, 0], [0, 0, 0, 1, 0], [0, 0, 1, 0, 0], [0] * 5, [0] * 5]
    assert result.as_dict("eval_") == {"eval_top1_acc": 50.0, "eval_top5_acc": 100.0, "eval_mean_class_acc": 37.5}


def test_ties_rank_the_lower_class_first():
    assert har.top_k_accuracy([1], [[0.5, 0.5, 0.0]], (1, 2)) == {1: 0.0, 2: 1.0}
    assert har.top_k_accuracy([0], [[0.5, 0.5, 0.0]], (1,)) == {1: 1.0}


def mmaction_reference(labels, scores):
    """MMAction2's definitions, written out: label set = labelled or predicted, per-class hits / labelled."""
    predicted = [max(range(len(s)), key=lambda c: (s[c], -c)) for s in scores]
    classes = sorted(set(labels) | set(predicted))
    accs = []
    for c in classes:
        labelled = [i for i, y in enumerate(labels) if y == c]
        hits = sum(predicted[i] == c for i in labelled)
        accs.append(hits / len(labelled) if labelled else 0.0)
    top1 = sum(p == y for p, y in zip(predicted, labels)) / len(labels)
    return top1, sum(accs) / len(accs)


@pytest.mark.parametrize("seed", range(20))
def test_random_cases_equal_the_written_out_definition(seed):
    rng = np.random.default_rng(seed)
    n, c = int(rng.integers(1, 40)), int(rng.integers(2, 12))
    labels = rng.integers(0, c, n).tolist()
    scores = np.round(rng.random((n, c)), 1).tolist()  # rounded: ties happen
    result = har.evaluate_recognition(labels, scores)
    top1, mca = mmaction_reference(labels, scores)
    assert result.top1 == pytest.approx(top1) and result.mean_class_accuracy == pytest.approx(mca)


def test_command_line(tmp_path, capsys):
    (tmp_path / "labels.json").write_text(json.dumps({f"s{i}": y for i, y in enumerate(LABELS)}))
    (tmp_path / "scores.json").write_text(json.dumps({"scores": {f"s{i}": s for i, s in enumerate(SCORES)}}))
    assert har.main([str(tmp_path / "labels.json"), str(tmp_path / "scores.json"), "--json",
                     str(tmp_path / "m.json")]) == 0
    assert json.loads((tmp_path / "m.json").read_text())["mean_class_acc"] == 37.5
    (tmp_path / "labels.txt").write_text("s0 0\ns1 0\ns2 1\ns3 2\n")
    assert har.main([str(tmp_path / "labels.txt"), str(tmp_path / "scores.json")]) == 0
    assert "top-1" in capsys.readouterr().out

    (tmp_path / "short.json").write_text(json.dumps({"s0": SCORES[0]}))
    assert har.main([str(tmp_path / "labels.json"), str(tmp_path / "short.json")]) == 2
    assert "3 labelled samples have no scores" in capsys.readouterr().err
    (tmp_path / "bad.txt").write_text("s0 zero\n")
    assert har.main([str(tmp_path / "bad.txt"), str(tmp_path / "scores.json")]) == 2
    assert "label 'zero' is not an integer" in capsys.readouterr().err
    (tmp_path / "wide.json").write_text(json.dumps({"s0": [0.1, 0.9], "s1": [1.0], "s2": [1.0], "s3": [1.0]}))
    assert har.main([str(tmp_path / "labels.json"), str(tmp_path / "wide.json")]) == 2
    assert "different numbers of class scores" in capsys.readouterr().err


def test_labels_outside_the_scores_are_refused():
    with pytest.raises(ValueError, match=r"labels must be in \[0, 2\)"):
        har.evaluate_recognition([2], [[0.1, 0.9]])
