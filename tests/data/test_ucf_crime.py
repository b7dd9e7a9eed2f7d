"""UCF-Crime loader: batch contract, uniform sampling, box interpolation/crop/flip, masked regions, snippet
convention against metrics/vad, whole-corpus validation, the test-video leakage check and non-English captions."""

import json
import os
import shutil

import numpy as np
import pytest
import torch

from hf_vtrain.data.clip_tokenizer import build_clip_tokenizer
from hf_vtrain.data.common import CorpusError
from hf_vtrain.data.synthetic_ucf_crime import make_synthetic_ucf_crime
from hf_vtrain.data.ucf_crime import (
    VADDataArguments,
    crop_boxes,
    eval_frame_indices,
    expand_eval_scores,
    flip_boxes,
    interpolate_boxes,
    load_ucf_crime,
    num_video_snippets,
    resize_center_crop,
    uniform_frame_indices,
    validate_ucf_crime,
    video_class,
)
from hf_vtrain.data.video_io import VideoReader
from hf_vtrain.metrics.vad import evaluate_frame_auc, expand_snippet_scores

FPS = 15
# Every video is 6 s = 90 frames = 5 snippets of 16 frames (the trailing 10 frames have no snippet).
CORPUS = dict(num_train_normal=2, num_train_anomalous=3, num_test_normal=2, num_test_anomalous=3, fps=FPS,
              min_duration=6.0, max_duration=6.0, clip_duration=(2.0, 3.0), num_chinese_captions=2,
              num_region_negatives=3, seed=5)  # fmt: skip
T, SIZE = 8, 64


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return make_synthetic_ucf_crime(tmp_path_factory.mktemp("ucf") / "c", **CORPUS)["root"]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return build_clip_tokenizer(tmp_path_factory.mktemp("clip_tokenizer"))


def _args(root, **kw):
    # short_side_crop: the tests below check the crop's box mapping; test_squash_keeps_the_whole_frame the default
    kw = {"train_list": "Anomaly_Train.txt", "num_frames": T, "image_size": SIZE, "validate_workers": 2,
          "resize_mode": "short_side_crop", **kw}
    return VADDataArguments(data_root=str(root), **kw)


def _records(root):
    with open(os.path.join(root, "ucf_fgclip_train.json"), encoding="utf-8") as f:
        return json.load(f)


def _write_records(path, records):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(records, f, ensure_ascii=False)
    return str(path)


def _first(dataset, predicate):
    return next(i for i in range(len(dataset)) if predicate(dataset.with_format(None)[i]))


# ----------------------------------------------------------------------------------------------- batches


def test_batch_contract(root, tokenizer):
    corpus = load_ucf_crime(_args(root), tokenizer)
    assert corpus.report.ok, corpus.report.format()
    n_anomalous = _first(corpus.train_dataset, lambda r: r["class_name"] != "Normal")
    n_normal = _first(corpus.train_dataset, lambda r: r["class_name"] == "Normal")
    samples = [corpus.train_dataset[i] for i in (n_anomalous, n_normal)]
    batch = corpus.train_collator(samples)
    b, r = 2, max(len(s["region_input_ids"]) for s in samples)
    assert r >= 1
    expected = {
        "pixel_values": ((b, T, 3, SIZE, SIZE), torch.uint8),
        "pixel_mask": ((b, T), torch.bool),
        "region_boxes": ((b, r, T, 4), torch.float32),
        "region_box_mask": ((b, r, T), torch.bool),
        "region_mask": ((b, r), torch.bool),
        "sample_index": ((b,), torch.long),
        "negative_mask": ((b, r), torch.bool),
    }
    for key, (shape, dtype) in expected.items():
        assert tuple(batch[key].shape) == shape and batch[key].dtype == dtype, key
    length = batch["input_ids"].shape[1]
    assert batch["input_ids"].dtype == batch["attention_mask"].dtype == torch.long
    assert batch["attention_mask"].shape == (b, length) and batch["attention_mask"][:, 0].all()
    lr = batch["region_input_ids"].shape[2]
    assert batch["region_input_ids"].shape == batch["region_attention_mask"].shape == (b, r, lr)
    assert batch["negative_input_ids"].shape == batch["negative_attention_mask"].shape == (b, r, 3, lr)
    assert batch["sample_index"].tolist() == [n_anomalous, n_normal]
    # the normal clip: no region, an all-pad caption row, no negatives; the anomalous one has them
    assert not batch["region_mask"][1].any() and not batch["region_box_mask"][1].any()
    assert (batch["region_input_ids"][1] == tokenizer.pad_token_id).all()
    assert not batch["region_attention_mask"][1].any() and not batch["negative_mask"][1].any()
    assert batch["region_mask"][0].any() and batch["negative_mask"][0].any()
    assert batch["region_box_mask"].any(-1).eq(batch["region_mask"]).all()  # a region is on iff it has a box
    # text: the real caption's tokens, then padding
    caption = corpus.train_dataset.with_format(None)[n_anomalous]["global_caption"]
    ids = tokenizer(caption)["input_ids"]
    assert batch["input_ids"][0, : len(ids)].tolist() == ids
    assert batch["attention_mask"][0].sum() == len(ids)
    # without hard negatives in the batch the keys are absent
    no_negatives = dict(samples[1])
    assert "negative_input_ids" not in corpus.train_collator([no_negatives])
    # evaluation batch: one row per test video
    eval_batch = corpus.eval_collator([corpus.eval_dataset[i] for i in range(len(corpus.eval_dataset))])
    assert eval_batch["pixel_values"].shape == (5, 5, 3, SIZE, SIZE) and eval_batch["pixel_values"].dtype == torch.uint8
    assert eval_batch["pixel_mask"].all() and eval_batch["num_snippets"].tolist() == [5] * 5
    assert eval_batch["video_index"].tolist() == list(range(5))
    assert [v["key"] for v in corpus.test_videos] == corpus.eval_dataset.with_format(None)["key"]


