"""The task metrics as `evaluate` modules: loaded offline by path from the installed package, they give the CLIs'
numbers on the same inputs (one implementation per metric behind both)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from hf_vtrain.metrics import det as det_metric
from hf_vtrain.metrics import har as har_metric
from hf_vtrain.metrics import tad as tad_metric
from hf_vtrain.metrics import vad as vad_metric
from hf_vtrain.metrics.modules import MODULES, path

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Runs in a fresh process with HF_HUB_OFFLINE=1: each module through evaluate.load(path), fed with add_batch in two
# halves then compute(**kwargs).
COMPUTE = """
import json, sys
import evaluate
from hf_vtrain.metrics.modules import path
out = {}
for name, job in json.load(open(sys.argv[1])).items():
    module = evaluate.load(path(name))
    half = len(job["predictions"]) // 2
    module.add_batch(predictions=job["predictions"][:half], references=job["references"][:half])
    module.add_batch(predictions=job["predictions"][half:], references=job["references"][half:])
    out[name] = {"result": module.compute(**job.get("kwargs", {})), "description": module.description,
                 "inputs": module.inputs_description}
json.dump(out, open(sys.argv[2], "w"))
"""


def _tad(rng, tmp_path):
    classes = ["Jump", "Run", "Throw"]
    database, results, refs, preds = {}, {}, [], []
    for v in range(5):
        vid = f"video_{v}"
        starts = rng.uniform(0, 80, 3)
        gt = [(float(s), float(s + rng.uniform(2, 10)), classes[int(rng.integers(3))]) for s in starts]
        database[vid] = {"subset": "validation", "duration": 100.0,
                         "annotations": [{"label": c, "segment": [s, e]} for s, e, c in gt]}
        refs.append({"video_id": vid, "segments": [[s, e] for s, e, _ in gt], "labels": [c for _, _, c in gt],
                     "evaluated": True})
        centre = rng.uniform(0, 90, 20)
        segs = [[float(c), float(c + rng.uniform(1, 10))] for c in centre]
        scores = [float(x) for x in np.round(rng.uniform(0, 1, 20), 2)]  # ties
        labels = [classes[int(rng.integers(3))] for _ in range(20)]
        results[vid] = [{"segment": s, "score": p, "label": c} for s, p, c in zip(segs, scores, labels)]
        preds.append({"video_id": vid, "segments": segs, "scores": scores, "labels": labels})
    results["not_evaluated"] = [{"segment": [1.0, 2.0], "score": 0.5, "label": "Jump"}]  # a false positive
    preds.append({"video_id": "not_evaluated", "segments": [[1.0, 2.0]], "scores": [0.5], "labels": ["Jump"]})
    database["not_evaluated"] = {"subset": "training", "annotations": [{"label": "Run", "segment": [3.0, 4.0]}]}
    refs.append({"video_id": "not_evaluated", "segments": [[3.0, 4.0]], "labels": ["Run"], "evaluated": False})
    (tmp_path / "gt.json").write_text(json.dumps({"database": database}))
    (tmp_path / "pred.json").write_text(json.dumps({"results": results}))
    assert tad_metric.main([str(tmp_path / "gt.json"), str(tmp_path / "pred.json"), "--json",
                            str(tmp_path / "tad.json")]) == 0
    cli = json.loads((tmp_path / "tad.json").read_text())
    return {"predictions": preds, "references": refs}, {k: cli[k] for k in cli if k.startswith(("mAP@", "average"))}


def _vad(rng, tmp_path):
    lines, scores, frames, refs, preds = [], {}, {}, [], []
    for v in range(6):
        anomalous = v % 2 == 0
        name = f"Abuse{v:03d}_x264" if anomalous else f"Normal_Videos_{v:03d}_x264"
        num_frames = int(rng.integers(100, 200))
        n = num_frames // 16
        segment = [int(rng.integers(0, 50)), 0]
        segment[1] = segment[0] + int(rng.integers(20, 60))
        lines.append(f"{name}.mp4  {'Abuse' if anomalous else 'Normal'}  "
                     f"{segment[0] if anomalous else -1}  {segment[1] if anomalous else -1}  -1  -1")
        s = [float(x) for x in np.round(rng.uniform(0, 1, n), 3)]
        scores[name], frames[name] = s, num_frames
        refs.append({"video_id": name, "segments": [segment] if anomalous else [], "num_frames": num_frames})
        preds.append({"video_id": name, "scores": s})
    (tmp_path / "annotation.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "scores.json").write_text(json.dumps({"scores": scores, "num_frames": frames}))
    assert vad_metric.main([str(tmp_path / "annotation.txt"), str(tmp_path / "scores.json"), "--json",
                            str(tmp_path / "vad.json")]) == 0
    cli = json.loads((tmp_path / "vad.json").read_text())
    return {"predictions": preds, "references": refs}, {k: cli[k] for k in ("auc", "ap", "auc_anomalous_only")}


def _har(rng, tmp_path):
    labels = {f"S{i:03d}": int(rng.integers(0, 7)) for i in range(40)}
    scores = {k: [float(x) for x in rng.uniform(0, 1, 7)] for k in labels}
    (tmp_path / "labels.json").write_text(json.dumps(labels))
    (tmp_path / "har_scores.json").write_text(json.dumps(scores))
    assert har_metric.main([str(tmp_path / "labels.json"), str(tmp_path / "har_scores.json"), "--json",
                            str(tmp_path / "har.json")]) == 0
    cli = json.loads((tmp_path / "har.json").read_text())
    job = {"predictions": [scores[k] for k in labels], "references": [labels[k] for k in labels]}
    return job, {k: cli[k] for k in ("top1_acc", "top5_acc", "mean_class_acc")}


def _det(rng, tmp_path, capsys):
    images, boxes, refs, preds, results = [], [], [], [], []
    for i in range(1, 9):
        images.append({"id": i, "width": 64, "height": 48, "file_name": f"{i}.jpg"})
        gt = [] if i % 4 == 0 else [(float(x), float(y), float(x + w), float(y + h), int(rng.integers(2)))
                                    for x, y, w, h in rng.uniform([0, 0, 3, 3], [40, 30, 20, 15], (2, 4))]
        boxes.append(gt)
        refs.append({"image_id": i, "width": 64, "height": 48, "boxes": [list(b[:4]) for b in gt],
                     "labels": [b[4] for b in gt]})
        pred = [(x1 + rng.normal(0, 1), y1 + rng.normal(0, 1), x2 + rng.normal(0, 1), y2 + rng.normal(0, 1), c)
                for x1, y1, x2, y2, c in gt] + [(5.0, 5.0, 12.0, 12.0, 0)]
        score = [float(s) for s in rng.uniform(0, 1, len(pred))]
        preds.append({"image_id": i, "boxes": [list(map(float, p[:4])) for p in pred], "scores": score,
                      "labels": [int(p[4]) for p in pred]})
        results += [{"image_id": i, "category_id": int(c) + 1, "bbox": [float(x1), float(y1), float(x2 - x1),
                     float(y2 - y1)], "score": s} for (x1, y1, x2, y2, c), s in zip(pred, score)]
    (tmp_path / "coco_gt.json").write_text(json.dumps(det_metric.coco_ground_truth(images, boxes, ["drone", "bird"])))
    (tmp_path / "coco_pred.json").write_text(json.dumps(results))
    capsys.readouterr()
    assert det_metric.main([str(tmp_path / "coco_gt.json"), str(tmp_path / "coco_pred.json"),
                            "--max-detections", "10"]) == 0
    cli = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    job = {"predictions": preds, "references": refs, "kwargs": {"class_names": ["drone", "bird"], "max_detections": 10}}
    return job, cli


def test_every_module_gives_the_clis_numbers_loaded_offline(tmp_path, capsys):
    rng = np.random.default_rng(0)
    jobs, expected = {}, {}
    for name, make in (("tad_map", _tad), ("vad_frame_auc", _vad), ("har_accuracy", _har)):
        jobs[name], expected[name] = make(rng, tmp_path)
    jobs["det_coco_map"], cli_det = _det(rng, tmp_path, capsys)
    assert set(jobs) == set(MODULES)
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home"), "PYTHONPATH": REPO}
    proc = subprocess.run([sys.executable, "-c", COMPUTE, str(tmp_path / "jobs.json"), str(tmp_path / "out.json")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads((tmp_path / "out.json").read_text())
    for name in ("tad_map", "vad_frame_auc", "har_accuracy"):
        assert out[name]["result"] == pytest.approx(expected[name], abs=1e-9), name
        assert 0 < min(expected[name].values()) < 100 or name == "har_accuracy", expected[name]  # not a trivial case
    assert {f"map_50": out["det_coco_map"]["result"]["map_50"]} == pytest.approx({"map_50": cli_det["map_50"]})
    assert out["det_coco_map"]["result"] == pytest.approx({k: cli_det[k] for k in out["det_coco_map"]["result"]})
    for name in MODULES:  # the module card text evaluate shows
        assert "Args:" in out[name]["inputs"] and len(out[name]["description"]) > 100


def test_unknown_module_names_the_choices():
    with pytest.raises(ValueError, match="unknown metric module 'tad'; choose one of tad_map"):
        path("tad")


def test_the_module_examples_run_offline(tmp_path):
    # the Examples of each module's inputs description (what evaluate shows) are doctests
    files = [os.path.join(path(name), f"{name}.py") for name in MODULES]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home"), "PYTHONPATH": REPO}
    proc = subprocess.run([sys.executable, "-m", "doctest", *files], env=env, capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
