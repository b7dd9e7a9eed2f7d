"""THUMOS-14 loader: window tables, RandomTrunc, determinism, label units, collation and whole-corpus validation."""

import json
import os
import shutil

import numpy as np
import pytest
import torch

from hf_vtrain.data.common import CorpusError, set_dataset_epoch
from hf_vtrain.data.synthetic_thumos14 import make_synthetic_thumos14
from hf_vtrain.data.thumos14 import (
    TADDataArguments,
    collate_tad,
    eval_window_starts,
    load_thumos14,
    random_trunc,
    validate_thumos14,
    window_frame_indices,
)

FPS = 10
# Every video is 10 s = 100 frames = 50 sampled frames at stride 2.
CORPUS = dict(num_train_videos=3, num_test_videos=2, num_classes=3, fps=FPS, height=32, width=64,
              min_duration=10.0, max_duration=10.0, actions_per_video=(1, 2), action_duration=(1.5, 3.0),
              num_ambiguous=1, seed=1)  # fmt: skip


@pytest.fixture(scope="module")
def corpus_root(tmp_path_factory):
    return make_synthetic_thumos14(tmp_path_factory.mktemp("thumos") / "c", **CORPUS)["root"]


def _args(root, **kw):
    return TADDataArguments(data_root=str(root), **{"sample_stride": 2, "window_size": 16, "eval_window_stride": 8,
                                                    **kw})  # fmt: skip


def _plain(clip, generator):
    # uint8 (T, H, W, 3) -> (T, 3, H, W); draws from the generator so tests can see which generator was used
    out = torch.from_numpy(clip).permute(0, 3, 1, 2).contiguous()
    out.drawn = torch.rand(1, generator=generator).item()
    return out


def _load(root, seed=0, ground_truth_dir=None, **kw):
    return load_thumos14(_args(root, **kw), seed=seed, train_clip_transform=_plain, eval_clip_transform=_plain,
                         ground_truth_dir=ground_truth_dir)


def _database(root):
    with open(os.path.join(root, "annotations", "thumos_14_anno.json")) as f:
        return json.load(f)["database"]


# ----------------------------------------------------------------------------------------------- tables


def test_rows_and_windows(corpus_root, tmp_path):
    corpus = _load(corpus_root)
    assert corpus.report.ok and corpus.report.ignored_segments == {"Ambiguous": 1}
    assert corpus.class_names == ["BaseballPitch", "BasketballDunk", "Billiards"]
    assert len(corpus.train_dataset) == 3  # every training video has an action
    # 50 sampled frames, window 16, stride 8: starts 0, 8, 16, 24, 32 and the last window at 50 - 16 = 34
    assert len(corpus.eval_dataset) == 2 * 6
    assert corpus.eval_dataset["window_start"] == [0, 8, 16, 24, 32, 34] * 2
    assert corpus.eval_dataset["video_index"] == [0] * 6 + [1] * 6
    assert [v["video_id"] for v in corpus.videos] == ["video_test_0000001", "video_test_0000002"]
    for video in corpus.videos:
        assert video["fps"] == pytest.approx(FPS) and video["num_frames"] == 100 and video["sample_stride"] == 2
    # one padded window per video when the window is longer than the video
    long = _load(corpus_root, window_size=64)
    assert len(long.eval_dataset) == 2
    sample = long.eval_dataset[0]
    assert sample["pixel_mask"].sum() == 50 and sample["pixel_values"].shape == (64, 3, 32, 64)
    # debug limits
    small = _load(corpus_root, max_train_videos=2, max_eval_videos=1)
    assert len(small.train_dataset) == 2 and len(small.eval_dataset) == 6 and len(small.videos) == 1


@pytest.mark.parametrize(
    "num, window, stride, expected",
    [(1000, 768, 384, [0, 232]), (1152, 768, 384, [0, 384]), (768, 768, 384, [0]), (500, 768, 384, [0]),
     (769, 768, 384, [0, 1]), (2000, 768, 384, [0, 384, 768, 1152, 1232])],
)  # fmt: skip
def test_eval_window_starts_match_opentad(num, window, stride, expected):
    assert eval_window_starts(num, window, stride) == expected


