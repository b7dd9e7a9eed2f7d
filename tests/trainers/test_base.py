"""VTrainer on a toy model: parameter groups, freezing, schedule, EMA, loss parts, epoch schedules, exact resume."""

import math
import os
from dataclasses import dataclass

import pytest
import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel, TrainerCallback
from transformers.utils import ModelOutput

from hf_vtrain.trainers.base import VTrainer
from hf_vtrain.trainers.arguments import VTrainingArguments
from hf_vtrain.trainers.optimization import warmup_cosine_lambda
from tests.callbacks import StopAt


class ToyConfig(PretrainedConfig):
    model_type = "hf_vtrain_toy"

    def __init__(self, dim=8, **kwargs):
        self.dim = dim
        super().__init__(**kwargs)


@dataclass
class ToyOutput(ModelOutput):
    loss: torch.Tensor = None
    fit_loss: torch.Tensor = None
    reg_loss: torch.Tensor = None
    logits: torch.Tensor = None


class ToyModel(PreTrainedModel):
    config_class = ToyConfig
    base_model_prefix = "toy"

    def __init__(self, config):
        super().__init__(config)
        self.backbone = nn.Linear(config.dim, config.dim)
        self.adapter = nn.Linear(config.dim, config.dim)
        self.norm = nn.LayerNorm(config.dim)
        self.head = nn.Linear(config.dim, 1)
        self.drop = nn.Dropout(0.1)
        self.post_init()

    def forward(self, x, y=None, **kwargs):
        h = self.backbone(x)
        h = self.norm(h + self.adapter(self.drop(h)))
        logits = self.head(h).squeeze(-1)
        if y is None:
            return ToyOutput(logits=logits)
        fit = ((logits - y) ** 2).mean()
        reg = 0.01 * logits.abs().mean()
        return ToyOutput(loss=fit + reg, fit_loss=fit, reg_loss=reg, logits=logits)


def toy_data(n=32, dim=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=g)
    y = x.sum(-1) * 0.5
    return [{"x": x[i], "y": y[i]} for i in range(n)]


def make_args(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path), per_device_train_batch_size=4, num_train_epochs=3, learning_rate=1e-2,
                weight_decay=0.05, report_to="none", logging_steps=2, save_strategy="no", use_cpu=True,
                lr_scheduler_type="cosine", seed=7, disable_tqdm=True, dataloader_num_workers=0,
                param_groups=[{"name": "backbone", "patterns": ["^backbone\\."], "lr": 0.0},
                              {"name": "adapter", "patterns": ["adapter"], "lr": 3e-2, "weight_decay": 0.1}])
    base.update(kw)
    return VTrainingArguments(**base)


def make_trainer(tmp_path, **kw):
    torch.manual_seed(0)
    model = ToyModel(ToyConfig())
    return VTrainer(model=model, args=make_args(tmp_path, **kw), train_dataset=toy_data(), eval_dataset=toy_data(8, seed=1))


def test_groups_freeze_and_lrs(tmp_path):
    trainer = make_trainer(tmp_path)
    model = trainer.model
    assert not model.backbone.weight.requires_grad and not model.backbone.bias.requires_grad
    opt = trainer.create_optimizer()
    by_name = {g["name"]: g for g in opt.param_groups}
    assert set(by_name) == {"adapter", "adapter/no_decay", "default", "default/no_decay"}
    assert by_name["adapter"]["lr"] == 3e-2 and by_name["adapter"]["weight_decay"] == 0.1
    assert by_name["adapter/no_decay"]["weight_decay"] == 0.0
    assert by_name["default"]["lr"] == 1e-2 and by_name["default"]["weight_decay"] == 0.05
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    assert id(model.backbone.weight) not in in_opt
    # biases and norm weights carry no decay
    no_decay = {id(p) for p in by_name["default/no_decay"]["params"]}
    assert {id(model.norm.weight), id(model.norm.bias), id(model.head.bias)} <= no_decay
    assert id(model.head.weight) in {id(p) for p in by_name["default"]["params"]}


def test_training_changes_trainable_only(tmp_path):
    trainer = make_trainer(tmp_path)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    for name, param in trainer.model.named_parameters():
        changed = not torch.equal(before[name], param.detach())
        assert changed == param.requires_grad, name


