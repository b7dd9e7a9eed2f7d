"""The task table: task id -> the dataclasses its recipe keys fill, its trainer, and how to set it up."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable


@dataclass
class TaskRun:
    """What a task's `setup` hands to run.py: the pieces of one Trainer."""

    model: Any
    train_dataset: Any
    eval_dataset: Any
    data_collator: Any
    trainer_kwargs: dict
    epoch_hooks: list
    corpus: Any


@dataclass(frozen=True)
class TaskSpec:
    description: str
    model_args: type
    data_args: type
    training_args: type
    trainer_cls: type
    setup: Callable[..., TaskRun]      # (model_args, data_args, training_args) -> TaskRun
    validate: Callable[..., Any]       # (data_args) -> report with .ok and .format()


def _tad() -> TaskSpec:
    from .data.thumos14 import TADDataArguments, validate_thumos14
    from .trainers.base import VTrainingArguments
    from .trainers.tad import TADModelArguments, TADTrainer, setup_tad

    return TaskSpec("temporal action detection (AdaTAD, THUMOS-14 format)", TADModelArguments, TADDataArguments,
                    VTrainingArguments, TADTrainer, setup_tad, validate_thumos14)


def _vad() -> TaskSpec:
    from .data.ucf_crime import VADDataArguments, validate_ucf_crime
    from .trainers.base import VTrainingArguments
    from .trainers.vad import VADModelArguments, VADTrainer, setup_vad

    return TaskSpec("video anomaly detection (FG-CLIP video, UCF-Crime format)", VADModelArguments, VADDataArguments,
                    VTrainingArguments, VADTrainer, setup_vad, validate_ucf_crime)


# Literal table; each entry is built on first use so that `--help` of one task does not import every model.
TASKS: dict[str, Callable[[], TaskSpec]] = {
    "tad": _tad,
    "vad": _vad,
}


def get_task(name: str | None) -> TaskSpec:
    from .parser import RecipeError

    if name is None:
        raise RecipeError(f"the recipe sets no 'task'; choose one of {sorted(TASKS)}")
    if not isinstance(name, str) or name not in TASKS:
        raise RecipeError(f"unknown task {name!r}; choose one of {sorted(TASKS)}")
    return TASKS[name]()