def test_eval_windows_cover_every_sampled_frame():
    rng = np.random.default_rng(0)
    for _ in range(300):
        num, window = int(rng.integers(1, 400)), int(rng.integers(1, 100))
        stride = int(rng.integers(1, window + 1))
        starts = eval_window_starts(num, window, stride)
        covered = np.zeros(num, int)
        for s in starts:
            covered[s : s + window] += 1
            assert 0 <= s and (s + window <= num or (s == 0 and num <= window))
        assert (covered > 0).all() and starts == sorted(set(starts))


def test_eval_dataset_covers_every_frame_exactly(corpus_root):
    corpus = _load(corpus_root)
    seen = {i: np.zeros(50, int) for i in range(2)}
    for i in range(len(corpus.eval_dataset)):
        sample = corpus.eval_dataset[i]
        start, mask = int(sample["window_start"]), sample["pixel_mask"].numpy()
        seen[int(sample["video_index"])][start : start + int(mask.sum())] += 1
        assert mask.all()
    for counts in seen.values():
        assert (counts > 0).all()


def test_window_frame_indices():
    indices, mask = window_frame_indices(3, 5, 8, 4, 30)
    assert indices.tolist() == [12, 16, 20, 24, 28, 28, 28, 28]  # edge padding past the real frames
    assert mask.tolist() == [True] * 5 + [False] * 3


# ----------------------------------------------------------------------------------------------- RandomTrunc


def _ratio_inside(segments, lo, hi):
    inter = np.clip(np.minimum(segments[:, 1], hi) - np.maximum(segments[:, 0], lo), 0, None)
    return inter / (segments[:, 1] - segments[:, 0])


def test_random_trunc_keeps_an_action_and_crops():
    segments = np.array([[10.0, 20.0], [60.0, 64.0], [100.0, 130.0]])
    labels = np.array([0, 1, 2])
    gen = torch.Generator().manual_seed(0)
    starts = set()
    for _ in range(2000):
        start, valid, seg, lab = random_trunc(200, segments, labels, 32, 0.75, (0.9, 1.0), gen)
        assert valid == 32 and 0 <= start <= 200 - 32
        ratio = _ratio_inside(segments, start, start + 32)
        assert (ratio >= 0.75).any()
        assert lab.tolist() == labels[ratio >= 0.75].tolist()  # exactly the ones >= 75% inside
        expected = np.clip(segments[ratio >= 0.75], start, start + 32) - start
        np.testing.assert_allclose(seg, expected, rtol=0, atol=1e-5)
        assert (seg >= 0).all() and (seg <= 32).all()
        starts.add(start)
    # every qualifying start is drawn (uniform over them): segment 0 allows 0..20 (>= 7.5 of 10 inside) etc.
    feasible = [s for s in range(169) if (_ratio_inside(segments, s, s + 32) >= 0.75).any()]
    assert starts == set(feasible)


def test_random_trunc_short_video():
    segments, labels = np.array([[2.0, 9.0], [30.0, 40.0]]), np.array([1, 0])
    gen = torch.Generator().manual_seed(1)
    lengths = set()
    for _ in range(300):
        start, valid, seg, lab = random_trunc(40, segments, labels, 64, 0.75, (0.9, 1.0), gen)
        assert 36 <= valid <= 40 and 0 <= start <= 40 - valid
        lengths.add(valid)
        assert len(lab) >= 1
        if valid == 40:  # whole video: start 0, ground truth unchanged
            assert start == 0 and np.allclose(seg, segments)
    assert lengths == {36, 37, 38, 39, 40}
    start, valid, seg, lab = random_trunc(40, segments, labels, 64, 0.75, None, gen)
    assert (start, valid) == (0, 40) and np.allclose(seg, segments) and lab.tolist() == [1, 0]


