"""The synthetic NTU-60 corpus (real PYSKL pickle, real MP4s) validates clean; every kind of broken input is named."""

import copy
import os
import pickle

import numpy as np
import pytest

from hf_vtrain.data.ntu60 import HARDataArguments, validate_ntu60
from hf_vtrain.data.restricted_pickle import load_restricted
from hf_vtrain.data.synthetic_ntu60 import XSUB_TRAIN_SUBJECTS, ensure_synthetic_ntu60


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("ntu") / "corpus"
    ensure_synthetic_ntu60(root, num_classes=3, samples_per_class=6)
    return root


def args_for(root, **overrides):
    return HARDataArguments(data_root=str(root), num_classes=3, **overrides)


def test_the_synthetic_corpus_is_valid_and_split_by_subject_and_camera(corpus):
    for split in ("xsub", "xview"):
        report = validate_ntu60(args_for(corpus, split=split))
        assert report.ok, report.format()
        assert report.num_samples["train"] and report.num_samples["val"]
        assert sum(report.num_samples.values()) == 18 and "2D keypoints: 18" in report.format()
    data = load_restricted(corpus / "ntu60_2d.pkl")
    subjects = {int(n[9:12]) for n in data["split"]["xsub_train"]}
    assert subjects <= set(XSUB_TRAIN_SUBJECTS)
    assert not {int(n[9:12]) for n in data["split"]["xsub_val"]} & set(XSUB_TRAIN_SUBJECTS)
    assert {int(n[5:8]) for n in data["split"]["xview_val"]} == {1}
    ann = data["annotations"][0]
    assert ann["keypoint"].shape[1:] == (ann["total_frames"], 17, 2) and ann["keypoint_score"].dtype == np.float16


def write_variant(corpus, tmp_path, change):
    data = load_restricted(corpus / "ntu60_2d.pkl")
    data = copy.deepcopy(data)
    change(data)
    path = tmp_path / "variant.pkl"
    path.write_bytes(pickle.dumps(data))
    return str(path)


def test_every_problem_is_named_at_once(corpus, tmp_path):
    names = {}

    def break_it(data):
        anns = data["annotations"]
        names.update(label=anns[0]["frame_dir"], outside=anns[1]["frame_dir"], frames=anns[2]["frame_dir"])
        anns[0]["label"] = 7                                   # not a class
        anns[1]["keypoint"] = anns[1]["keypoint"].copy()
        anns[1]["keypoint"][0, 3, 5] = (500.0, 10.0)           # a detected joint outside 64x96
        anns[2]["total_frames"] += 4                           # video and keypoints hold fewer
        data["split"]["xsub_train"].append("S009C001P001R001A001")      # no such sample
        data["split"]["xsub_val"].append(data["split"]["xsub_train"][0])  # in both lists

    path = write_variant(corpus, tmp_path, break_it)
    os.rename(corpus / "videos" / f"{names['outside']}.mp4", tmp_path / "moved.mp4")
    try:
        report = validate_ntu60(args_for(corpus, annotation_path=path))
    finally:
        os.rename(tmp_path / "moved.mp4", corpus / "videos" / f"{names['outside']}.mp4")
    text = report.format()
    assert not report.ok
    assert f"({names['label']}): label 7 is not a class index in [0, 3)" in text
    assert f"({names['outside']}): 1 detected keypoints lie outside img_shape 64x96, e.g. (500.0, 10.0)" in text
    assert f"({names['frames']}): keypoint holds" in text and "total_frames says" in text
    assert f"{names['frames']}.mp4 (sample {names['frames']}):" in text and "the annotation's total_frames" in text
    assert f"{names['outside']}.mp4 (sample {names['outside']}): video file not found" in text
    assert "names 1 frame_dir(s) with no annotation, e.g. ['S009C001P001R001A001']" in text
    assert "1 sample(s) are in both xsub_train and xsub_val" in text


def test_a_3d_pickle_where_heatmaps_are_needed(corpus, tmp_path):
    def to_3d(data):
        for ann in data["annotations"]:
            m, t = ann["keypoint"].shape[:2]
            ann["keypoint"] = np.zeros((m, t, 25, 3), np.float16)
            ann.pop("keypoint_score"), ann.pop("img_shape")

    path = write_variant(corpus, tmp_path, to_3d)
    report = validate_ntu60(args_for(corpus, annotation_path=path, check_videos=False))
    assert "3D keypoints (V=25, x y z) carry no scores and no image shape" in report.format()
    assert validate_ntu60(args_for(corpus, annotation_path=path, check_videos=False, needs_heatmaps=False)).ok
    from hf_vtrain.data.ntu60 import CorpusSamples, load_corpus

    typed = load_corpus(args_for(corpus, annotation_path=path, check_videos=False, needs_heatmaps=False))
    assert "keypoint_score" not in typed["train"].features and typed["train"][0]["img_shape"] is None
    sample = CorpusSamples(typed["train"])[0]
    assert sample["keypoint"].shape[2:] == (25, 3) and sample["img_shape"] is None and "keypoint_score" not in sample