def test_warmup_cosine_shape():
    fn = warmup_cosine_lambda(warmup_steps=5, total_steps=25, min_ratio=0.1)
    assert fn(0) == pytest.approx(1 / 5) and fn(4) == pytest.approx(1.0)
    assert fn(5) == pytest.approx(1.0)
    assert fn(15) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert fn(25) == pytest.approx(0.1) and fn(100) == pytest.approx(0.1)


def test_schedule_sized_in_epochs(tmp_path):
    # 32 samples / batch 4 = 8 steps per epoch; warmup 1 epoch; cosine sized for 10 epochs, we stop at 3
    trainer = make_trainer(tmp_path, warmup_epochs=1, cosine_epochs=10, min_lr_ratio=0.0)
    trainer.train()
    lrs = [e["lr/adapter"] for e in trainer.state.log_history if "lr/adapter" in e]
    steps = [e["step"] for e in trainer.state.log_history if "lr/adapter" in e]
    fn = warmup_cosine_lambda(8, 80, 0.0)
    # the lr logged at step s is the one used for the optimizer step s (scheduler stepped s-1 times)
    for step, lr in zip(steps, lrs):
        assert lr == pytest.approx(3e-2 * fn(step - 1), rel=1e-6), step


class _EpochLRs(TrainerCallback):
    """The learning rate of every optimizer group read back from the optimizer at the start of each epoch."""

    def __init__(self, trainer):
        self.trainer, self.seen = trainer, []

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.seen.append({g["name"]: g["lr"] for g in self.trainer.optimizer.param_groups})


def test_multistep_schedule_read_back_each_epoch(tmp_path):
    """multistep: milestones in epochs, gamma, stepped per iteration, warmup in front. 8 steps per epoch, warmup 1
    epoch, milestones after epochs 2 and 4, gamma 0.5, 6 epochs. At the start of epoch e (after 8 e steps) the lr is
    lr x 0.5 ** (milestones <= e) (epoch 0: the first warmup step, lr / 8)."""
    trainer = make_trainer(tmp_path, num_train_epochs=6, lr_scheduler_type="multistep", lr_milestones=[2, 4],
                           lr_gamma=0.5, warmup_epochs=1)
    trainer.create_optimizer()
    probe = _EpochLRs(trainer)
    trainer.add_callback(probe)
    trainer.train()
    hand = [1 / 8, 1.0, 0.5, 0.5, 0.25, 0.25]
    assert [round(e["adapter"] / 3e-2, 12) for e in probe.seen] == hand
    assert [round(e["default"] / 1e-2, 12) for e in probe.seen] == hand
    # between two epoch starts: inside epoch 1 the lr is 1.0 (warmup done), at the last step of epoch 3 still 0.5
    logged = {e["step"]: e["lr/adapter"] for e in trainer.state.log_history if "lr/adapter" in e}
    assert logged[10] == pytest.approx(3e-2) and logged[32] == pytest.approx(1.5e-2)


@pytest.mark.parametrize("kind, expected", [
    ("constant", [1 / 8, 1.0, 1.0]),
    ("linear", [1 / 8, 1.0, 0.5]),  # warmup 8 steps, then 1 -> 0 over the remaining 16: at step 16, 1/2
])
def test_other_schedules_sized_in_epochs(tmp_path, kind, expected):
    trainer = make_trainer(tmp_path, lr_scheduler_type=kind, warmup_epochs=1)
    trainer.create_optimizer()
    probe = _EpochLRs(trainer)
    trainer.add_callback(probe)
    trainer.train()
    assert [round(e["adapter"] / 3e-2, 12) for e in probe.seen] == expected


