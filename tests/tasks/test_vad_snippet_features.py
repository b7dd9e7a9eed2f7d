"""Snippet features of the weakly supervised head's stage: cached features equal the model's on-the-fly ones (also
across chunk boundaries), a second extraction computes nothing, another model is another cache, training and test
videos are listed once each with their labels."""

import torch

from hf_vtrain import run as run_module
from hf_vtrain.data.ucf_crime import VADEvalTransform
from hf_vtrain.tasks.vad import compute_snippet_features, extract_snippet_features, snippet_feature_videos
from tests.trainers.test_vad_run import tiny_argv


def test_cached_snippet_features_equal_the_model_on_the_fly(tmp_path_factory):
    root = tmp_path_factory.mktemp("vad_features")
    prepared = run_module.prepare(tiny_argv(root, root / "run"))
    model, corpus, data_args = prepared.trainer.model, prepared.task.corpus, prepared.data_args
    model.save_pretrained(root / "model")
    videos = snippet_feature_videos(corpus)
    splits = [v["split"] for v in videos]
    train_keys = set(corpus.train_dataset.data.column("key").to_pylist())
    assert splits.count("test") == len(corpus.test_videos) and splits.count("train") == len(train_keys)
    assert {v["label"] for v in videos if v["class_name"] == "Normal"} == {0}
    assert {v["label"] for v in videos if v["class_name"] != "Normal"} == {1}

    cache = extract_snippet_features(model, str(root / "model"), videos, data_args, str(root / "cache"))
    model.eval()
    transform = VADEvalTransform(data_args.image_size, None, resize_mode=data_args.resize_mode)
    for video in corpus.test_videos:
        row = {"num_frames": video["num_frames"], "path": video["path"], "video_index": 0,
               "num_snippets": video["num_snippets"]}
        pixels = transform.transform_row(row)["pixel_values"]
        with torch.no_grad():
            want = model.get_snippet_features(pixels[None])[0]
        got = cache.load(video["key"])["features"]
        assert got.shape == want.shape and got.shape[0] == video["num_snippets"]
        assert torch.allclose(got, want, atol=1e-5)
        # chunked by one window at a time: the same (windows restart the temporal module)
        assert torch.allclose(compute_snippet_features(model, video["path"], data_args, chunk_windows=1), want,
                              atol=1e-5)
    # everything cached: a second extraction computes nothing; another model is another cache
    again = extract_snippet_features(model, str(root / "model"), videos, data_args, str(root / "cache"))
    assert again.id == cache.id
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    model.save_pretrained(root / "model2")
    other = extract_snippet_features(model, str(root / "model2"), videos[:1], data_args, str(root / "cache"))
    assert other.id != cache.id and other.has(videos[0]["key"]) and not other.has(videos[1]["key"])