def test_load_corpus_is_the_typed_corpus_the_samples_come_from(corpus, tmp_path):
    import datasets

    import hf_vtrain
    from hf_vtrain.data.common import CorpusError
    from hf_vtrain.data.ntu60 import load_corpus, load_ntu60

    typed = load_corpus({"data_root": str(corpus), "num_classes": 3})
    assert isinstance(typed, datasets.DatasetDict) and set(typed) == {"train", "val"}
    features = typed["train"].features
    assert features["label"] == datasets.ClassLabel(names=["A001", "A002", "A003"])
    value = datasets.Value("float32")
    assert features["keypoint"] == datasets.List(datasets.List(datasets.List(datasets.List(value, length=2),
                                                                             length=17)))
    assert features["keypoint_score"] == datasets.List(datasets.List(datasets.List(value, length=17)))
    assert features["img_shape"] == datasets.List(datasets.Value("int64"), length=2)
    data = load_restricted(corpus / "ntu60_2d.pkl")
    by_name = {a["frame_dir"]: a for a in data["annotations"]}
    assert typed["val"]["frame_dir"] == data["split"]["xsub_val"]
    example = typed["val"].with_format("numpy")[1]  # what a user's own loop sees: (persons, frames, joints, xy)
    ann = by_name[str(example["frame_dir"])]
    assert example["keypoint"].shape == ann["keypoint"].shape and example["keypoint"].dtype == np.float32
    assert np.array_equal(example["keypoint_score"], ann["keypoint_score"].astype(np.float32))
    assert example["path"] == str(corpus / "videos" / f"{ann['frame_dir']}.mp4")
    # the task reads its samples from these columns: every array equal to the pickle's, bit for bit
    loaded = load_ntu60(args_for(corpus))
    assert loaded.corpus["train"]["frame_dir"] == typed["train"]["frame_dir"] == loaded.train_samples.frame_dirs
    for sample in list(loaded.train_samples) + list(loaded.eval_samples):
        want = by_name[sample["frame_dir"]]
        assert sample["label"] == want["label"] and sample["total_frames"] == want["total_frames"]
        assert sample["img_shape"] == tuple(want["img_shape"])
        for key in ("keypoint", "keypoint_score"):
            assert sample[key].dtype == np.float32 and np.array_equal(sample[key], want[key].astype(np.float32))
    # through the task table, from a recipe file, capped; problems are the run's CorpusError
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"task: har\ndata_root: {corpus}\nnum_classes: 3\nmax_eval_samples: 2\nlearning_rate: 0.1\n")
    capped = hf_vtrain.load_corpus(str(recipe))
    assert capped["val"]["frame_dir"] == typed["val"]["frame_dir"][:2] and capped["train"].num_rows == \
        typed["train"].num_rows
    with pytest.raises(CorpusError, match="annotation pickle not found"):
        hf_vtrain.load_corpus(str(recipe), annotation_path="missing.pkl")
    from hf_vtrain.parser import RecipeError

    with pytest.raises(RecipeError, match="HARDataArguments has no key 'max_eval_sample'; did you mean 'max_eval_samples'"):
        hf_vtrain.load_corpus(str(recipe), max_eval_sample=1)  # a typo in an override is not silently dropped


def test_one_keypoint_layout_per_corpus(corpus, tmp_path):
    from hf_vtrain.data.common import CorpusError
    from hf_vtrain.data.ntu60 import load_corpus

    def mixed(data):
        ann = data["annotations"][2]
        ann["keypoint"] = np.zeros(ann["keypoint"].shape[:2] + (25, 3), np.float16)
        ann.pop("keypoint_score")

    path = write_variant(corpus, tmp_path, mixed)
    name = load_restricted(path)["annotations"][2]["frame_dir"]
    with pytest.raises(CorpusError, match=f"{name}' has \\(25, 3\\) where most have \\(17, 2\\)"):
        load_corpus(args_for(corpus, annotation_path=path, check_videos=False, needs_heatmaps=False))


