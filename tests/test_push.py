"""Pushing a run to a Hub-compatible store (the loopback server): stored revisions pass git/git-lfs checks, the
pushed model loads, failed pushes are reported (never silent), and a run resumes from the store's last-checkpoint."""

import json
import os
import re
import shutil
import sys

import pytest
import torch
from safetensors.torch import load_file

from tests.hub_fixtures import GIT_LFS_MISSING, hub_python, run_hub_client, verify_stored_repo
from tests.trainers.test_tad_run import REPO, tiny_argv

PUSH = dict(push_to_hub="true", hub_strategy="checkpoint", hub_private_repo="true", num_train_epochs=2,
            save_every_epochs=1, eval_start_epoch=2)


def _run(argv, env, timeout=600):
    return hub_python([sys.executable, os.path.join(REPO, "hf_vtrain", "run.py"), *argv], env, cwd=REPO,
                      timeout=timeout)


@pytest.fixture(scope="module")
def corpus_root(tmp_path_factory):
    return tmp_path_factory.mktemp("push")


def test_push_checkpoints_and_load_back(hub_server, hub_env, corpus_root, tmp_path):
    """The stored revisions pass git / git-lfs checks; the pushed model loads with the trained weights; with the local
    folder gone, predict and evaluate-only work from the repo id alone."""
    out = tmp_path / "run"
    proc = _run(tiny_argv(corpus_root, out, hub_model_id="team/adatad-tiny", **PUSH), hub_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "FAILED" not in proc.stdout + proc.stderr
    repo_dir = hub_server.repo_dir("team/adatad-tiny", "model")
    if shutil.which("git-lfs") is None:
        pytest.skip(GIT_LFS_MISSING)
    verify_stored_repo(repo_dir, tmp_path / "clone")
    files = set(os.listdir(tmp_path / "clone"))
    assert {"model.safetensors", "config.json", "README.md", "last-checkpoint"} <= files
    assert (tmp_path / "clone" / "last-checkpoint" / "ema" / "model.safetensors").is_file()
    # from_pretrained from the store gives the trained weights
    code = ("from hf_vtrain.models.adatad import AdaTADForActionDetection as M; import torch, sys;"
            "m = M.from_pretrained('team/adatad-tiny');"
            f"torch.save(m.state_dict(), {str(tmp_path / 'pulled.pt')!r})")
    run_hub_client(code, hub_env)
    pulled = torch.load(tmp_path / "pulled.pt")
    local = load_file(out / "model.safetensors")
    from hf_vtrain.models.adatad import AdaTADForActionDetection

    reference = AdaTADForActionDetection.from_pretrained(out).state_dict()
    assert pulled.keys() == reference.keys() and len(local) > 0
    for key in reference:
        assert torch.equal(pulled[key], reference[key]), key

    # the local run folder deleted: predict with only the repo id on a clean output folder gives the run's detections;
    # evaluate-only of the repo id without a recipe (the stored recipe_resolved.yaml), the run's metrics
    detections = json.loads((out / "predictions.json").read_text())["results"]
    metrics = json.loads((out / "eval_results.json").read_text())
    shutil.rmtree(out)
    videos = corpus_root / "corpus" / "raw_data" / "video"
    clean = tmp_path / "clean"
    proc = hub_python([sys.executable, "-m", "hf_vtrain.predict", "--model", "team/adatad-tiny",
                       *(str(videos / f"{v}.mp4") for v in detections), "--output", str(clean), "--no_progress"],
                      hub_env, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for video_id, expected in detections.items():
        assert json.loads((clean / f"{video_id}.detections.json").read_text())["results"][video_id] == expected
    summary = json.loads((clean / "predict_summary.json").read_text())
    assert summary["weights"] == "ema" and summary["model"] == "team/adatad-tiny"
    snapshot = os.path.dirname(summary["folder"])  # the EMA weights are its ema/
    assert "checkpoint" not in " ".join(os.listdir(snapshot))  # the final model only was downloaded
    assert "python -m hf_vtrain.predict --model team/adatad-tiny" in open(os.path.join(snapshot, "README.md")).read()
    proc = _run(["--do_train", "false", "--model_name_or_path", "team/adatad-tiny", "--output_dir",
                 str(tmp_path / "evaluated")], hub_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    again = json.loads((tmp_path / "evaluated" / "eval-adatad-tiny-ema" / "eval_results.json").read_text())
    assert again["eval_average_mAP"] == metrics["eval_average_mAP"] and again["eval_loss"] == metrics["eval_loss"]


def test_failed_background_push_is_reported(hub_server, hub_env, corpus_root, tmp_path):
    hub_server.inject(fail="commit", status=500, count=1)  # the first checkpoint commit fails
    proc = _run(tiny_argv(corpus_root, tmp_path / "run", hub_model_id="team/flaky", **PUSH), hub_env)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]  # the final state reached the store
    assert "push of the step-2 checkpoint" in log and "FAILED" in log
    assert "background checkpoint push(es) failed during the run" in log


def test_unreachable_store_exits_nonzero_and_keeps_files(hub_server, hub_env, corpus_root, tmp_path):
    out = tmp_path / "run"
    hub_server.reachable = False
    try:
        proc = _run(tiny_argv(corpus_root, out, hub_model_id="team/down", **PUSH), hub_env, timeout=900)
    finally:
        hub_server.reachable = True
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr.splitlines()[-1]
    assert "error:" in proc.stderr and "team/down" in proc.stderr
    for name in ("model.safetensors", "checkpoint-4/trainer_state.json", "predictions.json"):
        assert (out / name).is_file(), name


def test_resume_from_store_when_local_folder_is_gone(hub_server, hub_env, corpus_root, tmp_path):
    out = tmp_path / "run"
    proc = _run(tiny_argv(corpus_root, out, hub_model_id="team/resumable", **PUSH), hub_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    shutil.rmtree(out)
    proc = _run(tiny_argv(corpus_root, out, hub_model_id="team/resumable", resume_from_checkpoint="hub",
                          **{**PUSH, "num_train_epochs": 3}), hub_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    assert "resuming from team/resumable's last-checkpoint" in log
    log = (out / "train.log").read_text()  # the Trainer's INFO lines (the console shows warnings by default)
    # which checkpoint is on the store depends on upload timing (the Trainer skips a push while one is running)
    match = re.search(r"Resuming training from checkpoint with epoch \d+ and global step (\d+)", log)
    assert match and int(match.group(1)) in (2, 4), log[-3000:]
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 6


def test_a_phased_run_pushes_its_top_folder(hub_server, hub_env, tmp_path):
    """push_to_hub with phases: the top folder (the last phase's model, card, curves, phases.json) reaches the store at
    the end; the phases' folders and checkpoints stay local."""
    from tests.test_phases import phased_argv

    root = tmp_path / "corpus_root"
    root.mkdir()
    out = tmp_path / "phased"
    proc = _run(phased_argv(root, out, push_to_hub="true", hub_model_id="team/phased", hub_private_repo="true"),
                hub_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "final model pushed to team/phased" in proc.stdout + proc.stderr
    code = ("from huggingface_hub import HfApi; import json;"
            "print(json.dumps(sorted(HfApi().list_repo_files('team/phased'))))")
    files = json.loads(run_hub_client(code, hub_env).stdout.strip().splitlines()[-1])
    assert {"model.safetensors", "config.json", "README.md", "phases.json", "training_curves.png",
            "ema/model.safetensors"} <= set(files)
    assert not any(f.startswith(("phase1-", "phase2-", "checkpoint-")) for f in files), files
    assert "preprocessing_config.json" in files
    card = (out / "README.md").read_text()
    assert "python -m hf_vtrain.predict --model team/phased VIDEO_OR_FOLDER" in card and "phase2" not in \
        card.split("## Use")[1].split("## Reproduce")[0]