@pytest.mark.parametrize("keys, message", [
    (dict(lr_scheduler_type="multistep"), "needs lr_milestones"),
    (dict(lr_scheduler_type="multistep", lr_milestones=[4, 2]), "increasing epochs"),
    (dict(lr_milestones=[2]), "read by lr_scheduler_type multistep only"),
    (dict(lr_scheduler_type="constant", min_lr_ratio=0.1), "min_lr_ratio is read by the cosine and linear"),
    (dict(lr_scheduler_type="linear", cosine_epochs=10), "cosine_epochs is read by lr_scheduler_type cosine only"),
    (dict(lr_scheduler_kwargs={"num_cycles": 2}), "lr_scheduler_kwargs"),
    (dict(lr_scheduler_type="polynomial"), "not one hf_vtrain sizes in epochs"),
    (dict(warmup_epochs=1, warmup_steps=10), "warmup_epochs or warmup_steps"),
])
def test_scheduler_keys_nothing_reads_are_errors(tmp_path, keys, message):
    with pytest.raises(ValueError, match=message):
        make_args(tmp_path, **keys)


class BNToyModel(ToyModel):
    def __init__(self, config):
        super().__init__(config)
        self.backbone_bn = nn.BatchNorm1d(config.dim)
        self.post_init()

    def forward(self, x, y=None, **kwargs):
        out = super().forward(self.backbone_bn(x), y)
        if y is not None:
            out.batch_metrics = {"abs_err": (out.logits - y).abs().mean().detach(),
                                 "within_1": ((out.logits - y).abs() < 1).float().mean()}
        return out


@pytest.mark.parametrize("freeze", [True, False])
def test_freeze_norm_stats_keeps_frozen_batchnorm_statistics(tmp_path, freeze):
    """A BatchNorm whose parameters are all frozen (the backbone group, lr 0): with freeze_norm_stats its running
    statistics stay bit-equal through training; without, they move."""
    torch.manual_seed(0)
    model = BNToyModel(ToyConfig())
    groups = [{"name": "backbone", "patterns": ["^backbone"], "lr": 0.0},
              {"name": "adapter", "patterns": ["adapter"], "lr": 3e-2}]
    trainer = VTrainer(model=model, args=make_args(tmp_path, param_groups=groups, freeze_norm_stats=freeze),
                       train_dataset=toy_data())
    before = {k: v.clone() for k, v in model.backbone_bn.state_dict().items()}
    trainer.train()
    after = model.backbone_bn.state_dict()
    assert not model.backbone_bn.weight.requires_grad
    same = all(torch.equal(before[k], after[k]) for k in ("running_mean", "running_var", "weight", "bias"))
    assert same == freeze
    assert trainer.frozen_norm_layers == (["backbone_bn"] if freeze else [])
    assert model.backbone_bn.training is (not freeze) and model.adapter.training


def test_batch_metrics_logged_as_epoch_means(tmp_path):
    """A model output's batch_metrics are logged once per epoch as train_<name>: the mean over the epoch's batches."""
    torch.manual_seed(0)
    trainer = VTrainer(model=BNToyModel(ToyConfig()), args=make_args(tmp_path), train_dataset=toy_data())
    seen = []
    forward = trainer.model.forward

    def recording(*args, **kwargs):
        out = forward(*args, **kwargs)
        if "y" in kwargs and trainer.model.training:
            seen.append((trainer.state.epoch, float(out.batch_metrics["abs_err"])))
        return out

    trainer.model.forward = recording
    trainer.train()
    logged = [e for e in trainer.state.log_history if "train_abs_err" in e]
    assert [e["epoch"] for e in logged] == [1.0, 2.0, 3.0]
    for k, entry in enumerate(logged):
        batches = [v for epoch, v in seen if k <= epoch < k + 1]
        assert len(batches) == 8 and entry["train_abs_err"] == pytest.approx(sum(batches) / 8, rel=1e-6)
        assert 0.0 <= entry["train_within_1"] <= 1.0


def test_loss_parts_logged(tmp_path):
    trainer = make_trainer(tmp_path)
    trainer.train()
    logged = [e for e in trainer.state.log_history if "loss" in e and "fit_loss" in e]
    assert logged, trainer.state.log_history
    for entry in logged:
        assert entry["fit_loss"] > 0 and entry["reg_loss"] > 0
        assert entry["loss"] == pytest.approx(entry["fit_loss"] + entry["reg_loss"], rel=1e-4)


