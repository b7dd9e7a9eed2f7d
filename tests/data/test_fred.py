"""FRED loader: the layout's names and clocks, pairing RGB and event frames by nearest timestamp (index pairing would
be wrong), every problem of a broken corpus named at once, clipped boxes and empty frames kept, and augmentation that
keeps boxes on their objects (mosaic, mixup, zoom, flip checked against drawn rectangles)."""

import os
import shutil

import numpy as np
import pytest
import torch

from hf_vtrain.data import fred
from hf_vtrain.data.synthetic_fred import ensure_synthetic_fred


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("fred") / "corpus"
    ensure_synthetic_fred(root, sequences=4, seconds=1.0, seed=3)
    return root


def args(root, **kw):
    return fred.DetDataArguments(data_root=str(root), image_size=64, **kw)


def test_names_and_clocks():
    assert fred.stem_of("Video_3_14_54_35.396349.jpg") == "Video_3_14_54_35.396349"  # the dot in the stem stays
    assert fred.rgb_time_us("Video_3_14_54_35.396349") == ((14 * 60 + 54) * 60 + 35) * 1_000_000 + 396349
    assert fred.rgb_time_us("Video_12_frame_33333") is None
    assert fred.event_time_us("Video_12_frame_1033323") == 1033323
    # numerically, not by name: frame_99999 comes before frame_100000
    assert sorted(["frame_100000", "frame_99999"], key=lambda s: fred.event_time_us("_" + s)) == \
        ["frame_99999", "frame_100000"]


def test_pairs_by_nearest_timestamp_within_tolerance_where_index_pairing_is_wrong(corpus):
    report, parts = fred._check_fred(args(corpus, modality="rgb_event"))
    assert report.ok, report.format()
    records = parts["train"] + parts["test"]
    gaps = [r["pair_gap_us"] for r in records]
    assert max(gaps) <= 20_000 and report.max_pair_gap_ms <= 20
    # the corpus drops RGB frames: pairing the k-th RGB frame with the k-th event frame drifts far apart
    wrong = 0
    for seq in {r["sequence"] for r in records}:
        rgb = sorted(fred._frames_of(os.path.join(corpus, seq, "RGB"), "rgb")[0])
        events = sorted(fred._frames_of(os.path.join(corpus, seq, "Event", "Frames"), "event")[0])
        assert len(rgb) < len(events)  # dropped frames
        origin = rgb[0][0] - events[0][0]
        wrong += sum(abs((t - origin) - events[k][0]) > 20_000 for k, (t, _) in enumerate(rgb))
        mine = fred.nearest_pairs([t - origin for t, _ in rgb], [t for t, _ in events])
        assert all(gap <= 20_000 for _, gap in mine)
    assert wrong > 10


def test_boxes_clipped_and_empty_frames_kept(corpus, tmp_path):
    report, parts = fred._check_fred(args(corpus))
    assert report.empty_frames["train"] > 0 and report.ok
    assert any(not r["boxes"] for r in parts["test"])  # evaluated too
    label = tmp_path / "x.txt"
    label.write_text("0 0.98 0.5 0.1 0.2\n")  # half outside on the right: clipped
    boxes, problems, clipped = fred.read_yolo_labels(str(label), 200, 100, 1)
    assert not problems and clipped == 1 and boxes[0][2] == 200.0 and boxes[0][0] == pytest.approx(186.0)