def test_random_trunc_impossible_falls_back_to_uniform():
    # a 100-frame action never has 75% inside a 32-frame window: OpenTAD keeps its last random trial
    start, valid, seg, lab = random_trunc(200, np.array([[50.0, 150.0]]), np.array([0]), 32, 0.75, None,
                                          torch.Generator().manual_seed(0))  # fmt: skip
    assert valid == 32 and 0 <= start <= 168 and len(lab) == 0


def test_train_windows_hold_75_percent_of_an_action(corpus_root):
    corpus = _load(corpus_root)
    database = _database(corpus_root)
    for epoch in range(8):
        set_dataset_epoch(corpus.train_dataset, epoch)
        for i in range(len(corpus.train_dataset)):
            row = corpus.train_dataset.with_format(None)[i]
            sample = corpus.train_dataset[i]
            start, valid = int(sample["window_start"]), int(sample["pixel_mask"].sum())
            segs = np.array([a["segment"] for a in database[row["video_id"]]["annotations"]
                             if a["label"] != "Ambiguous"]) * FPS / 2  # fmt: skip
            assert (_ratio_inside(segs, start, start + valid) >= 0.75).any()
            assert len(sample["class_labels"]) >= 1


# ----------------------------------------------------------------------------------------------- determinism


def test_same_seed_epoch_index_same_sample(corpus_root):
    a, b = _load(corpus_root, seed=5), _load(corpus_root, seed=5)
    first = [a.train_dataset[i] for i in range(3)]
    second = [b.train_dataset[i] for i in reversed(range(3))][::-1]  # another access order, another instance
    for x, y in zip(first, second):
        assert int(x["window_start"]) == int(y["window_start"])
        assert torch.equal(x["pixel_values"], y["pixel_values"])
        assert x["pixel_values"].drawn == y["pixel_values"].drawn  # same generator state reached the clip transform
        assert torch.equal(x["segment_labels"], y["segment_labels"])
    # a batch access gives the same rows as single accesses
    batch = a.train_dataset[[0, 1, 2]]
    assert [int(w) for w in batch["window_start"]] == [int(x["window_start"]) for x in first]

    starts, draws = {}, {}
    for epoch in range(6):
        a.set_epoch(epoch)
        for i in range(3):
            sample = a.train_dataset[i]
            starts.setdefault(i, []).append(int(sample["window_start"]))
            draws.setdefault(i, []).append(sample["pixel_values"].drawn)
    for i in range(3):
        assert len(set(starts[i])) > 1, starts  # the window moves across epochs
        assert len(set(draws[i])) == 6  # and the augmentation generator differs every epoch
    c = _load(corpus_root, seed=6)
    assert [c.train_dataset[i]["pixel_values"].drawn for i in range(3)] != [x["pixel_values"].drawn for x in first]


def test_eval_is_deterministic(corpus_root):
    corpus = _load(corpus_root)
    x, y = corpus.eval_dataset[3], corpus.eval_dataset[3]
    assert torch.equal(x["pixel_values"], y["pixel_values"]) and x["pixel_values"].drawn == y["pixel_values"].drawn


# ----------------------------------------------------------------------------------------------- units


def _check_back_to_seconds(sample, video_segments, stride=2):
    """Window-unit segments map back to GT seconds (cropped to the window's time span)."""
    start, valid = int(sample["window_start"]), int(sample["pixel_mask"].sum())
    lo, hi = start * stride / FPS, (start + valid) * stride / FPS
    for (s, e), label in zip(sample["segment_labels"].tolist(), sample["class_labels"].tolist()):
        seconds = ((s + start) * stride / FPS, (e + start) * stride / FPS)
        matches = [(gs, ge) for gs, ge, gl in video_segments
                   if gl == label and np.allclose(seconds, (max(gs, lo), min(ge, hi)), atol=1e-4)]  # fmt: skip
        assert matches, (seconds, video_segments)


