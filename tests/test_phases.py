"""Training in phases (hf_vtrain/phases.py) on the tiny AdaTAD run: every phase checked before the first starts, phase
1's frozen tensors untouched, phase 2 starting from phase 1's final weights, finished phases skipped (or refused when
changed), SIGKILL inside phase 2 resumed to exactly the weights of an uninterrupted run, the top folder assembled."""

import json
import os
import sys

import pytest
import torch
from safetensors.torch import load_file

from hf_vtrain import run as run_module
from hf_vtrain.parser import RecipeError
from tests.distributed import launch_env, run_python, run_until_file_then_sigkill
from tests.trainers.test_tad_run import DEMO, REPO, tiny_argv

PHASES = """
continue_schedule: true
phases:
  - name: detector
    num_train_epochs: 2
    per_device_train_batch_size: 2
    param_groups:
      - {name: backbone, patterns: ['^videomae\\.'], lr: 0}
      - {name: adapters, patterns: ['^adapters\\.'], lr: 0}
  - name: all
    init_from: previous
    num_train_epochs: 2
    per_device_train_batch_size: 1
    learning_rate: 5.0e-4
    param_groups:
      - {name: backbone, patterns: ['^videomae\\.'], lr: 1.0e-4}
      - {name: adapters, patterns: ['^adapters\\.'], lr: 1.0e-3}
"""
# the phases set these; the tiny run's command-line values would override them (the command line lays over both)
PHASE_KEYS = ("num_train_epochs", "per_device_train_batch_size")
COMMON = dict(eval_start_epoch=2, eval_every_epochs=2, save_every_epochs=1, ema_decay=0.9, plot_eval_videos=0)


def phased_argv(root, out, recipe_text=PHASES, **overrides):
    recipe = root / f"phased_{abs(hash(recipe_text))}.yaml"
    recipe.write_text(open(DEMO).read() + recipe_text)
    argv = tiny_argv(root, out, **{**COMMON, **overrides})
    argv[0] = str(recipe)
    for key in PHASE_KEYS:
        i = argv.index(f"--{key}")
        del argv[i:i + 2]
    return argv


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("phases")
    run_module.prepare(tiny_argv(root, root / "warm"))  # writes the corpus and the random backbone
    return root


@pytest.fixture(scope="module")
def uninterrupted(root):
    out = root / "full"
    argv = phased_argv(root, out)
    plan = __import__("hf_vtrain.phases", fromlist=["plan_phases"]).plan_phases(
        argv, run_module.get_task("tad"), run_module.RUN_KEYS)
    # phase 2 starts from phase 1's final weights: capture the model phase 2's Trainer is built with
    started = {}
    original = run_module.execute

    def recording(run, leave=True):
        name = os.path.basename(run.training_args.output_dir)
        started[name] = {k: v.detach().clone() for k, v in run.trainer.model.state_dict().items()}
        started[name + ":trainable"] = {n for n, p in run.trainer.model.named_parameters() if p.requires_grad}
        return original(run, leave)

    run_module.execute = recording
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the subprocesses of the SIGKILL test (OMP_NUM_THREADS=1): the same float order
    try:
        run_module.main(argv)
    finally:
        run_module.execute = original
        torch.set_num_threads(threads)
    return out, plan, started


def test_phase_one_leaves_frozen_tensors_and_phase_two_starts_from_its_weights(uninterrupted):
    out, plan, started = uninterrupted
    first, second = out / "phase1-detector", out / "phase2-all"
    begin = started["phase1-detector"]
    end = load_file(first / "model.safetensors")
    trainable = started["phase1-detector:trainable"]
    assert trainable and not any(n.startswith(("videomae.", "adapters.")) for n in trainable)
    for name, value in begin.items():
        if name.startswith(("videomae.", "adapters.")):
            assert torch.equal(value, end[name]), name  # frozen in phase 1: bit-equal
    assert any(not torch.equal(begin[n], end[n]) for n in trainable)
    # phase 2's model before its first step holds phase 1's final (raw) weights, tensor by tensor
    phase2 = started["phase2-all"]
    assert phase2.keys() == end.keys()
    for name in end:
        assert torch.equal(phase2[name], end[name]), name
    assert {n for n in started["phase2-all:trainable"] if n.startswith("videomae.")}  # the backbone trains now
    # the epochs count on: phase 2 evaluates at its local epoch 2 = epoch 4 of the run; markers and the top folder
    for phase in (first, second):
        marker = json.loads((phase / "phase_complete.json").read_text())
        assert marker["epochs"] == 2 and marker["global_step"] > 0
    summary = json.loads((out / "phases.json").read_text())
    assert [(p["name"], p["epoch_offset"]) for p in summary] == [("detector", 0), ("all", 2)]
    assert summary[1]["init_from"] == str(first)
    for name in ("model.safetensors", "config.json", "ema/model.safetensors", "predictions.json", "README.md",
                 "training_curves.png", "log_history.json", "run_info.json"):
        assert (out / name).is_file(), name
    assert load_file(out / "model.safetensors").keys() == load_file(second / "model.safetensors").keys()
    assert all(torch.equal(a, b) for a, b in zip(load_file(out / "model.safetensors").values(),
                                                  load_file(second / "model.safetensors").values()))
    history = json.loads((out / "log_history.json").read_text())
    steps = [e["step"] for e in history if "loss" in e]
    assert steps == sorted(steps) and max(e["epoch"] for e in history) == 4
    assert "## Phases" in (out / "README.md").read_text()
    # scripts/compare_runs.py reads the top folder as one run: shared keys as they are, the others per phase
    from hf_vtrain.plotting.compare import format_comparison, load_run

    record = load_run(str(out))
    assert record.recipe["phases[1].learning_rate"] == 5e-4 and record.recipe["phases[0].learning_rate"] == 1e-3
    assert record.recipe["window_size"] == 32 and "learning_rate" not in record.recipe
    assert record.log_history == history
    table = format_comparison([record, load_run(str(second))], "eval_average_mAP")
    assert "phases[1].learning_rate" in table