def _break(root):
    """A copy of the corpus with one of each problem."""
    seqs = fred.read_split_list(os.path.join(root, "dataset_splits", "canonical", "train_split.txt"))
    s0, s1 = seqs[0], seqs[1]
    rgb = sorted(os.listdir(os.path.join(root, s0, "RGB")))
    os.remove(os.path.join(root, s0, "RGB_YOLO", fred.stem_of(rgb[0]) + ".txt"))  # frame without labels
    os.remove(os.path.join(root, s0, "RGB", rgb[1]))  # label without frame
    with open(os.path.join(root, s0, "RGB_YOLO", fred.stem_of(rgb[2]) + ".txt"), "w") as handle:
        handle.write("1 0.5 0.5 0.1 0.1\n")  # class outside the map
    with open(os.path.join(root, s0, "RGB_YOLO", fred.stem_of(rgb[3]) + ".txt"), "w") as handle:
        handle.write("0 1.4 0.5 0.1 0.1\n")  # outside the image
    with open(os.path.join(root, s0, "RGB_YOLO", fred.stem_of(rgb[4]) + ".txt"), "w") as handle:
        handle.write("0 0.5 0.5\n")  # malformed
    open(os.path.join(root, s0, "RGB", rgb[5]), "wb").close()  # empty image
    with open(os.path.join(root, s0, "RGB", rgb[6]), "wb") as handle:
        handle.write(b"not a jpeg")  # unreadable
    with open(os.path.join(root, "dataset_splits", "canonical", "train_split.txt"), "a") as handle:
        handle.write("999/\n")  # a sequence that does not exist
    test_list = os.path.join(root, "dataset_splits", "canonical", "test_split.txt")
    with open(test_list, "a") as handle:
        handle.write(f"{s1}/\n")  # in both lists
    return s0, s1, rgb


def test_every_problem_named_at_once(corpus, tmp_path):
    root = tmp_path / "broken"
    shutil.copytree(corpus, root)
    s0, s1, rgb = _break(str(root))
    report = fred.validate_fred(args(root))
    text = report.format()
    expected = [f"{fred.stem_of(rgb[0])}.jpg: no label file", f"{fred.stem_of(rgb[1])}.txt: a label file without its "
                f"frame", "class 1 is not in the class map (0..0)", "lies outside the 192 x 108 image",
                "not `class cx cy w h`", f"{rgb[5]}: empty file", f"{rgb[6]}: unreadable",
                "sequence '999' does not exist", f"training and test lists share 1 sequence(s): ['{s1}']"]
    for fragment in expected:
        assert fragment in text, (fragment, text)
    assert len(report.problems) == len(expected)
    with pytest.raises(fred.CorpusError, match="9 problem"):
        fred.load_fred(args(root))


def test_pairs_farther_than_the_tolerance_are_named(corpus):
    report = fred.validate_fred(args(corpus, modality="rgb_event", pair_tolerance_ms=2.0))
    assert not report.ok and all("ms away (pair_tolerance_ms 2.0)" in p for p in report.problems)