def test_segment_labels_map_back_to_seconds(corpus_root):
    corpus = _load(corpus_root)
    database = _database(corpus_root)
    names = corpus.class_names

    def gt(video_id):
        return [(*a["segment"], names.index(a["label"])) for a in database[video_id]["annotations"]
                if a["label"] != "Ambiguous"]  # fmt: skip

    checked = 0
    for epoch in range(3):
        corpus.set_epoch(epoch)
        for i in range(len(corpus.train_dataset)):
            sample = corpus.train_dataset[i]
            _check_back_to_seconds(sample, gt(corpus.train_videos[int(sample["video_index"])]["video_id"]))
            checked += len(sample["class_labels"])
    for i in range(len(corpus.eval_dataset)):
        sample = corpus.eval_dataset[i]
        _check_back_to_seconds(sample, gt(corpus.videos[int(sample["video_index"])]["video_id"]))
        checked += len(sample["class_labels"])
    assert checked > 10


def test_ground_truth_file(corpus_root, tmp_path):
    corpus = _load(corpus_root, ground_truth_dir=str(tmp_path))
    assert os.path.dirname(corpus.ground_truth_path) == str(tmp_path)
    with open(corpus.ground_truth_path) as f:
        written = json.load(f)
    assert written == corpus.ground_truth
    database = _database(corpus_root)
    assert sorted(written["database"]) == ["video_test_0000001", "video_test_0000002"]
    for video_id, info in written["database"].items():
        source = [a for a in database[video_id]["annotations"] if a["label"] != "Ambiguous"]
        assert info["annotations"] == source and info["frame"] == 100


# ----------------------------------------------------------------------------------------------- collate


def test_collate_pads_ground_truth():
    def sample(n, start):
        return {
            "pixel_values": torch.zeros(4, 3, 8, 8, dtype=torch.uint8),
            "pixel_mask": torch.tensor([True, True, True, False]),
            "class_labels": torch.arange(n),
            "segment_labels": torch.tensor([[0.5 + k, 1.5 + k] for k in range(n)]).reshape(-1, 2),
            "video_index": torch.tensor(start),
            "window_start": torch.tensor(start * 2),
        }

    batch = collate_tad([sample(0, 1), sample(2, 2), sample(1, 3)])
    assert batch["pixel_values"].shape == (3, 4, 3, 8, 8) and batch["pixel_values"].dtype == torch.uint8
    assert batch["pixel_mask"].dtype == torch.bool and batch["pixel_mask"].shape == (3, 4)
    assert batch["class_labels"].tolist() == [[-1, -1], [0, 1], [0, -1]]
    assert batch["segment_labels"].dtype == torch.float32 and batch["segment_labels"].shape == (3, 2, 2)
    assert batch["segment_labels"][1].tolist() == [[0.5, 1.5], [1.5, 2.5]]
    assert batch["video_index"].tolist() == [1, 2, 3] and batch["window_start"].tolist() == [2, 4, 6]
    assert batch["video_index"].dtype == torch.long and batch["window_start"].dtype == torch.long
    empty = collate_tad([sample(0, 0), sample(0, 1)])
    assert empty["class_labels"].tolist() == [[-1], [-1]] and empty["segment_labels"].shape == (2, 1, 2)


def test_collate_through_a_dataloader(corpus_root):
    corpus = _load(corpus_root)
    loader = torch.utils.data.DataLoader(corpus.eval_dataset, batch_size=4, collate_fn=collate_tad)
    batch = next(iter(loader))
    assert batch["pixel_values"].shape == (4, 16, 3, 32, 64)
    assert batch["class_labels"].shape[0] == 4 and batch["class_labels"].shape[1] >= 1


# ----------------------------------------------------------------------------------------------- validation


def _edit_database(root, fn):
    path = os.path.join(root, "annotations", "thumos_14_anno.json")
    with open(path) as f:
        data = json.load(f)
    fn(data["database"])
    with open(path, "w") as f:
        json.dump(data, f)


