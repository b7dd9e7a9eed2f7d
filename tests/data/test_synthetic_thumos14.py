"""The synthetic THUMOS-14 corpus: OpenTAD layout, exact frame counts, determinism, visible actions, atomic writes."""

import json
import os
import time

import decord
import numpy as np
import pytest

from hf_vtrain.data import synthetic_thumos14 as synthetic
from hf_vtrain.data.synthetic_thumos14 import (
    THUMOS14_CLASSES,
    ensure_synthetic_thumos14,
    make_synthetic_thumos14,
)

TINY = dict(num_train_videos=3, num_test_videos=2, num_classes=3, fps=10, height=32, width=64, min_duration=6.0,
            max_duration=10.0, actions_per_video=(1, 2), action_duration=(1.5, 3.0), num_ambiguous=1,
            seed=3)  # fmt: skip


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_synthetic_thumos14(tmp_path_factory.mktemp("syn") / "thumos", **TINY)


def _database(paths):
    with open(paths["annotation_path"]) as f:
        return json.load(f)["database"]


def test_layout(corpus):
    root = corpus["root"]
    assert os.path.isfile(os.path.join(root, "annotations", "thumos_14_anno.json"))
    assert os.path.isfile(os.path.join(root, "synthetic_params.json"))
    with open(corpus["class_map_path"]) as f:
        assert f.read().splitlines() == ["BaseballPitch", "BasketballDunk", "Billiards"]
    database = _database(corpus)
    assert sorted(database) == ["video_test_0000001", "video_test_0000002", "video_validation_0000001",
                                "video_validation_0000002", "video_validation_0000003"]  # fmt: skip
    for video_id, info in database.items():
        assert info["subset"] == ("training" if video_id.startswith("video_validation") else "validation")
        assert set(info) == {"subset", "duration", "frame", "annotations"}
        assert os.path.isfile(os.path.join(corpus["video_dir"], video_id + ".mp4"))
    assert sorted(os.listdir(corpus["video_dir"])) == sorted(v + ".mp4" for v in database)


def test_frame_is_the_decoded_count(corpus):
    for video_id, info in _database(corpus).items():
        reader = decord.VideoReader(os.path.join(corpus["video_dir"], video_id + ".mp4"))
        assert len(reader) == info["frame"]
        assert reader.get_avg_fps() == pytest.approx(10.0)
        assert info["duration"] == pytest.approx(info["frame"] / 10.0)
        assert 6.0 - 0.1 <= info["duration"] <= 10.0 + 0.1
        assert reader[0].shape == (32, 64, 3)


def test_segments_inside_duration_and_disjoint(corpus):
    labels = []
    for info in _database(corpus).values():
        segments = sorted(a["segment"] for a in info["annotations"])
        assert segments, "every video has at least one annotation"
        for start, end in segments:
            assert 0 <= start < end <= info["duration"]
            # frame-exact bounds
            assert start * 10 == pytest.approx(round(start * 10)) and end * 10 == pytest.approx(round(end * 10))
        for (_, end), (start, _) in zip(segments, segments[1:]):
            assert end < start
        labels += [a["label"] for a in info["annotations"]]
    assert labels.count("Ambiguous") == 1
    assert set(labels) <= {"Ambiguous", *THUMOS14_CLASSES[:3]}


def test_deterministic_for_a_seed(corpus, tmp_path):
    again = make_synthetic_thumos14(tmp_path / "again", **TINY)
    with open(corpus["annotation_path"], "rb") as a, open(again["annotation_path"], "rb") as b:
        assert a.read() == b.read()
    name = "video_validation_0000001.mp4"
    with open(os.path.join(corpus["video_dir"], name), "rb") as a:
        with open(os.path.join(again["video_dir"], name), "rb") as b:
            assert a.read() == b.read()
    other = make_synthetic_thumos14(tmp_path / "other", **{**TINY, "seed": 4})
    assert _database(other) != _database(corpus)


