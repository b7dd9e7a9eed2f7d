"""The task table: task id -> the module that holds the task's wiring (its recipe-key dataclasses, model building,
setup, validation), whose `SPEC` is a `TaskSpec`. A new task adds its module and one line here; modules are imported
on first use, so `--help` of one task does not import every model."""

from __future__ import annotations

import importlib
import os

from ..parser import RecipeError, read_recipe
from .common import TaskRun, TaskSpec

TASKS: dict[str, str] = {
    "tad": "hf_vtrain.tasks.tad",
    "vad": "hf_vtrain.tasks.vad",
    "har": "hf_vtrain.tasks.har",
    "det": "hf_vtrain.tasks.det",
}


def get_task(name: str | None) -> TaskSpec:
    if name is None:
        raise RecipeError(f"the recipe sets no 'task'; choose one of {sorted(TASKS)}")
    if not isinstance(name, str) or name not in TASKS:
        raise RecipeError(f"unknown task {name!r}; choose one of {sorted(TASKS)}")
    return importlib.import_module(TASKS[name]).SPEC


def load_corpus(recipe, **overrides):
    """The corpus a recipe trains on as its task's typed `datasets.DatasetDict`, validated as the run validates it.
    `recipe`: a recipe file or a mapping with its `task` and data keys; `overrides` on top (e.g. data_root=...)."""
    from ..data.common import data_arguments_from

    values = read_recipe(os.fspath(recipe)) if isinstance(recipe, (str, os.PathLike)) else dict(recipe)
    spec = get_task(values.get("task"))
    if spec.load_corpus is None:
        raise RecipeError(f"task {values['task']!r} has no typed corpus loader")
    return spec.load_corpus(data_arguments_from(spec.data_args, values, **overrides))


__all__ = ["TASKS", "TaskRun", "TaskSpec", "get_task", "load_corpus"]