def test_continue_schedule_goes_on_where_the_previous_phase_stopped(uninterrupted):
    """continue_schedule: warmup + cosine sized over both phases' 4 epochs, in each phase's own steps: phase 2's
    first lr is the global curve at epoch 2."""
    import math

    out, plan, _ = uninterrupted
    lrs = []
    for folder in ("phase1-detector", "phase2-all"):
        state = json.loads((out / folder / "trainer_state.json").read_text())
        lrs.append([e["lr/default"] for e in state["log_history"] if "lr/default" in e])
    # tiny corpus: 4 training videos -> 2 steps per epoch at batch 2, 4 at batch 1; recipe: warmup 2 epochs, floor
    # 0.01 x lr; phase 1 lr 1e-3, phase 2 lr 5e-4; logged at step s: the lr of step s (multiplier of s - 1)
    def curve(step, per_epoch, base):
        warmup, total = 2 * per_epoch, 4 * per_epoch
        if step < warmup:
            return base * (step + 1) / warmup
        progress = (step - warmup) / (total - warmup)
        return base * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress)))

    assert lrs[0] == pytest.approx([curve(s, 2, 1e-3) for s in range(4)], rel=1e-6)
    assert lrs[1] == pytest.approx([curve(8 + s, 4, 5e-4) for s in range(8)], rel=1e-6)


def test_a_bad_key_in_phase_two_is_refused_before_phase_one_starts(root, tmp_path):
    out = tmp_path / "bad"
    with pytest.raises(RecipeError, match=r"unknown key 'phases\[1\]\.learning_rat'; did you mean 'learning_rate'"):
        run_module.main(phased_argv(root, out, PHASES.replace("learning_rate: 5.0e-4", "learning_rat: 5.0e-4")))
    with pytest.raises(RecipeError, match=r"key 'phases\[1\]\.per_device_train_batch_size' expects an integer"):
        run_module.main(phased_argv(root, out, PHASES.replace("per_device_train_batch_size: 1",
                                                              "per_device_train_batch_size: one")))
    with pytest.raises(RecipeError, match=r"phases\[0\]\.init_from: 'previous': the first phase"):
        run_module.main(phased_argv(root, out, PHASES.replace("    num_train_epochs: 2\n    per_device_train_batch_size"
                                                              ": 2", "    init_from: previous\n    num_train_epochs: 2"
                                                              "\n    per_device_train_batch_size: 2", 1)))
    with pytest.raises(RecipeError, match=r"phases\[1\]\.output_dir: a phase cannot set"):
        run_module.main(phased_argv(root, out, PHASES + "    output_dir: elsewhere\n"))
    assert not out.exists()  # nothing ran, nothing was written


def test_a_finished_phase_is_skipped_and_a_changed_one_refused(uninterrupted, root):
    out, _, _ = uninterrupted
    weights = (out / "phase2-all" / "model.safetensors").read_bytes()
    run_module.main(phased_argv(root, out, logging_steps=2))  # a logging key: the same phases, both skipped
    assert (out / "phase2-all" / "model.safetensors").read_bytes() == weights
    with pytest.raises(RecipeError, match=r"phases\[0\] \(detector\) finished with other settings \(learning_rate: "
                                          r"0.001 -> 0.002\)"):
        run_module.main(phased_argv(root, out, learning_rate=2e-3))


def _cmd(argv):
    return [sys.executable, os.path.join(REPO, "hf_vtrain", "run.py"), *argv]


def test_sigkill_inside_phase_two_then_the_same_command_equals_an_uninterrupted_run(uninterrupted, root, tmp_path):
    full = uninterrupted[0]  # run with one thread, as these subprocesses: the same float order
    env = launch_env()  # OMP_NUM_THREADS=1
    out = tmp_path / "killed"
    argv = phased_argv(root, out)
    run_until_file_then_sigkill(_cmd(argv), out / "phase2-all" / "checkpoint-4" / "trainer_state.json", env)
    assert not (out / "phase2-all" / "phase_complete.json").exists()  # really inside phase 2
    done = run_python(_cmd(argv), env)
    assert done.returncode == 0, done.stderr[-3000:]
    log = done.stdout + done.stderr
    assert "phases[0] (detector) finished before with these settings: skipped" in log
    assert "resuming from it" in log
    for name in ("model.safetensors", "ema/model.safetensors"):
        a, b = load_file(full / "phase2-all" / name), load_file(out / "phase2-all" / name)
        for key in a:
            assert torch.equal(a[key], b[key]), (name, key)
