"""VTrainingArguments: TrainingArguments plus the knobs video recipes need (parameter groups, schedules by epochs, EMA,
evaluation and checkpoint schedules by epochs, non-finite loss handling); each setting has one home (STYLE.md)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from transformers import TrainingArguments

from .distributed import deepspeed_zero_stage, zero3_gathers_on_save


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
    min_lr_ratio: float = field(
        default=0.0, metadata={"help": "Floor of the cosine and linear schedules, as a fraction of each group's lr."}
    )
    lr_milestones: list[float] = field(
        default_factory=list,
        metadata={"help": "lr_scheduler_type multistep: the epochs after which every group's lr is multiplied by "
                          "lr_gamma (stepped per iteration: at step round(milestone x steps per epoch))."},
    )
    lr_gamma: float = field(default=0.1, metadata={"help": "lr_scheduler_type multistep: factor at each milestone."})
    continue_schedule: bool = field(
        default=False,
        metadata={"help": "Phases: this phase's lr continues the curve sized over every phase's epochs (from the "
                          "epochs before it) instead of starting its own warmup and decay."},
    )
    init_from: str | None = field(
        default=None,
        metadata={"help": "Start from these weights, matched by parameter name: a model folder (a run's output, a "
                          "checkpoint), or 'previous' / an earlier phase's name in a phase; several separated by "
                          "commas give their weights together (each weight from one of them). Keys the model has and "
                          "the folders lack are listed; keys the folder has and the model lacks are an error unless "
                          "init_from_allow_unexpected. Not applied when resuming (the checkpoint has the weights)."},
    )
    init_from_ema: bool = field(
        default=False, metadata={"help": "init_from: take the folder's EMA weights (ema/) instead of the raw ones."}
    )
    init_from_allow_unexpected: bool = field(
        default=False, metadata={"help": "init_from: ignore (and list) weights the model has no place for."}
    )
    freeze_norm_stats: bool = field(
        default=False,
        metadata={"help": "BatchNorm layers whose parameters are all frozen stay in eval mode while training, so their "
                          "running statistics do not move either."},
    )
    ema_decay: float = field(default=0.0, metadata={"help": "EMA decay per optimizer step; 0 disables EMA."})
    ema_half_life_epochs: float | None = field(
        default=None,
        metadata={"help": "The EMA given by its half-life in epochs instead of ema_decay: the decay per optimizer step "
                          "is 0.5 ** (1 / (half-life x optimizer steps per epoch)), so a change of batch size, "
                          "processes or accumulation keeps the averaging the same in epochs (OpenTAD's 0.999 at 100 "
                          "steps per epoch is a half-life of 6.93 epochs). The start-of-run report gives both."},
    )
    eval_with_ema: bool = field(default=True, metadata={"help": "Evaluate with EMA weights when EMA is on."})
    do_train: bool = field(
        default=True,
        metadata={"help": "false: evaluate-only. The recipe's evaluation of model_name_or_path (a run folder, a "
                          "checkpoint-N folder or a store repo id), written to output_dir/eval-<name>-<weights>/; "
                          "nothing trains, nothing is pushed."},
    )
    eval_weights: str = field(
        default="ema",
        metadata={"help": "Evaluate-only: ema (the folder's ema/ weights, where it has them) or raw."},
    )
    allow_pickled_weights: bool = field(
        default=False,
        metadata={"help": "Evaluate-only: load a model whose weights are only pickled (pytorch_model.bin); only from "
                          "a source you trust: unpickling can run code from the file."},
    )
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
        accelerator = self.accelerator_config
        if isinstance(accelerator, str) and not os.path.isfile(accelerator):  # transformers: FileNotFoundError
            raise ValueError(f"accelerator_config: {accelerator!r} is no file: give a mapping of AcceleratorConfig "
                             f"fields or the path of a JSON file holding one")
        # multistep is no transformers SchedulerType: the base class converts the name to one, so it sees another
        # name and gets this one back (VTrainer.create_scheduler builds every schedule itself).
        schedule = getattr(self.lr_scheduler_type, "value", self.lr_scheduler_type)
        if schedule == "multistep":
            self.lr_scheduler_type = "constant"
        try:
            super().__post_init__()
        except ValueError as err:
            if "support bf16" not in str(err):
                raise
            raise ValueError(
                "bf16: true needs a GPU with bf16 (NVIDIA Ampere or newer) and none is visible here; set bf16: false "
                "(--bf16 false) to train in fp32, with use_cpu: true (--use_cpu true) on a machine without a GPU"
            ) from None
        if schedule == "multistep":
            self.lr_scheduler_type = "multistep"
        self._check_schedule(str(schedule))
        if deepspeed_zero_stage(self) == 3 and not zero3_gathers_on_save(self):
            raise ValueError(ZERO3_NEEDS_GATHER)
        if self.fsdp or os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("1", "true"):
            raise ValueError(FSDP_UNSUPPORTED)
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.ema_half_life_epochs is not None:
            if self.ema_decay:
                raise ValueError("set ema_decay (per optimizer step) or ema_half_life_epochs, not both")
            if not self.ema_half_life_epochs > 0:
                raise ValueError(f"ema_half_life_epochs must be > 0, got {self.ema_half_life_epochs}")
        if self.eval_weights not in ("ema", "raw"):
            raise ValueError(f"eval_weights must be ema or raw, got {self.eval_weights!r}")
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


    @property
    def schedule_name(self) -> str:
        return str(getattr(self.lr_scheduler_type, "value", self.lr_scheduler_type))

    def _check_schedule(self, schedule: str) -> None:
        """Every schedule is sized in epochs and stepped per iteration (VTrainer.create_scheduler); a key no schedule
        of this kind reads is an error, not ignored."""
        if schedule not in SCHEDULES:
            raise ValueError(f"lr_scheduler_type {schedule!r} is not one hf_vtrain sizes in epochs; use one of "
                             f"{', '.join(SCHEDULES)} (warmup_epochs in front of any)")
        if self.lr_scheduler_kwargs:
            raise ValueError(f"lr_scheduler_kwargs {self.lr_scheduler_kwargs} would not be read: the schedule keys are "
                             f"warmup_epochs, cosine_epochs, min_lr_ratio, lr_milestones and lr_gamma")
        if self.warmup_epochs > 0 and self.warmup_steps:
            raise ValueError("set warmup_epochs or warmup_steps, not both")
        if schedule == "multistep":
            milestones = list(self.lr_milestones)
            if not milestones or any(m <= 0 for m in milestones) or milestones != sorted(set(milestones)):
                raise ValueError(f"lr_scheduler_type multistep needs lr_milestones: increasing epochs > 0, got "
                                 f"{milestones}")
            if not 0.0 < self.lr_gamma <= 1.0:
                raise ValueError(f"lr_gamma must be in (0, 1], got {self.lr_gamma}")
        elif self.lr_milestones or self.lr_gamma != 0.1:
            raise ValueError(f"lr_milestones and lr_gamma are read by lr_scheduler_type multistep only (this recipe: "
                             f"{schedule})")
        if self.min_lr_ratio and schedule not in ("cosine", "linear"):
            raise ValueError(f"min_lr_ratio is read by the cosine and linear schedules only (this recipe: {schedule})")
        if self.cosine_epochs is not None and schedule != "cosine":
            raise ValueError(f"cosine_epochs is read by lr_scheduler_type cosine only (this recipe: {schedule})")


SCHEDULES = ("cosine", "linear", "constant", "multistep")


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
