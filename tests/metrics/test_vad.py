"""Tests of the frame-level anomaly metrics: hand-worked AUC/AP with ties, equality with scikit-learn, the UCF-Crime
annotation and test-list formats, the snippet/ground-truth length convention, the CLI."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hf_vtrain.metrics.vad import (
    VADMetricResult,
    average_precision,
    evaluate_frame_auc,
    expand_snippet_scores,
    frame_labels,
    read_temporal_annotation,
    read_test_list,
    roc_auc,
    video_key,
)

REPO_ROOT = Path(__file__).resolve().parents[2]

# Lines as in the official file (two spaces between fields, trailing spaces), plus a tab-separated one with .mp4.
ANNOTATION_TEXT = (
    "Abuse028_x264  Abuse  165  240  -1  -1  \n"
    "Arson011_x264  Arson  150  420  680  1267  \n"
    "Normal_Videos_003_x264  Normal  -1  -1  -1  -1  \n"
    "\n"
    "Shooting046_x264.mp4\tShooting   4005 4230\t4760  5088\n"
)
TEST_LIST_TEXT = (
    "Abuse/Abuse028_x264.mp4\n"
    "Arson/Arson011_x264.mp4\r\n"
    "Testing_Normal_Videos_Anomaly/Normal_Videos_003_x264.mp4\n"
)


# ----------------------------------------------------------------------------------------------- ranking metrics


def test_roc_auc_hand_worked_with_ties():
    # Pairs (positive, negative): 0.5 vs 0.1 -> 1, 0.5 vs 0.5 -> 1/2 (tie), 0.9 vs both -> 2: 3.5 / 4.
    y, s = [0, 0, 1, 1], [0.1, 0.5, 0.5, 0.9]
    assert roc_auc(y, s) == pytest.approx(0.875, abs=1e-15)
    # Curve points (recall, precision): (0.5, 1) at 0.9, (1, 2/3) at 0.5: AP = 0.5 * 1 + 0.5 * 2/3.
    assert average_precision(y, s) == pytest.approx(0.5 + 1 / 3, abs=1e-15)


def test_roc_auc_all_tied_is_one_half_and_perfect_is_one():
    assert roc_auc([0, 1, 0, 1], [0.3, 0.3, 0.3, 0.3]) == 0.5
    assert roc_auc([0, 0, 1], [0.1, 0.2, 0.3]) == 1.0
    assert roc_auc([1, 1, 0], [0.1, 0.2, 0.3]) == 0.0
    # All tied: one curve point at recall 1 with precision = positive rate.
    assert average_precision([0, 1, 0, 1], [0.3] * 4) == 0.5


def test_undefined_metrics_are_nan():
    assert math.isnan(roc_auc([1, 1], [0.1, 0.2]))
    assert math.isnan(roc_auc([0, 0], [0.1, 0.2]))
    assert math.isnan(average_precision([0, 0], [0.1, 0.2]))
    with pytest.raises(ValueError, match="only 0 and 1"):
        roc_auc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="NaN"):
        roc_auc([0, 1], [0.1, float("nan")])


@pytest.mark.parametrize("seed", range(8))
def test_equal_to_sklearn(seed):
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 3000))
    y = (rng.random(n) < rng.uniform(0.05, 0.6)).astype(np.int64)
    y[0], y[1] = 0, 1
    # Even seeds: heavy ties (scores rounded to 0-2 decimals, or repeated 16 times); odd: float32 scores.
    if seed % 2 == 0:
        s = np.round(rng.random(n), seed % 3)
        if seed % 4 == 0:
            s = np.repeat(s[: n // 16 + 1], 16)[:n]
    else:
        s = rng.random(n).astype(np.float32)
    assert roc_auc(y, s) == sk.roc_auc_score(y, s)
    assert average_precision(y, s) == sk.average_precision_score(y, s)


# ----------------------------------------------------------------------------------------------- frames


def test_frame_labels_are_end_exclusive():
    # Official "start end" = frames start .. end-1, as VadCLIP's gt_vec[start:end] = 1.
    labels = frame_labels(8, [(2, 6)])
    assert labels.tolist() == [0, 0, 1, 1, 1, 1, 0, 0]
    assert labels.dtype == np.uint8
    # Two segments, one running past the end: cut at num_frames.
    assert frame_labels(10, [(0, 1), (8, 50)]).tolist() == [1, 0, 0, 0, 0, 0, 0, 0, 1, 1]
    assert frame_labels(3, []).tolist() == [0, 0, 0]


def test_expand_snippet_scores_repeats_each_score():
    out = expand_snippet_scores([0.25, 0.75], snippet=16)
    assert out.shape == (32,)
    assert np.all(out[:16] == 0.25) and np.all(out[16:] == 0.75)
    assert expand_snippet_scores([1, 2, 3], snippet=2).tolist() == [1, 1, 2, 2, 3, 3]


def test_snippet_count_convention_floor_or_ceil():
    # 40 frames: 2 full snippets (+ 8 frames dropped) or 3 with the last one padded.
    assert expand_snippet_scores([0.1] * 2, num_frames=40).shape == (32,)
    assert expand_snippet_scores([0.1] * 3, num_frames=40).shape == (48,)
    assert expand_snippet_scores([0.1] * 2, num_frames=32).shape == (32,)
    with pytest.raises(ValueError, match=r"video 'Abuse028_x264': 4 snippet scores do not match 40 frames: "
                                         r"expected 2 or 3"):
        expand_snippet_scores([0.1] * 4, num_frames=40, video="Abuse028_x264")
    with pytest.raises(ValueError, match="expected 2 snippets"):
        expand_snippet_scores([0.1] * 3, num_frames=32, video="v")
    with pytest.raises(ValueError, match="no scores"):
        expand_snippet_scores([], video="v")
    with pytest.raises(ValueError, match="'v': score 1 is not finite"):
        expand_snippet_scores([0.1, float("inf")], video="v")
    with pytest.raises(ValueError, match="1-D"):
        expand_snippet_scores([[0.1, 0.2]], video="v")


# ----------------------------------------------------------------------------------------------- files


def test_read_official_annotation_format(tmp_path):
    path = tmp_path / "Temporal_Anomaly_Annotation_for_Testing_Videos.txt"
    path.write_text(ANNOTATION_TEXT)
    ann = read_temporal_annotation(path)
    assert ann == {
        "Abuse028_x264": [(165, 240)],
        "Arson011_x264": [(150, 420), (680, 1267)],
        "Normal_Videos_003_x264": [],
        "Shooting046_x264": [(4005, 4230), (4760, 5088)],
    }
    assert list(ann) == ["Abuse028_x264", "Arson011_x264", "Normal_Videos_003_x264", "Shooting046_x264"]


@pytest.mark.parametrize(
    "line, message",
    [
        ("Arson011_x264  Arson  150  -1  -1  -1", "one bound -1"),
        ("Arson011_x264  Arson  150  14x  -1  -1", "must be integers"),
        ("Arson011_x264  Arson  420  150  -1  -1", "ends before it starts"),
        ("Arson011_x264  Arson  150  150  -1  -1", "ends before it starts"),
        ("Arson011_x264  Arson  150", "expected 'name class start end"),
        ("Arson011_x264  Arson  150  420  680", "expected 'name class start end"),
        ("Abuse028_x264  Abuse  1  2  -1  -1", "already annotated on line 1"),
    ],
)
def test_annotation_errors_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "ann.txt"
    path.write_text("Abuse028_x264  Abuse  165  240  -1  -1  \n" + line + "\n")
    with pytest.raises(ValueError, match=message) as info:
        read_temporal_annotation(path)
    assert str(info.value).startswith(f"{path}:2: ")


def test_read_test_list(tmp_path):
    path = tmp_path / "Anomaly_Test.txt"
    path.write_text(TEST_LIST_TEXT + "\n")
    assert read_test_list(path) == ["Abuse028_x264", "Arson011_x264", "Normal_Videos_003_x264"]
    path.write_text(TEST_LIST_TEXT + "Abuse/Abuse028_x264.mp4\n")
    with pytest.raises(ValueError, match=r"Anomaly_Test.txt:4: video 'Abuse028_x264' is already listed on line 1"):
        read_test_list(path)


def test_video_key():
    assert video_key("Abuse/Abuse028_x264.mp4") == "Abuse028_x264"
    assert video_key("Testing_Normal_Videos_Anomaly/Normal_Videos_003_x264.mp4") == "Normal_Videos_003_x264"
    assert video_key("Arson011_x264") == "Arson011_x264"
    assert video_key(" Arson011_x264.MP4 ") == "Arson011_x264"


# ----------------------------------------------------------------------------------------------- evaluation


def test_evaluate_hand_worked():
    # snippet=4. Video A: labels [0 0 1 1 1 1 0 0], scores [.2]*4 + [.8]*4; video N (normal): [.1]*4 + [.8]*4.
    # Positives .2 .2 .8 .8; negatives .2 .2 .8 .8 (A) and .1 x4, .8 x4 (N): 12.
    # AUC: each .2 beats 4 and ties 2 -> 5; each .8 beats 6 and ties 6 -> 9: (2*5 + 2*9) / 48 = 7/12.
    # AP: threshold .8 -> P 2/8, R 1/2; threshold .2 -> P 4/12, R 1: 1/2 * 1/4 + 1/2 * 1/3 = 7/24.
    # AUC_A (video A only): .2 ties 2 -> 1; .8 beats 2, ties 2 -> 3: (2*1 + 2*3) / 16 = 1/2.
    ann = {"A": [(2, 6)], "N": []}
    result = evaluate_frame_auc(ann, ["A", "N"], {"A": [0.2, 0.8], "N": [0.1, 0.8]}, snippet=4)
    assert isinstance(result, VADMetricResult)
    assert result.auc == pytest.approx(7 / 12, abs=1e-15)
    assert result.ap == pytest.approx(7 / 24, abs=1e-15)
    assert result.auc_anomalous_only == pytest.approx(0.5, abs=1e-15)
    assert (result.num_videos, result.num_anomalous_videos, result.num_frames, result.num_anomalous_frames) == (
        2, 1, 16, 4)
    assert result.as_dict() == pytest.approx({"auc": 700 / 12, "ap": 700 / 24, "auc_anomalous_only": 50.0})
    assert result.as_dict(prefix="eval_").keys() == {"eval_auc", "eval_ap", "eval_auc_anomalous_only"}
    table = result.table()
    assert "frame AUC" in table and "58.33" in table and "29.17" in table and "50.00" in table


def test_ground_truth_is_n_times_16_frames_and_segments_are_cut():
    # 40 frames, 2 snippets -> GT covers frames 0..31 (VadCLIP: gt_vec[:-16] of (n+1)*16). The segment 30..39
    # keeps frames 30 and 31 only: 2 positives of 32 frames, scored by the second snippet.
    ann = {"A": [(30, 40)], "N": []}
    result = evaluate_frame_auc(ann, None, {"A": [0.1, 0.9], "N": [0.2, 0.3]}, num_frames={"A": 40, "N": 32})
    assert result.num_frames == 64
    assert result.num_anomalous_frames == 2
    # Each positive (0.9) beats the 48 negatives at 0.1/0.2/0.3 and ties the 14 at 0.9 (frames 16..29): 55 / 62.
    assert result.auc == pytest.approx(55 / 62, abs=1e-15)
    # Frame 32 alone (the end is exclusive) gives no positive frame in a 32-frame ground truth.
    with pytest.raises(ValueError, match="no anomalous frame"):
        evaluate_frame_auc({"A": [(32, 40)], "N": []}, None, {"A": [0.1, 0.9], "N": [0.2, 0.3]})


def test_frame_count_mismatch_names_the_video():
    ann = {"Abuse028_x264": [(10, 20)], "Normal_Videos_003_x264": []}
    scores = {"Abuse028_x264": [0.5] * 5, "Normal_Videos_003_x264": [0.1] * 2}
    frames = {"Abuse028_x264": 80, "Normal_Videos_003_x264": 100}
    with pytest.raises(ValueError, match=r"video 'Normal_Videos_003_x264': 2 snippet scores do not match 100 frames"):
        evaluate_frame_auc(ann, None, scores, num_frames=frames)
    with pytest.raises(ValueError, match=r"video 'Normal_Videos_003_x264' has no entry in num_frames"):
        evaluate_frame_auc(ann, None, scores, num_frames={"Abuse028_x264": 80})


def test_missing_and_extra_videos():
    ann = {"A": [(0, 8)], "N": []}
    with pytest.raises(ValueError, match=r"video 'N' of the test list has no scores"):
        evaluate_frame_auc(ann, ["A", "N"], {"A": [0.1]})
    with pytest.raises(ValueError, match=r"video 'X' of the test list has no temporal annotation"):
        evaluate_frame_auc(ann, ["A", "X"], {"A": [0.1], "X": [0.2]})
    with pytest.raises(ValueError, match="listed twice"):
        evaluate_frame_auc(ann, ["A", "A"], {"A": [0.1]})
    # Scores keyed by path with extension are matched; videos outside the test list are counted and ignored.
    result = evaluate_frame_auc(ann, ["Cat/A.mp4", "N"], {"Cat/A.mp4": [0.9], "N": [0.1], "Z": [0.5]}, snippet=8)
    assert result.auc == 1.0 and result.num_ignored_videos == 1
    with pytest.raises(ValueError, match=r"entries 'A' and 'x/A.mp4' are the same video 'A'"):
        evaluate_frame_auc(ann, None, {"A": [0.9], "x/A.mp4": [0.9], "N": [0.1]})


def test_auc_anomalous_only_nan_without_anomalous_video_in_subset():
    # Positives and negatives both present overall only if an anomalous video is evaluated: with none, an error.
    ann = {"A": [(0, 16)], "N": []}
    with pytest.raises(ValueError, match="no anomalous frame"):
        evaluate_frame_auc(ann, ["N"], {"N": [0.1]})
    # An anomalous video that is anomalous throughout: AUC_A has no negatives -> NaN.
    result = evaluate_frame_auc(ann, None, {"A": [0.9], "N": [0.1]})
    assert result.auc == 1.0 and math.isnan(result.auc_anomalous_only)


@pytest.mark.parametrize("seed", range(3))
def test_evaluate_equals_sklearn_on_concatenated_frames(seed):
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(100 + seed)
    ann, scores, frames, order = {}, {}, {}, []
    y_parts, s_parts, a_parts = [], [], []
    for i in range(12):
        key = f"Video{i:03d}_x264"
        n_frames = int(rng.integers(16, 400))
        n = n_frames // 16 if n_frames % 16 == 0 or i % 2 else -(-n_frames // 16)
        snippet_scores = np.round(rng.random(n), 1)  # heavy ties
        segs = []
        if i % 3:
            start = int(rng.integers(0, n_frames - 1))
            segs = [(start, int(rng.integers(start + 1, n_frames + 1)))]
        ann[key], scores[key], frames[key] = segs, snippet_scores.tolist(), n_frames
        order.append(key)
        # Independent ground truth: frame f (f < 16 n) is anomalous if start <= f < end.
        gt = np.array([any(s <= f < e for s, e in segs) for f in range(16 * n)], dtype=int)
        y_parts.append(gt)
        s_parts.append(np.repeat(snippet_scores, 16))
        a_parts.append(np.full(16 * n, bool(segs)))
    rng.shuffle(order)
    result = evaluate_frame_auc(ann, order, scores, num_frames=frames)
    idx = [int(k[5:8]) for k in order]
    y = np.concatenate([y_parts[i] for i in idx])
    s = np.concatenate([s_parts[i] for i in idx])
    a = np.concatenate([a_parts[i] for i in idx])
    assert result.auc == sk.roc_auc_score(y, s)
    assert result.ap == sk.average_precision_score(y, s)
    assert result.auc_anomalous_only == sk.roc_auc_score(y[a], s[a])
    assert result.num_frames == y.size and result.num_anomalous_frames == y.sum()


# ----------------------------------------------------------------------------------------------- command line


def _write_inputs(tmp_path, scores):
    ann = tmp_path / "Temporal_Anomaly_Annotation_for_Testing_Videos.txt"
    ann.write_text(ANNOTATION_TEXT)
    test_list = tmp_path / "Anomaly_Test.txt"
    test_list.write_text(TEST_LIST_TEXT)
    score_file = tmp_path / "scores.json"
    score_file.write_text(scores if isinstance(scores, str) else json.dumps(scores))
    return ann, test_list, score_file


def _run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "hf_vtrain.metrics.vad", *map(str, args)],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=120,
    )


def test_cli_success_and_json(tmp_path):
    # Abuse028: 300 frames -> 18 snippets, segment 165..239; Arson011: 1300 frames -> 81; normal: 10 snippets.
    abuse = [0.9 if 165 <= 16 * i + 8 < 240 else 0.1 for i in range(18)]
    arson = [0.8 if (150 <= 16 * i + 8 < 420 or 680 <= 16 * i + 8 < 1267) else 0.2 for i in range(81)]
    scores = {
        "scores": {"Abuse028_x264": abuse, "Arson011_x264.mp4": arson, "Normal_Videos_003_x264": [0.0] * 10},
        "num_frames": {"Abuse028_x264": 300, "Arson011_x264": 1300, "Normal_Videos_003_x264": 160},
    }
    ann, test_list, score_file = _write_inputs(tmp_path, scores)
    out_json = tmp_path / "metrics.json"
    proc = _run_cli(ann, score_file, "--test-list", test_list, "--json", out_json)
    assert proc.returncode == 0, proc.stderr
    assert "frame AUC" in proc.stdout and "videos 3 (2 anomalous)" in proc.stdout
    report = json.loads(out_json.read_text())
    expected = evaluate_frame_auc(ann, test_list, score_file)
    assert report["auc"] == pytest.approx(100 * expected.auc)
    assert report["num_videos"] == 3 and report["num_frames"] == 16 * (18 + 81 + 10)
    assert 95.0 < report["auc"] <= 100.0


@pytest.mark.parametrize(
    "scores, message",
    [
        ({"Abuse028_x264": [0.1], "Arson011_x264": [0.2]}, "error: video 'Normal_Videos_003_x264' of the test list "
                                                           "has no scores in"),
        ({"Abuse028_x264": "high"}, "error: {score_file}: entry 'Abuse028_x264': scores must be a list of numbers"),
        ("{not json", "error: {score_file}: not valid JSON"),
        ({"scores": {"Abuse028_x264": [0.1] * 3, "Arson011_x264": [0.1], "Normal_Videos_003_x264": [0.1]},
          "num_frames": {"Abuse028_x264": 300, "Arson011_x264": 20, "Normal_Videos_003_x264": 16}},
         "error: video 'Abuse028_x264': 3 snippet scores do not match 300 frames"),
    ],
)
def test_cli_errors_are_one_line(tmp_path, scores, message):
    ann, test_list, score_file = _write_inputs(tmp_path, scores)
    proc = _run_cli(ann, score_file, "--test-list", test_list)
    assert proc.returncode == 2  # bad input (hf_vtrain.exit_codes)
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert proc.stderr.startswith(message.format(score_file=score_file)), proc.stderr


def test_cli_bad_annotation_and_missing_file(tmp_path):
    ann, test_list, score_file = _write_inputs(tmp_path, {"Abuse028_x264": [0.1]})
    ann.write_text("Abuse028_x264  Abuse  165  oops  -1  -1\n")
    proc = _run_cli(ann, score_file)
    assert proc.returncode == 2 and proc.stderr.startswith(f"error: {ann}:1: frame numbers must be integers")
    proc = _run_cli(tmp_path / "missing.txt", score_file)
    assert proc.returncode == 2 and "missing.txt" in proc.stderr and "Traceback" not in proc.stderr
