"""Whole `har` runs (EPAM-Net) through run.py on a tiny synthetic NTU-format corpus: the pose stream alone, the fused
model started from its weights (tensors compared), metrics and outputs, evaluate-only, the data check."""

import json
import os

import pytest
import torch
import yaml

from hf_vtrain import run as run_module
from hf_vtrain.models.epam import EPAMForActionRecognition

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEMO = os.path.join(REPO, "recipes", "epam_ntu60_demo.yaml")
TINY_MODEL = ("{rgb_base_channels: 8, rgb_stage_blocks: [1, 1], rgb_spatial_strides: [2, 2], pose_base_channels: 8, "
              "pose_stage_blocks: [1, 1], pose_spatial_strides: [2, 2], dropout: 0.0}")


def single_phase_recipe(root) -> str:
    """The demo recipe without its `phases:` (phases themselves: tests/test_phases.py)."""
    path = root / "epam_single_phase.yaml"
    if not path.exists():
        recipe = yaml.safe_load(open(DEMO))
        recipe.pop("phases")
        path.write_text(yaml.safe_dump(recipe))
    return str(path)


def tiny_argv(root, output_dir, **overrides):
    """The demo recipe without its phases, shrunk: 3 classes x 6 samples, 4 RGB / 8 pose frames, 32 / 16 px."""
    keys = {"output_dir": str(output_dir), "data_root": str(root / "corpus"), "synthetic_num_classes": 3,
            "synthetic_samples_per_class": 6, "num_classes": 3, "rgb_frames": 4, "pose_frames": 8, "rgb_size": 32,
            "pose_size": 16, "model_config_overrides": TINY_MODEL, "num_train_epochs": 2,
            "per_device_train_batch_size": 4, "per_device_eval_batch_size": 4, "eval_start_epoch": 2,
            "eval_every_epochs": 1, "save_strategy": "no", "logging_steps": 1, "report_to": "none"}
    keys.update(overrides)
    argv = [single_phase_recipe(root)]
    for key, value in keys.items():
        argv += [f"--{key}", str(value)]
    return argv


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("har_run")


def test_pose_then_fused_from_it(root, tmp_path):
    pose_dir = root / "pose"
    metrics = run_module.execute(run_module.prepare(tiny_argv(root, pose_dir, streams="pose")))
    assert {"eval_top1_acc", "eval_top5_acc", "eval_mean_class_acc"} <= set(metrics)
    for name in ("scores.json", "labels.json", "eval_accuracy_table.txt", "confusion_matrix.png",
                 "preprocessing_config.json", "model.safetensors"):
        assert (pose_dir / name).is_file(), name
    history = json.loads((pose_dir / "trainer_state.json").read_text())["log_history"]
    assert any("train_top1_acc" in e for e in history) and any("pose_loss" in e for e in history)

    # the fused model starts from the pose run's weights, by name; the RGB stream and the attention start fresh
    prepared = run_module.prepare(tiny_argv(root, tmp_path / "fused", init_from=str(pose_dir)))
    fused = prepared.trainer.model.state_dict()
    saved = EPAMForActionRecognition.from_pretrained(pose_dir).state_dict()
    assert all(k.startswith("pose_") for k in saved)
    for key, tensor in saved.items():
        assert torch.equal(fused[key], tensor), key
    assert any(k.startswith("rgb_backbone.") for k in fused) and any(k.startswith("attention_module.") for k in fused)
    metrics = run_module.execute(prepared)
    assert {"eval_rgb_top1_acc", "eval_pose_top1_acc", "eval_top1_acc"} <= set(metrics)
    scores = json.loads((tmp_path / "fused" / "scores.json").read_text())["scores"]
    labels = json.loads((tmp_path / "fused" / "labels.json").read_text())["labels"]
    assert scores.keys() == labels.keys() and len(next(iter(scores.values()))) == 3

    # the metric CLI on the run's files gives the run's figures; evaluate-only of the folder does too
    from hf_vtrain.metrics.har import evaluate_files

    again = evaluate_files(tmp_path / "fused" / "labels.json", tmp_path / "fused" / "scores.json").as_dict("eval_")
    assert again["eval_top1_acc"] == metrics["eval_top1_acc"]
    evaluated = run_module.main(["--do_train", "false", "--model_name_or_path", str(tmp_path / "fused")])
    assert evaluated["eval_top1_acc"] == metrics["eval_top1_acc"]

    # predict: a video and its keypoints (one PYSKL annotation as <id>.pkl beside it) give the evaluation's scores
    import pickle
    import shutil

    from hf_vtrain import predict as predict_module

    videos = tmp_path / "videos"
    videos.mkdir()
    for ann in prepared.task.corpus.eval_samples[:2]:
        shutil.copy(root / "corpus" / "videos" / f"{ann['frame_dir']}.mp4", videos)
        (videos / f"{ann['frame_dir']}.pkl").write_bytes(pickle.dumps(ann))
    (videos / "no_keypoints.mp4").write_bytes((videos / f"{ann['frame_dir']}.mp4").read_bytes())
    status = predict_module.main(["--model", str(tmp_path / "fused"), str(videos), "--output", str(tmp_path / "pred"),
                                  "--no_progress"])
    assert status == 2  # no_keypoints.mp4 has no keypoints: named and skipped, the others written
    for ann in prepared.task.corpus.eval_samples[:2]:
        got = json.loads((tmp_path / "pred" / f"{ann['frame_dir']}.top5.json").read_text())
        want = torch.tensor(scores[ann["frame_dir"]]).softmax(-1)
        assert torch.allclose(torch.tensor(got["scores"]), want, atol=1e-5)
        assert got["top5"][0]["label"] == prepared.task.corpus.class_names[int(want.argmax())]
    summary = json.loads((tmp_path / "pred" / "predict_summary.json").read_text())
    assert [f["video_id"] for f in summary["failed"]] == ["no_keypoints"]