class Gadget:
    pass


def test_a_pickle_with_another_type_is_refused(corpus, tmp_path):
    path = tmp_path / "odd.pkl"
    path.write_bytes(pickle.dumps({"split": {}, "annotations": [Gadget()]}))
    report = validate_ntu60(args_for(corpus, annotation_path=str(path)))
    assert len(report.problems) == 1 and "holds an object of type tests.data.test_ntu60.Gadget" in report.problems[0]


def test_recipe_values_are_checked():
    with pytest.raises(ValueError, match="split must be one of"):
        HARDataArguments(split="xset")
    with pytest.raises(ValueError, match=r"must contain \{frame_dir\}"):
        HARDataArguments(video_name_pattern="video.mp4")
    assert HARDataArguments(data_root="/d", video_name_pattern="{frame_dir}_rgb.mp4").video_path("S1") == \
        "/d/videos/S1_rgb.mp4"


def test_uniform_sampling_follows_mmaction_rules():
    import torch

    from hf_vtrain.data.ntu60 import uniform_sample_indices

    generator = torch.Generator().manual_seed(0)
    long = uniform_sample_indices(100, 10, generator)
    assert len(long) == 10 and all(10 * i <= f < 10 * (i + 1) for i, f in enumerate(long))  # one per segment
    medium = uniform_sample_indices(15, 10, generator)  # each frame at most once, in order, 5 skipped
    assert len(set(medium.tolist())) == 10 and (np.diff(medium) > 0).all() and medium.max() < 15
    short = uniform_sample_indices(4, 10, generator)  # a run from a random start, wrapped around
    assert set(short.tolist()) == {0, 1, 2, 3} and all((b - a) % 4 == 1 for a, b in zip(short, short[1:]))
    # testing: clip k is always the same frames, and differs from clip k+1
    assert np.array_equal(uniform_sample_indices(100, 10, None, 0), uniform_sample_indices(100, 10, None, 0))
    assert not np.array_equal(uniform_sample_indices(100, 10, None, 0), uniform_sample_indices(100, 10, None, 1))


def test_compact_box_and_the_sample_transform(corpus):
    from hf_vtrain.data.ntu60 import compact_box, load_ntu60

    keypoints = np.array([[[[10.0, 20.0], [30.0, 60.0]]]], np.float32)  # one person, one frame, two joints
    scores = np.ones((1, 1, 2), np.float32)
    # centre (20, 40), half sizes 10 and 20 grown by 25%: 12.5 and 25, made square at 25
    assert compact_box(keypoints, scores, 100, 100) == (-5, 15, 45, 65)
    assert compact_box(keypoints * 0, scores, 100, 100) == (0, 0, 100, 100)  # no joint detected: the whole frame
    data = load_ntu60(args_for(corpus, rgb_frames=4, pose_frames=8, rgb_size=32, pose_size=16, num_test_clips=2))
    sample = data.eval_dataset[0]
    assert sample["pixel_values"].shape == (2, 4, 3, 32, 32) and sample["heatmaps"].shape == (2, 17, 8, 16, 16)
    assert sample["heatmaps"].max() > 0.5 and int(sample["labels"]) == data.eval_samples[0]["label"]
    again = data.eval_dataset[0]
    assert torch_equal(sample["pixel_values"], again["pixel_values"])  # testing is deterministic


def torch_equal(a, b):
    import torch

    return torch.equal(a, b)


def test_decode_plan_halves_the_frame_while_the_crop_keeps_its_resolution():
    from hf_vtrain.data.ntu60 import decode_plan

    # a 1000 px box of a 1920x1080 frame resized to 224: 1000 / 4 = 250 >= 224, 1000 / 8 < 224 -> two halvings
    size, frame_box, source_box = decode_plan((461, 41, 1461, 1041), 1080, 1920, 224)
    assert size == (270, 480)
    assert frame_box == (115, 10, 365, 260)  # round(461 / 4) = 115, round(41 / 4) = 10, ...
    assert source_box == (460.0, 40.0, 1460.0, 1040.0)  # the snapped box, which the keypoints follow
    # a box smaller than twice the output: decoded as stored, box unchanged
    assert decode_plan((0, 0, 400, 400), 1080, 1920, 224) == (None, (0, 0, 400, 400), (0, 0, 400, 400))
    assert decode_plan((0, 0, 1920, 1920), 1080, 1920, 64)[0] == (135, 240)  # at most three halvings
