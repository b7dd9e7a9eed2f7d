"""Synthetic UCF-Crime corpus: official layout and file formats, FG-CLIP records, events inside their boxes and
annotated spans, Chinese captions, determinism, reuse, CLI and generation time."""

import json
import os
import re
import time

import decord
import numpy as np
import pytest

from hf_vtrain.data import synthetic_ucf_crime as synthetic_ucf
from hf_vtrain.data.synthetic_ucf_crime import ensure_synthetic_ucf_crime, make_synthetic_ucf_crime
from hf_vtrain.metrics.vad import read_temporal_annotation, read_test_list, video_key

FPS = 15
SMALL = dict(num_train_normal=2, num_train_anomalous=3, num_test_normal=2, num_test_anomalous=3, fps=FPS,
             min_duration=6.0, max_duration=8.0, num_chinese_captions=2, num_region_negatives=3, seed=3)  # fmt: skip
LINE = re.compile(r"^(Abuse|Arson|Fighting|Training_Normal_Videos_Anomaly|Testing_Normal_Videos_Anomaly)/"
                  r"(Abuse|Arson|Fighting|Normal_Videos_)\d{3}_x264\.mp4$")  # fmt: skip


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_synthetic_ucf_crime(tmp_path_factory.mktemp("ucf") / "c", **SMALL)


def _records(paths):
    with open(paths["train_json"], encoding="utf-8") as f:
        return json.load(f)


def _frames(paths, rel):
    reader = decord.VideoReader(os.path.join(paths["video_dir"], rel))
    return reader.get_batch(list(range(len(reader)))).asnumpy()


def _colour_mask(frames, names):
    """Pixels within 70 (RGB distance) of any of the named colours."""
    out = np.zeros(frames.shape[:-1], bool)
    for name in names:
        colour = np.asarray(synthetic_ucf._COLOUR_WORDS[name], np.float32)
        out |= np.linalg.norm(frames.astype(np.float32) - colour, axis=-1) < 70
    return out


def _event_colours(cls):
    """The saturated colours of a class's event (grey and black regions look like the background and people)."""
    names = set()
    for style in synthetic_ucf._EVENTS[cls][2]:
        names |= {c for c in (style["colour"], style["colour2"]) if c and c not in ("grey", "black", "white")}
    return sorted(names)


def test_layout_and_split_files(corpus):
    root = corpus["root"]
    train_lines = open(corpus["train_list"]).read().splitlines()
    test_lines = open(corpus["test_list"]).read().splitlines()
    assert len(train_lines) == 5 and len(test_lines) == 5
    for line in train_lines + test_lines:
        assert LINE.match(line), line
        assert os.path.isfile(os.path.join(root, "videos", line)), line
    assert all(line.startswith("Training_Normal") for line in train_lines if "Normal" in line)
    assert all(line.startswith("Testing_Normal") for line in test_lines if "Normal" in line)
    assert not test_lines[0].startswith("Testing_Normal")  # anomalous videos first, as in the official list
    assert not {video_key(x) for x in train_lines} & {video_key(x) for x in test_lines}
    # metrics/vad reads both files; every test video has exactly one annotation line
    keys = read_test_list(corpus["test_list"])
    annotations = read_temporal_annotation(corpus["test_annotation"])
    assert list(annotations) == keys
    for line in open(corpus["test_annotation"]).read().splitlines():
        fields = line.split()
        assert len(fields) == 6 and fields[0].endswith("_x264.mp4")
        name = fields[0]
        if name.startswith("Normal"):
            assert fields[1:] == ["Normal", "-1", "-1", "-1", "-1"]
        else:
            assert fields[1] == re.match(r"[A-Za-z]+", name).group(0)
            assert fields[2] != "-1"
    for rel in test_lines:
        n = len(decord.VideoReader(os.path.join(corpus["video_dir"], rel)))
        for s, e in annotations[video_key(rel)]:
            assert 0 <= s < e <= n


