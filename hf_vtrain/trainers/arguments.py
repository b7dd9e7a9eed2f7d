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
        if deepspeed_zero_stage(self) == 3 and not zero3_gathers_on_save(self):
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