def test_caption_truncation(root, tokenizer):
    corpus = load_ucf_crime(_args(root, max_caption_tokens=6, max_region_tokens=4), tokenizer)
    i = _first(corpus.train_dataset, lambda r: r["class_name"] != "Normal")
    batch = corpus.train_collator([corpus.train_dataset[i]])
    assert batch["input_ids"].shape[1] == 6 and batch["input_ids"][0, -1] == tokenizer.eos_token_id
    assert batch["region_input_ids"].shape[2] == 4


def test_uniform_sampling_covers_the_clip(root, tokenizer):
    indices, mask = uniform_frame_indices(10, 100, 8)
    assert indices[0] == 10 and indices[-1] == 99 and mask.all() and len(set(indices.tolist())) == 8
    assert np.allclose(np.diff(indices), 89 / 7, atol=1)
    short, short_mask = uniform_frame_indices(3, 8, 8)
    assert short.tolist() == [3, 4, 5, 6, 7, 7, 7, 7] and short_mask.tolist() == [True] * 5 + [False] * 3
    # through the dataset: the decoded frames are those of the uniform indices over the record's clip
    corpus = load_ucf_crime(_args(root), tokenizer)
    rows = corpus.train_dataset.with_format(None)
    for i in (0, len(rows) - 1):
        row = rows[i]
        expected, _ = uniform_frame_indices(row["clip_start"], row["clip_end"], T)
        frames = VideoReader(row["path"]).get_frames(expected)
        assert torch.equal(corpus.train_dataset[i]["pixel_values"], resize_center_crop(frames, SIZE)[0])
    # timestamps -> frames: round(start * fps) .. round(end * fps) - 1; null -> the whole video
    for record, row in zip(_records(root), rows):
        if record["timestamps"] is None:
            assert (row["clip_start"], row["clip_end"]) == (0, 90)
        else:
            assert row["clip_start"] == round(record["timestamps"][0] * FPS)
            assert row["clip_end"] == round(record["timestamps"][1] * FPS)