def test_validation_reports_every_problem_at_once(corpus_root, tmp_path):
    root = tmp_path / "broken"
    shutil.copytree(corpus_root, root)
    video_dir = root / "raw_data" / "video"
    os.remove(video_dir / "video_validation_0000002.mp4")  # missing file
    (video_dir / "video_test_0000001.mp4").write_bytes(os.urandom(5000))  # garbage
    shutil.copy(video_dir / "video_validation_0000001.mp4", video_dir / "video_test_0000099.mp4")  # leak

    def corrupt(db):
        db["video_validation_0000001"]["frame"] += 20  # frame mismatch of 20%, beyond frame_count_tolerance 5%
        db["video_validation_0000003"]["annotations"][0]["segment"] = [11.0, 12.5]  # after the 10 s video
        db["video_test_0000002"]["annotations"][0]["label"] = "Juggling"  # not in the class map
        db["video_test_0000099"] = dict(db["video_validation_0000001"], subset="validation", frame=100)

    _edit_database(root, corrupt)
    args = _args(root)
    report = validate_thumos14(args)
    assert not report.ok
    leaked = [a for a in _database(root)["video_test_0000099"]["annotations"] if a["label"] == "Ambiguous"]
    assert report.ignored_segments == {"Ambiguous": 1 + len(leaked)}  # counted, not a problem
    expected = {
        "video_validation_0000002": "not found",
        "video_test_0000001": "cannot be decoded",
        "video_validation_0000001": "'frame' 120 != 100",
        "video_validation_0000003": "lies entirely after the video's duration",
        "video_test_0000002": "label 'Juggling' is not in the class map",
        "video_test_0000099": "train/eval overlap",
    }
    assert len(report.problems) == len(expected), report.format()
    for video_id, text in expected.items():
        assert any(video_id in p and text in p for p in report.problems), (video_id, report.format())
    assert not any("Ambiguous" in p for p in report.problems)
    assert report.num_videos == {"training": 3, "validation": 3}
    with pytest.raises(CorpusError) as err:
        load_thumos14(args, train_clip_transform=_plain, eval_clip_transform=_plain)
    message = str(err.value)
    for video_id in expected:
        assert video_id in message
    assert "6 problem(s)" in message and err.value.report.problems == report.problems


@pytest.mark.parametrize(
    "edit, text",
    [
        (lambda db: db["video_validation_0000001"]["annotations"][0].update(segment=[-3.0, -1.0]),
         "entirely before 0"),
        (lambda db: db["video_validation_0000001"]["annotations"][0].update(segment=["a", 2.0]), "[start, end]"),
        (lambda db: db["video_test_0000001"].update(duration=11.0), "'duration' 11.0"),
        (lambda db: db["video_test_0000001"].pop("frame"), "'frame' must be a positive integer"),
    ],
)
def test_validation_annotation_problems(corpus_root, tmp_path, edit, text):
    root = tmp_path / "c"
    shutil.copytree(corpus_root, root)
    _edit_database(root, edit)
    report = validate_thumos14(_args(root))
    assert len(report.problems) == 1 and text in report.problems[0], report.format()


