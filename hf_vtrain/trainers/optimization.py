"""Parameter groups (per-module learning rates and freezing by name patterns), the optimizer's groups, and learning-rate
schedules sized in epochs and stepped per iteration."""

from __future__ import annotations

import math
import re

from torch import nn

from .arguments import VTrainingArguments


def _is_no_decay(name: str, param: nn.Parameter) -> bool:
    """The rule for a model that does not name its own: 0- and 1-d tensors (biases, norm weights, scales)."""
    return param.ndim <= 1 or name.endswith(".bias") or "norm" in name.lower()


def no_decay_names(model: nn.Module) -> set[str]:
    """The parameters trained without weight decay: the model's own `no_weight_decay_parameter_names()` when it has
    one (AdaTAD: OpenTAD's rules), else `_is_no_decay`."""
    own = getattr(model, "no_weight_decay_parameter_names", None)
    if callable(own):
        return set(own())
    return {name for name, param in model.named_parameters() if _is_no_decay(name, param)}


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
    exempt = set() if args.decay_bias_and_norm else no_decay_names(model)
    table = {s["name"]: {**s, "params": [], "no_decay": exempt} for s in specs + [default]}
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
            (no_decay if name in entry["no_decay"] else decay).append(param)
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
        if entry["lr"] == 0.0:
            state = "frozen"
        else:
            exempt = sum(name in entry["no_decay"] for name, p in entry["params"] if p.requires_grad)
            decayed = sum(p.requires_grad for _, p in entry["params"]) - exempt
            state = (f"lr {entry['lr']:g}, wd {entry['weight_decay']:g} on {decayed} tensors, no decay on "
                     f"{exempt}")
        lines.append(f"  {entry['name']:<12} {len(entry['params']):>5} tensors  trainable {trainable:>12,}  "
                     f"frozen {frozen:>12,}  ({state})")
    lines.append(f"  total trainable {total_train:,} / frozen {total_frozen:,}")
    return "\n".join(lines)


def schedule_lambda(kind: str, warmup_steps: int, total_steps: int, min_ratio: float = 0.0,
                    milestones: tuple[int, ...] = (), gamma: float = 0.1, offset: int = 0):
    """Learning-rate multiplier per optimizer step (the LambdaLR of every schedule): linear 0->1 over the warmup, then
    `cosine` 1->min_ratio or `linear` 1->min_ratio until total_steps, `constant` 1, or `multistep` gamma ** (number of
    milestones reached). Steps count from `offset` (a phase that continues the schedule of the phases before it)."""
    if kind not in ("cosine", "linear", "constant", "multistep"):
        raise ValueError(f"unknown schedule {kind!r}")

    def fn(step: int) -> float:
        step = step + offset
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        if kind == "constant":
            return 1.0
        if kind == "multistep":
            return gamma ** sum(step >= m for m in milestones)
        span = max(total_steps - warmup_steps, 1)
        progress = min(max(step - warmup_steps, 0) / span, 1.0)
        if kind == "linear":
            return min_ratio + (1.0 - min_ratio) * (1.0 - progress)
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return fn


def warmup_cosine_lambda(warmup_steps: int, total_steps: int, min_ratio: float):
    """Multiplier per optimizer step: linear 0->1 over warmup, then cosine 1->min_ratio until total_steps."""
    return schedule_lambda("cosine", warmup_steps, total_steps, min_ratio)