def test_squash_keeps_the_whole_frame_and_its_boxes(root, tokenizer):
    """resize_mode squash (the default, FG-CLIP's): the whole 96x64 frame becomes SIZE x SIZE (video_io.resize), so
    boxes keep their normalised coordinates exactly; short_side_crop cuts the sides and maps the boxes into the crop."""
    from hf_vtrain.data.ucf_crime import crop_boxes, resize_frames
    from hf_vtrain.data.video_io import resize

    assert VADDataArguments(data_root="x").resize_mode == "squash"
    squashed = load_ucf_crime(_args(root, resize_mode="squash"), tokenizer)
    cropped = load_ucf_crime(_args(root), tokenizer)
    i = _first(squashed.train_dataset, lambda r: any(len(k) for k in r["region_keyframes"]))
    row = squashed.train_dataset.with_format(None)[i]
    indices, mask = uniform_frame_indices(row["clip_start"], row["clip_end"], T)
    frames = VideoReader(row["path"]).get_frames(indices)
    sample = squashed.train_dataset[i]
    assert torch.equal(sample["pixel_values"], resize(frames, (SIZE, SIZE)))
    boxes, box_mask = interpolate_boxes(row["region_keyframes"][0], indices)
    got = np.asarray(sample["region_boxes"])[0]  # region 0 has boxes in this clip, so it stays first
    assert np.allclose(got[box_mask & mask], boxes[box_mask & mask], atol=1e-6)  # unchanged by a squash
    pixels, window = resize_frames(frames, SIZE, "short_side_crop")
    assert window[0] > 0 and window[2] < 1  # 96 x 64 -> the sides are cut
    expected, _ = crop_boxes(boxes, box_mask & mask, window)
    assert np.allclose(np.asarray(cropped.train_dataset[i]["region_boxes"])[0][box_mask & mask],
                       expected[box_mask & mask], atol=1e-6)
    with pytest.raises(ValueError, match="resize_mode must be one of squash, short_side_crop"):
        VADDataArguments(data_root="x", resize_mode="crop")
    # by default every snippet of a test video is fed (and scored) once: no group of snippets shares a score
    assert VADDataArguments(data_root="x").max_eval_snippets is None
    for i in range(len(squashed.eval_dataset)):
        sample = squashed.eval_dataset[i]
        assert len(sample["pixel_values"]) == sample["num_snippets"]


def test_box_interpolation_hand_checked():
    keyframes = [[10, 0.1, 0.1, 0.3, 0.3], [20, 0.3, 0.2, 0.5, 0.4], [30, 0.3, 0.2, 0.5, 0.4]]
    boxes, mask = interpolate_boxes(keyframes, [5, 10, 15, 20, 25, 30, 31])
    assert mask.tolist() == [False, True, True, True, True, True, False]
    assert np.allclose(boxes[2], [0.2, 0.15, 0.4, 0.35])
    assert np.allclose(boxes[1], keyframes[0][1:]) and np.allclose(boxes[3], keyframes[1][1:])
    assert not boxes[0].any() and not boxes[6].any()
    single, single_mask = interpolate_boxes([[7, 0.1, 0.1, 0.2, 0.2]], [6, 7, 8])
    assert single_mask.tolist() == [False, True, False]
    assert not interpolate_boxes([], [1, 2])[1].any()


def test_crop_and_flip_hand_checked():
    # 64x96 frames -> short side 224 -> 224x336, centre crop x 56..280: the window is x in [1/6, 5/6]
    clip = np.zeros((2, 64, 96, 3), np.uint8)
    clip[:, :, 48:] = 200  # right half bright
    pixels, window = resize_center_crop(clip, 224)
    assert pixels.shape == (2, 3, 224, 224)
    assert np.allclose(window, (1 / 6, 0.0, 5 / 6, 1.0))
    assert pixels[0, 0, :, :100].max() < 20 and pixels[0, 0, :, 124:].min() > 180  # the edge is at the centre
    boxes = np.array([[0.5, 0.25, 0.75, 0.5], [0.0, 0.1, 0.1, 0.2], [0.1, 0.1, 0.3, 0.2]], np.float32)
    out, keep = crop_boxes(boxes, np.ones(3, bool), window)
    assert np.allclose(out[0], [0.5, 0.25, 0.875, 0.5])
    assert not keep[1] and not out[1].any()  # entirely left of the crop: absent
    assert keep[2] and np.allclose(out[2], [0.0, 0.1, 0.2, 0.2])  # clipped at the crop's left edge
    flipped = flip_boxes(out, keep)
    assert np.allclose(flipped[0], [0.125, 0.25, 0.5, 0.5]) and not flipped[1].any()


