"""VTrainer: the Trainer every task uses, with the training tricks video recipes rely on.

Per-module learning rates and freezing (trainers/optimization.py), schedules sized in epochs and stepped per
iteration, EMA weights (trainers/ema.py: evaluated, checkpointed, restored on resume), evaluation and checkpointing by
epoch schedule, named loss parts and batch metrics in the logs, watched Hub pushes, and an exact resume for models
whose checkpoint keys are renamed on save (VideoMAE q_bias/v_bias).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time

import torch
from accelerate.utils import gather_object
from transformers import PreTrainedModel, Trainer, TrainerCallback

from ..model_folders import EMA_DIR, PREPROCESSING_CONFIG_NAME, write_preprocessing_config
from .arguments import VTrainingArguments
from .distributed import outside_zero_init, patch_deepspeed_scalar_broadcast
from .ema import ModelEMA, ema_decay_for_half_life, ema_report
from .optimization import assign_param_groups, build_optimizer_groups, format_param_report, schedule_lambda

logger = logging.getLogger(__name__)



# --------------------------------------------------------------------------------------------------------------
# Callbacks


class EpochScheduleCallback(TrainerCallback):
    """Evaluation from epoch E every K epochs and checkpoints every K epochs (OpenTAD's schedule), in epochs of the
    whole run: a phase's epochs count on from the phases before it (`epoch_offset`)."""

    def __init__(self, epoch_offset: int = 0):
        self.epoch_offset = epoch_offset

    def on_epoch_end(self, args: VTrainingArguments, state, control, **kwargs):
        local = int(round(state.epoch or 0))
        epoch = local + self.epoch_offset
        last = local >= math.ceil(args.num_train_epochs) or state.global_step >= state.max_steps
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
    """Tells epoch-seeded data transforms (and other epoch-driven hooks) the epoch of the whole run before the
    dataloader's workers are forked: a phase's epochs count on from the phases before it."""

    def __init__(self, hooks, epoch_offset: int = 0):
        self.hooks = hooks
        self.epoch_offset = epoch_offset

    def on_epoch_begin(self, args, state, control, **kwargs):
        epoch = int(math.floor(state.epoch or 0)) + self.epoch_offset
        for hook in self.hooks:
            hook(epoch)


class _BatchMetricsCallback(TrainerCallback):
    """Logs the epoch means of the named training metrics a model returns (`batch_metrics`), as `train_<name>`,
    over every process's batches, so curves show the train/val gap."""

    def __init__(self, trainer: "VTrainer"):
        self.trainer = trainer

    def on_epoch_end(self, args, state, control, **kwargs):
        trainer = self.trainer
        local = {"sums": {k: float(v) for k, v in trainer._metric_sums.items()}, "count": trainer._metric_count}
        trainer._metric_sums, trainer._metric_count = {}, 0
        gathered = gather_object([local]) if args.world_size > 1 else [local]
        count = sum(g["count"] for g in gathered)
        names = sorted({k for g in gathered for k in g["sums"]})
        if count and names:
            trainer.log({f"train_{k}": sum(g["sums"].get(k, 0.0) for g in gathered) / count for k in names})


def freeze_frozen_norm_statistics(model) -> list[str]:
    """BatchNorm layers whose parameters are all frozen stay in eval mode whatever `model.train()` says, so their
    running statistics do not move (the Trainer calls `train()` at every step). Returns their names."""
    from torch.nn.modules.batchnorm import _BatchNorm

    names = []
    for name, module in model.named_modules():
        params = list(module.parameters(recurse=False))
        if isinstance(module, _BatchNorm) and params and not any(p.requires_grad for p in params):
            module.train = (lambda self, mode=True: torch.nn.Module.train(self, False)).__get__(module)
            module.train(False)
            names.append(name)
    return names


# --------------------------------------------------------------------------------------------------------------
# Trainer


class CheckpointSaveError(RuntimeError):
    """Writing a checkpoint failed (e.g. no space left on device); earlier checkpoints are untouched."""


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or inf; the message names the step, the loss parts and the batch's sample ids."""


class ResumeError(ValueError):
    """The checkpoint cannot continue this run (e.g. its optimizer state has other parameter groups); nothing trained."""


_SAMPLE_ID_KEYS = ("video_index", "window_start", "sample_index")


class VTrainer(Trainer):
    """Base trainer of every task. Subclasses add `compute_loss` parts or evaluation as their task needs."""

    def __init__(self, *args, epoch_hooks=(), epoch_offset: int = 0, schedule_epochs: float | None = None,
                 preprocessing_config: dict | None = None, **kwargs):
        """`epoch_offset`: epochs trained by the phases before this one (epoch-driven hooks and the eval/save schedule
        count epochs of the whole run); `schedule_epochs`: the epochs of every phase together, which a phase with
        `continue_schedule` sizes its schedule for; `preprocessing_config`: what the task's evaluation reads frames
        with (hf_vtrain.model_folders), written next to the weights of every save (final model, checkpoints, ema/),
        so that the folder alone is enough to predict and evaluate."""
        self.push_log: list[dict] = []
        self.preprocessing_config = preprocessing_config  # before super().__init__, which creates the Hub repository
        self._watched_pushes: set[int] = set()
        super().__init__(*args, **kwargs)
        targs: VTrainingArguments = self.args
        if self.is_deepspeed_enabled:
            patch_deepspeed_scalar_broadcast()
        self.group_table = assign_param_groups(self.model, targs)
        logger.info(format_param_report(self.group_table))
        self.epoch_offset = epoch_offset
        self.schedule_epochs = schedule_epochs
        self.frozen_norm_layers = freeze_frozen_norm_statistics(self.model) if targs.freeze_norm_stats else []
        if self.frozen_norm_layers:
            logger.info("freeze_norm_stats: %d BatchNorm layers kept in eval mode", len(self.frozen_norm_layers))
        # With ema_half_life_epochs the decay is known once the steps per epoch are (set_initial_training_values).
        with_ema = targs.ema_decay > 0 or targs.ema_half_life_epochs is not None
        self.ema = ModelEMA(self.model, targs.ema_decay or 0.5) if with_ema else None
        self._loss_parts: dict[str, torch.Tensor] = {}
        self._loss_part_count = 0
        self._metric_sums: dict[str, torch.Tensor | float] = {}  # batch_metrics summed over the epoch
        self._metric_count = 0
        self.nonfinite_steps: list[dict] = []
        self.steps_trained = 0  # optimizer steps this process ran (a resume at the last step runs none)
        self._num_update_steps_per_epoch = None
        self._step_lrs: dict[str, float] = {}
        self._log_clock: tuple[float, int] | None = None  # (time, global_step) of the last log line; set at train start
        self.add_callback(EpochScheduleCallback(epoch_offset))
        self.add_callback(_StepCallback(self))
        self.add_callback(_BatchMetricsCallback(self))
        if epoch_hooks:
            self.add_callback(_EpochHookCallback(list(epoch_hooks), epoch_offset))

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
        if self.ema is not None:
            if args.ema_half_life_epochs is not None:
                self.ema.decay = ema_decay_for_half_life(args.ema_half_life_epochs, values[1])
            logger.info(ema_report(self.ema.decay, values[1]))
        return values

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        """Every schedule (cosine, linear, constant, multistep; warmup in front) is sized in epochs and stepped per
        iteration. With `continue_schedule` (phases) it is sized over every phase's epochs and starts where the
        phases before this one left it."""
        if self.lr_scheduler is not None:
            return self.lr_scheduler
        args = self.args
        per_epoch = self._num_update_steps_per_epoch or max(1, math.ceil(num_training_steps / max(args.num_train_epochs,
                                                                                                    1e-9)))
        steps = lambda epochs: int(round(epochs * per_epoch))  # noqa: E731
        warmup = steps(args.warmup_epochs) if args.warmup_epochs > 0 else args.get_warmup_steps(num_training_steps)
        offset = 0
        if args.continue_schedule and self.schedule_epochs is not None:
            offset = steps(self.epoch_offset)
            total = steps(args.cosine_epochs or self.schedule_epochs)
        else:
            total = steps(args.cosine_epochs) if args.cosine_epochs else num_training_steps
        self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer or self.optimizer,
            schedule_lambda(args.schedule_name, warmup, total, args.min_lr_ratio,
                            tuple(steps(m) for m in args.lr_milestones), args.lr_gamma, offset),
        )
        self._created_lr_scheduler = True
        return self.lr_scheduler

    # ---- loss parts
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(**inputs)
        if getattr(outputs, "loss", None) is None:
            raise ValueError(f"{type(self.model).__name__} returned no loss: are the labels in the batch?")
        loss = outputs.loss
        if self.args.n_gpu > 1:
            loss = loss.mean()
        if model.training:
            loss = self.record_training_loss(model, inputs, outputs, loss)
        return (loss, outputs) if return_outputs else loss

    def record_training_loss(self, model, inputs, outputs, loss):
        """The per-step bookkeeping of a training loss: the non-finite check (every process skips or stops together),
        the named loss parts and batch metrics for the logs. Returns the loss to backpropagate (a zero touching every
        trainable parameter when the batch is skipped). `outputs`: a ModelOutput or a dict of the parts."""
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
            metrics = getattr(outputs, "batch_metrics", None)
            if metrics:
                for key, value in metrics.items():
                    value = value.detach().float() if torch.is_tensor(value) else float(value)
                    self._metric_sums[key] = self._metric_sums.get(key, 0.0) + value  # summed on the device
                self._metric_count += 1
        return loss

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
        self._save_preprocessing_config(output_dir or self.args.output_dir)

    def _save_preprocessing_config(self, folder: str) -> None:
        if self.preprocessing_config is not None and self.args.should_save:
            write_preprocessing_config(folder, self.preprocessing_config)

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
            if self.processing_class is not None:  # ema/ is a whole model folder too: evaluate or predict from it
                self.processing_class.save_pretrained(ema_dir)
            self._save_preprocessing_config(ema_dir)
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
        try:
            super()._load_optimizer_and_scheduler(checkpoint)
        except ValueError as err:  # torch: "... different number of parameter groups" / "... doesn't match the size"
            if checkpoint is None or "parameter group" not in str(err):
                raise
            groups = ", ".join(f"{g.get('name', i)} ({len(g['params'])} tensors)"
                               for i, g in enumerate(self.optimizer.param_groups))
            raise ResumeError(
                f"{checkpoint}: its optimizer state does not fit this run ({err}): this run builds "
                f"{len(self.optimizer.param_groups)} parameter groups: {groups}. The checkpoint was written with other "
                f"param_groups, freezing, LoRA or weight-decay rules (or by an hf_vtrain whose rules have changed). "
                f"Resume with the settings that wrote it, or train afresh in a new output_dir (or move its "
                f"checkpoint-* folders away)."
            ) from None
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
    def release_dataloader_workers(self) -> int:
        """Stops the worker processes of this run's DataLoaders (persistent workers outlive the epoch loop: accelerate
        keeps the prepared loaders and the Trainer the evaluation ones). Left to the garbage collector, they were
        stopped inside the next run of the same process (a phase, a sweep, a notebook), which stalled 20 s in
        accelerate's free_memory joining them; stopped here it takes ~20 ms. torch has no public call for it: this is
        what DataLoader's own __del__ does. Returns the number of loaders whose workers were stopped."""
        loaders = list(getattr(self.accelerator, "_dataloaders", [])) + list(
            getattr(self, "_eval_dataloaders", {}).values())
        stopped = 0
        for loader in loaders:
            iterator = getattr(loader, "_iterator", None)
            if iterator is not None and hasattr(iterator, "_shutdown_workers"):
                iterator._shutdown_workers()
                loader._iterator = None
                stopped += 1
        return stopped

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
            + (f"; `{EMA_DIR}/` holds the EMA weights (decay {self.ema.decay:.6g} per step), which the metrics below were "
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
            *self._model_card_use_section(),
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


    def _model_card_use_section(self) -> list[str]:
        if self.preprocessing_config is None:
            return []
        repo = (getattr(self, "hub_model_id", None) or self.args.hub_model_id) if self.args.push_to_hub else None
        return model_card_use_section(self.preprocessing_config, self.args.output_dir, repo)


def model_card_use_section(preprocessing_config: dict, folder: str, repo: str | None) -> list[str]:
    """The model card's "## Use" lines: predict on videos and evaluate again, from the folder and the store repo (if
    pushed), and what predict reads. Phased runs write it again for their top folder."""
    folder = os.path.abspath(folder)
    where = f"this folder (`{folder}`)" + (f" or its store repo `{repo}`" if repo else "")
    model = repo or folder
    settings = ", ".join(f"{k} {v}" for k, v in preprocessing_config.items() if k not in ("task", "format"))
    return [
        "## Use",
        "",
        f"`--model` is {where}; no recipe is needed. Any video decord reads, at any size, frame rate and length:",
        "",
        "```bash",
        f"python -m hf_vtrain.predict --model {model} VIDEO_OR_FOLDER --output predictions/",
        "```",
        "",
        "Evaluate it again with its own `recipe_resolved.yaml` (the metrics above, in an `eval-*` folder; add "
        "`--data_root` where the corpus is on your machine, or give another recipe first):",
        "",
        "```bash",
        f"python -m hf_vtrain.run --do_train false --model_name_or_path {model}",
        "```",
        "",
        f"`{PREPROCESSING_CONFIG_NAME}` (task {preprocessing_config.get('task')}: {settings}) says how frames are "
        f"read; `config.json` holds the classes, normalisation and post-processing. With a store other than the Hub, "
        f"set `HF_ENDPOINT` (and `HF_TOKEN` for a private repo).",
        "",
    ]


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
