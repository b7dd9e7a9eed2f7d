"""COCO mAP through pycocotools: a hand-worked case with an empty frame, equality with COCOeval used directly on random
inputs (empty frames, float boxes), float vs truncated boxes on a small drone, the checks of the inputs, the CLI."""

import contextlib
import io
import json

import numpy as np
import pytest

from hf_vtrain.metrics import det

IMAGES = [{"id": i, "width": 100, "height": 80, "file_name": f"f{i}.jpg"} for i in (1, 2, 3)]
BOXES = [[(10, 10, 30, 30, 0)], [], [(50, 50, 60, 60, 0)]]  # image 2: no drone


def detection(image_id, x, y, w, h, score):
    return {"image_id": image_id, "category_id": 1, "bbox": [x, y, w, h], "score": score}


def test_hand_worked_case_with_a_false_positive_on_an_empty_frame():
    gt = det.coco_ground_truth(IMAGES, BOXES, ["drone"])
    assert [a["id"] for a in gt["annotations"]] == [1, 2] and gt["annotations"][0]["bbox"] == [10.0, 10.0, 20.0, 20.0]
    dets = [detection(1, 10, 10, 20, 20, 0.9),  # TP
            detection(2, 5, 5, 10, 10, 0.8),  # FP on the empty frame
            detection(3, 58, 58, 10, 10, 0.7),  # FP (IoU 4/196)
            detection(3, 50, 50, 10, 10, 0.6)]  # TP
    result = det.evaluate_detections(gt, dets)
    # precision (1, 1/2, 1/3, 1/2) at recall (1/2, 1/2, 1/2, 1): interpolated 1 up to recall 0.5 (51 of COCO's 101
    # recall points), 1/2 above (50 points)
    assert result.map_50 == pytest.approx((51 * 1.0 + 50 * 0.5) / 101, abs=1e-12)
    assert result.pr_precision.shape == (1, 101) and result.pr_precision[0, 50] == pytest.approx(1.0)
    assert result.pr_precision[0, 51] == pytest.approx(0.5)
    # without the empty frame its false positive would not count: a higher, wrong number
    gt_without = det.coco_ground_truth(IMAGES[::2], BOXES[::2], ["drone"])
    higher = det.evaluate_detections(gt_without, [d for d in dets if d["image_id"] != 2])
    assert higher.map_50 == pytest.approx((51 + 50 * 2 / 3) / 101, abs=1e-12)


def _direct_cocoeval(gt: dict, dets: list[dict]) -> np.ndarray:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = json.loads(json.dumps(gt))
        coco.createIndex()
        evaluator = COCOeval(coco, coco.loadRes(json.loads(json.dumps(dets))), "bbox")
        evaluator.evaluate(), evaluator.accumulate(), evaluator.summarize()
    return evaluator.stats


def test_equals_cocoeval_on_random_frames_with_empty_ones_and_float_boxes():
    rng = np.random.default_rng(0)
    images = [{"id": i + 1, "width": 320, "height": 180} for i in range(40)]
    boxes, dets = [], []
    for image in images:
        found = []
        for _ in range(rng.integers(0, 3)):  # 0 to 2 drones, many frames empty
            x, y = rng.uniform(0, 280), rng.uniform(0, 150)
            w, h = rng.uniform(4, 30), rng.uniform(3, 20)
            found.append((x, y, min(x + w, 320), min(y + h, 180), 0))
            dets.append(detection(image["id"], x + rng.normal(0, 2), y + rng.normal(0, 2), w, h, rng.uniform()))
        for _ in range(rng.integers(0, 2)):
            dets.append(detection(image["id"], *rng.uniform(0, 150, 2), *rng.uniform(3, 20, 2), rng.uniform()))
        boxes.append(found)
    gt = det.coco_ground_truth(images, boxes, ["drone"])
    ours = det.evaluate_detections(gt, dets)
    direct = _direct_cocoeval(gt, dets)
    assert [ours.stats[k] for k in det.STAT_NAMES] == direct.tolist()
    assert 0.1 < ours.map_50 < 0.99


def test_float_boxes_keep_a_small_drone_exact_and_truncation_costs_it():
    images = [{"id": 1, "width": 64, "height": 64}]
    gt = det.coco_ground_truth(images, [[(10.4, 10.4, 15.6, 15.6, 0)]], ["drone"])
    exact = det.evaluate_detections(gt, [detection(1, 10.4, 10.4, 5.2, 5.2, 0.9)])
    truncated = det.evaluate_detections(gt, [detection(1, 10, 10, 5, 5, 0.9)])
    assert exact.map == pytest.approx(1.0) and exact.map_50 == pytest.approx(1.0)
    assert truncated.map_50 == pytest.approx(1.0) and truncated.map < 0.5  # IoU 0.685: 4 of 10 thresholds


def test_max_detections_and_no_detections_and_bad_inputs():
    gt = det.coco_ground_truth(IMAGES, BOXES, ["drone"])
    many = [detection(3, 0, 0, 5, 5, 0.99 - i / 100) for i in range(5)] + [detection(3, 50, 50, 10, 10, 0.5)]
    assert det.evaluate_detections(gt, many, max_detections=5).stats["mar_max"] == 0.0  # the TP is 6th
    assert det.evaluate_detections(gt, many, max_detections=6).stats["mar_max"] == 0.5
    assert det.evaluate_detections(gt, []).map_50 == 0.0
    with pytest.raises(ValueError, match="images not in the ground truth: \\[9\\]"):
        det.evaluate_detections(gt, [detection(9, 0, 0, 1, 1, 0.5)])
    bad = json.loads(json.dumps(gt))
    bad["annotations"][0]["id"] = 0
    with pytest.raises(ValueError, match="ids must be >= 1"):
        det.evaluate_detections(bad, [])


def test_cli(tmp_path, capsys):
    gt = det.coco_ground_truth(IMAGES, BOXES, ["drone"])
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "pred.json").write_text(json.dumps([detection(1, 10, 10, 20, 20, 0.9)]))
    assert det.main([str(tmp_path / "gt.json"), str(tmp_path / "pred.json")]) == 0
    out = capsys.readouterr().out
    assert "mAP@0.5 " in out and json.loads(out.strip().splitlines()[-1])["map_50"] == pytest.approx(0.5049504950495)
    (tmp_path / "bad.json").write_text(json.dumps([{"image_id": 1}]))
    assert det.main([str(tmp_path / "gt.json"), str(tmp_path / "bad.json")]) == 2
    assert "detection 0 lacks ['category_id', 'bbox', 'score']" in capsys.readouterr().err