def test_training_records(corpus):
    records = _records(corpus)
    train = set(open(corpus["train_list"]).read().splitlines())
    normal = [r for r in records if "Normal" in r["video"]]
    anomalous = [r for r in records if "Normal" not in r["video"]]
    assert len(anomalous) == 3 and len({r["video"] for r in normal}) == 2
    for r in records:
        assert set(r) <= {"video", "global_caption", "region_captions", "box_infos", "timestamps", "region_negatives"}
        assert r["video"] in train and r["global_caption"].strip()
        n = len(decord.VideoReader(os.path.join(corpus["video_dir"], r["video"])))
        if r["timestamps"] is not None:
            assert 0 <= r["timestamps"][0] < r["timestamps"][1] <= n / FPS
    for r in normal:  # timestamped clips without regions, tiling the video from 0
        assert r["region_captions"] == [] and r["box_infos"] == [] and r["timestamps"] is not None
    clips = [r["timestamps"] for r in normal if r["video"] == normal[0]["video"]]
    assert clips[0][0] == 0 and all(a[1] == b[0] for a, b in zip(clips, clips[1:]))
    for r in anomalous:
        assert 1 <= len(r["region_captions"]) == len(r["box_infos"]) <= 2
        assert len(r["region_negatives"]) == len(r["region_captions"])
        for caption, negatives in zip(r["region_captions"], r["region_negatives"]):
            assert len(negatives) == 3 and caption not in negatives and len(set(negatives)) == 3
        for boxes in r["box_infos"]:
            assert 3 <= len(boxes) <= 5
            frames = [b["frame"] for b in boxes]
            assert frames == sorted(frames) and len(set(frames)) == len(frames)
            if r["timestamps"] is not None:  # keyframes span the event, which is the record's clip
                lo, hi = (round(t * FPS) for t in r["timestamps"])
                assert frames[0] == lo and frames[-1] == hi - 1
            for b in boxes:
                x1, y1, x2, y2 = b["bbox"]
                assert 0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1


def test_events_inside_boxes(corpus):
    checked = 0
    for r in _records(corpus):
        if not r["box_infos"]:
            continue
        frames = _frames(corpus, r["video"])
        n, height, width = frames.shape[:3]
        cls = r["video"].split("/")[0]
        colour = _colour_mask(frames, _event_colours(cls))
        first = min(b[0]["frame"] for b in r["box_infos"])
        last = max(b[-1]["frame"] for b in r["box_infos"])
        inside = np.zeros((n, height, width), bool)
        for boxes in r["box_infos"]:
            kf = np.array([[b["frame"], *b["bbox"]] for b in boxes], float)
            for f in range(int(kf[0, 0]), int(kf[-1, 0]) + 1):
                x1, y1, x2, y2 = (np.interp(f, kf[:, 0], kf[:, 1 + j]) for j in range(4))
                inside[f, int(y1 * height) : int(np.ceil(y2 * height)), int(x1 * width) : int(np.ceil(x2 * width))] = 1
        per_frame_inside = (colour & inside).sum(axis=(1, 2))
        assert per_frame_inside[first : last + 1].min() > 20, r["video"]  # visible in every frame of the event
        assert (colour & ~inside).sum(axis=(1, 2))[first : last + 1].max() <= 3, r["video"]  # and only in its boxes
        outside = np.ones(n, bool)
        outside[first : last + 1] = False
        assert colour.sum(axis=(1, 2))[outside].max() <= 3, r["video"]  # absent before and after
        checked += 1
    assert checked == 3


def test_test_events_follow_the_annotation(corpus):
    annotations = read_temporal_annotation(corpus["test_annotation"])
    for rel in open(corpus["test_list"]).read().splitlines():
        frames = _frames(corpus, rel)
        cls = rel.split("/")[0]
        colours = _event_colours(cls) if "Normal" not in cls else ["red", "orange", "magenta", "green"]
        present = _colour_mask(frames, colours).sum(axis=(1, 2)) > 20
        labels = np.zeros(len(frames), bool)
        for s, e in annotations[video_key(rel)]:
            labels[s:e] = True
        assert np.array_equal(present, labels), rel  # frame-exact: the annotation is end-exclusive


def test_chinese_captions_and_translations(corpus):
    records = _records(corpus)
    chinese = [r for r in records if any(ord(ch) > 0x4E00 for ch in r["global_caption"])]
    assert len(chinese) == 2 and len({r["video"].split("/")[0] for r in chinese}) == 2
    with open(corpus["translation_file"], encoding="utf-8") as f:
        translations = json.load(f)
    for r in chinese:
        assert translations[r["global_caption"]].isascii()
    assert all(r["global_caption"].isascii() for r in records if r not in chinese)


