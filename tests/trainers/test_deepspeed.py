"""DeepSpeed on CPU (torchrun, gloo): ZeRO-2 and ZeRO-3 against 1 process and 2-process DDP, checkpoint contents,
exact resume (ZeRO-2 after a SIGKILL, ZeRO-3 from a checkpoint), a NaN loss on one process, and the refusal of
ZeRO-3 without gathered saves. ZeRO-3 on the vad task: tests/trainers/test_vad_multiprocess.py.

What the numbers mean (measured on the tiny AdaTAD run below, 8 optimizer steps, lr 5e-3, AdamW):
- ZeRO-2 with 2 processes gives bit-identical weights, EMA and metrics to 2-process DDP: same fp32 gradient
  averaging (divide by the world size, sum of 2 values), and here the gradient norm stays under max_grad_norm so
  DeepSpeed's clipping formula (grad / ((norm + 1e-6) / max_norm), norm summed per partition) is not exercised.
- 1 process vs 2 processes (DDP or ZeRO-2 alike) differ by up to ~4e-5: the per-sample gradients are summed in a
  different fp32 order (one batched backward vs two backwards + all-reduce). Adam (eps 1e-8) turns gradients that
  are pure rounding noise into real steps: the attention key / key-norm biases have an exactly zero gradient
  (softmax is shift invariant) and get ~1e-11 of noise, and a few near-cancelling elements elsewhere do the same.
  Excluding the 8 shift-invariant bias tensors the maximum is ~9e-6 (one element in 4096 of an MLP weight; median
  element difference ~4e-9). So the tolerance against 1 process is 1e-4 (all) / 2e-5 (others), not 1e-6.
- Those steps are lr-sized, so the differences scale with the learning rate: at the THUMOS recipe's own rates (1e-4 /
  2e-4) every tensor that can change an output is within 1e-6 of 1 process (measured 1.8e-7), the key biases 1.2e-6;
  perturbing the key biases by N(0, 1) leaves the outputs unchanged (a query bias moved alike changes logits by 5e-2).
- Evaluation: mAP identical; eval_loss equal when the eval batches hold the same windows (the AdaTAD eval loss is
  normalised per batch by that batch's positives, so it depends on how windows are grouped into batches).
"""

import json
import os
import re
import subprocess
import sys
import textwrap

import pytest
import torch

from tests.distributed import (REPO, RUN_PY, ZERO2, ZERO3, failure_text, free_port, launch_env, tensor_diffs,
                               torchrun, weights, zero3_config)
from tests.trainers.test_tad_run import TINY_MODEL, tiny_argv

pytestmark = pytest.mark.multiprocess

SHIFT_INVARIANT = re.compile(r"attn\.key(_norm)?\.bias$")  # zero gradient in exact arithmetic

# 8 steps (4 epochs x 2), nonzero mAP at the end, checkpoints at steps 4 and 8, only the final evaluation,
# eval batches of 3 windows (the same 2 batches for 1 and 2 processes), no dropout / drop path.
COMMON = dict(num_train_epochs=4, learning_rate=0.005, warmup_epochs=1, ema_decay=0.5, flip_prob=0.0,
              eval_start_epoch=100, per_device_eval_batch_size=3, save_every_epochs=0,
              model_config_overrides=TINY_MODEL.replace(
                  "dropout: 0.1", "dropout: 0.0, drop_path_rate: 0.0, detector_drop_path_rate: 0.0"))
assert "drop_path_rate: 0.0" in COMMON["model_config_overrides"], "TINY_MODEL changed: dropout is no longer switched off"
SAVE = dict(save_strategy="steps", save_steps=4)
NO_SAVE = dict(save_strategy="no")

# run.py plus a callback that SIGKILLs every rank right after checkpoint N is complete on disk (a deterministic
# hard interruption: no final save, no cleanup; the barrier makes sure no rank dies while another still writes).
KILL_RUNNER = textwrap.dedent("""
    import os, signal, sys
    from transformers import TrainerCallback
    from hf_vtrain import run

    KILL_AT = int(os.environ["HFV_KILL_AFTER_SAVE"])

    class KillAfterSave(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.global_step == KILL_AT:
                import torch.distributed as dist
                if dist.is_initialized():
                    dist.barrier()
                os.kill(os.getpid(), signal.SIGKILL)

    _prepare = run.prepare

    def prepare(argv):
        prepared = _prepare(argv)
        prepared.trainer.add_callback(KillAfterSave())
        return prepared

    run.prepare = prepare
    run.cli()
""")