def test_what_opentad_trains_on_is_counted_not_refused(corpus_root, tmp_path):
    """OpenTAD's own annotation file has frame counts a few frames off the videos, segments ending after the duration
    and reversed segments; OpenTAD trains on them. Here they are counted in the report and the corpus loads (the
    file's frame count is read, segments clipped, reversed ones dropped); a missing video still stops it."""
    root = tmp_path / "opentad_like"
    shutil.copytree(corpus_root, root)

    def tolerable(db):
        db["video_validation_0000001"]["frame"] += 3  # 3 of 100 frames: 3%, within frame_count_tolerance
        db["video_validation_0000002"]["frame"] -= 2
        first = db["video_validation_0000003"]["annotations"][0]
        first["segment"] = [first["segment"][0], db["video_validation_0000003"]["duration"] + 0.5]  # past the end
        db["video_test_0000001"]["annotations"].append({"label": db["video_test_0000001"]["annotations"][0]["label"],
                                                       "segment": [4.0, 3.0]})  # reversed

    _edit_database(root, tolerable)
    report = validate_thumos14(_args(root))
    assert report.ok, report.format()
    assert report.adjusted["videos whose annotation 'frame' differs from the file's count (the file's is read)"] == 2
    assert report.adjusted["largest frame-count difference, frames"] == 3
    assert report.adjusted["segments ending after the video's duration, clipped to it"] == 1
    assert report.adjusted["segments with start >= end, dropped"] == 1
    assert "segments with start >= end, dropped: 1" in report.format()
    corpus = _load(root)
    rows = {r["video_id"]: r for r in corpus.train_dataset.with_format(None)}
    assert rows["video_validation_0000001"]["num_frames"] == 100  # the file's count, not the annotation's 103
    assert rows["video_validation_0000001"]["fps"] == pytest.approx(103 / 10.0)  # OpenTAD: frame / duration
    os.remove(root / "raw_data" / "video" / "video_validation_0000002.mp4")
    with pytest.raises(CorpusError, match="video_validation_0000002.*video file not found"):
        _load(root)


def test_validation_tolerates_one_frame_period(corpus_root, tmp_path):
    root = tmp_path / "c"
    shutil.copytree(corpus_root, root)
    _edit_database(root, lambda db: db["video_test_0000001"]["annotations"][0].update(segment=[0.0, 10.05]))
    assert validate_thumos14(_args(root)).ok


@pytest.mark.parametrize("content, text", [(None, "not found"), ("{oops", "not valid JSON"),
                                           ('{"videos": {}}', "no 'database'")])  # fmt: skip
def test_validation_annotation_file(corpus_root, tmp_path, content, text):
    root = tmp_path / "c"
    shutil.copytree(corpus_root, root)
    path = root / "annotations" / "thumos_14_anno.json"
    if content is None:
        os.remove(path)
    else:
        path.write_text(content)
    report = validate_thumos14(_args(root))
    assert any(str(path) in p and text in p for p in report.problems), report.format()


def test_duplicate_video_ids_in_json(corpus_root, tmp_path):
    root = tmp_path / "c"
    shutil.copytree(corpus_root, root)
    path = root / "annotations" / "thumos_14_anno.json"
    text = path.read_text()
    entry = json.dumps(_database(corpus_root)["video_test_0000001"])
    path.write_text(text.replace('"database": {', '"database": {"video_test_0000001": ' + entry + ", ", 1))
    report = validate_thumos14(_args(root))
    assert any("video_test_0000001" in p and "more than once" in p for p in report.problems), report.format()


def test_exclude_videos(corpus_root, tmp_path):
    root = tmp_path / "c"
    shutil.copytree(corpus_root, root)
    os.remove(root / "raw_data" / "video" / "video_test_0000002.mp4")
    assert not validate_thumos14(_args(root)).ok
    corpus = load_thumos14(_args(root, exclude_videos=["video_test_0000002"]), train_clip_transform=_plain,
                           eval_clip_transform=_plain)  # fmt: skip
    assert [v["video_id"] for v in corpus.videos] == ["video_test_0000001"]


def test_synthetic_flag_generates_the_corpus(tmp_path):
    args = TADDataArguments(data_root=str(tmp_path / "syn"), synthetic=True, synthetic_num_train_videos=2,
                            synthetic_num_test_videos=1, synthetic_height=32, synthetic_width=64,
                            synthetic_min_duration=4.0, synthetic_max_duration=4.0, sample_stride=2, window_size=16,
                            eval_window_stride=8)  # fmt: skip
    corpus = load_thumos14(args, train_clip_transform=_plain, eval_clip_transform=_plain)
    assert len(corpus.train_dataset) == 2 and len(corpus.videos) == 1
    # 4 s at 15 fps = 60 frames = 30 sampled: starts 0, 8 and 30 - 16 = 14
    assert corpus.eval_dataset["window_start"] == [0, 8, 14]


