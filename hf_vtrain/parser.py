"""Flat YAML recipes: the file gives defaults, `--key value` on the command line overrides them.

Keys are the field names of the task's dataclasses (model, data and training arguments); an unknown key is an
error that names the key and the closest valid one, before anything is loaded. A recipe may hold `phases:`, a list
of mappings: phase k is the recipe with `phases[k]`'s keys laid over it and the command line's over both, checked
like any recipe (errors name `phases[k].key`); `name` names a phase.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from dataclasses import dataclass
from typing import Any

import yaml


class RecipeError(ValueError):
    """A recipe or command line that cannot be turned into arguments; the message names the file and key."""


class CliValue(str):
    """A command-line value kept as typed; it is read as YAML only where the field is not a string, so
    `--eval_strategy no` stays "no" while `--lr 1e-4`, `--flag false` and `--x [1, 2]` mean what they say."""


def _yaml_scalar(text: str) -> Any:
    return CliValue(text)


def _parse_cli(value: "CliValue") -> Any:
    try:
        return yaml.safe_load(str(value))
    except yaml.YAMLError:
        return str(value)


def _accepts_str(tp) -> bool:
    if tp is str:
        return True
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return str in typing.get_args(tp)
    return False


def read_recipe(path: str) -> dict[str, Any]:
    if not os.path.isfile(path):
        raise RecipeError(f"{path}: recipe file not found")
    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise RecipeError(f"{path}: not valid YAML{where}: {getattr(err, 'problem', err)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe is a flat mapping of key: value, got a {type(data).__name__}")
    for key in data:
        if not isinstance(key, str):
            raise RecipeError(f"{path}: key {key!r} is not a string")
    return data


def split_argv(argv: list[str]) -> tuple[str | None, dict[str, Any]]:
    """Returns (recipe path or None, overrides) from `recipe.yaml --key value --flag --key=value`."""
    recipe = None
    overrides: dict[str, Any] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--"):
            key, eq, value = arg[2:].partition("=")
            key = key.replace("-", "_")
            if not key:
                raise RecipeError(f"command line: empty option name in '{arg}'")
            if eq:
                overrides[key] = _yaml_scalar(value)
            elif i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                overrides[key] = _yaml_scalar(argv[i + 1])
                i += 1
            else:
                overrides[key] = True
        elif recipe is None:
            recipe = arg
        else:
            raise RecipeError(f"command line: unexpected argument '{arg}' (options are --key value)")
        i += 1
    if "config" in overrides:
        if recipe is not None:
            raise RecipeError("command line: give the recipe either positionally or as --config, not both")
        recipe = str(overrides.pop("config"))
    return recipe, overrides


def _field_types(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls) if f.init}


def _unwrap_optional(tp):
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
        return tp, type(None) in typing.get_args(tp)
    return tp, False


def _coerce(value: Any, tp: Any, key: str, source: str) -> Any:
    """Checks and converts one value to the field type; YAML 1.1 reads `1e-4` as a string, so numbers are parsed."""
    base, optional = _unwrap_optional(tp)
    if isinstance(value, CliValue):
        if _accepts_str(base):
            return None if (optional and value in ("null", "None", "~")) else str(value)
        value = _parse_cli(value)
    elif isinstance(value, bool) and _accepts_str(base) and base is not str:
        raise RecipeError(f"{source}: key '{key}' got {value!r}: YAML reads unquoted yes/no/on/off as booleans; "
                          f"quote the value (e.g. '{key}: \"no\"')")
    if isinstance(value, dict) and not (base is dict or typing.get_origin(base) is dict or base is Any
                                        or (typing.get_origin(base) in (typing.Union, types.UnionType)
                                            and dict in typing.get_args(base))):
        raise RecipeError(f"{source}: key '{key}' holds a nested mapping; recipes are flat (one key per setting, "
                          "no sections)")
    if value is None:
        if optional or base is Any:
            return None
        raise RecipeError(f"{source}: key '{key}' cannot be null")
    if base is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise RecipeError(f"{source}: key '{key}' expects true/false, got {value!r}")
    if base is int:
        if isinstance(value, bool):
            raise RecipeError(f"{source}: key '{key}' expects an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                number = None
            if number is not None and number.is_integer():
                return int(number)
        raise RecipeError(f"{source}: key '{key}' expects an integer, got {value!r}")
    if base is float:
        if isinstance(value, bool):
            raise RecipeError(f"{source}: key '{key}' expects a number, got {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise RecipeError(f"{source}: key '{key}' expects a number, got {value!r}")
    if base is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise RecipeError(f"{source}: key '{key}' expects a string, got {value!r}")
    origin = typing.get_origin(base)
    if origin in (list, tuple):
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise RecipeError(f"{source}: key '{key}' expects a list, got {value!r}")
        args = typing.get_args(base)
        if args and origin is list:
            value = [_coerce(v, args[0], f"{key}[{i}]", source) for i, v in enumerate(value)]
        return list(value) if origin is list else tuple(value)
    if origin is dict or base is dict:
        if not isinstance(value, dict):
            raise RecipeError(f"{source}: key '{key}' expects a mapping, got {value!r}")
        return value
    return value  # enums and unions (e.g. TrainingArguments' str | IntervalStrategy): validated by the dataclass


PHASES_KEY = "phases"
PHASE_NAME_KEY = "name"
# Keys a phase may not set: the task is the run's, the folders and the resume point are derived per phase.
NOT_IN_PHASES = ("task", "output_dir", "resume_from_checkpoint", "validate_data_only", PHASES_KEY)


@dataclass
class RecipeLayers:
    """A command line read but not yet checked: the recipe file's keys, each phase's, and the command line's."""

    recipe: str | None
    base: dict[str, Any]
    overrides: dict[str, Any]
    phases: list[dict[str, Any]] | None