# run.py plus a poison: the loss of optimizer step HFV_NAN_STEP is NaN on process HFV_NAN_RANK only.
NAN_RUNNER = textwrap.dedent("""
    import os
    from transformers import TrainerCallback
    from hf_vtrain import run

    STEP, RANK = int(os.environ["HFV_NAN_STEP"]), int(os.environ["HFV_NAN_RANK"])

    class Poison(TrainerCallback):
        def __init__(self, trainer):
            self.trainer = trainer

        def on_step_begin(self, args, state, control, **kwargs):
            self.trainer.poison = state.global_step + 1 == STEP and args.process_index == RANK

    _prepare = run.prepare

    def prepare(argv):
        prepared = _prepare(argv)
        trainer, model = prepared.trainer, prepared.trainer.model
        trainer.poison = False
        forward = model.forward

        def poisoned(*args, **kwargs):
            out = forward(*args, **kwargs)
            if trainer.poison and model.training:
                out.loss = out.loss * float("nan")
            return out

        model.forward = poisoned
        trainer.add_callback(Poison(trainer))
        return prepared

    run.prepare = prepare
    run.cli()
""")


def _eval(folder):
    metrics = json.loads(open(os.path.join(folder, "eval_results.json")).read())
    return {k: v for k, v in metrics.items() if k.startswith("eval_") and "runtime" not in k and "per_second" not in k}


