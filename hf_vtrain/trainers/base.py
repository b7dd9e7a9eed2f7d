"""VTrainer: the Trainer every task uses, with the training tricks video detection recipes rely on.

Per-module learning rates and freezing by name patterns, warmup + cosine sized in epochs and stepped per iteration,
EMA weights (evaluated, checkpointed, restored on resume), evaluation and checkpointing by epoch schedule, named loss
parts in the logs, and an exact resume for models whose checkpoint keys are renamed on save (VideoMAE q_bias/v_bias).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from accelerate.utils import gather_object
from torch import nn
from transformers import PreTrainedModel, Trainer, TrainerCallback, TrainingArguments

logger = logging.getLogger(__name__)

EMA_DIR = "ema"


@dataclass
class VTrainingArguments(TrainingArguments):
    """TrainingArguments plus the knobs video recipes need; each setting has one home (see STYLE.md)."""

    remove_unused_columns: bool = field(
        default=False,
        metadata={"help": "Kept False: video datasets decode in lazy transforms that read columns the model's "
                          "forward does not name."},
    )
    param_groups: list[dict] = field(
        default_factory=list,
        metadata={"help": "Parameter groups: list of {name, patterns (regexes on parameter names), lr, "
                          "weight_decay (optional)}. First match wins; lr 0 freezes (requires_grad=False, left out "
                          "of the optimizer). Unmatched parameters use learning_rate/weight_decay."},
    )
    decay_bias_and_norm: bool = field(
        default=False, metadata={"help": "Apply weight decay to biases and normalisation weights too."}
    )
    warmup_epochs: float = field(default=0.0, metadata={"help": "Linear warmup length in epochs (per-step)."})
    cosine_epochs: float | None = field(
        default=None,
        metadata={"help": "Length the cosine is sized for, in epochs (default num_train_epochs). OpenTAD sizes it "
                          "for 100 epochs and stops at 60."},
    )
    min_lr_ratio: float = field(default=0.0, metadata={"help": "Cosine floor as a fraction of each group's lr."})
    ema_decay: float = field(default=0.0, metadata={"help": "EMA decay per optimizer step; 0 disables EMA."})
    eval_with_ema: bool = field(default=True, metadata={"help": "Evaluate with EMA weights when EMA is on."})
    eval_start_epoch: int = field(default=0, metadata={"help": "First epoch (1-based) to evaluate at."})
    eval_every_epochs: int = field(
        default=0, metadata={"help": "Evaluate every K epochs from eval_start_epoch; 0 uses eval_strategy."}
    )
    max_nonfinite_steps: int = field(
        default=0,
        metadata={"help": "A NaN/inf loss stops the run naming the step, loss parts and samples (0). With N > 0, up to "
                          "N such batches are skipped instead (zero gradient; counted in the logs and the final "
                          "report); the N+1-th stops the run."},
    )
    plot_eval_videos: int = field(
        default=3, metadata={"help": "After the final evaluation, draw predictions vs ground truth for this many videos."}
    )
    save_every_epochs: int = field(
        default=0, metadata={"help": "Save a checkpoint every K epochs; 0 uses save_strategy/save_steps."}
    )

    def __post_init__(self):
        try:
            super().__post_init__()
        except ValueError as err:
            if "support bf16" not in str(err):
                raise
            raise ValueError(
                "bf16: true needs a GPU with bf16 (NVIDIA Ampere or newer) and none is visible here; set bf16: false "
                "(--bf16 false) to train in fp32, with use_cpu: true (--use_cpu true) on a machine without a GPU"
            ) from None
        if deepspeed_zero_stage(self) == 3 and not _zero3_gathers_on_save(self):
            raise ValueError(ZERO3_NEEDS_GATHER)
        if self.fsdp or os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("1", "true"):
            raise ValueError(FSDP_UNSUPPORTED)
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.warmup_epochs < 0 or self.min_lr_ratio < 0 or self.min_lr_ratio > 1:
            raise ValueError("warmup_epochs must be >= 0 and min_lr_ratio in [0, 1]")
        for i, group in enumerate(self.param_groups):
            if not isinstance(group, dict) or "patterns" not in group or "lr" not in group:
                raise ValueError(f"param_groups[{i}] needs 'patterns' and 'lr', got {group!r}")
            unknown = set(group) - {"name", "patterns", "lr", "weight_decay"}
            if unknown:
                raise ValueError(f"param_groups[{i}] has unknown keys {sorted(unknown)}")
            patterns = group["patterns"] if isinstance(group["patterns"], list) else [group["patterns"]]
            for pattern in patterns:
                try:
                    re.compile(pattern)
                except re.error as err:
                    raise ValueError(f"param_groups[{i}]: bad regex {pattern!r}: {err}") from None


# --------------------------------------------------------------------------------------------------------------
# Parameter groups


def _is_no_decay(name: str, param: nn.Parameter) -> bool:
    return param.ndim <= 1 or name.endswith(".bias") or "norm" in name.lower()


def check_config_overrides(
    recipe_key: str, overrides: Any, config_cls, nested: dict | None = None, extra: tuple[str, ...] = ()
) -> None:
    """Refuses keys of a `*_config_overrides` recipe entry that `config_cls` does not have, naming the entry and the
    closest field names. A PretrainedConfig keeps any keyword as an attribute, so a typo would be ignored without a
    word (and YAML reads `{chunk_size:4}`, no space after the colon, as the key 'chunk_size:4'). `nested` maps a key
    (e.g. CLIP's text_config) to the config class its mapping is checked against; `extra` names keys the caller
    handles itself."""
    import dataclasses
    import difflib

    from ..parser import RecipeError

    if not isinstance(overrides, dict):
        raise RecipeError(f"{recipe_key} must be a mapping of {config_cls.__name__} fields, got {overrides!r}")
    known = {f.name for f in dataclasses.fields(config_cls)} | set(extra)
    for key, value in overrides.items():
        if key not in known:
            close = difflib.get_close_matches(str(key), sorted(known), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            colon = " (YAML needs a space after ':' in {key: value})" if ":" in str(key) else ""
            raise RecipeError(f"{recipe_key}: {key!r} is not a {config_cls.__name__} field{colon}{hint}")
        if nested and key in nested and isinstance(value, dict):
            check_config_overrides(f"{recipe_key}.{key}", value, nested[key])


@contextlib.contextmanager
def config_errors(recipe_key: str):
    """A config that fails its own validation (huggingface_hub's @strict checks) ends the run with one message naming
    the recipe entry, instead of a traceback from inside huggingface_hub."""
    from huggingface_hub.errors import StrictDataclassError

    from ..parser import RecipeError

    try:
        yield
    except StrictDataclassError as err:
        cause = err.__cause__ if err.__cause__ is not None else err
        raise RecipeError(f"{recipe_key}: {cause}") from err


def assign_param_groups(model: nn.Module, args: VTrainingArguments) -> list[dict]:
    """Assigns every parameter to a group and freezes lr-0 groups. Returns the group table (for the report).

    Freezing happens here, before the model is wrapped for DDP, so every process agrees on what is trainable.
    """
    specs = []
    for i, group in enumerate(args.param_groups):
        patterns = group["patterns"] if isinstance(group["patterns"], list) else [group["patterns"]]
        specs.append({
            "name": group.get("name", f"group{i}"),
            "regex": [re.compile(p) for p in patterns],
            "lr": float(group["lr"]),
            "weight_decay": float(group.get("weight_decay", args.weight_decay)),
        })
    default = {"name": "default", "regex": [], "lr": args.learning_rate, "weight_decay": args.weight_decay}
    table = {s["name"]: {**s, "params": []} for s in specs + [default]}
    for name, param in model.named_parameters():
        spec = next((s for s in specs if any(r.search(name) for r in s["regex"])), default)
        table[spec["name"]]["params"].append((name, param))
        # The recipe is the one home of freezing: a model's own requires_grad flags are overridden both ways.
        param.requires_grad_(spec["lr"] != 0.0)
    return list(table.values())


def build_optimizer_groups(table: list[dict], args: VTrainingArguments) -> list[dict]:
    groups = []
    for entry in table:
        if entry["lr"] == 0.0:
            continue
        decay, no_decay = [], []
        for name, param in entry["params"]:
            if not param.requires_grad:
                continue
            (no_decay if (not args.decay_bias_and_norm and _is_no_decay(name, param)) else decay).append(param)
        for params, wd, suffix in ((decay, entry["weight_decay"], ""), (no_decay, 0.0, "/no_decay")):
            if params:
                groups.append({"params": params, "lr": entry["lr"], "weight_decay": wd,
                               "name": entry["name"] + suffix})
    return groups


def format_param_report(table: list[dict]) -> str:
    lines = ["parameter groups:"]
    total_train = total_frozen = 0
    for entry in table:
        trainable = sum(p.numel() for _, p in entry["params"] if p.requires_grad)
        frozen = sum(p.numel() for _, p in entry["params"] if not p.requires_grad)
        total_train += trainable
        total_frozen += frozen
        if not entry["params"]:
            continue
        state = "frozen" if entry["lr"] == 0.0 else f"lr {entry['lr']:g}, wd {entry['weight_decay']:g}"
        lines.append(f"  {entry['name']:<12} {len(entry['params']):>5} tensors  trainable {trainable:>12,}  "
                     f"frozen {frozen:>12,}  ({state})")
    lines.append(f"  total trainable {total_train:,} / frozen {total_frozen:,}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------------
# Schedule


def warmup_cosine_lambda(warmup_steps: int, total_steps: int, min_ratio: float):
    """Multiplier per optimizer step: linear 0->1 over warmup, then cosine 1->min_ratio until total_steps."""

    def fn(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        span = max(total_steps - warmup_steps, 1)
        progress = min(max(step - warmup_steps, 0) / span, 1.0)
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return fn


# --------------------------------------------------------------------------------------------------------------
# EMA


class ModelEMA:
    """Exponential moving average of the trainable parameters and floating-point buffers.

    Frozen parameters are not copied: their average is themselves. `swapped()` puts the EMA values into the model
    for evaluation and restores the raw ones afterwards.

    Under DeepSpeed ZeRO-3 every parameter is a flat partition per rank (`param.ds_tensor`; `param.data` is empty
    outside the forward). The EMA of such a parameter is kept the same way: each rank averages its own partition, as
    the optimizer updates it, so the EMA is sharded like the optimizer state and a step costs no communication.
    `state_dict_for` gathers the partitions into whole tensors (for saving) and `load_from` slices whole tensors into
    this rank's partition (for resuming); both are collectives every rank calls. The shadow of a parameter is made
    whole at creation (the engine partitions the model later) and sliced the first time it is seen partitioned.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.num_updates = 0
        persistent = set(model.state_dict(keep_vars=True))
        # Which tensors are tracked is fixed at creation; looking them up by name each step is a dict access.
        self.names = [n for n, p in model.named_parameters() if p.requires_grad] + [
            n for n, b in model.named_buffers() if b.is_floating_point() and n in persistent
        ]
        if any(is_zero3_partitioned(t) for _, t in self._tracked(model)):
            raise ValueError("the EMA must be created from whole parameters, before DeepSpeed ZeRO-3 partitions them")
        self.shadow = {name: t.detach().clone().float() for name, t in self._tracked(model)}
        self.partitioned: set[str] = set()  # names whose shadow is this rank's ZeRO-3 partition

    def _tracked(self, model: nn.Module):
        tensors = {**dict(model.named_parameters()), **dict(model.named_buffers())}
        for name in self.names:
            yield name, tensors[name]

    def _live(self, model: nn.Module):
        """(name, the tensor the EMA averages: the ZeRO-3 partition or the tensor itself). A shadow still whole of a
        parameter partitioned since the last call is sliced first."""
        for name, tensor in self._tracked(model):
            if is_zero3_partitioned(tensor):
                if name not in self.partitioned:
                    self.shadow[name] = _partition_of(self.shadow[name], tensor)
                    self.partitioned.add(name)
                yield name, tensor.ds_tensor
            else:
                if name in self.partitioned:
                    raise RuntimeError(f"EMA of {name} is a ZeRO-3 partition but the parameter is whole")
                yield name, tensor

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.num_updates += 1
        for name, tensor in self._live(model):
            shadow = self.shadow[name]
            if shadow.device != tensor.device:
                shadow = self.shadow[name] = shadow.to(tensor.device)
            shadow.mul_(self.decay).add_(tensor.detach().float(), alpha=1.0 - self.decay)

    @contextlib.contextmanager
    def swapped(self, model: nn.Module):
        saved = {}
        with torch.no_grad():
            for name, tensor in self._live(model):
                saved[name] = tensor.detach().clone()
                tensor.copy_(self.shadow[name].to(tensor.dtype))
            _refresh_gathered(model, self.partitioned)
        try:
            yield
        finally:
            with torch.no_grad():
                for name, tensor in self._live(model):
                    tensor.copy_(saved[name])
                _refresh_gathered(model, self.partitioned)

    def state_dict_for(self, model: nn.Module, whole: dict[str, torch.Tensor] | None = None):
        """The model's full state dict with EMA values in place of the tracked entries. Under ZeRO-3, `whole` is the
        engine's gathered state dict (None on ranks other than 0, which return None), and every rank must call."""
        for _ in self._live(model):  # only for its slicing of shadows still whole
            pass
        shadow = {name: value for name, value in self.shadow.items() if name not in self.partitioned}
        if self.partitioned:
            params = dict(model.named_parameters())
            shadow.update(_gather_partitions({n: (self.shadow[n], params[n]) for n in self.partitioned}))
            if whole is None:
                return None
            state = dict(whole)
            expected = set(model.state_dict())
            if set(state) != expected:
                raise RuntimeError(f"the gathered ZeRO-3 state dict differs from the model's: missing "
                                   f"{sorted(expected - set(state))[:5]}, unexpected {sorted(set(state) - expected)[:5]}")
        else:
            state = {k: v.detach() for k, v in model.state_dict().items()}
        for name, value in shadow.items():
            state[name] = value.to(device=state[name].device, dtype=state[name].dtype)
        return state

    def load_from(self, state: dict[str, torch.Tensor], num_updates: int, model: nn.Module | None = None) -> None:
        """Whole tensors in; a ZeRO-3 partitioned parameter of `model` keeps this rank's slice."""
        missing = [name for name in self.shadow if name not in state]
        if missing:
            raise ValueError(f"EMA checkpoint lacks {len(missing)} tracked tensors, e.g. {missing[:3]}")
        tensors = dict(self._tracked(model)) if model is not None else {}
        for name in self.shadow:
            value = state[name].detach().clone().float()
            if name in tensors and is_zero3_partitioned(tensors[name]):
                self.shadow[name] = _partition_of(value, tensors[name])
                self.partitioned.add(name)
            else:
                if name in self.partitioned:
                    raise RuntimeError(f"EMA of {name} is a ZeRO-3 partition: pass the model to load_from")
                self.shadow[name] = value.to(self.shadow[name].device)
        self.num_updates = num_updates


def is_zero3_partitioned(tensor: torch.Tensor) -> bool:
    """A parameter DeepSpeed ZeRO-3 has partitioned (its data lives in `ds_tensor`)."""
    return getattr(tensor, "ds_tensor", None) is not None


def _partition_of(whole: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """This rank's ZeRO-3 partition of a whole tensor of `param`'s shape, laid out as DeepSpeed does: the flattened
    tensor padded with zeros to world_size x partition_size, rank r holding elements [r * size, (r + 1) * size)."""
    import torch.distributed as dist

    if tuple(whole.shape) != tuple(param.ds_shape):
        raise ValueError(f"shape {tuple(whole.shape)} does not match the ZeRO-3 parameter's {tuple(param.ds_shape)}")
    size, rank = param.ds_tensor.numel(), dist.get_rank(group=param.ds_process_group)
    flat = whole.detach().reshape(-1).to(device=param.ds_tensor.device, dtype=torch.float32)
    part = torch.zeros(size, dtype=torch.float32, device=flat.device)
    begin, end = min(rank * size, flat.numel()), min((rank + 1) * size, flat.numel())
    part[: end - begin] = flat[begin:end]
    return part


def _gather_partitions(parts: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """{name: (this rank's partition, its ZeRO-3 parameter)} -> {name: whole fp32 tensor}, in one all_gather of every
    partition laid end to end (a collective: every rank calls with the same names)."""
    import torch.distributed as dist

    if not parts:
        return {}
    from deepspeed.accelerator import get_accelerator

    names = sorted(parts)
    group = parts[names[0]][1].ds_process_group
    # On the accelerator: with offload_param the partitions live in CPU memory, which NCCL cannot send.
    device = torch.device(get_accelerator().current_device_name())
    flat = torch.cat([parts[n][0].float().reshape(-1) for n in names]).to(device)
    pieces = [torch.empty_like(flat) for _ in range(dist.get_world_size(group=group))]
    dist.all_gather(pieces, flat, group=group)
    out, offset = {}, 0
    for name in names:
        part, param = parts[name]
        size = part.numel()
        whole = torch.cat([piece[offset: offset + size] for piece in pieces])[: param.ds_numel]
        out[name] = whole.reshape(param.ds_shape)
        offset += size
    return out


def _refresh_gathered(model: nn.Module, names: set[str]) -> None:
    """After partitions changed in place: ZeRO-3 parameters that are held whole between forwards (those under the
    persistence threshold) get their whole value again from the partitions, as DeepSpeed does after each step."""
    if not names:
        return
    from deepspeed.runtime.zero.partition_parameters import ZeroParamStatus

    held = {n: p for n, p in model.named_parameters() if n in names and p.ds_status == ZeroParamStatus.AVAILABLE}
    for name, whole in _gather_partitions({n: (p.ds_tensor, p) for n, p in held.items()}).items():
        held[name].data.copy_(whole.to(held[name].dtype))


# --------------------------------------------------------------------------------------------------------------
# Callbacks


class EpochScheduleCallback(TrainerCallback):
    """Evaluation from epoch E every K epochs and checkpoints every K epochs (OpenTAD's schedule)."""

    def on_epoch_end(self, args: VTrainingArguments, state, control, **kwargs):
        epoch = int(round(state.epoch or 0))
        last = epoch >= math.ceil(args.num_train_epochs) or state.global_step >= state.max_steps
        if args.eval_every_epochs > 0:
            due = epoch >= args.eval_start_epoch and (epoch - args.eval_start_epoch) % args.eval_every_epochs == 0
            control.should_evaluate = due or (last and epoch >= args.eval_start_epoch)
        if args.save_every_epochs > 0:
            control.should_save = epoch % args.save_every_epochs == 0 or last
        return control


class _StepCallback(TrainerCallback):
    """Records the per-group learning rates an optimizer step used (before the scheduler moves them), then
    updates the EMA."""

    def __init__(self, trainer: "VTrainer"):
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):
        self.trainer._log_clock = (time.perf_counter(), state.global_step)

    def on_optimizer_step(self, args, state, control, **kwargs):
        optimizer = self.trainer.optimizer
        if optimizer is not None:
            self.trainer._step_lrs = {g.get("name", f"group{i}"): g["lr"] for i, g in enumerate(optimizer.param_groups)}

    def on_step_end(self, args, state, control, **kwargs):
        self.trainer.steps_trained += 1
        if self.trainer.ema is not None:
            self.trainer.ema.update(self.trainer.model)


class _EpochHookCallback(TrainerCallback):
    """Tells epoch-seeded data transforms the epoch before the dataloader's workers are forked."""

    def __init__(self, hooks):
        self.hooks = hooks

    def on_epoch_begin(self, args, state, control, **kwargs):
        epoch = int(math.floor(state.epoch or 0))
        for hook in self.hooks:
            hook(epoch)


# --------------------------------------------------------------------------------------------------------------
# Trainer


class CheckpointSaveError(RuntimeError):
    """Writing a checkpoint failed (e.g. no space left on device); earlier checkpoints are untouched."""


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or inf; the message names the step, the loss parts and the batch's sample ids."""


_SAMPLE_ID_KEYS = ("video_index", "window_start", "sample_index")


class VTrainer(Trainer):
    """Base trainer of every task. Subclasses add `compute_loss` parts or evaluation as their task needs."""

    def __init__(self, *args, epoch_hooks=(), **kwargs):
        self.push_log: list[dict] = []  # before super().__init__, which creates the Hub repository
        self._watched_pushes: set[int] = set()
        super().__init__(*args, **kwargs)
        targs: VTrainingArguments = self.args
        if self.is_deepspeed_enabled:
            _patch_deepspeed_scalar_broadcast()
        self.group_table = assign_param_groups(self.model, targs)
        logger.info(format_param_report(self.group_table))
        self.ema = ModelEMA(self.model, targs.ema_decay) if targs.ema_decay > 0 else None
        self._loss_parts: dict[str, torch.Tensor] = {}
        self._loss_part_count = 0
        self.nonfinite_steps: list[dict] = []
        self.steps_trained = 0  # optimizer steps this process ran (a resume at the last step runs none)
        self._num_update_steps_per_epoch = None
        self._step_lrs: dict[str, float] = {}
        self._log_clock: tuple[float, int] | None = None  # (time, global_step) of the last log line; set at train start
        self.add_callback(EpochScheduleCallback())
        self.add_callback(_StepCallback(self))
        if epoch_hooks:
            self.add_callback(_EpochHookCallback(list(epoch_hooks)))

    # ---- optimizer and schedule
    def create_optimizer(self, model=None):
        if self.optimizer is None:
            groups = build_optimizer_groups(self.group_table, self.args)
            if not groups:
                raise ValueError("no trainable parameters: every parameter group has lr 0")
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, self.model)
            optimizer_kwargs.pop("lr", None)
            self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        return self.optimizer

    def set_initial_training_values(self, args, dataloader):
        values = super().set_initial_training_values(args, dataloader)
        self._num_update_steps_per_epoch = values[1]
        return values

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.lr_scheduler is None and self.args.lr_scheduler_type in ("cosine", "cosine_with_min_lr"):
            per_epoch = self._num_update_steps_per_epoch or max(
                1, math.ceil(num_training_steps / max(self.args.num_train_epochs, 1e-9))
            )
            warmup = int(round(self.args.warmup_epochs * per_epoch)) if self.args.warmup_epochs > 0 else \
                self.args.get_warmup_steps(num_training_steps)
            cosine_epochs = self.args.cosine_epochs or self.args.num_train_epochs
            total = int(round(cosine_epochs * per_epoch)) if self.args.cosine_epochs else num_training_steps
            self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(
                optimizer or self.optimizer, warmup_cosine_lambda(warmup, total, self.args.min_lr_ratio)
            )
            self._created_lr_scheduler = True
            return self.lr_scheduler
        return super().create_scheduler(num_training_steps, optimizer)

    # ---- loss parts
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(**inputs)
        if getattr(outputs, "loss", None) is None:
            raise ValueError(f"{type(self.model).__name__} returned no loss: are the labels in the batch?")
        loss = outputs.loss
        if self.args.n_gpu > 1:
            loss = loss.mean()
        if model.training:
            finite = torch.isfinite(loss.detach()).all()
            # one gather of one flag per step, so that every process skips or stops together (_handle_nonfinite)
            if bool(self.accelerator.gather(finite.to(torch.float32).reshape(1)).min() == 0):
                loss = self._handle_nonfinite(model, inputs, outputs, local=not bool(finite))
            else:
                for key, value in outputs.items():
                    if key.endswith("_loss") and torch.is_tensor(value) and value.ndim == 0:
                        total = self._loss_parts.get(key)
                        part = value.detach().float()
                        self._loss_parts[key] = part if total is None else total + part
                self._loss_part_count += 1
        return (loss, outputs) if return_outputs else loss

    def _handle_nonfinite(self, model, inputs, outputs, local: bool = True):
        """Called on every process when any process's loss is non-finite (`local`: this one's), so that all of them
        stop together, or all skip the batch: every process then backpropagates the same zero loss, its gradient
        hooks fire in the same order, and the gradients DeepSpeed lays out by hook order in its buckets still line
        up across processes (one process skipping alone mixed up other parameters' gradients under ZeRO-2)."""
        record = None
        if local:
            parts = {k: float(v.detach().float()) for k, v in outputs.items()
                     if k.endswith("loss") and torch.is_tensor(v) and v.ndim == 0}
            ids = {k: inputs[k].tolist() for k in _SAMPLE_ID_KEYS if k in inputs and torch.is_tensor(inputs[k])}
            record = {"rank": self.args.process_index, "loss_parts": parts, "samples": ids}
        where = f"step {self.state.global_step + 1} (epoch {self.state.epoch or 0:.2f})"
        seen = [r for r in gather_object([record]) if r is not None]
        self.nonfinite_steps.append({"step": self.state.global_step + 1, "processes": seen})
        found = "; ".join(f"process {r['rank']}: loss parts {r['loss_parts']}, samples {r['samples']}" for r in seen)
        if len(self.nonfinite_steps) > self.args.max_nonfinite_steps:
            raise NonFiniteLossError(
                f"non-finite loss at {where}: {found}. Checkpoints already written are intact; resume from the last "
                f"one (e.g. with a lower learning rate), or allow skipping with max_nonfinite_steps (now "
                f"{self.args.max_nonfinite_steps})."
            )
        logger.warning("skipping the batch of every process: non-finite loss at %s (%d/%d allowed): %s", where,
                       len(self.nonfinite_steps), self.args.max_nonfinite_steps, found)
        # A zero that touches every trainable parameter: finite zero gradients, and DDP sees every parameter used.
        return sum((p * 0).sum() for p in model.parameters() if p.requires_grad)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:
            # The Trainer logs on every process at the same steps. The loss parts are summed over all processes as
            # plain objects: when every batch since the last line was skipped as non-finite there are no parts, and
            # a tensor gather per part would then be a collective some processes skip (the others wait forever).
            local = {"sums": {k: float(v) for k, v in self._loss_parts.items()}, "count": self._loss_part_count}
            gathered = gather_object([local])
            count = sum(g["count"] for g in gathered)
            for key in sorted({k for g in gathered for k in g["sums"]}):
                logs[key] = sum(g["sums"].get(key, 0.0) for g in gathered) / count
            if self.nonfinite_steps:  # the same on every process: batches are skipped by all of them together
                logs["skipped_nonfinite_batches"] = len(self.nonfinite_steps)
            self._loss_parts = {}
            self._loss_part_count = 0
        if "loss" in logs:
            for name, lr in self._step_lrs.items():
                if not name.endswith("/no_decay"):
                    logs[f"lr/{name}"] = lr
            # Wall time per optimizer step since the previous log line (data loading included), and the peak GPU
            # memory so far: the two figures OpenTAD/mmengine print on every log line.
            clock, now = self._log_clock, time.perf_counter()
            if clock is not None and self.state.global_step > clock[1]:
                logs["sec_per_step"] = round((now - clock[0]) / (self.state.global_step - clock[1]), 4)
            self._log_clock = (now, self.state.global_step)
            if self.args.device.type == "cuda":
                logs["gpu_mem_peak_gib"] = round(torch.cuda.max_memory_allocated(self.args.device) / 2**30, 3)
        super().log(logs, start_time) if start_time is not None else super().log(logs)

    # ---- EMA-aware evaluation and saving
    def evaluate(self, *args, **kwargs):
        if self.ema is not None and self.args.eval_with_ema:
            with self.ema.swapped(self.model):
                metrics = super().evaluate(*args, **kwargs)
        else:
            metrics = super().evaluate(*args, **kwargs)
        # run.execute reuses an evaluation of the final weights instead of running it twice
        self.last_eval = (self.state.global_step, metrics)
        return metrics

    def _save_checkpoint(self, model, trial) -> None:
        """A failed write (disk full, I/O error) stops the run with one message; the partial folder is removed so
        that it neither fills the disk nor looks like a checkpoint (resume detection also requires
        trainer_state.json, which the Trainer writes last)."""
        folder = os.path.join(self._get_output_dir(trial=trial), f"checkpoint-{self.state.global_step}")
        existed = os.path.isdir(folder)
        try:
            super()._save_checkpoint(model, trial)
        except OSError as err:
            if not existed and self.args.should_save:
                import shutil

                shutil.rmtree(folder, ignore_errors=True)
            done = sorted(d for d in os.listdir(os.path.dirname(folder)) if d.startswith("checkpoint-"))
            raise CheckpointSaveError(
                f"writing {folder} failed: {err}. Earlier checkpoints are intact ({', '.join(done) or 'none'}); "
                f"free space and restart the same command to resume."
            ) from err

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        # Under ZeRO-3 `state_dict` is the engine's gathered whole state dict (rank 0; None elsewhere): the EMA save
        # below reuses it for the untracked entries (frozen weights, integer buffers) instead of gathering again.
        # A shallow copy: save_pretrained pops the entries of the mapping it is given.
        self._saved_state_dict = dict(state_dict) if state_dict is not None else None
        super()._save(output_dir, state_dict=state_dict)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False):
        self._saved_state_dict = None
        super().save_model(output_dir, _internal_call)
        output_dir = output_dir or self.args.output_dir
        whole, self._saved_state_dict = self._saved_state_dict, None
        if self.ema is None or not isinstance(self.model, PreTrainedModel):
            return
        # every rank takes part: under ZeRO-3 this gathers the EMA's partitions
        state = self.ema.state_dict_for(self.model, whole)
        if self.args.should_save:
            ema_dir = os.path.join(output_dir, EMA_DIR)
            self.model.save_pretrained(ema_dir, state_dict=state)
            with open(os.path.join(ema_dir, "ema_state.json"), "w") as handle:
                json.dump({"decay": self.ema.decay, "num_updates": self.ema.num_updates}, handle)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        """Loads weights through the model class's own `from_pretrained`, so keys renamed on save come back.

        The stock path calls `load_state_dict` on the raw file: for VideoMAE it leaves q_bias/v_bias at their
        initial values (transformers#43701). Missing or unexpected keys are an error here.
        """
        model = model if model is not None else self.model
        weights = os.path.join(resume_from_checkpoint, "model.safetensors")
        if not isinstance(model, PreTrainedModel) or not os.path.isfile(weights) or self.is_deepspeed_enabled \
                or self.is_fsdp_enabled:
            super()._load_from_checkpoint(resume_from_checkpoint, model)
        else:
            load_exact(model, resume_from_checkpoint)

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        """Every resume path calls this once the weights are in: plain and DDP after `_load_from_checkpoint`,
        DeepSpeed after the engine's `load_checkpoint` (the Trainer never calls `_load_from_checkpoint` under
        DeepSpeed: the engine loads the module's raw state dict from global_step*/, so no key is renamed there).
        The EMA is restored here, so it is restored on every path."""
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is not None and self.ema is not None:
            ema_dir = os.path.join(checkpoint, EMA_DIR)
            if not os.path.isdir(ema_dir):
                raise FileNotFoundError(f"{checkpoint}: EMA is on but the checkpoint has no {EMA_DIR}/")
            with outside_zero_init():
                reference = type(self.model).from_pretrained(ema_dir)
            with open(os.path.join(ema_dir, "ema_state.json")) as handle:
                num_updates = json.load(handle)["num_updates"]
            self.ema.load_from(reference.state_dict(), num_updates, model=self.model)


    # ---- pushes: the Trainer's background checkpoint pushes fail silently (transformers 5.23: only the final push
    # raises); ours are watched
    def init_hf_repo(self, token: str | None = None, private: bool | None = None) -> None:
        """An unreachable store at start does not stop training: the failure is recorded and reported, and every
        later push tries to create the repository again."""
        try:
            super().init_hf_repo(token=token, private=private)
        except Exception as err:  # transport or server error
            self.hub_model_id = None
            reason = f"{type(err).__name__}: {err}"
            self.push_log.append({"step": self.state.global_step if hasattr(self, "state") else 0, "ok": False,
                                  "error": f"creating the repository failed: {reason}"})
            logger.warning("creating the Hub repository %s FAILED (%s); training goes on, pushes will retry",
                           self.args.hub_model_id, reason)
            if not self.args.push_to_hub:
                raise

    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        if self.hub_model_id is None and self.is_world_process_zero():
            self.init_hf_repo()
            if self.hub_model_id is None:
                return
        super()._push_from_checkpoint(checkpoint_folder)
        jobs = getattr(self.push_in_progress, "jobs", None) or []
        step = self.state.global_step
        for job in jobs:
            if id(job) not in self._watched_pushes:
                self._watched_pushes.add(id(job))
                job.add_done_callback(lambda future, step=step: self._on_push_done(future, step))

    def _on_push_done(self, future, step: int) -> None:
        error = future.exception()
        if error is None:
            self.push_log.append({"step": step, "ok": True})
            return
        reason = f"{type(error).__name__}: {error}"
        self.push_log.append({"step": step, "ok": False, "error": reason})
        logger.warning("push of the step-%d checkpoint to %s FAILED: %s. Local checkpoints are intact; the next save "
                       "pushes again and the end of the run retries.", step, self.hub_model_id, reason)

    def push_failures(self) -> list[dict]:
        return [entry for entry in self.push_log if not entry["ok"]]

    # ---- outputs at the end of a run
    def write_final_outputs(self, output_dir: str) -> None:
        """Task-specific files after the final evaluation (predictions, pictures); nothing by default."""

    def create_model_card(self, **kwargs) -> None:
        """A model card that says what was trained on what, how it scored, and the command that reproduces it."""
        if not self.is_world_process_zero():
            return
        info = getattr(self, "run_info", {}) or {}
        eval_metrics = {}
        for entry in self.state.log_history:
            eval_metrics.update({k: v for k, v in entry.items() if k.startswith("eval_")})
        keys = info.get("recipe_keys_set", {})
        data_keys = {k: v for k, v in keys.items() if any(s in k for s in ("path", "dir", "subset", "dataset"))}
        lines = [
            "---",
            "library_name: transformers",
            "tags:",
            "- hf_vtrain",
            f"- {info.get('task', 'video')}",
            "---",
            "",
            f"# {os.path.basename(os.path.abspath(self.args.output_dir))}",
            "",
            f"Trained with hf_vtrain {info.get('hf_vtrain_version', '')} (commit {info.get('git_commit')}) for "
            f"{info.get('description', info.get('task', ''))}.",
            "",
            f"Model class: `{type(self.model).__name__}`. Weights: `model.safetensors` holds the raw weights"
            + (f"; `{EMA_DIR}/` holds the EMA weights (decay {self.args.ema_decay}), which the metrics below were "
               "computed with" if self.ema is not None and self.args.eval_with_ema else "") + ".",
            "",
            "## Data",
            "",
            *[f"- `{k}`: `{v}`" for k, v in sorted(data_keys.items())],
            "",
            "## Results (final evaluation)",
            "",
            "| metric | value |",
            "|---|---|",
            *[f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in sorted(eval_metrics.items())],
            "",
            "## Reproduce",
            "",
            "```bash",
            info.get("command", "python -m hf_vtrain.run recipe_resolved.yaml"),
            "```",
            "",
            "The full resolved recipe is in `recipe_resolved.yaml`.",
            "",
        ]
        with open(os.path.join(self.args.output_dir, "README.md"), "w", encoding="utf-8") as handle:
            handle.write("\n".join(lines))


ZERO3_NEEDS_GATHER = (
    "DeepSpeed ZeRO-3 needs \"stage3_gather_16bit_weights_on_model_save\": true in the DeepSpeed config: hf_vtrain "
    "saves whole weights (model.safetensors and the EMA's) at every checkpoint, which the evaluation outputs, the "
    "model card, the Hub push and from_pretrained read (see recipes/deepspeed/zero3.json)."
)


FSDP_UNSUPPORTED = (
    "FSDP is not supported by hf_vtrain: it shards every parameter, and the EMA, its evaluation swap and the "
    "checkpoints are written for DDP and DeepSpeed (tried: on CPU the Trainer ignored `fsdp: full_shard` and trained "
    "with plain DDP). Use DDP (recipes/accelerate_configs/multi_gpu.yaml, torchrun) or DeepSpeed ZeRO-2 / ZeRO-3 "
    "(recipes/deepspeed/zero2.json, zero3.json), which shard the same way."
)


def _deepspeed_config(args: TrainingArguments) -> dict | None:
    """The DeepSpeed config of a `deepspeed` recipe key or of an `accelerate launch` DeepSpeed config; None without."""
    if getattr(args, "hf_deepspeed_config", None) is not None:
        return args.hf_deepspeed_config.config
    plugin = getattr(args, "deepspeed_plugin", None)
    return plugin.deepspeed_config if plugin is not None else None


def _zero3_gathers_on_save(args: TrainingArguments) -> bool:
    zero = (_deepspeed_config(args) or {}).get("zero_optimization", {})
    value = zero.get("stage3_gather_16bit_weights_on_model_save", zero.get("gather_16bit_weights_on_model_save"))
    return value is True or (isinstance(value, str) and value.lower() == "true")


@contextlib.contextmanager
def outside_zero_init():
    """Builds models whole even when a ZeRO-3 config is active. transformers' `from_pretrained` otherwise builds every
    model inside `deepspeed.zero.Init`, which partitions each parameter as it is created, so code that copies
    weights between models (AdaTAD's VideoMAE loading, FG-CLIP's CLIP loading, the EMA's reference) sees empty
    tensors. The DeepSpeed engine partitions the whole model when it starts. The cost: each process holds the whole
    model once while it is built, which for these models (<= ViT-L) is far below the activations."""
    from transformers.integrations import deepspeed as hf_deepspeed

    ref = hf_deepspeed._hf_deepspeed_config_weak_ref
    config = ref() if ref is not None else None
    if config is None:
        yield
        return
    hf_deepspeed.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        hf_deepspeed.set_hf_deepspeed_config(config)


def deepspeed_zero_stage(args: TrainingArguments) -> int | None:
    """The ZeRO stage of a `deepspeed` recipe key or of an `accelerate launch` DeepSpeed config; None without one."""
    config = _deepspeed_config(args)
    return int(config.get("zero_optimization", {}).get("stage", 0)) if config is not None else None


def _patch_deepspeed_scalar_broadcast() -> None:
    """DeepSpeed 0.19.8 broadcasts weights as `p.data.view(torch.uint8)`, which raises "self.dim() cannot be 0 to view
    Float as Byte" for 0-dim parameters (AdaTAD's per-level regression scales, CLIP's logit_scale). It does so in
    three places: the engine's initial broadcast of rank 0's weights (ZeRO-0/1/2), the ZeRO-3 conversion of a
    whole parameter (`Init._zero_init_param`) and the exit of `GatheredParameters(modifier_rank=...)` (ZeRO-3 saving).
    In each, a 0-dim parameter is presented as a 1-element view of the same storage while DeepSpeed's own code runs;
    ZeRO-3 keeps its true shape (`ds_shape`), which every later gather uses."""
    from deepspeed.runtime.engine import DeepSpeedEngine
    from deepspeed.runtime.zero import partition_parameters as zero

    if getattr(DeepSpeedEngine._broadcast_model, "_hf_vtrain_scalar_safe", False):
        return

    @contextlib.contextmanager
    def as_1d(params):
        scalars = [p for p in params if p.data.dim() == 0]
        for param in scalars:
            param.data = param.data.view(1)
        try:
            yield
        finally:
            for param in scalars:
                if param.data.dim() == 1 and param.data.numel() == 1:
                    param.data = param.data.view(())

    broadcast_model = DeepSpeedEngine._broadcast_model

    def _broadcast_model(engine):
        with as_1d(list(engine.module.parameters())):
            broadcast_model(engine)

    zero_init_param = zero.Init._zero_init_param

    def _zero_init_param(self, param):
        scalar = param.data.dim() == 0
        with as_1d([param]):
            zero_init_param(self, param)
        if scalar:
            param.ds_shape = torch.Size([])

    gathered_exit = zero.GatheredParameters.__exit__

    def __exit__(self, *exc):
        with as_1d(getattr(self, "params", None) or []):
            return gathered_exit(self, *exc)

    _broadcast_model._hf_vtrain_scalar_safe = True
    DeepSpeedEngine._broadcast_model = _broadcast_model
    zero.Init._zero_init_param = _zero_init_param
    zero.GatheredParameters.__exit__ = __exit__


def load_exact(model: PreTrainedModel, checkpoint_dir: str) -> None:
    """Copies weights of `checkpoint_dir` into `model` via `from_pretrained`'s key handling; strict."""
    loaded, info = type(model).from_pretrained(checkpoint_dir, output_loading_info=True)
    problems = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    if problems:
        raise ValueError(f"{checkpoint_dir}: checkpoint does not match the model: {problems}")
    result = model.load_state_dict(loaded.state_dict(), strict=True)
    del loaded
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(f"{checkpoint_dir}: checkpoint does not match the model: {result}")


def write_json_atomic(path: str, obj: Any, indent: int | None = None) -> None:
    """Writes JSON to a temporary name, then renames: a kill never leaves a half-written file under `path`."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(obj, handle, indent=indent)
    os.replace(tmp, path)


RANDOM_INIT_FILE = "random_init.json"


def ensure_random_checkpoint(path: str, overrides: dict, build, what: str) -> None:
    """Demo/tests: makes sure `path` holds a randomly initialised checkpoint built with `overrides`.

    Missing: `build(tmp_dir)` writes it under its own seed (so the global RNG, and so the init of everything built
    after it, is the same whether or not this run had to write it) and it appears under `path` only when complete,
    with the overrides recorded in random_init.json. Present and written here with other overrides: an error - a
    stale demo checkpoint would otherwise be used silently. Present without that file: a real checkpoint, used as is.
    """
    record = {"overrides": json.loads(json.dumps(overrides, sort_keys=True)), "seed": 0}
    marker = os.path.join(path, RANDOM_INIT_FILE)
    if os.path.exists(path):
        if os.path.isfile(marker):
            with open(marker) as handle:
                stored = json.load(handle)
            if stored != record:
                keys = sorted(k for k in set(stored["overrides"]) | set(record["overrides"])
                              if stored["overrides"].get(k) != record["overrides"].get(k))
                raise ValueError(f"{path} holds a random {what} written with other settings (differing: {keys}); "
                                 f"delete it or point the recipe to another folder")
        return
    logger.warning("writing a RANDOMLY INITIALISED %s to %s (demo/tests switch)", what, path)
    tmp = path.rstrip("/") + f".tmp{os.getpid()}"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(record["seed"])
        build(tmp)
    write_json_atomic(os.path.join(tmp, RANDOM_INIT_FILE), record)
    os.replace(tmp, path)