def test_ema_tracks_and_is_used_for_eval(tmp_path):
    trainer = make_trainer(tmp_path, ema_decay=0.9)
    trainer.train()
    ema = trainer.ema
    assert ema.num_updates == trainer.state.global_step == 24
    assert "backbone.weight" not in ema.shadow  # frozen: not tracked
    raw = trainer.model.adapter.weight.detach().clone()
    assert not torch.allclose(ema.shadow["adapter.weight"], raw)
    with ema.swapped(trainer.model):
        assert torch.equal(trainer.model.adapter.weight, ema.shadow["adapter.weight"])
    assert torch.equal(trainer.model.adapter.weight, raw)
    trainer.save_model()
    loaded = ToyModel.from_pretrained(os.path.join(tmp_path, "ema"))
    assert torch.allclose(loaded.adapter.weight, ema.shadow["adapter.weight"])
    assert torch.equal(loaded.backbone.weight, trainer.model.backbone.weight)


def test_eval_and_save_epoch_schedule(tmp_path):
    trainer = make_trainer(tmp_path, num_train_epochs=5, eval_start_epoch=2, eval_every_epochs=2, save_every_epochs=2)
    trainer.train()
    eval_epochs = [round(e["epoch"]) for e in trainer.state.log_history if "eval_runtime" in e]
    assert eval_epochs == [2, 4, 5]  # from epoch 2 every 2, and the last epoch
    saved = sorted(int(d.split("-")[1]) for d in os.listdir(tmp_path) if d.startswith("checkpoint-"))
    assert saved == [16, 32, 40]


def test_resume_is_exact(tmp_path):
    common = dict(ema_decay=0.8, save_strategy="steps", save_steps=10, warmup_epochs=1)
    full = make_trainer(tmp_path / "full", **common)
    full.train()
    part = make_trainer(tmp_path / "part", **common)
    part.add_callback(StopAt(10))  # an interruption: same recipe, the process just ends after step 10
    part.train()
    assert part.state.global_step == 10
    resumed = make_trainer(tmp_path / "part", **common)
    resumed.train(resume_from_checkpoint=str(tmp_path / "part" / "checkpoint-10"))
    for (name, a), b in zip(full.model.named_parameters(), resumed.model.parameters()):
        assert torch.equal(a, b), name
    for name in full.ema.shadow:
        assert torch.equal(full.ema.shadow[name], resumed.ema.shadow[name]), name
    sa, sb = full.optimizer.state_dict(), resumed.optimizer.state_dict()
    for k in sa["state"]:
        for key in sa["state"][k]:
            assert torch.equal(torch.as_tensor(sa["state"][k][key]), torch.as_tensor(sb["state"][k][key]))
    assert full.lr_scheduler.state_dict()["last_epoch"] == resumed.lr_scheduler.state_dict()["last_epoch"]


def test_bad_param_groups():
    with pytest.raises(ValueError, match="param_groups\\[0\\]"):
        VTrainingArguments(output_dir="x", param_groups=[{"patterns": ["a"]}])
    with pytest.raises(ValueError, match="bad regex"):
        VTrainingArguments(output_dir="x", param_groups=[{"patterns": ["("], "lr": 1}])


class NaNAt(TrainerCallback):
    """Poisons the model so that the loss of the given optimizer step is NaN."""

    def __init__(self, trainer, steps):
        self.trainer, self.steps = trainer, set(steps)

    def on_step_begin(self, args, state, control, **kwargs):
        self.trainer.model.poison = (state.global_step + 1) in self.steps


class PoisonableToy(ToyModel):
    poison = False

    def forward(self, x, y=None, **kwargs):
        out = super().forward(x, y)
        if self.poison and out.loss is not None:
            out.loss = out.loss * float("nan")
            out.fit_loss = out.fit_loss * float("nan")
        return out


def test_nonfinite_loss_stops_with_step_and_parts(tmp_path):
    from hf_vtrain.trainers.base import NonFiniteLossError

    torch.manual_seed(0)
    trainer = VTrainer(model=PoisonableToy(ToyConfig()), train_dataset=toy_data(), args=make_args(
        tmp_path, save_strategy="steps", save_steps=2))
    trainer.add_callback(NaNAt(trainer, {5}))
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss at step 5 .*fit_loss"):
        trainer.train()
    # the last good checkpoint is intact and complete
    assert (tmp_path / "checkpoint-4" / "trainer_state.json").is_file()
    assert not (tmp_path / "checkpoint-5").exists()