def _assert_tensors_equal(a, b, where=""):
    """Nested containers of tensors and plain values: equal, tensors bit for bit (NaN where the other has NaN: a
    ZeRO-3 flat group's alignment padding past the last parameter is left uninitialised, and was seen to hold NaN)."""
    if torch.is_tensor(a):
        assert torch.is_tensor(b) and a.shape == b.shape, where
        if a.is_floating_point():
            assert torch.equal(torch.isnan(a), torch.isnan(b)), where
            a, b = torch.nan_to_num(a, nan=0.0), torch.nan_to_num(b, nan=0.0)
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _assert_tensors_equal(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_tensors_equal(x, y, f"{where}[{i}]")


# ZeRO-3 keeps parameters under stage3_param_persistence_threshold elements whole between forwards and partitions
# the rest. The shipped threshold (1e5) holds every tensor of the tiny model whole; the fixture's copy uses 1000 so
# that both kinds are trained, evaluated with swapped-in EMA weights, saved and resumed.
ZERO3_PERSIST = 1000


def _zero3_mixed(root) -> str:
    return zero3_config(root / "zero3_mixed.json", stage3_param_persistence_threshold=ZERO3_PERSIST)


def _assert_resumed_run_equal(full, part, shard_keys):
    """A resumed run equals the uninterrupted one bit for bit: weights, EMA, metrics, the DeepSpeed optimizer shards
    of each rank (`shard_keys`: fp32 master partitions and Adam moments, named per ZeRO stage), the schedule, and
    every logged loss (steps 1-4 from checkpoint-4's state, 5-8 resumed)."""
    for name in ("model.safetensors", "ema/model.safetensors"):
        diffs = tensor_diffs(weights(full, name), weights(part, name))
        assert max(diffs.values()) == 0.0, (name, {k: v for k, v in diffs.items() if v})
    assert _eval(full) == _eval(part)
    for rank in (0, 1):
        name = f"checkpoint-8/global_step8/zero_pp_rank_{rank}_mp_rank_00_optim_states.pt"
        a = torch.load(full / name, weights_only=False)["optimizer_state_dict"]
        b = torch.load(part / name, weights_only=False)["optimizer_state_dict"]
        for key in shard_keys:
            _assert_tensors_equal(a[key], b[key], f"{name}/{key}")
    _assert_tensors_equal(torch.load(full / "checkpoint-8" / "scheduler.pt"),
                          torch.load(part / "checkpoint-8" / "scheduler.pt"), "scheduler")
    losses = [[e["loss"] for e in json.loads((d / "trainer_state.json").read_text())["log_history"] if "loss" in e]
              for d in (full, part)]
    assert len(losses[0]) == 8 and losses[0] == losses[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, require_deepspeed):
    """1 process (global batch 2), 2-process DDP, ZeRO-2 and ZeRO-3 (per-device batch 1), same recipe."""
    root = tmp_path_factory.mktemp("deepspeed")
    out = {name: root / name for name in ("one", "ddp", "zero2", "zero3")}
    torchrun(root, tiny_argv(root, out["one"], per_device_train_batch_size=2, **COMMON, **NO_SAVE), 1)
    torchrun(root, tiny_argv(root, out["ddp"], per_device_train_batch_size=1, **COMMON, **NO_SAVE), 2)
    torchrun(root, tiny_argv(root, out["zero2"], per_device_train_batch_size=1, deepspeed=ZERO2, **COMMON, **SAVE), 2)
    torchrun(root, tiny_argv(root, out["zero3"], per_device_train_batch_size=1, deepspeed=_zero3_mixed(root),
                              **COMMON, **SAVE), 2)
    return root, out


def test_zero2_equals_ddp_and_matches_one_process(runs):
    root, out = runs
    state = json.loads((out["zero2"] / "trainer_state.json").read_text())
    assert state["global_step"] == 8
    assert all(e["grad_norm"] < 1.0 for e in state["log_history"] if "grad_norm" in e)  # clipping not engaged
    for name in ("model.safetensors", "ema/model.safetensors"):
        zero2 = weights(out["zero2"], name)
        # DeepSpeed adds no numerical difference of its own to 2-process DDP
        diffs = tensor_diffs(zero2, weights(out["ddp"], name))
        assert max(diffs.values()) == 0.0, (name, {k: v for k, v in diffs.items() if v})
        # against 1 process: fp32 summation order, amplified by Adam on zero-gradient parameters (module docstring)
        diffs = tensor_diffs(zero2, weights(out["one"], name))
        invariant = {k: v for k, v in diffs.items() if SHIFT_INVARIANT.search(k)}
        others = {k: v for k, v in diffs.items() if not SHIFT_INVARIANT.search(k)}
        assert len(invariant) == 8
        worst = max(diffs, key=diffs.get)
        assert diffs[worst] < 1e-4, (name, worst, diffs[worst])
        worst = max(others, key=others.get)
        assert others[worst] < 2e-5, (name, worst, others[worst])
        print(f"\n{name}: ZeRO-2 vs 1 process: max {max(diffs.values()):.2e} (shift-invariant biases), "
              f"{others[worst]:.2e} others ({worst})")

    one, ddp, zero2 = _eval(out["one"]), _eval(out["ddp"]), _eval(out["zero2"])
    assert zero2 == ddp
    assert zero2["eval_average_mAP"] > 0  # something was learned, so identical mAP means something
    assert {k: v for k, v in zero2.items() if "mAP" in k} == {k: v for k, v in one.items() if "mAP" in k}
    assert zero2["eval_loss"] == pytest.approx(one["eval_loss"], rel=1e-5)
    p1 = json.loads((out["one"] / "predictions.json").read_text())["results"]
    p2 = json.loads((out["zero2"] / "predictions.json").read_text())["results"]
    assert p1.keys() == p2.keys()
    assert [len(v) for v in p1.values()] == [len(v) for v in p2.values()]



@pytest.mark.slow
def test_zero2_with_clipping_engaged_matches_ddp(runs):
    """max_grad_norm below every gradient norm: DeepSpeed clips with its own formula (norm from per-partition sums
    of squares, grad / ((norm + 1e-6) / max_norm)) where torch multiplies by max_norm / (norm + 1e-6), so the
    last bits differ (measured: 2.7e-6 on the shift-invariant biases, 3.9e-7 elsewhere; 9.2e-6 / 3.0e-6 against
    1 process); mAP identical."""
    root, out = runs
    clipped = dict(COMMON, max_grad_norm=0.1)
    ddp, zero2 = root / "ddp_clipped", root / "zero2_clipped"
    torchrun(root, tiny_argv(root, ddp, per_device_train_batch_size=1, **clipped, **NO_SAVE), 2)
    torchrun(root, tiny_argv(root, zero2, per_device_train_batch_size=1, deepspeed=ZERO2, **clipped, **NO_SAVE), 2)
    state = json.loads((zero2 / "trainer_state.json").read_text())
    assert all(e["grad_norm"] > 0.1 for e in state["log_history"] if "grad_norm" in e)  # clipped at every step
    diffs = tensor_diffs(weights(ddp), weights(zero2))
    others = {k: v for k, v in diffs.items() if not SHIFT_INVARIANT.search(k)}
    assert max(diffs.values()) < 1e-5 and max(others.values()) < 1e-6, (max(diffs.values()), max(others.values()))
    a, b = _eval(ddp), _eval(zero2)
    assert {k: v for k, v in a.items() if "mAP" in k} == {k: v for k, v in b.items() if "mAP" in k}
    assert a["eval_loss"] == pytest.approx(b["eval_loss"], rel=1e-5)

def _thumos_recipe_lrs() -> dict:
    """The THUMOS recipe's own learning rates (detector 1e-4, adapters 2e-4), read from it: Adam's steps on rounding
    noise scale with lr."""
    import yaml

    recipe = yaml.safe_load(open(os.path.join(REPO, "recipes", "adatad_thumos14.yaml")))
    return dict(COMMON, learning_rate=recipe["learning_rate"], param_groups=json.dumps(recipe["param_groups"]))


@pytest.mark.slow  # 50 s: the precision study of the module doc at the recipe's rates (ZeRO-2 vs one process)
def test_at_the_recipe_learning_rates_weights_are_within_1e6_of_one_process(tmp_path, require_deepspeed):
    """Same 8 steps at the recipe's learning rates: 2-process DDP, ZeRO-2 and ZeRO-3 against 1 process. Every tensor
    that can change an output is within 1e-6 (measured 1.8e-7). The 8 attention key biases (key conv and key
    LayerNorm bias) add a constant to every key of a query, which softmax ignores: their exact gradient is 0, Adam turns the rounding
    noise into lr-sized steps (measured 1.2e-6), and the check below shows that no output depends on them."""
    from hf_vtrain.models.adatad import AdaTADForActionDetection

    out = {name: tmp_path / name for name in ("one", "ddp", "zero2", "zero3")}
    lrs = _thumos_recipe_lrs()
    assert lrs["learning_rate"] == 1e-4  # the measured figures in the docstring are for these rates
    torchrun(tmp_path, tiny_argv(tmp_path, out["one"], per_device_train_batch_size=2, **lrs, **NO_SAVE), 1)
    torchrun(tmp_path, tiny_argv(tmp_path, out["ddp"], per_device_train_batch_size=1, **lrs, **NO_SAVE), 2)
    torchrun(tmp_path, tiny_argv(tmp_path, out["zero2"], per_device_train_batch_size=1, deepspeed=ZERO2, **lrs,
                                  **NO_SAVE), 2)
    torchrun(tmp_path, tiny_argv(tmp_path, out["zero3"], per_device_train_batch_size=1, deepspeed=ZERO3, **lrs,
                                  **NO_SAVE), 2)
    for name in ("model.safetensors", "ema/model.safetensors"):
        assert max(tensor_diffs(weights(out["zero2"], name), weights(out["ddp"], name)).values()) == 0.0, name
        for run in ("ddp", "zero2", "zero3"):
            diffs = tensor_diffs(weights(out[run], name), weights(out["one"], name))
            others = {k: v for k, v in diffs.items() if not SHIFT_INVARIANT.search(k)}
            invariant = {k: v for k, v in diffs.items() if SHIFT_INVARIANT.search(k)}
            worst = max(others, key=others.get)
            assert len(invariant) == 8 and others[worst] < 1e-6, (run, name, worst, others[worst])
            assert max(invariant.values()) < 1e-5, (run, name, invariant)
            print(f"\n{run} vs 1 process at the recipe lr, {name}: max {others[worst]:.2e} ({worst}); key biases "
                  f"{max(invariant.values()):.2e}")
    one, zero2 = _eval(out["one"]), _eval(out["zero2"])
    assert {k: v for k, v in zero2.items() if "mAP" in k} == {k: v for k, v in one.items() if "mAP" in k}
    assert zero2["eval_loss"] == pytest.approx(one["eval_loss"], rel=1e-6)

    # The key biases do not reach any output: moving each by N(0, 1) changes the logits and offsets by float noise.
    model = AdaTADForActionDetection.from_pretrained(out["one"]).eval()
    video = torch.randint(0, 256, (2, 32, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = model(pixel_values=video)
        generator = torch.Generator().manual_seed(1)
        moved = 0
        for key, param in model.named_parameters():
            if SHIFT_INVARIANT.search(key):
                param.add_(torch.randn(param.shape, generator=generator))
                moved += 1
        after = model(pixel_values=video)
    assert moved == 8
    for field in ("class_logits", "segment_offsets"):
        assert (after[field] - before[field]).abs().max().item() < 1e-4, field


def test_zero2_checkpoint_holds_deepspeed_state_and_ema(runs):
    _, out = runs
    ckpt = out["zero2"] / "checkpoint-4"
    shards = ckpt / "global_step4"
    for name in ("mp_rank_00_model_states.pt", "zero_pp_rank_0_mp_rank_00_optim_states.pt",
                 "zero_pp_rank_1_mp_rank_00_optim_states.pt"):
        assert (shards / name).is_file(), name
    assert (ckpt / "latest").read_text().strip() == "global_step4"
    for name in ("model.safetensors", "ema/model.safetensors", "scheduler.pt", "rng_state_0.pth", "rng_state_1.pth",
                 "trainer_state.json"):
        assert (ckpt / name).is_file(), name
    assert json.loads((ckpt / "ema" / "ema_state.json").read_text())["num_updates"] == 4
    assert not (ckpt / "optimizer.pt").exists()  # the optimizer state lives in DeepSpeed's shards

    optim = torch.load(shards / "zero_pp_rank_0_mp_rank_00_optim_states.pt", weights_only=False)["optimizer_state_dict"]
    assert optim["zero_stage"] == 2 and optim["partition_count"] == [2] * len(optim["single_partition_of_fp32_groups"])
    groups = optim["base_optimizer_state"]["param_groups"]
    # OpenTAD's rule: every adapter parameter decayed; the detector's biases, norms and scales not
    assert [g["name"] for g in groups] == ["adapters", "default", "default/no_decay"]
    assert [g["weight_decay"] for g in groups] == [0.05, 0.05, 0.0]
    # the module state in the DeepSpeed checkpoint is the raw state dict: frozen backbone included, nothing renamed
    module = torch.load(shards / "mp_rank_00_model_states.pt", weights_only=False)["module"]
    saved = weights(ckpt)
    assert module.keys() == saved.keys()
    for key in saved:
        assert torch.equal(module[key], saved[key]), key


def test_zero2_resume_after_sigkill_is_exact(runs):
    root, out = runs
    part = root / "zero2_killed"
    argv = tiny_argv(root, part, per_device_train_batch_size=1, deepspeed=ZERO2, **COMMON, **SAVE)
    runner = root / "kill_runner.py"
    runner.write_text(KILL_RUNNER)
    killed = torchrun(root, argv, 2, script=str(runner), expect_ok=False, HFV_KILL_AFTER_SAVE="4")
    assert killed.returncode != 0
    assert (part / "checkpoint-4" / "trainer_state.json").is_file()
    assert not (part / "checkpoint-8").exists() and not (part / "model.safetensors").exists()

    resumed = torchrun(root, argv, 2)  # run.py finds checkpoint-4 in output_dir and resumes from it
    assert "resuming from it" in resumed.stdout + resumed.stderr

    _assert_resumed_run_equal(out["zero2"], part, ("single_partition_of_fp32_groups", "base_optimizer_state"))


def test_deepspeed_launcher_gives_the_torchrun_result(runs):
    """The `deepspeed` launcher (README) passes --local_rank=N and its own rendezvous variables: the same 2-process
    ZeRO-2 run as under torchrun, weights, EMA and metrics bit for bit."""
    root, out = runs
    launched = root / "zero2_deepspeed_launcher"
    cmd = [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", "2", "--master_port", str(free_port()),
           RUN_PY,
           *tiny_argv(root, launched, per_device_train_batch_size=1, deepspeed=ZERO2, **COMMON, **NO_SAVE)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=root, env=launch_env())
    assert proc.returncode == 0, failure_text(proc)
    assert "dist_world_size=2" in proc.stdout + proc.stderr
    for name in ("model.safetensors", "ema/model.safetensors"):
        diffs = tensor_diffs(weights(out["zero2"], name), weights(launched, name))
        assert max(diffs.values()) == 0.0, (name, {k: v for k, v in diffs.items() if v})
    assert _eval(launched) == _eval(out["zero2"])


def test_evaluate_only_under_the_deepspeed_launcher_with_zero3(runs):
    """--do_train false of the 1-process run's folder, 2 processes under the `deepspeed` launcher with ZeRO-3 (the
    engine partitions the loaded EMA weights for inference): the run's own metrics, in its eval-* folder."""
    root, out = runs
    evaluated = root / "evaluated_zero3"
    cmd = [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", "2", "--master_port", str(free_port()),
           RUN_PY, *tiny_argv(root, evaluated, **COMMON, deepspeed=ZERO3, do_train="false",
                              model_name_or_path=str(out["one"]))]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=root, env=launch_env())
    assert proc.returncode == 0, failure_text(proc)
    assert "dist_world_size=2" in proc.stdout + proc.stderr
    again, final = _eval(evaluated / "eval-one-ema"), _eval(out["one"])
    assert final["eval_average_mAP"] > 0
    assert {k: v for k, v in again.items() if "mAP" in k} == {k: v for k, v in final.items() if "mAP" in k}
    assert again["eval_loss"] == pytest.approx(final["eval_loss"], rel=1e-6)
    assert (evaluated / "eval-one-ema" / "predictions.json").read_bytes() == (out["one"] / "predictions.json").read_bytes()


@pytest.mark.parametrize("stage", [2, 3])
def test_accelerate_launch_with_the_deepspeed_configs(runs, stage):
    """The README's `accelerate launch --config_file recipes/accelerate_configs/deepspeed_zero{2,3}.yaml` (the recipe
    names no DeepSpeed config: accelerate hands the JSON to the Trainer) trains under DeepSpeed at that stage: the
    checkpoint holds that stage's ZeRO shards, and the weights are those of torchrun with --deepspeed (ZeRO-2 bit for
    bit; the torchrun ZeRO-3 run uses a lower persistence threshold, which changes the rounding: same bounds as ZeRO-3
    against ZeRO-2)."""
    root, out = runs
    launched = root / f"accelerate_zero{stage}"
    config = os.path.join(REPO, "recipes", "accelerate_configs", f"deepspeed_zero{stage}.yaml")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", config, "--num_processes", "2",
           "--main_process_port", str(free_port()), RUN_PY,
           *tiny_argv(root, launched, per_device_train_batch_size=1, **COMMON, **SAVE)]
    # from the repository root, as the config's relative JSON path expects
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=REPO, env=launch_env())
    assert proc.returncode == 0, failure_text(proc)
    shards = launched / "checkpoint-4" / "global_step4"
    for rank in (0, 1):
        optim = torch.load(shards / f"zero_pp_rank_{rank}_mp_rank_00_optim_states.pt", weights_only=False)
        assert optim["optimizer_state_dict"]["zero_stage"] == stage
    reference = out[f"zero{stage}"]
    for name in ("model.safetensors", "ema/model.safetensors"):
        diffs = tensor_diffs(weights(launched, name), weights(reference, name))
        others = {k: v for k, v in diffs.items() if not SHIFT_INVARIANT.search(k)}
        print(f"\n{name}: accelerate launch ZeRO-{stage} vs torchrun: max {max(diffs.values()):.2e}, "
              f"others {max(others.values()):.2e}")
        if stage == 2:
            assert max(diffs.values()) == 0.0, (name, {k: v for k, v in diffs.items() if v})
        else:
            assert max(diffs.values()) < 5e-5 and max(others.values()) < 1e-5, (name, max(others.values()))
    mine, theirs = _eval(launched), _eval(reference)
    assert {k: v for k, v in mine.items() if "mAP" in k} == {k: v for k, v in theirs.items() if "mAP" in k}