def read_layers(argv: list[str]) -> RecipeLayers:
    recipe, overrides = split_argv(argv)
    base = dict(read_recipe(recipe)) if recipe is not None else {}
    phases = base.pop(PHASES_KEY, None)
    where = recipe or "command line"
    if PHASES_KEY in overrides:
        raise RecipeError(f"command line: '{PHASES_KEY}' can only be set in a recipe file (a list of mappings)")
    if phases is not None:
        if not isinstance(phases, list) or not phases or not all(isinstance(p, dict) for p in phases):
            raise RecipeError(f"{where}: '{PHASES_KEY}' must be a non-empty list of mappings (one per phase), got "
                              f"{phases!r}")
        names = []
        for k, phase in enumerate(phases):
            for key in phase:
                if not isinstance(key, str):
                    raise RecipeError(f"{where}: {PHASES_KEY}[{k}]: key {key!r} is not a string")
                if key in NOT_IN_PHASES:
                    raise RecipeError(f"{where}: {PHASES_KEY}[{k}].{key}: a phase cannot set '{key}' (it belongs to "
                                      f"the whole run)")
            name = phase.get(PHASE_NAME_KEY, f"{k + 1}")
            if not isinstance(name, str) or not name or not all(c.isalnum() or c in "-_" for c in name):
                raise RecipeError(f"{where}: {PHASES_KEY}[{k}].{PHASE_NAME_KEY}: {name!r} must be letters, digits, "
                                  f"'-' or '_' (it names the phase's folder)")
            names.append(name)
        if len(set(names)) != len(names):
            raise RecipeError(f"{where}: {PHASES_KEY}: two phases share a name ({names})")
        if "resume_from_checkpoint" in overrides or "resume_from_checkpoint" in base:
            raise RecipeError(f"{where}: a recipe with phases resumes by itself (each phase from its newest "
                              f"checkpoint, finished phases skipped): run the same command again without "
                              f"resume_from_checkpoint")
    return RecipeLayers(recipe, base, overrides, phases)