def test_nonfinite_loss_skipped_when_allowed(tmp_path):
    torch.manual_seed(0)
    trainer = VTrainer(model=PoisonableToy(ToyConfig()), train_dataset=toy_data(),
                       args=make_args(tmp_path, max_nonfinite_steps=2))
    trainer.add_callback(NaNAt(trainer, {3, 7}))
    trainer.train()
    assert [s["step"] for s in trainer.nonfinite_steps] == [3, 7]
    for name, param in trainer.model.named_parameters():
        assert torch.isfinite(param).all(), name
    logged = [e for e in trainer.state.log_history if "skipped_nonfinite_batches" in e]
    assert logged and logged[-1]["skipped_nonfinite_batches"] == 2


def test_random_demo_checkpoint_is_written_once_and_checked(tmp_path):
    from hf_vtrain.tasks.common import ensure_random_checkpoint

    path = str(tmp_path / "ckpt")

    def build(tmp):
        ToyModel(ToyConfig(dim=4)).save_pretrained(tmp)

    state = torch.random.get_rng_state()
    ensure_random_checkpoint(path, {"dim": 4}, build, "toy")
    assert torch.equal(state, torch.random.get_rng_state())  # the global RNG is untouched
    first = ToyModel.from_pretrained(path).adapter.weight.clone()
    ensure_random_checkpoint(path, {"dim": 4}, build, "toy")  # same settings: reused as is
    assert torch.equal(first, ToyModel.from_pretrained(path).adapter.weight)
    with pytest.raises(ValueError, match=r"other settings \(differing: \['dim'\]\)"):
        ensure_random_checkpoint(path, {"dim": 8}, build, "toy")
    real = tmp_path / "real"  # a checkpoint not written by this switch is used as is
    ToyModel(ToyConfig(dim=4)).save_pretrained(real)
    ensure_random_checkpoint(str(real), {"dim": 8}, build, "toy")


def test_ema_half_life_in_epochs_is_kept_across_batch_sizes(tmp_path, caplog):
    """ema_half_life_epochs: the decay per step follows the steps per epoch, so batch 4 (8 steps per epoch) and batch
    8 (4 steps) average over the same 2 epochs; OpenTAD's 0.999 at 100 steps per epoch is a half-life of 6.93 epochs
    and 0.999 ** 4 keeps it at a 4x batch (25 steps)."""
    import logging

    from hf_vtrain.trainers.ema import ema_decay_for_half_life, ema_half_life_steps, ema_report

    assert ema_half_life_steps(0.999) / 100 == pytest.approx(6.928, abs=1e-3)
    assert ema_decay_for_half_life(ema_half_life_steps(0.999) / 100, 25) == pytest.approx(0.999 ** 4, rel=1e-12)
    assert ema_report(0.999, 100) == ("EMA: decay 0.999 per optimizer step = half-life 692.8 steps = 6.93 epochs "
                                      "(100 optimizer steps per epoch)")
    decays = {}
    for batch in (4, 8):
        trainer = make_trainer(tmp_path / str(batch), per_device_train_batch_size=batch, ema_half_life_epochs=2.0,
                               num_train_epochs=1)
        with caplog.at_level(logging.INFO, logger="hf_vtrain.trainers.base"):
            trainer.train()
        steps_per_epoch = 32 // batch
        decays[batch] = trainer.ema.decay
        assert trainer.ema.decay == pytest.approx(0.5 ** (1 / (2.0 * steps_per_epoch)), rel=1e-12)
        assert ema_half_life_steps(trainer.ema.decay) / steps_per_epoch == pytest.approx(2.0)
        assert f"half-life {2.0 * steps_per_epoch:.1f} steps = 2.00 epochs" in caplog.text
    assert decays[8] == pytest.approx(decays[4] ** 2)
    with pytest.raises(ValueError, match="ema_decay .* or ema_half_life_epochs, not both"):
        make_args(tmp_path, ema_decay=0.9, ema_half_life_epochs=1.0)