def test_default_clip_transforms(corpus_root):
    """The recipe's augmentation (video_io's TrainClipTransform / EvalClipTransform) through the loader."""
    args = _args(corpus_root, resize_short_side=36, crop_size=24, eval_resize=24)
    corpus = load_thumos14(args, seed=0)
    sample = corpus.train_dataset[0]
    assert sample["pixel_values"].shape == (16, 3, 24, 24) and sample["pixel_values"].dtype == torch.uint8
    assert torch.equal(sample["pixel_values"], corpus.train_dataset[0]["pixel_values"])  # same (seed, epoch, index)
    corpus.set_epoch(1)
    assert not torch.equal(sample["pixel_values"], corpus.train_dataset[0]["pixel_values"])
    evaluated = corpus.eval_dataset[0]
    assert evaluated["pixel_values"].shape == (16, 3, 24, 24)
    assert torch.equal(evaluated["pixel_values"], corpus.eval_dataset[0]["pixel_values"])


def test_dataloader_workers_match_main_process(corpus_root):
    corpus = _load(corpus_root)
    corpus.train_dataset[0]  # opens a reader in this process before the workers fork
    corpus.set_epoch(2)
    expected = collate_tad([corpus.train_dataset[i] for i in range(3)])
    loader = torch.utils.data.DataLoader(corpus.train_dataset, batch_size=3, num_workers=2, collate_fn=collate_tad)
    batch = next(iter(loader))
    for key in expected:
        assert torch.equal(batch[key], expected[key]), key


def test_validation_catches_a_cut_file(corpus_root, tmp_path):
    root = tmp_path / "c"
    shutil.copytree(corpus_root, root)
    path = root / "raw_data" / "video" / "video_validation_0000002.mp4"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    report = validate_thumos14(_args(root))
    assert len(report.problems) == 1 and "video_validation_0000002" in report.problems[0], report.format()


def test_load_corpus_is_the_typed_corpus_the_task_windows_come_from(corpus_root, tmp_path):
    import datasets

    from hf_vtrain.data.thumos14 import load_corpus

    corpus = load_corpus({"data_root": str(corpus_root)})
    assert isinstance(corpus, datasets.DatasetDict) and set(corpus) == {"train", "test"}
    features = corpus["train"].features
    class_names = [line.strip() for line in open(os.path.join(corpus_root, "annotations", "category_idx.txt"))
                   if line.strip()]
    assert features["labels"].feature.names == class_names  # ClassLabel
    assert features["segments"] == datasets.List(datasets.List(datasets.Value("float64"), length=2))
    assert {features[k].dtype for k in ("fps", "duration")} == {"float64"} and features["num_frames"].dtype == "int64"
    database = _database(corpus_root)
    example = corpus["test"][0]
    assert example["subset"] == "validation" and example["video_id"] in database
    entry = database[example["video_id"]]
    assert example["fps"] == pytest.approx(entry["frame"] / entry["duration"])
    assert [features["labels"].feature.int2str(i) for i in example["labels"]] == [
        a["label"] for a in entry["annotations"] if a["label"] in class_names]
    # the task's tables: training videos with a kept segment, evaluation windows of the test videos, same values
    loaded = _load(corpus_root)
    assert loaded.train_dataset.data.column("video_id").to_pylist() == [r["video_id"] for r in corpus["train"]
                                                                        if r["segments"]]
    assert set(loaded.eval_dataset.data.column("video_id").to_pylist()) == set(corpus["test"]["video_id"])
    # from a recipe file, with overrides; problems are the run's CorpusError
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"task: tad\ndata_root: {corpus_root}\nmax_train_videos: 1\nlearning_rate: 0.1\n")
    capped = load_corpus(str(recipe))
    assert sum(1 for r in capped["train"] if r["segments"]) == 1 and len(capped["test"]) == len(corpus["test"])
    with pytest.raises(CorpusError):
        load_corpus(str(recipe), annotation_path="annotations/missing.json")