def test_flip_mirrors_pixels_and_boxes(root, tokenizer):
    plain = load_ucf_crime(_args(root, flip_prob=0.0), tokenizer)
    flipped = load_ucf_crime(_args(root, flip_prob=1.0), tokenizer)
    i = _first(plain.train_dataset, lambda r: r["class_name"] != "Normal")
    a, b = plain.train_dataset[i], flipped.train_dataset[i]
    assert torch.equal(b["pixel_values"], a["pixel_values"].flip(-1))
    assert torch.equal(a["region_box_mask"], b["region_box_mask"]) and a["region_box_mask"].any()
    m = a["region_box_mask"]
    assert torch.allclose(b["region_boxes"][m][:, 0], 1 - a["region_boxes"][m][:, 2])
    assert torch.allclose(b["region_boxes"][m][:, 2], 1 - a["region_boxes"][m][:, 0])
    assert torch.allclose(b["region_boxes"][m][:, 1::2], a["region_boxes"][m][:, 1::2])


def test_boxes_follow_the_event_in_the_cropped_frames(root, tokenizer):
    """The saturated event pixels of a sample lie inside its (cropped, interpolated) boxes."""
    corpus = load_ucf_crime(_args(root, num_frames=16, image_size=96), tokenizer)
    checked = 0
    for i in range(len(corpus.train_dataset)):
        s = corpus.train_dataset[i]
        if not s["region_mask"].any():
            continue
        px = s["pixel_values"].permute(0, 2, 3, 1).float()  # T, H, W, 3
        saturation = px.max(-1).values - px.min(-1).values
        event = saturation > 110
        inside = torch.zeros_like(event)
        for r in range(len(s["region_mask"])):
            for t in range(16):
                if s["region_box_mask"][r, t]:
                    x1, y1, x2, y2 = (s["region_boxes"][r, t] * 96).tolist()
                    inside[t, int(y1) : int(np.ceil(y2)) + 1, int(x1) : int(np.ceil(x2)) + 1] = True
        has_box = s["region_box_mask"].any(0)
        assert event[has_box].sum() > 50
        assert (event & ~inside)[has_box].sum() <= 0.02 * event[has_box].sum(), i
        checked += 1
    assert checked >= 3


def test_regions_without_boxes_are_masked(root, tokenizer, tmp_path):
    records = _records(root)
    r = next(x for x in records if x["box_infos"] and x["timestamps"] is not None)
    lo, hi = (round(t * FPS) for t in r["timestamps"])
    late = dict(r, box_infos=[[{"frame": 89, "bbox": [0.4, 0.4, 0.6, 0.6]}]] * len(r["box_infos"]))
    none = dict(r, box_infos=[[] for _ in r["box_infos"]])
    span = [{"frame": lo, "bbox": [0.3, 0.3, 0.6, 0.6]}, {"frame": hi - 1, "bbox": [0.3, 0.3, 0.6, 0.6]}]
    many = dict(r, region_captions=[f"region {k}" for k in range(6)], region_negatives=None,
                box_infos=[span if k in (1, 5) else [] for k in range(6)])  # fmt: skip
    path = _write_records(tmp_path / "train.json", [late, none, many])
    corpus = load_ucf_crime(_args(root, train_json=path, max_regions=4), tokenizer)
    for i in (0, 1):  # the keyframe is outside the clip / no keyframes: masked, never fed
        s = corpus.train_dataset[i]
        assert not s["region_mask"].any() and not s["region_box_mask"].any() and not s["region_boxes"].any()
    s = corpus.train_dataset[2]  # capped at 4; the regions with boxes come first
    assert s["region_mask"].tolist() == [True, True, False, False]
    decoded = [tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in s["region_input_ids"]]
    assert decoded[:2] == ["region 1", "region 5"] and len(decoded) == 4
    assert s["region_box_mask"][0].all()  # keyframes at the clip's first and last frame: every sampled frame


def test_same_seed_epoch_index_same_sample(root, tokenizer):
    a = load_ucf_crime(_args(root, flip_prob=0.5), tokenizer, seed=1)
    b = load_ucf_crime(_args(root, flip_prob=0.5), tokenizer, seed=1)
    n = len(a.train_dataset)
    first = [a.train_dataset[i]["pixel_values"] for i in range(n)]
    assert all(torch.equal(x, b.train_dataset[i]["pixel_values"]) for i, x in enumerate(first))
    a.set_epoch(1)
    assert any(not torch.equal(x, a.train_dataset[i]["pixel_values"]) for i, x in enumerate(first))


# ----------------------------------------------------------------------------------------------- evaluation


