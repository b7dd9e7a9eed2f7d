"""Tests of the temporal action detection mAP: hand-worked cases, a loop-based ActivityNet reference, the CLI."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hf_vtrain.metrics.tad import (
    DEFAULT_TIOU_THRESHOLDS,
    TADMetricResult,
    evaluate_detections,
    load_class_names,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


def gt_db(videos: dict, subset: str = "validation") -> dict:
    """{vid: [(label, start, end), ...]} -> OpenTAD ground truth, all videos in `subset`."""
    return {
        "database": {
            vid: {
                "subset": subset,
                "duration": 100.0,
                "frame": 3000,
                "annotations": [{"label": lab, "segment": [s, e]} for lab, s, e in anns],
            }
            for vid, anns in videos.items()
        }
    }


def preds(videos: dict) -> dict:
    """{vid: [(label, start, end, score), ...]} -> OpenTAD predictions."""
    return {
        "results": {
            vid: [{"label": lab, "segment": [s, e], "score": sc} for lab, s, e, sc in dets]
            for vid, dets in videos.items()
        }
    }


def approx(x):
    return pytest.approx(x, abs=1e-12, rel=0, nan_ok=True)


# ----------------------------------------------------------------------------------------------- hand-worked


def test_perfect_prediction_is_ap_one():
    gt = gt_db({"v1": [("A", 10, 20), ("A", 30, 40)], "v2": [("B", 5, 8)]})
    pr = preds({"v1": [("A", 10, 20, 0.9), ("A", 30, 40, 0.8)], "v2": [("B", 5, 8, 0.7)]})
    r = evaluate_detections(gt, pr)
    assert isinstance(r, TADMetricResult)
    assert r.class_names == ["A", "B"]
    assert r.tiou_thresholds == DEFAULT_TIOU_THRESHOLDS
    assert r.ap.shape == (2, 5) and r.mAP.shape == (5,)
    assert r.ap == approx(np.ones((2, 5)))
    assert r.average_mAP == approx(1.0)
    assert (r.num_ground_truth, r.num_predictions, r.num_ignored_predictions) == (3, 3, 0)
    assert r.as_dict("eval_") == {
        "eval_mAP@0.3": 100.0, "eval_mAP@0.4": 100.0, "eval_mAP@0.5": 100.0,
        "eval_mAP@0.6": 100.0, "eval_mAP@0.7": 100.0, "eval_average_mAP": 100.0,
    }
    lines = r.table().splitlines()
    assert len(lines) == 7 and lines[1].split() == ["0.30", "100.00"] and lines[-1].split() == ["average", "100.00"]


def test_false_positive_above_true_positive():
    # 1 GT [0,10]. Ranked: FP [50,60] (0.9), TP [0,10] (0.8).
    # precision 0/1, 1/2; recall 0, 1. mprec [0, 0, .5, 0] -> right max [.5, .5, .5, 0]; mrec [0, 0, 1, 1]:
    # recall changes only at index 2: (1 - 0) * 0.5 = 0.5.
    gt = gt_db({"v1": [("A", 0, 10)]})
    r = evaluate_detections(gt, preds({"v1": [("A", 50, 60, 0.9), ("A", 0, 10, 0.8)]}))
    assert r.ap[0] == approx([0.5] * 5)
    # 2 GT. Ranked TP (0.9), FP (0.8), TP (0.7): precision 1, 1/2, 2/3; recall .5, .5, 1.
    # mprec [0, 1, .5, 2/3, 0] -> right max [1, 1, 2/3, 2/3, 0]; mrec [0, .5, .5, 1, 1]:
    # changes at 1 and 3: .5 * 1 + .5 * 2/3 = 5/6 (the 1/2 dip is interpolated away).
    gt = gt_db({"v1": [("A", 0, 10), ("A", 20, 30)]})
    r = evaluate_detections(gt, preds({"v1": [("A", 0, 10, 0.9), ("A", 50, 60, 0.8), ("A", 20, 30, 0.7)]}))
    assert r.ap[0] == approx([5 / 6] * 5)
    assert r.average_mAP == approx(5 / 6)


def test_score_ties_keep_input_order():
    # 1 GT; a FP and a TP with the same score. FP first -> AP 0.5 (as above); TP first -> AP 1.
    gt = gt_db({"v1": [("A", 0, 10)], "v2": []})
    fp_first = evaluate_detections(gt, preds({"v1": [("A", 20, 30, 0.5), ("A", 0, 10, 0.5)]}))
    tp_first = evaluate_detections(gt, preds({"v1": [("A", 0, 10, 0.5), ("A", 20, 30, 0.5)]}))
    assert fp_first.ap[0] == approx([0.5] * 5)
    assert tp_first.ap[0] == approx([1.0] * 5)
    # Across videos the order of the predictions dict decides (v2 has no GT: its detection is a FP).
    v2_first = evaluate_detections(gt, preds({"v2": [("A", 0, 10, 0.5)], "v1": [("A", 0, 10, 0.5)]}))
    v1_first = evaluate_detections(gt, preds({"v1": [("A", 0, 10, 0.5)], "v2": [("A", 0, 10, 0.5)]}))
    assert v2_first.ap[0] == approx([0.5] * 5)
    assert v1_first.ap[0] == approx([1.0] * 5)


def test_class_without_ground_truth_is_nan_in_ap_not_in_mean():
    gt = gt_db({"v1": [("A", 0, 10)]})
    pr = preds({"v1": [("A", 0, 10, 0.9), ("B", 0, 10, 0.95)]})
    r = evaluate_detections(gt, pr, class_names=["A", "B"])
    assert r.ap[0] == approx([1.0] * 5)
    assert np.isnan(r.ap[1]).all()
    assert r.mAP == approx([1.0] * 5) and r.average_mAP == approx(1.0)
    assert r.num_ignored_predictions == 0  # B is a class: its detection is evaluated, only it has no GT
    # No class has ground truth at all: 0.0, never NaN.
    r = evaluate_detections(gt_db({"v1": []}), pr, class_names=["A", "B"])
    assert np.isnan(r.ap).all()
    assert r.mAP == approx([0.0] * 5) and r.average_mAP == 0.0
    assert r.as_dict()["average_mAP"] == 0.0


def test_unknown_predicted_labels_are_ignored():
    # "Z" is no class: its higher-scored detection on the GT neither counts as FP nor takes the GT.
    gt = gt_db({"v1": [("A", 0, 10)]})
    r = evaluate_detections(gt, preds({"v1": [("Z", 0, 10, 0.99), ("A", 0, 10, 0.5)]}))
    assert r.class_names == ["A"]
    assert r.ap[0] == approx([1.0] * 5)
    assert (r.num_predictions, r.num_ignored_predictions) == (2, 1)


def test_video_without_ground_truth_contributes_false_positives():
    # v2 is in the subset with no annotations: its 0.9 detection is a false positive.
    # v3 belongs to another subset and v4 to no video. OpenTAD's and ActivityNet's evaluators look each detection's
    # video up among the evaluated ones and count a miss as a false positive: the default here too.
    gt = gt_db({"v1": [("A", 0, 10)], "v2": []})
    gt["database"]["v3"] = {"subset": "training", "annotations": [{"label": "A", "segment": [0, 10]}]}
    pr = preds({
        "v3": [("A", 50, 60, 0.99)],
        "v4": [("A", 50, 60, 0.98)],
        "v2": [("A", 0, 10, 0.9)],
        "v1": [("A", 0, 10, 0.8)],
    })
    # Ranked FP(v3), FP(v4), FP(v2), TP(v1): precision 1/4 at recall 1 -> AP 1/4.
    r = evaluate_detections(gt, pr)
    assert r.ap[0] == approx([0.25] * 5)
    assert (r.num_ground_truth, r.num_predictions, r.num_ignored_predictions) == (1, 4, 0)
    assert r.num_outside_subset_predictions == 2
    assert r.outside_subset_note().startswith("2 of 4 predictions are on videos outside the evaluated subset: counted")
    # The other rule stays reachable: v3's and v4's detections dropped -> FP(v2), TP(v1): AP 1/2.
    r = evaluate_detections(gt, pr, outside_subset="ignore")
    assert r.ap[0] == approx([0.5] * 5)
    assert (r.num_ignored_predictions, r.num_outside_subset_predictions) == (2, 2)
    assert "ignored" in r.outside_subset_note()
    # subset=None evaluates v3 as well: its GT is missed; v4 is still outside. 2 GT, ranked FP(v3), FP(v4), FP(v2),
    # TP(v1): precision 1/4 at recall 1/2 -> 1/2 * 1/4 = 1/8; ignoring v4: FP(v3), FP(v2), TP(v1) -> 1/6.
    assert evaluate_detections(gt, pr, subset=None).ap[0] == approx([1 / 8] * 5)
    assert evaluate_detections(gt, pr, subset=None, outside_subset="ignore").ap[0] == approx([1 / 6] * 5)
    with pytest.raises(ValueError, match="outside_subset"):
        evaluate_detections(gt, pr, outside_subset="drop")


def test_duplicate_ground_truth_is_removed():
    # Kept: 2 GT, both found -> AP 1 (with the duplicate npos would be 3: recall 2/3, AP 2/3).
    gt = gt_db({"v1": [("A", 0, 10), ("A", 0, 10), ("A", 20, 30), ("A", 0.0004, 9.9996)]})
    r = evaluate_detections(gt, preds({"v1": [("A", 0, 10, 0.9), ("A", 20, 30, 0.8)]}))
    assert r.num_ground_truth == 2
    assert r.ap[0] == approx([1.0] * 5)
    # Same segment, other label: not a duplicate.
    r = evaluate_detections(gt_db({"v1": [("A", 0, 10), ("B", 0, 10)]}), preds({}))
    assert r.num_ground_truth == 2


def test_zero_length_ground_truth_is_removed():
    # [15,15] and [25,20] are dropped: npos 1 -> AP 1 (else recall 1/3, AP 1/3).
    gt = gt_db({"v1": [("A", 0, 10), ("A", 15, 15), ("A", 25, 20)]})
    r = evaluate_detections(gt, preds({"v1": [("A", 0, 10, 0.9)]}))
    assert r.num_ground_truth == 1
    assert r.ap[0] == approx([1.0] * 5)


def test_ambiguous_is_not_a_class():
    gt = gt_db({"v1": [("A", 0, 10), ("Ambiguous", 20, 30)]})
    pr = preds({"v1": [("Ambiguous", 20, 30, 0.99), ("A", 0, 10, 0.5)]})
    r = evaluate_detections(gt, pr)
    assert r.class_names == ["A"]
    assert r.ap == approx(np.ones((1, 5)))
    assert (r.num_ground_truth, r.num_ignored_predictions) == (1, 1)
    # A class list without "Ambiguous" is fine: ignored GT never needs a class.
    assert evaluate_detections(gt, pr, class_names=["A"]).average_mAP == approx(1.0)
    # Without the ignore list it becomes a class (with a perfect detection): mean of two classes.
    r = evaluate_detections(gt, pr, ignore_labels=())
    assert r.class_names == ["A", "Ambiguous"]


def test_tiou_threshold_boundaries():
    # GT [0,10]. A: [0,5.5] -> 5.5/10 = 0.55: TP at 0.3/0.4/0.5, FP at 0.6/0.7.
    # B: [0,6] -> 6/10 = 0.6 exactly (same double as 0.6): tIoU >= t counts, TP up to 0.6.
    gt = gt_db({"v1": [("A", 0, 10), ("B", 0, 10)]})
    r = evaluate_detections(gt, preds({"v1": [("A", 0, 5.5, 0.9), ("B", 0, 6, 0.9)]}))
    assert r.ap[0] == approx([1, 1, 1, 0, 0])
    assert r.ap[1] == approx([1, 1, 1, 1, 0])
    assert r.mAP == approx([1, 1, 1, 0.5, 0])
    assert r.average_mAP == approx(3.5 / 5)
    assert r.as_dict() == approx({"mAP@0.3": 100, "mAP@0.4": 100, "mAP@0.5": 100, "mAP@0.6": 50, "mAP@0.7": 0,
                                  "average_mAP": 70})
    r = evaluate_detections(gt, preds({"v1": [("A", 0, 5.5, 0.9)]}), tiou_thresholds=(0.5, 0.55, 0.56))
    assert r.ap[0] == approx([1, 1, 0]) and list(r.as_dict()) == ["mAP@0.5", "mAP@0.55", "mAP@0.56", "average_mAP"]


def test_double_detection_is_a_false_positive():
    # GT [0,10], [20,30]. Ranked: [0,10] TP (0.9), [1,10] tIoU 0.9 with the taken GT -> FP (0.8), [20,30] TP.
    # Same as the 5/6 case above.
    gt = gt_db({"v1": [("A", 0, 10), ("A", 20, 30)]})
    r = evaluate_detections(gt, preds({"v1": [("A", 0, 10, 0.9), ("A", 1, 10, 0.8), ("A", 20, 30, 0.7)]}))
    assert r.ap[0] == approx([5 / 6] * 5)


def test_match_goes_to_the_highest_tiou_ground_truth():
    # g1 [0,10], g2 [4,14]. d1 [3,13] (0.9): tIoU 7/13 = .538 with g1, 9/11 = .818 with g2 -> takes g2.
    # d2 [0,10] (0.8): g1, tIoU 1. Both TP at every threshold -> AP 1.
    # (Taking the first GT instead would leave d2 only g2 at 6/14 = .43: AP .5 at t >= 0.5.)
    gt = gt_db({"v1": [("A", 0, 10), ("A", 4, 14)]})
    r = evaluate_detections(gt, preds({"v1": [("A", 3, 13, 0.9), ("A", 0, 10, 0.8)]}))
    assert r.ap[0] == approx([1.0] * 5)


def test_equal_tiou_goes_to_the_earlier_ground_truth():
    # g1 [0,10], g2 [10,20]; d1 [5,15] (0.9) has tIoU 5/15 = 1/3 with both; d2 [10,20] (0.8) matches g2 exactly.
    # t=0.3: d1 takes g1 (earlier), d2 takes g2 -> AP 1 (were the tie given to g2, d2 would be a FP: AP 0.5).
    # t>=0.4: d1 FP, d2 TP: precision 0, 1/2; recall 0, 1/2 -> 1/2 * 1/2 = 0.25.
    gt = gt_db({"v1": [("A", 0, 10), ("A", 10, 20)]})
    r = evaluate_detections(gt, preds({"v1": [("A", 5, 15, 0.9), ("A", 10, 20, 0.8)]}))
    assert r.ap[0] == approx([1.0, 0.25, 0.25, 0.25, 0.25])


def test_class_names_given_and_file(tmp_path):
    (tmp_path / "category_idx.txt").write_text("B\n\nA\n")
    names = load_class_names(tmp_path / "category_idx.txt")
    assert names == ["B", "A"]
    gt = gt_db({"v1": [("A", 0, 10)]})
    r = evaluate_detections(gt, preds({"v1": [("A", 0, 10, 0.9)]}), class_names=names)
    assert r.class_names == ["B", "A"] and np.isnan(r.ap[0]).all() and r.ap[1] == approx([1.0] * 5)
    with pytest.raises(ValueError, match=r"video 'v1'.*label 'A'"):
        evaluate_detections(gt, preds({}), class_names=["B"])


def test_no_predictions():
    r = evaluate_detections(gt_db({"v1": [("A", 0, 10)]}), {"results": {}})
    assert r.ap == approx(np.zeros((1, 5))) and r.num_predictions == 0


@pytest.mark.parametrize(
    "pred_entry, message",
    [
        ({"label": "A", "segment": [1, 2, 3], "score": 0.5}, "segment must be 2 numbers"),
        ({"label": "A", "segment": [1, "2"], "score": 0.5}, "segment must be a number"),
        ({"label": "A", "segment": [5, 2], "score": 0.5}, "end < start"),
        ({"label": "A", "segment": [1, float("nan")], "score": 0.5}, "must be finite"),
        ({"label": "A", "segment": [1, 2], "score": "0.5"}, "score must be a number"),
        ({"label": "A", "segment": [1, 2], "score": True}, "score must be a number"),
        ({"label": "A", "segment": [1, 2]}, "missing key 'score'"),
        ({"label": 3, "segment": [1, 2], "score": 0.5}, "label must be a string"),
        ([1, 2], "expected an object"),
    ],
)
def test_bad_prediction_entries_name_video_and_index(pred_entry, message):
    gt = gt_db({"v1": [("A", 0, 10)]})
    pr = {"results": {"v1": [{"label": "A", "segment": [0, 10], "score": 0.9}, pred_entry]}}
    with pytest.raises(ValueError, match=rf"^predictions: video 'v1', prediction 1: .*{message}"):
        evaluate_detections(gt, pr)


def test_bad_ground_truth_and_arguments():
    with pytest.raises(ValueError, match="missing key 'database'"):
        evaluate_detections({"videos": {}}, preds({}))
    with pytest.raises(ValueError, match="missing key 'results'"):
        evaluate_detections(gt_db({}), {"v1": []})
    bad = gt_db({"v1": [("A", 0, 10)]})
    bad["database"]["v1"]["annotations"].append({"label": "A", "segment": [3]})
    with pytest.raises(ValueError, match=r"ground truth: video 'v1', annotation 1: segment must be 2 numbers"):
        evaluate_detections(bad, preds({}))
    with pytest.raises(ValueError, match=r"no video has subset 'test' \(subsets present: validation\)"):
        evaluate_detections(gt_db({"v1": [("A", 0, 10)]}), preds({}), subset="test")
    with pytest.raises(ValueError, match="tiou_thresholds"):
        evaluate_detections(gt_db({"v1": []}), preds({}), tiou_thresholds=(0.0, 0.5))


def test_slow_input_path_gives_the_same_result():
    # numpy scalars skip the fast column conversion; the result must not depend on which path parsed the input.
    gt = gt_db({"v1": [("A", 0, 10), ("A", 20, 30)]})
    dets = [("A", 0, 10, 0.9), ("A", 50, 60, 0.8), ("A", 20, 30, 0.7)]
    slow = {"results": {"v1": [{"label": l, "segment": (np.float32(s), e), "score": np.float32(sc)}
                               for l, s, e, sc in dets]}}
    assert evaluate_detections(gt, slow).ap[0] == approx([5 / 6] * 5)


# ----------------------------------------------------------------------------------------------- reference


def reference_evaluate(gt, pr, subset="validation", thresholds=DEFAULT_TIOU_THRESHOLDS, class_names=None,
                       ignore=("Ambiguous",), outside_subset="false_positive"):
    """Loop-for-loop ActivityNet compute_average_precision_detection + interpolated_prec_rec, no numpy. As there, a
    detection whose video is not among the evaluated ones finds no ground truth and is a false positive
    (outside_subset="ignore": it is dropped first)."""
    gts = {}
    for vid, video in gt["database"].items():
        if subset is not None and video["subset"] != subset:
            continue
        kept = []
        for ann in video.get("annotations", []):
            label, (s, e) = ann["label"], ann["segment"]
            if e - s <= 0:
                continue
            if any(k[0] == label and abs(k[1] - s) <= 1e-3 and abs(k[2] - e) <= 1e-3 for k in kept):
                continue
            kept.append((label, float(s), float(e)))
        gts[vid] = [k for k in kept if k[0] not in ignore]
    classes = list(class_names) if class_names is not None else sorted({k[0] for v in gts.values() for k in v})

    ap = []
    for c in classes:
        gt_c = {vid: [(s, e) for lab, s, e in anns if lab == c] for vid, anns in gts.items()}
        npos = sum(len(v) for v in gt_c.values())
        dets = [(vid, p) for vid, plist in pr["results"].items() if vid in gts or outside_subset == "false_positive"
                for p in plist if p["label"] == c]
        dets = sorted(dets, key=lambda d: -d[1]["score"])  # sorted() is stable
        row = []
        for t in thresholds:
            if npos == 0:
                row.append(math.nan)
                continue
            locked = {vid: [False] * len(g) for vid, g in gt_c.items()}
            tp, fp = [], []
            for vid, p in dets:
                s, e = p["segment"]
                ious = []
                for gs, ge in gt_c.get(vid, []):
                    inter = max(0.0, min(e, ge) - max(s, gs))
                    ious.append(inter / ((ge - gs) + (e - s) - inter))
                hit = False
                for j in sorted(range(len(ious)), key=lambda j: -ious[j]):
                    if ious[j] < t:
                        break
                    if locked[vid][j]:
                        continue
                    locked[vid][j] = hit = True
                    break
                tp.append(1.0 if hit else 0.0)
                fp.append(0.0 if hit else 1.0)
            tp_cum = fp_cum = 0.0
            prec, rec = [], []
            for a, b in zip(tp, fp):
                tp_cum += a
                fp_cum += b
                rec.append(tp_cum / npos)
                prec.append(tp_cum / (tp_cum + fp_cum))
            mprec, mrec = [0.0] + prec + [0.0], [0.0] + rec + [1.0]
            for i in range(len(mprec) - 2, -1, -1):
                mprec[i] = max(mprec[i], mprec[i + 1])
            row.append(sum((mrec[i] - mrec[i - 1]) * mprec[i] for i in range(1, len(mrec)) if mrec[i] != mrec[i - 1]))
        ap.append(row)
    with_gt = [r for r in ap if not math.isnan(r[0])]
    m_ap = [sum(col) / len(with_gt) for col in zip(*with_gt)] if with_gt else [0.0] * len(thresholds)
    return classes, ap, m_ap


def random_case(seed, n_videos=8, n_classes=3, max_gt=12, max_det=40, tied_scores=True):
    """Small grid-aligned input: many tied scores and tIoUs, duplicates, zero-length and Ambiguous GT,
    unannotated videos, another subset, unknown labels and unknown videos."""
    rng = np.random.default_rng(seed)
    classes = [f"C{i}" for i in range(n_classes)]
    database = {}
    for v in range(n_videos):
        anns = []
        for _ in range(rng.integers(0, max_gt + 1) if v % 4 else 0):
            s = int(rng.integers(0, 40))
            e = s + int(rng.integers(-1, 8))
            label = "Ambiguous" if rng.random() < 0.1 else str(rng.choice(classes))
            anns.append({"label": label, "segment": [s, e]})
            if rng.random() < 0.15:
                anns.append(dict(anns[-1]))
        database[f"vid{v}"] = {"subset": "training" if v == 5 else "validation", "annotations": anns}
    results = {}
    for v in rng.permutation(n_videos + 2):
        dets = []
        for _ in range(rng.integers(0, max_det + 1)):
            s = int(rng.integers(0, 40))
            e = s + int(rng.integers(0, 8))
            label = "Z" if rng.random() < 0.05 else str(rng.choice(classes))
            score = float(rng.choice([0.1, 0.2, 0.5, 0.9])) if tied_scores else float(rng.random())
            dets.append({"label": label, "segment": [s, e], "score": score})
        results[f"vid{v}"] = dets
    return {"database": database}, {"results": results}


@pytest.mark.parametrize("seed, tied", [(0, True), (1, True), (2, True), (3, True), (4, False), (5, False)])
def test_agrees_with_reference_implementation(seed, tied):
    gt, pr = random_case(seed, tied_scores=tied)
    for subset in ("validation", None):
        for outside in ("false_positive", "ignore"):
            r = evaluate_detections(gt, pr, subset=subset, outside_subset=outside)
            classes, ap, m_ap = reference_evaluate(gt, pr, subset=subset, outside_subset=outside)
            assert r.class_names == classes
            np.testing.assert_allclose(r.ap, np.array(ap), rtol=0, atol=1e-12)
            np.testing.assert_allclose(r.mAP, m_ap, rtol=0, atol=1e-12)
            assert np.isfinite(r.mAP).all()
    # The case generator puts predictions on a training-subset video and on videos absent from the ground truth,
    # so the two rules differ here.
    assert evaluate_detections(gt, pr).num_outside_subset_predictions > 0
    # An extra class never seen in the ground truth, and other thresholds.
    names = ["C0", "C1", "C2", "C9"]
    thresholds = (0.1, 0.25, 0.5, 0.75, 0.95)
    r = evaluate_detections(gt, pr, class_names=names, tiou_thresholds=thresholds)
    _, ap, m_ap = reference_evaluate(gt, pr, class_names=names, thresholds=thresholds)
    np.testing.assert_allclose(r.ap, np.array(ap), rtol=0, atol=1e-12)
    np.testing.assert_allclose(r.mAP, m_ap, rtol=0, atol=1e-12)


def test_agrees_with_reference_on_crowded_videos():
    # Many GT per class per video exercises the match loop over several rounds.
    gt, pr = random_case(7, n_videos=4, n_classes=2, max_gt=60, max_det=150, tied_scores=True)
    r = evaluate_detections(gt, pr)
    _, ap, m_ap = reference_evaluate(gt, pr)
    np.testing.assert_allclose(r.ap, np.array(ap), rtol=0, atol=1e-12)
    np.testing.assert_allclose(r.mAP, m_ap, rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------------------------- command line


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "hf_vtrain.metrics.tad", *map(str, args)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
    )


def test_cli(tmp_path):
    gt_path, pred_path, out_path = tmp_path / "gt.json", tmp_path / "pred.json", tmp_path / "out.json"
    gt_path.write_text(json.dumps(gt_db({"v1": [("A", 0, 10), ("A", 20, 30)], "v2": [("B", 0, 10)]})))
    pred_path.write_text(json.dumps(preds({"v1": [("A", 0, 10, 0.9), ("A", 50, 60, 0.8), ("A", 20, 30, 0.7)]})))
    (tmp_path / "category_idx.txt").write_text("A\nB\nC\n")
    proc = run_cli(gt_path, pred_path, "--class-index", tmp_path / "category_idx.txt", "--json", out_path)
    assert proc.returncode == 0, proc.stderr
    # A: 5/6 (see above), B: 0 (missed), C: no GT -> mAP 41.67 at every tIoU.
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("0 of 3 predictions are on videos outside the evaluated subset")
    assert lines[2].split() == ["0.30", "41.67"] and lines[-1].split() == ["average", "41.67"]
    report = json.loads(out_path.read_text())
    assert report["average_mAP"] == pytest.approx(125 / 3)
    assert report["per_class_AP"]["C"]["0.5"] is None and report["num_predictions"] == 3

    bad_pred = tmp_path / "bad_pred.json"
    bad_pred.write_text(json.dumps({"results": {"v1": [{"label": "A", "segment": [0, 10], "score": "high"}]}}))
    bad_json = tmp_path / "broken.json"
    bad_json.write_text('{"database": {')
    for args, expected in [
        ((tmp_path / "missing.json", pred_path), ["missing.json"]),
        ((bad_json, pred_path), ["broken.json", "not valid JSON"]),
        ((gt_path, bad_pred), ["bad_pred.json", "'v1'", "prediction 0", "score"]),
        ((pred_path, pred_path), ["pred.json", "'database'"]),
        ((gt_path, gt_path), ["gt.json", "'results'"]),
    ]:
        proc = run_cli(*args)
        assert proc.returncode == 2  # bad input (hf_vtrain.exit_codes)
        assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        for word in expected:
            assert word in proc.stderr, (word, proc.stderr)
