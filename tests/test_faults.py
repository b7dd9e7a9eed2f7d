"""Faults: SIGKILL mid-training, a checkpoint half-written by a kill, a full disk while saving, a video that stops
decoding mid-run. Nothing already written is lost; resumed runs end exactly where uninterrupted ones do."""

import errno
import os
import shutil
import signal
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from hf_vtrain import run as run_module
from hf_vtrain.parser import RecipeError
from hf_vtrain.trainers.base import CheckpointSaveError
from tests.distributed import launch_env, marker_complete, popen_python, run_python
from tests.trainers.test_tad_run import REPO, tiny_argv

COMMON = dict(num_train_epochs=4, save_every_epochs=0, save_strategy="steps", save_steps=2, eval_every_epochs=0,
              eval_strategy="no", ema_decay=0.9)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("faults")


def _cmd(argv):
    return [sys.executable, os.path.join(REPO, "hf_vtrain", "run.py"), *argv]


def _weights(path):
    return load_file(os.path.join(path, "model.safetensors"))


def test_sigkill_then_resume_equals_uninterrupted(root, tmp_path):
    env = launch_env()  # OMP_NUM_THREADS=1
    full = run_python(_cmd(tiny_argv(root, tmp_path / "full", **COMMON)), env)
    assert full.returncode == 0, full.stderr[-3000:]
    out = tmp_path / "killed"
    proc = popen_python(_cmd(tiny_argv(root, out, **COMMON)), env)  # its own session
    deadline = time.time() + 600
    while not marker_complete(out / "checkpoint-2" / "trainer_state.json"):  # checkpoint 2 whole, then the kill
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "model.safetensors").exists()  # really interrupted before the end
    # the same command again resumes from the newest complete checkpoint
    done = run_python(_cmd(tiny_argv(root, out, **COMMON)), env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming from it" in done.stdout + done.stderr
    a, b = _weights(tmp_path / "full"), _weights(out)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    ea, eb = _weights(tmp_path / "full" / "ema"), _weights(out / "ema")
    for key in ea:
        assert torch.equal(ea[key], eb[key]), key


def test_half_written_checkpoint_is_skipped(root, tmp_path):
    out = tmp_path / "run"
    prepared = run_module.prepare(tiny_argv(root, out, **{**COMMON, "num_train_epochs": 1}))
    prepared.trainer.train()
    assert (out / "checkpoint-2" / "trainer_state.json").is_file()
    partial = out / "checkpoint-10"  # what a kill during the save of step 10 leaves: weights, no trainer state
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"\0" * 100)
    assert run_module.find_last_checkpoint(str(out)) == str(out / "checkpoint-2")
    # a kill while the Trainer writes trainer_state.json (its last file, not written atomically): empty, or cut short
    # (seen: the SIGKILL test's marker is the file's appearance, and the resume then failed with a JSONDecodeError)
    complete = (out / "checkpoint-2" / "trainer_state.json").read_text()
    for step, text in ((12, ""), (14, complete[: len(complete) // 2])):
        cut = out / f"checkpoint-{step}"
        shutil.copytree(out / "checkpoint-2", cut)
        (cut / "trainer_state.json").write_text(text)
    assert run_module.find_last_checkpoint(str(out)) == str(out / "checkpoint-2")
    again = run_module.prepare(tiny_argv(root, out, **{**COMMON, "num_train_epochs": 1}))
    assert again.resume == str(out / "checkpoint-2")
    with pytest.raises(RecipeError, match=r"checkpoint-12 is not a checkpoint \(trainer_state.json is cut short"):
        run_module.prepare(tiny_argv(root, out, resume_from_checkpoint=out / "checkpoint-12",
                                     **{**COMMON, "num_train_epochs": 1}))


def test_disk_full_while_saving(root, tmp_path, monkeypatch):
    out = tmp_path / "run"
    prepared = run_module.prepare(tiny_argv(root, out, **COMMON))
    trainer = prepared.trainer
    original = trainer._save_optimizer_and_scheduler

    def full_disk(output_dir):
        if output_dir.endswith("checkpoint-4"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(output_dir)

    monkeypatch.setattr(trainer, "_save_optimizer_and_scheduler", full_disk)
    with pytest.raises(CheckpointSaveError, match="No space left on device.*checkpoint-2"):
        trainer.train()
    assert not (out / "checkpoint-4").exists()  # the partial folder is gone
    intact = run_module.find_last_checkpoint(str(out))
    assert intact == str(out / "checkpoint-2")
    # and it loads: resume from it runs to the end
    resumed = run_module.prepare(tiny_argv(root, out, **COMMON))
    resumed.trainer.train(resume_from_checkpoint=resumed.resume)
    assert resumed.trainer.state.global_step == 8


def test_video_failing_mid_training_names_the_file(root, tmp_path):
    import shutil

    from hf_vtrain.data.video_io import VideoDecodeError

    run_module.prepare(tiny_argv(root, tmp_path / "warm"))  # the corpus exists
    corpus = tmp_path / "corpus"
    shutil.copytree(root / "corpus", corpus)
    prepared = run_module.prepare(tiny_argv(root, tmp_path / "run", data_root=str(corpus), synthetic="false",
                                            **COMMON))
    victim = sorted((corpus / "raw_data" / "video").glob("video_validation_*.mp4"))[0]
    victim.write_bytes(b"this is no longer a video")  # breaks after validation, as a failing disk would
    with pytest.raises(VideoDecodeError, match=victim.name):
        prepared.trainer.train()