def test_snippet_convention_matches_the_metric(root, tokenizer):
    assert [num_video_snippets(f) for f in (5, 16, 31, 32, 90)] == [1, 1, 1, 2, 5]
    assert eval_frame_indices(90, 512).tolist() == [8, 24, 40, 56, 72]
    assert eval_frame_indices(5, 512).tolist() == [4]
    # more snippets than max_eval_snippets: groups [0,1) [1,3) [3,5) fed by the middle snippets' centres
    assert eval_frame_indices(90, 3).tolist() == [8, 24, 56]
    assert expand_eval_scores([0.1, 0.2, 0.3], 5).tolist() == [0.1, 0.2, 0.2, 0.3, 0.3]
    for frames in (16, 90, 3800):
        n = num_video_snippets(frames)
        per_frame = expand_snippet_scores(expand_eval_scores(np.zeros(min(n, 64)), n), frames)
        assert len(per_frame) == 16 * n
    small = load_ucf_crime(_args(root, max_eval_snippets=3, max_test_videos=2), tokenizer)
    batch = small.eval_collator([small.eval_dataset[i] for i in range(2)])
    assert batch["pixel_mask"].sum(1).tolist() == [3, 3] and batch["num_snippets"].tolist() == [5, 5]
    assert len(small.test_videos) == 2


def test_frame_auc_of_a_colour_detector(root, tokenizer):
    """Snippet frames, test-list order and annotations line up: a saturation detector scores a near-perfect AUC."""
    corpus = load_ucf_crime(_args(root, max_eval_snippets=3), tokenizer)
    batch = corpus.eval_collator([corpus.eval_dataset[i] for i in range(len(corpus.eval_dataset))])
    px = batch["pixel_values"].float()
    saturation = (px.max(2).values - px.min(2).values > 110).float().mean((-1, -2))  # B, S
    scores, frames = {}, {}
    for row, video_index in enumerate(batch["video_index"].tolist()):
        video = corpus.test_videos[video_index]
        fed = int(batch["pixel_mask"][row].sum())
        scores[video["key"]] = expand_eval_scores(saturation[row, :fed].numpy(), video["num_snippets"]).tolist()
        frames[video["key"]] = video["num_frames"]
    result = evaluate_frame_auc(corpus.annotations, [v["key"] for v in corpus.test_videos], scores, frames)
    assert result.num_anomalous_videos == 3 and result.auc > 0.75
    full = load_ucf_crime(_args(root), tokenizer)
    batch = full.eval_collator([full.eval_dataset[i] for i in range(len(full.eval_dataset))])
    px = batch["pixel_values"].float()
    saturation = (px.max(2).values - px.min(2).values > 110).float().mean((-1, -2))
    scores = {v["key"]: saturation[i].tolist() for i, v in enumerate(full.test_videos)}
    assert evaluate_frame_auc(full.annotations, None, scores, frames).auc > 0.9


# ----------------------------------------------------------------------------------------------- validation