def _colour_fraction(frames: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """Per frame, the fraction of pixels within 60 (RGB distance) of the colour."""
    dist = np.linalg.norm(frames.astype(np.float32) - colour, axis=-1)
    return (dist < 60).mean(axis=(1, 2))


def test_actions_are_visible_with_sharp_bounds(corpus):
    names = list(THUMOS14_CLASSES[:3])
    checked = 0
    for video_id, info in _database(corpus).items():
        frames = decord.VideoReader(os.path.join(corpus["video_dir"], video_id + ".mp4")).get_batch(
            list(range(info["frame"]))).asnumpy()  # fmt: skip
        inside_any = np.zeros(info["frame"], bool)
        for ann in info["annotations"]:
            s, e = (int(round(t * 10)) for t in ann["segment"])
            inside_any[s:e] = True
        for ann in info["annotations"]:
            if ann["label"] == "Ambiguous":
                continue
            _, colour = synthetic._class_style(names.index(ann["label"]))
            s, e = (int(round(t * 10)) for t in ann["segment"])
            frac = _colour_fraction(frames, colour)
            assert frac[s:e].min() > 0.12, (video_id, ann)  # a large shape in every frame of the action
            assert frac[~inside_any].max() < 0.01, (video_id, ann)  # absent outside every action
            if s > 0:
                assert frac[s - 1] < 0.01 and frac[s] > 0.12  # sharp start
            if e < info["frame"]:
                assert frac[e - 1] > 0.12 and frac[e] < 0.01  # sharp end
            checked += 1
    assert checked >= 5


def test_classes_differ_in_colour_and_motion():
    masks = [synthetic._shape_mask(synthetic._class_style(c)[0], np.arange(12), 32, 64, 10, 0.0) for c in range(5)]
    colours = [synthetic._class_style(c)[1] for c in range(20)]
    assert len({tuple(c) for c in colours[:7]}) == 7
    assert len({(synthetic._class_style(c)[0], tuple(synthetic._class_style(c)[1])) for c in range(20)}) == 20
    for mask in masks:
        assert 0.15 < mask.mean() < 0.6  # covers a good part of the frame
        assert (mask[0] != mask[-1]).any() or (mask[0] != mask[3]).any()  # moves


def test_ensure_reuses_then_regenerates(tmp_path):
    root = tmp_path / "c"
    params = {**TINY, "num_train_videos": 1, "num_test_videos": 1}
    first = ensure_synthetic_thumos14(root, **params)
    stamp = os.stat(first["annotation_path"]).st_mtime_ns
    time.sleep(0.01)
    assert ensure_synthetic_thumos14(root, **params) == first
    assert os.stat(first["annotation_path"]).st_mtime_ns == stamp  # reused, not rewritten
    ensure_synthetic_thumos14(root, **{**params, "num_test_videos": 2})
    assert len(_database(first)) == 3
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no temp or old dirs left


def test_refuses_to_replace_a_real_corpus(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a synthetic corpus"):
        make_synthetic_thumos14(tmp_path / "real", **TINY)
    assert (tmp_path / "real" / "keep.txt").read_text() == "mine"


def test_killed_generation_leaves_nothing(tmp_path, monkeypatch):
    calls = []

    def failing(spec, *args, **kwargs):
        calls.append(spec["video_id"])
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(synthetic, "_make_video", failing)
    with pytest.raises(KeyboardInterrupt):
        make_synthetic_thumos14(tmp_path / "c", **{**TINY, "num_train_videos": 2, "num_test_videos": 0})
    assert calls
    assert os.listdir(tmp_path) == []


def test_rejects_sizes_decord_cannot_read(tmp_path):
    with pytest.raises(ValueError, match="48x32"):
        make_synthetic_thumos14(tmp_path / "c", **{**TINY, "width": 48})
    assert os.listdir(tmp_path) == []


def test_cli(tmp_path, capsys):
    out = tmp_path / "cli"
    paths = synthetic.main([str(out), "--num-train-videos", "1", "--num-test-videos", "1",
                            "--fps", "8", "--min-duration", "4", "--max-duration", "4",
                            "--height", "32", "--width", "64"])  # fmt: skip
    assert json.loads(capsys.readouterr().out) == paths
    database = _database(paths)
    assert sorted(database) == ["video_test_0000001", "video_validation_0000001"]
    assert all(info["frame"] == 32 for info in database.values())


def test_default_corpus_is_fast(tmp_path):
    start = time.perf_counter()
    paths = make_synthetic_thumos14(tmp_path / "default")
    elapsed = time.perf_counter() - start
    database = _database(paths)
    assert sum(v["subset"] == "training" for v in database.values()) == 24
    assert sum(v["subset"] == "validation" for v in database.values()) == 8
    assert elapsed < 30, f"default synthetic corpus took {elapsed:.1f} s"