def merged_values(layers: RecipeLayers, phase: int | None = None) -> tuple[dict, dict, dict]:
    """(values, sources, labels) of the recipe, laid over by phase `phase`'s keys, then by the command line's."""
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    labels: dict[str, str] = {}
    for key, value in layers.base.items():
        values[key], sources[key], labels[key] = value, layers.recipe, key
    if phase is not None:
        for key, value in layers.phases[phase].items():
            if key == PHASE_NAME_KEY:
                continue
            values[key], sources[key], labels[key] = value, layers.recipe, f"{PHASES_KEY}[{phase}].{key}"
    for key, value in layers.overrides.items():
        values[key], sources[key], labels[key] = value, "command line", key
    return values, sources, labels


def parse_values(values: dict, sources: dict, labels: dict, dataclass_types: tuple, extra_keys: tuple[str, ...],
                 where: str) -> tuple:
    """One instance of each dataclass from checked values; (instances..., values)."""
    owner: dict[str, Any] = {}
    types_of: dict[str, Any] = {}
    for cls in dataclass_types:
        for name, tp in _field_types(cls).items():
            if name in owner:
                raise TypeError(f"field '{name}' is defined by both {owner[name].__name__} and {cls.__name__}")
            owner[name] = cls
            types_of[name] = tp
    valid = sorted(set(owner) | set(extra_keys))
    for key in values:
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise RecipeError(f"{sources[key]}: unknown key '{labels[key]}'{hint}")

    instances = []
    for cls in dataclass_types:
        kwargs = {}
        for name, tp in _field_types(cls).items():
            if name in values:
                kwargs[name] = _coerce(values[name], tp, labels[name], sources[name])
        try:
            instances.append(cls(**kwargs))
        except (ValueError, TypeError) as err:
            raise RecipeError(f"{where}: invalid {cls.__name__} settings: {err}") from None
    return (*instances, values)


def parse_args(argv: list[str], dataclass_types: tuple, extra_keys: tuple[str, ...] = ("task",),
               phase: int | None = None) -> tuple:
    """Builds one instance of each dataclass from a recipe and command-line overrides (with `phase`, that phase's
    keys in between).

    Returns (instances..., resolved) where `resolved` is the flat dict of every key that was set.
    """
    layers = read_layers(argv)
    values, sources, labels = merged_values(layers, phase)
    where = layers.recipe or "command line"
    if phase is not None:
        where = f"{where}: {PHASES_KEY}[{phase}]"
    return parse_values(values, sources, labels, dataclass_types, extra_keys, where)


def peek_key(argv: list[str], key: str, default: Any = None) -> Any:
    """Reads one key (e.g. `task`) before the dataclasses are known."""
    recipe, overrides = split_argv(argv)
    if key in overrides:
        value = overrides[key]
        return _parse_cli(value) if isinstance(value, CliValue) else value
    if recipe is not None:
        return read_recipe(recipe).get(key, default)
    return default


def _type_name(tp) -> str:
    base, optional = _unwrap_optional(tp)
    name = getattr(base, "__name__", None) if typing.get_origin(base) is None else None
    text = name or str(base).replace("typing.", "")
    return f"{text} | None" if optional else text


def format_help(dataclass_types: tuple, title: str) -> str:
    """Every key a task accepts, grouped by dataclass: name, type, default and help text."""
    lines = [title, ""]
    for cls in dataclass_types:
        lines.append(f"{cls.__name__} ({cls.__module__}):")
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if not f.init:
                continue
            if f.default is not dataclasses.MISSING:
                default = f.default
            elif f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            else:
                default = "(required)"
            default = getattr(default, "value", default)
            help_text = " ".join(str(f.metadata.get("help", "")).split())
            lines.append(f"  --{f.name} ({_type_name(hints.get(f.name, Any))}, default {default!r})")
            if help_text:
                lines.append(f"      {help_text}")
        lines.append("")
    return "\n".join(lines)