def test_every_problem_reported_at_once(root, tmp_path):
    bad_root = tmp_path / "bad"
    shutil.copytree(root, bad_root)
    records = _records(bad_root)
    anomalous = [i for i, r in enumerate(records) if r["box_infos"]]
    i0, i1, i2 = anomalous[:3]
    normal = [i for i, r in enumerate(records) if not r["box_infos"]]
    records[i0]["box_infos"][0][0]["bbox"] = [0.2, 0.2, 1.3, 0.5]  # outside [0, 1]
    records[i0]["box_infos"][0][1]["bbox"] = [0.5, 0.2, 0.4, 0.5]  # x2 <= x1
    records[i1]["box_infos"][0][-1]["frame"] = 500  # past the end (90 frames)
    records[i1]["region_captions"].append("an extra caption")  # count != box_infos count
    records[i2]["global_caption"] = "  "
    records[i2]["region_captions"][0] = ""
    records[normal[0]]["timestamps"] = [3.0, 2.0]  # start >= end
    records[normal[1]]["timestamps"] = [1.0, 60.0]  # past the video
    records.append({"video": "Abuse/Abuse077_x264.mp4", "global_caption": "missing video", "region_captions": [],
                    "box_infos": [], "timestamps": None})  # fmt: skip
    records.append(["not", "an", "object"])
    _write_records(bad_root / "ucf_fgclip_train.json", records)
    # an undecodable test video, a test video without an annotation line, an annotation past the video's end
    with open(bad_root / "videos" / "Testing_Normal_Videos_Anomaly" / "Normal_Videos_999_x264.mp4", "wb") as f:
        f.write(b"\x00garbage" * 100)
    with open(bad_root / "Anomaly_Test.txt", "a") as f:
        f.write("Testing_Normal_Videos_Anomaly/Normal_Videos_999_x264.mp4\n")
    lines = open(bad_root / "Temporal_Anomaly_Annotation_for_Testing_Videos.txt").read().splitlines()
    first = lines[0].split()
    lines[0] = f"{first[0]}  {first[1]}  10  95  -1  -1"
    lines.pop()  # the last test video loses its line
    (bad_root / "Temporal_Anomaly_Annotation_for_Testing_Videos.txt").write_text("\n".join(lines) + "\n")
    missing_key = open(bad_root / "Anomaly_Test.txt").read().splitlines()[-2]

    report = validate_ucf_crime(_args(bad_root))
    text = report.format()
    train_json = str(bad_root / "ucf_fgclip_train.json")
    expect = [
        (f"entry {i0} ", "outside [0, 1]"),
        (f"entry {i0} ", "x2 <= x1"),
        (f"entry {i1} ", "past the video's end"),
        (f"entry {i1} ", "box_infos entries"),
        (f"entry {i1} ", "'region_negatives' must be a list with one entry per region"),
        (f"entry {i2} ", "'global_caption' is empty"),
        (f"entry {i2} ", "region 0: caption is empty"),
        (f"entry {normal[0]} ", "0 <= start < end"),
        (f"entry {normal[1]} ", "end after the video's"),
        (f"entry {len(records) - 2} ", "video file not found"),
        (f"entry {len(records) - 2} ", "not in the train list"),
        (f"entry {len(records) - 1}", "not a JSON object"),
        ("Normal_Videos_999_x264", "cannot be decoded"),
        (missing_key, "has no line in"),
        (first[0].replace(".mp4", ""), "ends after the video's 90 frames"),
    ]
    for where, what in expect:
        assert any(where in p and what in p for p in report.problems), (where, what, text)
    assert all(train_json in p for p in report.problems if "entry" in p)
    assert len(report.problems) == len(expect), text
    with pytest.raises(CorpusError) as err:
        load_ucf_crime(_args(bad_root), tokenizer=object())
    assert str(err.value) == text

    (bad_root / "ucf_fgclip_train.json").write_text('[{"video": "a.mp4",')  # malformed JSON names the file
    report = validate_ucf_crime(_args(bad_root))
    assert any(train_json in p and "not valid JSON" in p for p in report.problems)


def test_leakage_check_and_drop(root, tokenizer, tmp_path):
    records = _records(root)
    test_rel = open(os.path.join(root, "Anomaly_Test.txt")).read().splitlines()[0]
    leaked = {"video": test_rel, "global_caption": "a test video", "region_captions": [], "box_infos": [],
              "timestamps": None}  # fmt: skip
    path = _write_records(tmp_path / "leak.json", records + [leaked, dict(leaked, timestamps=[0.0, 1.0])])
    report = validate_ucf_crime(_args(root, train_json=path, train_list=None))
    key = os.path.splitext(os.path.basename(test_rel))[0]
    leaks = [p for p in report.problems if "in the test list" in p]
    assert len(leaks) == 2 and all(test_rel in p for p in leaks), report.format()
    assert f"entry {len(records)} " in leaks[0] and f"entry {len(records) + 1} " in leaks[1]
    corpus = load_ucf_crime(_args(root, train_json=path, train_list=None, drop_test_videos_from_train=True),
                            tokenizer)  # fmt: skip
    assert corpus.dropped_test_videos == [key]
    assert any("dropped 2 training record(s) of 1 video(s)" in n for n in corpus.report.notes)
    assert len(corpus.train_dataset) == len(records) and key not in corpus.train_dataset.with_format(None)["key"]
    # the train list is checked too: a record outside it is an error
    report = validate_ucf_crime(_args(root, train_json=path, drop_test_videos_from_train=True))
    assert report.ok
    outsider = dict(leaked, video="Arson/Arson099_x264.mp4")
    report = validate_ucf_crime(_args(root, train_json=_write_records(tmp_path / "o.json", records + [outsider])))
    assert any("not in the train list" in p and "Arson099" in p for p in report.problems)