def _rectangle_records(tmp_path, n=4, size=(160, 90)):
    """Frames that are black with one green rectangle at a known box each: the box of the green pixels is the truth
    after any augmentation (the grey fill of mosaic and zoom is not green)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    records = []
    for i in range(n):
        image = np.zeros((size[1], size[0], 3), np.uint8)
        x1, y1 = int(rng.integers(5, size[0] - 50)), int(rng.integers(5, size[1] - 40))
        x2, y2 = x1 + int(rng.integers(20, 45)), y1 + int(rng.integers(15, 35))
        image[y1:y2, x1:x2] = (0, 255, 0)
        path = tmp_path / f"r{i}.png"
        Image.fromarray(image).save(path)
        records.append({"image": str(path), "event": None, "width": size[0], "height": size[1],
                        "boxes": [[x1, y1, x2, y2, 0]], "sequence": "s"})
    return records


@pytest.mark.parametrize("kw", [dict(mosaic_prob=1.0), dict(mosaic_prob=0.0), dict(mosaic_prob=0.0, mixup_prob=1.0),
                                dict(mosaic_prob=1.0, mixup_prob=1.0)])
def test_augmented_boxes_follow_their_rectangles(tmp_path, kw):
    records = _rectangle_records(tmp_path)
    a = fred.DetDataArguments(image_size=96, hsv_gains=[0, 0, 0], scale_range=[0.6, 1.4], flip_prob=0.5, **kw)
    transform = fred.DetSampleTransform(records, a, train=True, seed=1)
    checked = 0
    for epoch in range(3):
        transform.set_epoch(epoch)
        for index in range(len(records)):
            image, boxes = transform.sample(index)
            white = ((image[1] - image[0]) > 60).numpy()  # green; mixup halves it
            for x1, y1, x2, y2, _ in boxes:
                inside = white[int(np.ceil(y1)): int(np.floor(y2)), int(np.ceil(x1)): int(np.floor(x2))]
                assert inside.mean() > 0.8, (epoch, index, (x1, y1, x2, y2))  # the box lies on a rectangle
                checked += 1
            # every green pixel lies in some box (no box too small, no rectangle without its box), allowing
            # resampling fringes
            covered = np.zeros_like(white)
            for x1, y1, x2, y2, _ in boxes:
                covered[max(0, int(y1) - 1): int(y2) + 2, max(0, int(x1) - 1): int(x2) + 2] = True
            assert (white & ~covered).sum() <= 0.02 * white.size
    assert checked >= 12


def test_evaluation_sample_and_the_rt_detr_label_convention(corpus):
    c = fred.load_fred(args(corpus, modality="rgb_event"))
    sample = c.eval_dataset[0]
    assert sample["pixel_values"].shape == (6, 64, 64) and 0 <= float(sample["pixel_values"].min())
    assert float(sample["pixel_values"].max()) <= 1.0
    r = c.eval_records[0]
    want = torch.tensor([[(b[0] + b[2]) / 2 / r["width"], (b[1] + b[3]) / 2 / r["height"], (b[2] - b[0]) / r["width"],
                          (b[3] - b[1]) / r["height"]] for b in r["boxes"]]).reshape(-1, 4)
    assert torch.allclose(sample["labels"]["boxes"], want, atol=1e-5)
    assert sample["orig_size"].tolist() == [108, 192] and int(sample["image_id"]) == 1
    gt = c.coco_ground_truth()
    assert len(gt["images"]) == len(c.eval_records) and gt["annotations"][0]["id"] == 1
    batch = fred.collate_det([c.train_dataset[i] for i in range(3)])
    assert batch["pixel_values"].shape == (3, 6, 64, 64) and len(batch["labels"]) == 3


def test_load_corpus_is_the_typed_corpus_the_samples_come_from(tmp_path):
    import datasets

    from hf_vtrain.data.fred import DetDataArguments, load_corpus, load_fred
    from hf_vtrain.data.synthetic_fred import make_synthetic_fred

    root = make_synthetic_fred(tmp_path / "fred", sequences=4, seconds=0.5)
    for modality in ("rgb", "rgb_event"):
        args = DetDataArguments(data_root=root, modality=modality)
        corpus = load_corpus(args)
        assert isinstance(corpus, datasets.DatasetDict) and set(corpus) == {"train", "test"}
        features = corpus["test"].features
        assert isinstance(features["image"], datasets.Image) and features["labels"].feature.names == ["drone"]
        assert features["boxes"] == datasets.List(datasets.List(datasets.Value("float64"), length=4))
        example = corpus["test"][0]
        assert example["image"].size == (example["width"], example["height"])  # decoded on access, as datasets does
        assert (example["event"] is None) == (modality == "rgb")
        loaded = load_fred(args)
        assert [r["image"] for r in loaded.eval_records] == [c["path"] for c in corpus["test"].data.column(
            "image").to_pylist()]
        assert [[list(b) for b in r["boxes"]] for r in loaded.eval_records] == [
            [[*box, label] for box, label in zip(boxes, labels)]
            for boxes, labels in zip(corpus["test"]["boxes"], corpus["test"]["labels"])]
        assert any(not r["boxes"] for r in loaded.eval_records)  # empty frames kept
    assert load_corpus({"data_root": root, "max_eval_frames": 3})["test"].num_rows == 3