def test_validate_only_and_a_bad_value(root, capsys):
    result = run_module.main(tiny_argv(root, root / "v", validate_data_only="true"))
    assert result["ok"] and "NTU-60 corpus check" in capsys.readouterr().out
    from hf_vtrain.parser import RecipeError

    with pytest.raises(RecipeError, match="streams must be rgb\\+pose, pose or rgb"):
        run_module.prepare(tiny_argv(root, root / "bad", streams="depth"))


def phased_argv(root, output_dir):
    """The demo recipe with its two phases (pose, then fused from it), shrunk as tiny_argv; 3 epochs each, a
    checkpoint every epoch (3 steps)."""
    argv = tiny_argv(root, output_dir, num_train_epochs=3, save_strategy="epoch", save_every_epochs=1,
                     eval_start_epoch=3)
    argv[0] = DEMO
    return argv


@pytest.mark.multiprocess  # 23 s; the mechanism is tests/test_phases.py's (TAD), this is its har run
def test_sigkill_inside_phase_two_then_the_same_command_equals_an_uninterrupted_run(root, tmp_path):
    """The two-phase run killed right after phase 2's first checkpoint, then the same command: phase 1 is skipped,
    phase 2 resumes (epoch-seeded sampling and augmentation, BatchNorm statistics) and ends with the weights of an
    uninterrupted run, bit for bit."""
    import sys

    from safetensors.torch import load_file

    from tests.distributed import launch_env, run_python, run_until_file_then_sigkill

    env = launch_env()  # one thread per process, as OMP_NUM_THREADS=1
    cmd = [sys.executable, os.path.join(REPO, "hf_vtrain", "run.py")]
    full = tmp_path / "full"
    done = run_python(cmd + phased_argv(root, full), env)
    assert done.returncode == 0, done.stderr[-3000:]
    out = tmp_path / "killed"
    run_until_file_then_sigkill(cmd + phased_argv(root, out), out / "phase2-fused" / "checkpoint-3" /
                                "trainer_state.json", env)
    assert not (out / "phase2-fused" / "phase_complete.json").exists()
    again = run_python(cmd + phased_argv(root, out), env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "phases[0] (pose) finished before with these settings: skipped" in again.stdout + again.stderr
    a, b = load_file(full / "model.safetensors"), load_file(out / "model.safetensors")
    assert a.keys() == b.keys() and any(k.startswith("rgb_backbone") for k in a)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert json.loads((full / "eval_results.json").read_text())["eval_top1_acc"] == \
        json.loads((out / "eval_results.json").read_text())["eval_top1_acc"]


RGBPOSE_DEMO = os.path.join(REPO, "recipes", "rgbpose_conv3d_ntu60_demo.yaml")
RGBPOSE_TINY = ("{rgb_base_channels: 8, rgb_stage_blocks: [1, 1, 1, 1], pose_base_channels: 4, "
                "pose_stage_blocks: [1, 1, 1], fusion_kernel: 3, dropout: 0.0}")


def test_rgbpose_conv3d_in_three_phases_as_mmaction2_trains_it(root, tmp_path, capsys):
    """The pose pathway alone, the RGB pathway alone, the fused model from both (init_from: pose, rgb); 2-clip
    testing with each stream's probabilities averaged over the clips and the streams' averaged, at other sizes than
    training (eval_rgb_size); then predict on one of the validation videos gives the evaluation's scores."""
    recipe = yaml.safe_load(open(RGBPOSE_DEMO))
    recipe["phases"] = [{"name": "pose", "streams": "pose"}, {"name": "rgb", "streams": "rgb"},
                        {"name": "fused", "streams": "rgb+pose", "init_from": "pose, rgb"}]
    path = tmp_path / "rgbpose_three_phases.yaml"
    path.write_text(yaml.safe_dump(recipe))
    argv = tiny_argv(root, tmp_path / "run", rgb_frames=2, pose_frames=8, rgb_size=32, pose_size=8,
                     eval_rgb_size=48, eval_pose_size=12, num_test_clips=2, model_config_overrides=RGBPOSE_TINY,
                     num_train_epochs=1, eval_start_epoch=1)
    argv[0] = str(path)
    metrics = run_module.main(argv)
    out = tmp_path / "run"
    summary = json.loads((out / "phases.json").read_text())
    assert [p["name"] for p in summary] == ["pose", "rgb", "fused"]
    assert summary[2]["init_from"] == f"{out / 'phase1-pose'},{out / 'phase2-rgb'}"
    assert {"eval_top1_acc", "eval_rgb_top1_acc", "eval_pose_top1_acc"} <= set(metrics)
    assert f"weights of {out / 'phase1-pose'}, {out / 'phase2-rgb'}" in capsys.readouterr().out
    scores = json.loads((out / "scores.json").read_text())["scores"]
    for probs in scores.values():  # mean_softmax: the fused scores are probabilities
        assert abs(sum(probs) - 1) < 1e-5
    # evaluate-only of the phased run's top folder, without a recipe: its final model's own settings
    evaluated = run_module.main(["--do_train", "false", "--model_name_or_path", str(out)])
    assert evaluated["eval_top1_acc"] == metrics["eval_top1_acc"]
    assert (out / "eval-run-raw" / "eval_results.json").is_file()
    preprocessing = json.loads((out / "preprocessing_config.json").read_text())
    assert (preprocessing["rgb_size"], preprocessing["pose_size"], preprocessing["num_test_clips"]) == (48, 12, 2)

    import pickle
    import shutil

    from hf_vtrain import predict as predict_module

    ann = next(a for a in pickle.load(open(root / "corpus" / "ntu60_2d.pkl", "rb"))["annotations"]
               if a["frame_dir"] in scores)
    videos = tmp_path / "videos"
    videos.mkdir()
    shutil.copy(root / "corpus" / "videos" / f"{ann['frame_dir']}.mp4", videos)
    (videos / f"{ann['frame_dir']}.pkl").write_bytes(pickle.dumps(ann))
    assert predict_module.main(["--model", str(out), str(videos), "--output", str(tmp_path / "pred"),
                                "--no_progress"]) == 0
    got = json.loads((tmp_path / "pred" / f"{ann['frame_dir']}.top5.json").read_text())
    assert torch.allclose(torch.tensor(got["scores"]), torch.tensor(scores[ann["frame_dir"]]), atol=1e-5)


def test_a_model_config_no_phase_can_build_ends_the_run_before_phase_one(root, tmp_path):
    from hf_vtrain.parser import RecipeError

    argv = tiny_argv(root, tmp_path / "run", rgb_frames=2, pose_frames=6, rgb_size=32, pose_size=8,
                     model_config_overrides=RGBPOSE_TINY)
    argv[0] = RGBPOSE_DEMO
    with pytest.raises(RecipeError, match=r"phases\[1\] \(fused\): the model config .*pose_frames \(6\) must be "
                                          r"speed_ratio \(4\) x rgb_frames \(2\)"):
        run_module.main(argv)
    assert not (tmp_path / "run" / "phase1-pose").exists()  # nothing trained