def test_short_captions_given_or_the_first_sentence(root, tokenizer, tmp_path):
    """FG-CLIP trains a short caption beside the long one: a record's own `short_caption`, else the first sentence of
    its global caption; both reach the batch as short_input_ids on CLIP's 77 positions."""
    from hf_vtrain.data.ucf_crime import first_sentence

    assert first_sentence("A man runs.  Then he falls. The end") == "A man runs."
    assert first_sentence("no end mark here") == "no end mark here"
    assert first_sentence("3.5 metres away! More") == "3.5 metres away!"
    assert first_sentence("一名男子在跑。然后摔倒") == "一名男子在跑。"
    records = _records(root)
    records[0] = dict(records[0], short_caption="a person lifts a box")
    records[1] = dict(records[1], global_caption="First sentence here. Second sentence there.")
    records[2] = dict(records[2], short_caption="   ")
    path = _write_records(tmp_path / "short.json", records)
    report = validate_ucf_crime(_args(root, train_json=path))
    assert [p for p in report.problems if "'short_caption' must be a non-empty string" in p and "entry 2 " in p]
    del records[2]["short_caption"]
    corpus = load_ucf_crime(_args(root, train_json=_write_records(tmp_path / "short2.json", records)), tokenizer)
    table = corpus.train_dataset.with_format(None)
    assert table["short_caption"][0] == "a person lifts a box"
    assert table["short_caption"][1] == "First sentence here."
    batch = corpus.train_collator([corpus.train_dataset[0], corpus.train_dataset[1]])
    expected = tokenizer(["a person lifts a box"], truncation=True, max_length=77)["input_ids"][0]
    assert batch["short_input_ids"][0, : len(expected)].tolist() == expected
    assert batch["short_attention_mask"][0].sum() == len(expected) and batch["short_input_ids"].shape[1] <= 77


def test_video_paths_rooted_elsewhere_are_found(root, tokenizer, tmp_path):
    """A training JSON written elsewhere: paths with an extra leading folder, absolute paths, bare file names, and a
    JSON kept beside (not inside) the video folder. Each record resolves to the same file as the official path; the
    leakage check still compares by video name."""
    records = _records(root)
    video_dir = os.path.join(root, "videos")
    rooted = []
    for i, r in enumerate(records):
        rel = r["video"]
        form = i % 3
        video = (f"Videos/{rel}" if form == 0 else os.path.join(os.path.abspath(video_dir), rel) if form == 1
                 else os.path.basename(rel))
        rooted.append(dict(r, video=video))
    side = tmp_path / "beside"  # the user's notes: the JSON next to the video folder, data_root elsewhere
    side.mkdir()
    path = _write_records(side / "train.json", rooted)
    expected = load_ucf_crime(_args(root), tokenizer)
    corpus = load_ucf_crime(_args(root, train_json=path), tokenizer)
    assert corpus.report.ok, corpus.report.format()
    got, want = corpus.train_dataset.with_format(None), expected.train_dataset.with_format(None)
    assert got["path"] == want["path"] and got["key"] == want["key"]
    # a test video named with a foreign root in the training JSON is still a leak
    test_rel = open(os.path.join(root, "Anomaly_Test.txt")).read().splitlines()[0]
    leak = {"video": f"/elsewhere/UCF_Crimes/Videos/{test_rel}", "global_caption": "a test video",
            "region_captions": [], "box_infos": [], "timestamps": None}
    report = validate_ucf_crime(_args(root, train_json=_write_records(side / "leak.json", rooted + [leak])))
    assert any("in the test list" in p for p in report.problems), report.format()
    # two files of one name: an error naming both, not a guess
    copy_root = tmp_path / "copy"
    shutil.copytree(root, copy_root)
    first = records[0]["video"]
    twin = copy_root / "videos" / "extra" / os.path.basename(first)
    twin.parent.mkdir()
    shutil.copyfile(copy_root / "videos" / first, twin)
    ambiguous = [dict(records[0], video=os.path.basename(first))] + records[1:]
    report = validate_ucf_crime(_args(copy_root, train_json=_write_records(copy_root / "amb.json", ambiguous)))
    problems = [p for p in report.problems if "matches 2 files" in p]
    assert len(problems) == 1 and str(twin) in problems[0] and first in problems[0], report.format()
    # not found anywhere: one problem naming where it looked
    lost = [dict(records[0], video="Nowhere/Abuse999_x264.mp4")] + records[1:]
    report = validate_ucf_crime(_args(root, train_json=_write_records(side / "lost.json", lost), train_list=None))
    assert [p for p in report.problems if "video file not found (looked at" in p and "Abuse999" in p], \
        report.format()