def test_zero3_matches_zero2_and_one_process(runs):
    """ZeRO-3 partitions every parameter (and the EMA: each rank averages its own partition) and gathers them to save.
    Against 2-process ZeRO-2 / DDP the weights differ by rounding only (measured 3.3e-6 on tensors that reach an
    output, 2.4e-5 on the key biases, from step 3 on: ZeRO-3 sums the gradient norm in another order, and Adam turns
    such differences on near-zero gradients into lr-sized steps); against 1 process the same bounds as ZeRO-2 hold.
    A wrong partition layout in the EMA's gather or slicing would differ by the size of the weights."""
    _, out = runs
    sizes = {k: v.numel() for k, v in weights(out["zero3"]).items()}
    assert any(n <= ZERO3_PERSIST for n in sizes.values()) and any(n > ZERO3_PERSIST for n in sizes.values())
    state = json.loads((out["zero3"] / "trainer_state.json").read_text())
    assert state["global_step"] == 8
    for name in ("model.safetensors", "ema/model.safetensors", "checkpoint-4/model.safetensors",
                 "checkpoint-4/ema/model.safetensors"):
        zero3 = weights(out["zero3"], name)
        for other, (bound_all, bound_others) in (("zero2", (5e-5, 1e-5)), ("one", (1e-4, 2e-5))):
            if other == "one" and name.startswith("checkpoint"):
                continue
            diffs = tensor_diffs(zero3, weights(out[other], name))
            others = {k: v for k, v in diffs.items() if not SHIFT_INVARIANT.search(k)}
            worst = max(others, key=others.get)
            assert max(diffs.values()) < bound_all and others[worst] < bound_others, (name, other, worst, others[worst])
            print(f"\n{name}: ZeRO-3 vs {other}: max {max(diffs.values()):.2e}, {others[worst]:.2e} others ({worst})")
    zero3, zero2, one = _eval(out["zero3"]), _eval(out["zero2"]), _eval(out["one"])
    assert zero3["eval_average_mAP"] > 0
    assert {k: v for k, v in zero3.items() if "mAP" in k} == {k: v for k, v in one.items() if "mAP" in k}
    assert {k: v for k, v in zero3.items() if "mAP" in k} == {k: v for k, v in zero2.items() if "mAP" in k}
    assert zero3["eval_loss"] == pytest.approx(one["eval_loss"], rel=1e-5)
    assert json.loads((out["zero3"] / "ema" / "ema_state.json").read_text())["num_updates"] == 8

    # the checkpoint: DeepSpeed's ZeRO-3 shards (each rank's parameter and optimizer partitions), whole weights
    shards = out["zero3"] / "checkpoint-4" / "global_step4"
    for rank in (0, 1):
        for kind in ("model_states", "optim_states"):
            assert (shards / f"zero_pp_rank_{rank}_mp_rank_00_{kind}.pt").is_file(), (rank, kind)
    optim = torch.load(shards / "zero_pp_rank_0_mp_rank_00_optim_states.pt", weights_only=False)
    assert optim["optimizer_state_dict"]["zero_stage"] == 3
    assert weights(out["zero3"], "checkpoint-4/model.safetensors").keys() == weights(out["zero2"]).keys()