def test_deterministic_and_seeded(tmp_path):
    params = {**SMALL, "num_train_normal": 1, "num_train_anomalous": 1, "num_test_normal": 0,
              "num_test_anomalous": 1, "num_chinese_captions": 0, "min_duration": 3.0, "max_duration": 3.0}  # fmt: skip
    a = make_synthetic_ucf_crime(tmp_path / "a", **params)
    b = make_synthetic_ucf_crime(tmp_path / "b", **params)
    assert _records(a) == _records(b)
    rel = "Abuse/Abuse001_x264.mp4"
    with open(os.path.join(a["video_dir"], rel), "rb") as fa, open(os.path.join(b["video_dir"], rel), "rb") as fb:
        assert fa.read() == fb.read()
    other = make_synthetic_ucf_crime(tmp_path / "c", **{**params, "seed": 9})
    assert _records(other) != _records(a)


def test_ensure_reuses_refuses_and_cli(tmp_path, capsys):
    params = {**SMALL, "num_train_normal": 1, "num_train_anomalous": 1, "num_test_normal": 1,
              "num_test_anomalous": 0, "num_chinese_captions": 0, "min_duration": 3.0, "max_duration": 3.0}  # fmt: skip
    first = ensure_synthetic_ucf_crime(tmp_path / "c", **params)
    stamp = os.stat(first["train_json"]).st_mtime_ns
    time.sleep(0.01)
    assert ensure_synthetic_ucf_crime(tmp_path / "c", **params) == first
    assert os.stat(first["train_json"]).st_mtime_ns == stamp
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a synthetic corpus"):
        make_synthetic_ucf_crime(tmp_path / "real", **params)
    with pytest.raises(ValueError, match="anomaly_classes"):
        make_synthetic_ucf_crime(tmp_path / "x", anomaly_classes=("Riot",))
    paths = synthetic_ucf.main([str(tmp_path / "cli"), "--num-train-normal", "1", "--num-train-anomalous", "1",
                                "--num-test-normal", "1", "--num-test-anomalous", "1", "--min-duration", "3",
                                "--max-duration", "3", "--anomaly-classes", "Explosion"])  # fmt: skip
    assert json.loads(capsys.readouterr().out) == paths
    assert open(paths["test_list"]).read().splitlines()[0] == "Explosion/Explosion002_x264.mp4"
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no temp dirs left


def test_every_official_class_draws_inside_its_boxes():
    rng = np.random.default_rng(0)
    for cls in synthetic_ucf.UCF_CRIME_ANOMALY_CLASSES:
        event = synthetic_ucf._plan_event(rng, cls, 0, 30, 64, 96)
        yy, xx = np.mgrid[0:64, 0:96].astype(np.float32)
        jitter = rng.uniform(-1, 1, size=(30, 2))
        for t in range(30):
            for region in event["regions"]:
                style = region["style"]
                bx, by = synthetic_ucf._interp_path(region["path"], t)
                dx, dy, factor = synthetic_ucf._local_motion(style["motion"], t, region["amp_px"], FPS,
                                                             region["side"], jitter)  # fmt: skip
                mask = synthetic_ucf._shape_mask(style["shape"], bx + dx, by + dy, region["size_px"] * factor, t,
                                                 yy, xx)  # fmt: skip
                kf = np.array([[b["frame"], *b["bbox"]] for b in region["boxes"]])
                x1, y1, x2, y2 = (np.interp(t, kf[:, 0], kf[:, 1 + j]) for j in range(4))
                ys, xs = np.nonzero(mask)
                assert len(xs) > 10, cls
                assert xs.min() >= x1 * 96 - 0.5 and xs.max() <= x2 * 96 + 0.5, cls
                assert ys.min() >= y1 * 64 - 0.5 and ys.max() <= y2 * 64 + 0.5, cls


def test_default_corpus_is_fast(tmp_path):
    start = time.perf_counter()
    paths = make_synthetic_ucf_crime(tmp_path / "default")
    elapsed = time.perf_counter() - start
    assert len(open(paths["train_list"]).read().splitlines()) == 20
    assert len(open(paths["test_list"]).read().splitlines()) == 12
    assert elapsed < 60, f"default synthetic UCF-Crime corpus took {elapsed:.1f} s"
