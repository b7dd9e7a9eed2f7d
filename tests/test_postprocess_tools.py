"""Raw per-window detections and the tools on them: save/load, re-post-processing equal to evaluation's, the tuning
grid (scripts/tune_postprocess.py), score-level fusion (scripts/ensemble_detections.py) and run comparison
(scripts/compare_runs.py). Hand-built inputs; the whole-run exactness checks are in tests/trainers/test_tad_run.py."""

import importlib.util
import json
import os
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml

from hf_vtrain.metrics.tad import evaluate_detections
from hf_vtrain.models.adatad.postprocessing_adatad import (
    RawDetections,
    decode_window_detections,
    fuse_raw_detections,
    load_raw_detections,
    merge_raw_detections,
    merge_video_detections,
    raw_results,
    save_raw_detections,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETTINGS = {"score_threshold": 0.001, "pre_nms_topk": 6, "nms_sigma": 0.7, "max_segments": 50,
            "class_agnostic": False, "voting_threshold": 0.7}
CLASSES = ["BaseballPitch", "BasketballDunk"]


def _script(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "scripts", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _window(rows, k=6):
    out = np.tile(np.asarray([0.0, 0.0, -1.0, -1.0], dtype=np.float32), (k, 1))
    rows = sorted(rows, key=lambda r: -r[2])
    out[: len(rows)] = np.asarray(rows, dtype=np.float32).reshape(-1, 4)
    return out


def make_raw(seed=0, jitter=0.0):
    """Two videos (10 fps, stride 2: a window frame is 0.2 s), three 20-frame windows; detections near the truth."""
    rng = np.random.default_rng(seed)
    videos = [{"video_id": "v1", "fps": 10.0, "sample_stride": 2, "duration": 8.0},
              {"video_id": "v2", "fps": 10.0, "sample_stride": 2, "duration": 4.0}]
    windows = [
        _window([[2 + jitter, 8, 0.9, 0], [3, 9, 0.4, 0], [12, 18, 0.6, 1], [1, 3, 0.05, 1]]),
        _window([[2, 8 - jitter, 0.8, 1], [0, 5, 0.3, 0], [10, 19, 0.2, 1]]),
        _window([[5, 15, 0.7, 1], [5, 15, 0.5, 1], [6, 16, 0.1, 0]]),  # an exact duplicate segment within a window
    ]
    detections = np.stack(windows)
    detections[..., 2] = np.where(detections[..., 2] > 0, detections[..., 2] * (1 + 0.01 * rng.random()), -1)
    meta = np.asarray([[0, 0], [0, 10], [1, 0]], dtype=np.int64)
    gt = {"database": {
        "v1": {"subset": "validation", "duration": 8.0, "annotations": [
            {"label": "BaseballPitch", "segment": [0.4, 1.6]}, {"label": "BasketballDunk", "segment": [2.4, 3.6]},
            {"label": "BasketballDunk", "segment": [2.4, 3.4]}]},
        "v2": {"subset": "validation", "duration": 4.0, "annotations": [
            {"label": "BasketballDunk", "segment": [1.0, 3.0]}]},
    }}
    return RawDetections(detections=detections, meta=meta, videos=videos, class_names=list(CLASSES),
                         postprocess=dict(SETTINGS), ground_truth=gt, step=7)


def test_save_load_round_trip(tmp_path):
    raw = make_raw()
    path = save_raw_detections(str(tmp_path / "raw.npz"), raw)
    back = load_raw_detections(path)
    assert np.array_equal(back.detections, raw.detections) and back.detections.dtype == np.float32
    assert np.array_equal(back.meta, raw.meta)
    assert back.videos == raw.videos and back.class_names == CLASSES
    assert back.postprocess == SETTINGS and back.ground_truth == raw.ground_truth and back.step == 7
    with pytest.raises(ValueError, match="not a raw detections file"):
        np.savez(tmp_path / "other.npz", x=np.zeros(2))
        load_raw_detections(str(tmp_path / "other.npz"))


def test_merge_raw_equals_merging_windows_by_hand():
    raw = make_raw()
    merged = merge_raw_detections(raw)
    config = SimpleNamespace(**SETTINGS)
    by_hand = merge_video_detections([(raw.detections[0], 0), (raw.detections[1], 10)], 10.0, 2, 8.0, config)
    for key in ("segments", "scores", "labels"):
        assert np.array_equal(merged["v1"][key], by_hand[key])
    # window 2 starts at sampled frame 10 = 2 s: its [2, 8] becomes [2.4, 3.6] s
    assert any(np.allclose(seg, [2.4, 3.6]) for seg in merged["v1"]["segments"])


def test_shrinking_pre_nms_topk_equals_decoding_with_it():
    torch.manual_seed(0)
    config = SimpleNamespace(num_pyramid_levels=2, regression_ranges=[[0, 4], [4, 100]], pre_nms_topk=12,
                             score_threshold=0.3)
    logits, offsets = torch.randn(1, 24, 3), torch.rand(1, 24, 2) * 4
    mask = torch.ones(1, 24, dtype=torch.bool)
    positions = torch.cat([torch.arange(16.0), torch.arange(8.0) * 2])
    full = decode_window_detections((logits, offsets, mask), config, positions)
    small = decode_window_detections((logits, offsets, mask), SimpleNamespace(**{**vars(config), "pre_nms_topk": 5,
                                                                                 "score_threshold": 0.5}), positions)
    settings = {**SETTINGS, "pre_nms_topk": 12, "score_threshold": 0.3}
    raw = RawDetections(full.numpy(), np.asarray([[0, 0]]), [{"video_id": "v", "fps": 1.0, "sample_stride": 1,
                                                             "duration": 100.0}], ["a", "b", "c"], settings)
    raw_small = RawDetections(small.numpy(), raw.meta, raw.videos, raw.class_names,
                              {**settings, "pre_nms_topk": 5, "score_threshold": 0.5})
    a = merge_raw_detections(raw, {"pre_nms_topk": 5, "score_threshold": 0.5})["v"]
    b = merge_raw_detections(raw_small)["v"]
    assert len(a["scores"]) > 0 and all(np.array_equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="exceeds"):
        merge_raw_detections(raw, {"pre_nms_topk": 13})
    with pytest.raises(ValueError, match="below the saved"):
        merge_raw_detections(raw, {"score_threshold": 0.1})


def test_fusion_rule_hand_worked():
    a, b = make_raw(), make_raw(seed=1, jitter=1.0)
    fused = fuse_raw_detections([a, b], [1, 3])  # weights -> 0.25, 0.75
    w0 = fused.detections[0]
    row = {(float(r[0]), float(r[1]), int(r[3])): float(r[2]) for r in w0 if r[3] >= 0}
    # [3, 9] class 0 is proposed by both: 0.25 s_a + 0.75 s_b; [2, 8] only by a, [3, 8] only by b
    s_a = float(a.detections[0][np.all(a.detections[0][:, [0, 1, 3]] == [3, 9, 0], axis=1)][0, 2])
    s_b = float(b.detections[0][np.all(b.detections[0][:, [0, 1, 3]] == [3, 9, 0], axis=1)][0, 2])
    assert row[(3.0, 9.0, 0)] == pytest.approx(0.25 * s_a + 0.75 * s_b, rel=1e-6)
    assert row[(2.0, 8.0, 0)] == pytest.approx(0.25 * float(a.detections[0][0, 2]), rel=1e-6)
    assert row[(3.0, 8.0, 0)] == pytest.approx(0.75 * float(b.detections[0][0, 2]), rel=1e-6)
    assert np.all(np.diff(w0[w0[:, 3] >= 0][:, 2]) <= 0)  # sorted by fused score
    # the duplicate segment inside one window of one input stays two candidates
    w2 = fused.detections[2]
    assert int(np.sum(np.all(w2[:, [0, 1, 3]] == [5, 15, 1], axis=1))) == 2
    with pytest.raises(ValueError, match="other videos"):
        other = make_raw()
        other.videos = [dict(v, fps=25.0) for v in other.videos]
        fuse_raw_detections([a, other])


def test_fusing_a_checkpoint_with_itself_changes_nothing():
    raw = make_raw()
    fused = fuse_raw_detections([raw, raw])
    for video_id, merged in merge_raw_detections(raw).items():
        again = merge_raw_detections(fused)[video_id]
        assert all(np.array_equal(merged[k], again[k]) for k in merged), video_id
    base = evaluate_detections(raw.ground_truth, raw_results(raw), subset=None, class_names=CLASSES)
    ens = evaluate_detections(raw.ground_truth, raw_results(fused), subset=None, class_names=CLASSES)
    assert ens.average_mAP == base.average_mAP and 0 < base.average_mAP < 1


def test_tune_script_grid_table_and_ground_truth_file(tmp_path, capsys):
    tune = _script("tune_postprocess")
    raw = make_raw()
    path = save_raw_detections(str(tmp_path / "raw.npz"), raw)
    rows = tune.main([path, "--sigma", "0.3,0.7", "--pre-nms-topk", "2,6", "--class-agnostic", "both",
                      "--voting-threshold", "0.5,0.9"])
    # multiclass rows ignore voting: 2 sigmas x 2 top-k x (1 multiclass + 2 agnostic voting values) = 12
    assert len(rows) == 12
    assert [r["average_mAP"] for r in rows] == sorted((r["average_mAP"] for r in rows), reverse=True)
    recorded = [r for r in rows if r["recorded"]]
    assert len(recorded) == 1 and recorded[0]["nms_sigma"] == 0.7 and recorded[0]["pre_nms_topk"] == 6
    expected = evaluate_detections(raw.ground_truth, raw_results(raw), subset=None, class_names=CLASSES)
    assert recorded[0]["average_mAP"] == 100.0 * expected.average_mAP
    out = capsys.readouterr().out
    assert "best first" in out and out.count("\n*") == 1
    # an OpenTAD ground-truth file (with other videos) restricted to the raw file's videos gives the same
    gt_file = tmp_path / "gt.json"
    database = dict(raw.ground_truth["database"])
    database["v_train"] = {"subset": "training", "annotations": [{"label": "BaseballPitch", "segment": [0, 1]}]}
    gt_file.write_text(json.dumps({"database": database}))
    again = tune.tune(path, str(gt_file), [{}])
    assert again[0]["average_mAP"] == recorded[0]["average_mAP"]


def test_ensemble_script_writes_predictions(tmp_path, capsys):
    ensemble = _script("ensemble_detections")
    a = save_raw_detections(str(tmp_path / "a.npz"), make_raw())
    b = save_raw_detections(str(tmp_path / "b.npz"), make_raw(seed=1, jitter=1.0))
    out = ensemble.main([a, b, "--weights", "1,1", "--out", str(tmp_path / "pred.json"),
                         "--save-raw", str(tmp_path / "fused.npz")])
    predictions = json.loads((tmp_path / "pred.json").read_text())
    assert set(predictions["results"]) == {"v1", "v2"} and "average_mAP" in out
    assert load_raw_detections(str(tmp_path / "fused.npz")).detections.shape[0] == 3
    assert "ensemble:" in capsys.readouterr().out


def _fake_run(path, lr, maps, losses):
    path.mkdir(parents=True)
    recipe = {"task": "tad", "output_dir": str(path), "learning_rate": lr, "num_train_epochs": 4, "seed": 42}
    (path / "recipe_resolved.yaml").write_text(yaml.safe_dump(recipe))
    history = [{"loss": loss, "step": 5 * (i + 1), "epoch": i + 1.0} for i, loss in enumerate(losses)]
    history += [{"eval_average_mAP": m, "eval_loss": 1.0 / (1 + m), "step": 5 * (2 * i + 2), "epoch": 2.0 * (i + 1)}
                for i, m in enumerate(maps)]
    (path / "trainer_state.json").write_text(json.dumps({"log_history": history}))


def test_compare_runs_table_and_png(tmp_path, capsys):
    compare = _script("compare_runs")
    _fake_run(tmp_path / "lr_1e-3", 1e-3, [20.0, 35.0], [1.0, 0.8, 0.6, 0.5])
    _fake_run(tmp_path / "lr_1e-2", 1e-2, [40.0, 30.0], [0.9, 0.5, 0.4, 0.45])
    # a run still going: only a checkpoint's trainer_state.json
    (tmp_path / "partial").mkdir()
    (tmp_path / "partial" / "recipe_resolved.yaml").write_text(yaml.safe_dump(
        {"task": "tad", "output_dir": "x", "learning_rate": 5e-3, "num_train_epochs": 4, "seed": 42}))
    (tmp_path / "partial" / "checkpoint-10").mkdir()
    (tmp_path / "partial" / "checkpoint-10" / "trainer_state.json").write_text(json.dumps(
        {"log_history": [{"loss": 0.7, "step": 10, "epoch": 2.0}, {"eval_average_mAP": 25.0, "step": 10,
                                                                   "epoch": 2.0}]}))
    png = tmp_path / "cmp.png"
    result = compare.main([str(tmp_path / "lr_1e-3"), str(tmp_path / "lr_1e-2"), str(tmp_path / "partial"),
                           "--out", str(png)])
    out = capsys.readouterr().out
    assert result["metric"] == "eval_average_mAP"
    assert "learning_rate" in out and "output_dir" not in out and "seed" not in out
    lines = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith("  lr_") or
             line.startswith("  partial")}
    assert lines["lr_1e-3"][1:5] == ["35", "4", "35", "4"]      # best, @epoch, final, @epoch
    assert lines["lr_1e-2"][1:5] == ["40", "2", "30", "4"]
    assert lines["partial"][1] == "25"
    assert png.is_file() and png.stat().st_size > 10_000