def test_zero3_resume_is_exact(runs):
    """Resuming the ZeRO-3 run from its step-4 checkpoint (copied to a fresh folder) gives the uninterrupted run's
    weights, EMA, metrics, losses and optimizer partitions bit for bit: the engine reloads each rank's partitions, the
    EMA is re-sliced from the whole tensors saved in ema/."""
    import shutil

    root, out = runs
    part = root / "zero3_resumed"
    shutil.copytree(out["zero3"] / "checkpoint-4", part / "checkpoint-4")
    resumed = torchrun(root, tiny_argv(root, part, per_device_train_batch_size=1, deepspeed=_zero3_mixed(root),
                                        **COMMON, **SAVE), 2)
    assert "resuming from it" in resumed.stdout + resumed.stderr
    _assert_resumed_run_equal(out["zero3"], part, ("fp32_flat_groups", "optimizer_state_dict"))


def test_zero3_lora_exports_reproduce_the_evaluated_model(runs):
    """LoRA under ZeRO-3: no process holds whole weights, so the final save exports lora_adapter/ and merged_model/
    from the whole EMA weights just written; both reproduce the evaluated (EMA) model, and LoRA moved the backbone."""
    from hf_vtrain.models.adatad import AdaTADForActionDetection
    from tests.trainers.test_tad_run import LORA

    root, _ = runs
    out = root / "zero3_lora"
    torchrun(root, tiny_argv(root, out, per_device_train_batch_size=1, deepspeed=ZERO3, **{**COMMON, **LORA},
                              **NO_SAVE), 2)
    evaluated = AdaTADForActionDetection.from_pretrained(out / "ema").eval()
    merged = AdaTADForActionDetection.from_pretrained(out / "merged_model").eval()
    reloaded = AdaTADForActionDetection.from_lora_adapter(str(out / "lora_adapter"))
    assert evaluated.config.lora_r == 4 and merged.config.lora_r == 0
    video = torch.randint(0, 256, (2, 32, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = evaluated(pixel_values=video).class_logits
        assert (merged(pixel_values=video).class_logits - expected).abs().max().item() < 1e-5
        assert (reloaded(pixel_values=video).class_logits - expected).abs().max().item() < 1e-5
    key = "videomae.encoder.layer.0.attention.attention.query.weight"
    assert not torch.equal(merged.state_dict()[key], evaluated.state_dict()[key.replace(".weight", ".base_layer.weight")])


def test_zero3_without_gathered_saves_is_refused(tmp_path, require_deepspeed):
    """ZeRO-3 without gathered saves (hf_vtrain writes whole weights at every checkpoint) stops before anything is
    written, with one line naming the key and the shipped config."""
    config = json.loads(open(ZERO3).read())
    config["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] = False
    no_gather = tmp_path / "no_gather.json"
    no_gather.write_text(json.dumps(config))
    proc = torchrun(tmp_path, tiny_argv(tmp_path, tmp_path / "tad", deepspeed=no_gather, **NO_SAVE), 1,
                     expect_ok=False, launcher="torchrun")  # what torchrun prints of a rank's exit
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode != 0 and errors and "stage3_gather_16bit_weights_on_model_save" in errors[0], proc.stderr[-3000:]
    assert "exitcode  : 2" in proc.stderr  # run.py's exit status for bad input; torchrun itself exits 1
    assert "zero3.json" in errors[0]
    assert "[rank0]: Traceback" not in proc.stderr
    assert not (tmp_path / "tad").exists()


@pytest.mark.multiprocess  # 37 s, four 2-process launches
def test_a_nonfinite_loss_on_one_process_is_skipped_or_stops_on_every_process(runs):
    """A NaN loss on process 1 only, at step 3. With max_nonfinite_steps 1 every process skips that batch (all
    backpropagate the same zero loss), rank 0's log counts it, and DDP, ZeRO-2 and ZeRO-3 agree as without a skip.
    Before, process 1 skipped alone: under DDP the run hung in the loss-part gather of the next log line, and under
    ZeRO-2 (once that was fixed) the weights moved 2.6e-2 away from DDP's, because DeepSpeed lays gradients out in
    its buckets in hook order and the zero loss fires the hooks in another order than a real backward. Without the
    switch every process stops, and the message names process 1's loss parts and samples."""
    root, _ = runs
    runner = root / "nan_runner.py"
    runner.write_text(NAN_RUNNER)
    poison = dict(HFV_NAN_STEP="3", HFV_NAN_RANK="1")
    out = {}
    for name, config in (("ddp", None), ("zero2", ZERO2), ("zero3", ZERO3)):
        out[name] = root / f"nan_{name}"
        keys = dict(per_device_train_batch_size=1, max_nonfinite_steps=1, **COMMON, **NO_SAVE)
        if config:
            keys["deepspeed"] = config
        proc = torchrun(root, tiny_argv(root, out[name], **keys), 2, script=str(runner), **poison)
        log = proc.stdout + proc.stderr
        assert "skipping the batch of every process: non-finite loss at step 3" in log and "process 1: loss parts" in log
        history = json.loads((out[name] / "trainer_state.json").read_text())["log_history"]
        assert [e.get("skipped_nonfinite_batches", 0) for e in history if "loss" in e] == [0, 0] + [1] * 6, name
    assert max(tensor_diffs(weights(out["zero2"]), weights(out["ddp"])).values()) == 0.0
    diffs = tensor_diffs(weights(out["zero3"]), weights(out["ddp"]))
    others = {k: v for k, v in diffs.items() if not SHIFT_INVARIANT.search(k)}
    assert max(diffs.values()) < 5e-5 and max(others.values()) < 1e-5, (max(diffs.values()), max(others.values()))

    stop = root / "nan_stop"
    proc = torchrun(root, tiny_argv(root, stop, per_device_train_batch_size=1, **COMMON, **NO_SAVE), 2,
                     script=str(runner), expect_ok=False, **poison)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode != 0 and errors, proc.stderr[-3000:]
    assert "non-finite loss at step 3" in errors[0] and "process 1: loss parts" in errors[0] and "video_index" in errors[0]
    assert not (stop / "model.safetensors").exists()


@pytest.mark.parametrize("how", ["recipe key", "accelerate launch"])
def test_fsdp_is_refused_with_one_clear_error(tmp_path, monkeypatch, how):
    """The Trainer ignored `fsdp: full_shard` on CPU and trained with DDP without a word; hf_vtrain refuses it."""
    from hf_vtrain import run as run_module

    extra = {}
    if how == "recipe key":
        extra["fsdp"] = "full_shard"
    else:
        monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")  # what `accelerate launch` with an FSDP config sets
    with pytest.raises(ValueError, match="FSDP is not supported") as err:
        run_module.prepare(tiny_argv(tmp_path, tmp_path / "f", **extra))
    assert "zero2.json" in str(err.value)
    assert not (tmp_path / "f").exists()


def test_deepspeed_configs_are_consistent():
    import yaml

    for path, stage in ((ZERO2, 2), (ZERO3, 3)):
        config = json.loads(open(path).read())
        assert config["zero_optimization"]["stage"] == stage
        # batch sizes, accumulation and clipping come from the recipe through the Trainer ("auto"), never twice
        for key in ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps",
                    "gradient_clipping"):
            assert config[key] == "auto", (path, key)
        assert "optimizer" not in config and "scheduler" not in config  # VTrainer's param groups and schedule
    z3 = json.loads(open(ZERO3).read())["zero_optimization"]
    assert z3["stage3_gather_16bit_weights_on_model_save"] is True  # save_model writes real weights
    configs = os.path.join(REPO, "recipes", "accelerate_configs")
    for name, json_path in (("deepspeed_zero2.yaml", ZERO2), ("deepspeed_zero3.yaml", ZERO3)):
        data = yaml.safe_load(open(os.path.join(configs, name)))
        assert data["distributed_type"] == "DEEPSPEED"
        assert os.path.join(REPO, data["deepspeed_config"]["deepspeed_config_file"]) == json_path
    multi = yaml.safe_load(open(os.path.join(configs, "multi_node.yaml")))
    assert multi["num_machines"] > 1 and multi["num_processes"] % multi["num_machines"] == 0
    assert {"machine_rank", "main_process_ip", "main_process_port"} <= set(multi)