def test_non_english_captions_counted_and_translated(root, tokenizer, tmp_path):
    corpus = load_ucf_crime(_args(root), tokenizer)
    counts = corpus.caption_language_counts
    chinese = [r for r in _records(root) if not r["global_caption"].isascii()]
    per_class = {}
    for r in chinese:
        per_class[video_class(r["video"])] = per_class.get(video_class(r["video"]), 0) + 1
    assert per_class and {c: v["non_english"] for c, v in counts.items() if v["non_english"]} == per_class
    assert counts["Normal"]["non_english"] == 0 and counts["Normal"]["captions"] > 0
    assert any("non-English captions" in n and "kept" in n for n in corpus.report.notes)
    assert sum(not c.isascii() for c in corpus.train_dataset.with_format(None)["global_caption"]) == len(chinese)

    translated = load_ucf_crime(_args(root, non_english_captions="translate",
                                      translation_file="ucf_fgclip_translations.json"), tokenizer)  # fmt: skip
    assert all(c.isascii() for c in translated.train_dataset.with_format(None)["global_caption"])
    assert translated.caption_language_counts == counts  # counted before translation
    with open(os.path.join(root, "ucf_fgclip_translations.json"), encoding="utf-8") as f:
        table = json.load(f)
    missing = sorted(table)[0]
    incomplete = _write_records(tmp_path / "t.json", {k: v for k, v in table.items() if k != missing})
    report = validate_ucf_crime(_args(root, non_english_captions="translate", translation_file=incomplete))
    assert len(report.problems) == 1 and missing in report.problems[0] and "entry" in report.problems[0]


def test_video_class_and_debug_limits(root, tokenizer):
    assert video_class("Abuse/Abuse028_x264.mp4") == "Abuse"
    assert video_class("Testing_Normal_Videos_Anomaly/Normal_Videos_003_x264.mp4") == "Normal"
    assert video_class("Training_Normal_Videos_Anomaly/Normal_Videos307_x264.mp4") == "Normal"
    assert video_class("Arson011_x264.mp4") == "Arson"
    corpus = load_ucf_crime(_args(root, max_train_videos=2, max_test_videos=1), tokenizer)
    assert len(set(corpus.train_dataset.with_format(None)["key"])) == 2 and len(corpus.eval_dataset) == 1
    with pytest.raises(ValueError, match="translation_file"):
        VADDataArguments(non_english_captions="translate")


def test_load_corpus_is_the_typed_corpus_the_task_tables_come_from(root, tokenizer):
    import datasets

    from hf_vtrain.data.ucf_crime import load_corpus, load_ucf_crime

    args = _args(root)
    corpus = load_corpus(args)  # no tokenizer needed: nothing is tokenised
    assert isinstance(corpus, datasets.DatasetDict) and set(corpus) == {"train", "test"}
    names = corpus["test"].features["class_name"].names
    assert "Normal" in names and names == corpus["train"].features["class_name"].names == sorted(names)
    assert corpus["test"].features["anomalies"] == datasets.List(datasets.List(datasets.Value("int64"), length=2))
    loaded = load_ucf_crime(args, tokenizer=tokenizer)
    assert len(corpus["test"]) == len(loaded.test_videos) and len(corpus["train"]) == len(loaded.train_dataset)
    for row, video in zip(corpus["test"], loaded.test_videos):  # the same videos, their annotated anomalies
        assert row["key"] == video["key"] and row["num_frames"] == video["num_frames"]
        assert [tuple(a) for a in row["anomalies"]] == list(loaded.annotations.get(row["key"], []))
        assert (names[row["class_name"]] == "Normal") == (not row["anomalies"])
    assert loaded.train_dataset.data.column("class_name").to_pylist() == [
        names[i] for i in corpus["train"]["class_name"]]
    assert load_corpus({"data_root": str(root), "train_list": "Anomaly_Train.txt", "max_test_videos": 2})[
        "test"].num_rows == 2
