"""Training in phases, one mechanism for every task: a recipe's `phases:` list becomes one ordinary Trainer run per
phase in `output_dir/phase<k>-<name>/` (so exact resume, EMA, DDP/ZeRO and checkpoints work as in any run), each
checked before the first one starts, started from the previous phase's weights (`init_from: previous`), its epochs
counted on from the phases before it, marked complete atomically when it ends and skipped on restart while its
resolved recipe is unchanged. The run's top folder gets the final model, the curves over all phases and the card.

run.py drives the phases; this module plans them, checks and writes the markers, loads weights by name and assembles
the top folder.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from typing import Any

from .data.common import write_json_atomic, write_text_atomic
from .model_folders import PREPROCESSING_CONFIG_NAME, read_preprocessing_config
from .parser import PHASE_NAME_KEY, PHASES_KEY, RecipeError, merged_values, parse_values, read_layers

logger = logging.getLogger(__name__)

MARKER = "phase_complete.json"
SUMMARY = "phases.json"
MERGED_HISTORY = "log_history.json"
PREVIOUS = "previous"
# Keys that do not change what a phase trains: a finished phase is still the same phase when only these differ.
NOT_RESULT_KEYS = frozenset({
    "logging_steps", "logging_strategy", "logging_first_step", "report_to", "disable_tqdm", "log_level",
    "log_level_replica", "dataloader_num_workers", "dataloader_persistent_workers", "dataloader_pin_memory",
    "dataloader_prefetch_factor", "push_to_hub", "hub_model_id", "hub_strategy", "hub_token", "hub_private_repo",
    "hub_revision", "hub_always_push", "plot_eval_videos", "validate_workers", "save_total_limit", "run_name",
})
# What of the last phase's folder is not the model and its final outputs (the rest is copied to the top folder):
# checkpoints and logs, per-step evaluation files (their steps count in the phase), the phase's own records.
_NOT_COPIED = ("checkpoint-", "runs", "hub-last-checkpoint", MARKER, "train.log", "trainer_state.json",
               "training_args.bin", "predictions_step", "raw_detections_step", "scores_step", "recipe_resolved.yaml",
               "run_info.json", "training_curves.png")


@dataclass
class Phase:
    index: int
    name: str
    folder: str
    model_args: Any
    data_args: Any
    training_args: Any
    set_keys: dict
    epochs: int
    epoch_offset: int  # epochs of the phases before this one
    total_epochs: int  # epochs of every phase
    init_from: str | None  # the folder this phase starts from (previous phase resolved), None: the recipe's model

    @property
    def label(self) -> str:
        return f"{PHASES_KEY}[{self.index}] ({self.name})"


def has_phases(argv: list[str]) -> bool:
    return read_layers(argv).phases is not None


def phase_folder(output_dir: str, index: int, name: str) -> str:
    return os.path.join(output_dir, f"phase{index + 1}-{name}")


def plan_phases(argv: list[str], spec, extra_keys: tuple[str, ...]) -> list[Phase]:
    """Every phase parsed and checked (an error names `phases[k].key`) before anything runs."""
    layers = read_layers(argv)
    where = layers.recipe or "command line"
    base_values, _, _ = merged_values(layers)
    output_dir = base_values.get("output_dir")
    if not output_dir:
        raise RecipeError(f"{where}: a recipe with phases needs output_dir (the phases' folders go inside it)")
    planned, offset = [], 0
    types = (spec.model_args, spec.data_args, spec.training_args)
    for k, raw in enumerate(layers.phases):
        name = raw.get(PHASE_NAME_KEY, f"{k + 1}")
        values, sources, labels = merged_values(layers, k)
        folder = phase_folder(str(output_dir), k, name)
        values["output_dir"], sources["output_dir"], labels["output_dir"] = folder, where, f"{PHASES_KEY}[{k}]"
        init_from = values.get("init_from")
        if isinstance(init_from, str):
            init_from = values["init_from"] = _resolve_init_from(init_from, planned, where, k)
        for key in spec.phase_folder_keys:  # e.g. vad's feature_model: previous
            if isinstance(values.get(key), str):
                values[key] = _resolve_init_from(values[key], planned, where, k, key)
        model_args, data_args, training_args, set_keys = parse_values(
            values, sources, labels, types, extra_keys, f"{where}: {PHASES_KEY}[{k}]")
        if spec.check_recipe is not None:
            try:
                spec.check_recipe(model_args, data_args)
            except RecipeError as err:
                raise RecipeError(f"{where}: {PHASES_KEY}[{k}] ({name}): {err}") from None
        epochs = training_args.num_train_epochs
        if epochs != int(epochs) or epochs < 1 or training_args.max_steps > 0:
            raise RecipeError(f"{where}: {PHASES_KEY}[{k}]: a phase trains whole epochs (num_train_epochs "
                              f"{epochs}, max_steps {training_args.max_steps}): epochs of the phases add up, and "
                              f"epoch-driven hooks count them")
        planned.append(Phase(k, name, folder, model_args, data_args, training_args, set_keys, int(epochs), offset, 0,
                             init_from))
        offset += int(epochs)
    for phase in planned:
        phase.total_epochs = offset
    return planned


def init_from_folders(value: str) -> list[str]:
    """`init_from`'s folders: one, or several separated by commas (their weights together)."""
    return [item.strip() for item in value.split(",") if item.strip()]


def _resolve_init_from(value: str, planned: list[Phase], where: str, k: int, key: str = "init_from") -> str:
    """Each item of a phase's `init_from` (or another folder key): 'previous' (the phase before it), an earlier
    phase's name, or a folder."""
    names = {phase.name: phase.folder for phase in planned}
    out = []
    for item in init_from_folders(value):
        if item == PREVIOUS:
            if k == 0:
                raise RecipeError(f"{where}: {PHASES_KEY}[0].{key}: 'previous': the first phase has no phase "
                                  f"before it")
            item = planned[-1].folder
        out.append(names.get(item, item))
    return ",".join(out)


def resolved_for_marker(resolved: dict) -> dict:
    return {k: v for k, v in resolved.items() if k not in NOT_RESULT_KEYS}


def finished(phase: Phase, resolved: dict) -> bool:
    """True when the phase's marker says it finished with this resolved recipe; a marker with another recipe is an
    error naming what changed (the phase would be trained again from other weights than the later phases used)."""
    path = os.path.join(phase.folder, MARKER)
    if not os.path.isfile(path):
        return False
    with open(path) as handle:
        stored = json.load(handle)["resolved"]
    current = resolved_for_marker(resolved)
    changed = sorted(k for k in set(stored) | set(current) if stored.get(k) != current.get(k))
    if changed:
        details = "; ".join(f"{k}: {stored.get(k)!r} -> {current.get(k)!r}" for k in changed[:8])
        raise RecipeError(f"{phase.label} finished with other settings ({details}). Restore them to go on from "
                          f"the finished phase, or use another output_dir to train the phases again")
    return True


def mark_finished(phase: Phase, resolved: dict, trainer) -> None:
    write_json_atomic(os.path.join(phase.folder, MARKER), {
        "phase": phase.index, "name": phase.name, "epochs": phase.epochs, "epoch_offset": phase.epoch_offset,
        "global_step": trainer.state.global_step, "resolved": resolved_for_marker(resolved),
    }, indent=1)


def init_weights_from(model, folder: str, use_ema: bool, allow_unexpected: bool, key: str = "init_from") -> dict:
    """Copies the weights of the model saved in `folder` (its `ema/` with `use_ema`) into `model`, matched by
    parameter name; several folders separated by commas give their weights together (each weight from one of them:
    RGBPoseConv3D's fused model from its RGB-only and pose-only phases). The folder's model is loaded through the
    model's class (same model type) or its own (`AutoModel`), so keys its class renames on save come back right.
    Keys `model` has and the folder lacks are listed (they keep their initial values); keys the folder has and
    `model` lacks are an error unless `allow_unexpected`; a shape mismatch always is. A model with an
    `adapt_init_state_dict(state_dict)` method reshapes the folder's weights first (RGBPoseConv3D widens a single
    stream's first convolutions for its laterals)."""
    source, origin = {}, {}
    for one in init_from_folders(folder):
        source_dir = os.path.join(one, "ema") if use_ema else one
        if not os.path.isfile(os.path.join(source_dir, "config.json")):
            what = "EMA weights (ema/)" if use_ema else "a saved model (config.json + weights)"
            raise RecipeError(f"{key}: {source_dir} holds no {what}")
        weights = _saved_model_class(model, source_dir).from_pretrained(source_dir).state_dict()
        twice = sorted(k for k in weights if k in source and not k.endswith("num_batches_tracked"))
        if twice:
            raise RecipeError(f"{key}: {len(twice)} weights are in both {origin[twice[0]]} and {source_dir}, e.g. "
                              f"{twice[:3]}: each weight must come from one folder")
        source.update(weights)
        origin.update(dict.fromkeys(weights, source_dir))
    source_dir = ", ".join(dict.fromkeys(origin.values()))
    if hasattr(model, "adapt_init_state_dict"):  # a model that knows how another model's weights fit it (widened)
        source = model.adapt_init_state_dict(source)
    target = model.state_dict()
    missing = sorted(k for k in target if k not in source)
    unexpected = sorted(k for k in source if k not in target)
    mismatched = sorted(k for k in source if k in target and source[k].shape != target[k].shape)
    if mismatched:
        raise RecipeError(f"{key}: {source_dir}: {len(mismatched)} weights have other shapes than the model's, e.g. "
                          + ", ".join(f"{k} {tuple(source[k].shape)} vs {tuple(target[k].shape)}"
                                      for k in mismatched[:3]))
    if unexpected and not allow_unexpected:
        raise RecipeError(f"{key}: {source_dir} holds {len(unexpected)} weights the model has no place for, e.g. "
                          f"{unexpected[:5]}; set init_from_allow_unexpected: true to ignore them")
    result = model.load_state_dict({k: v for k, v in source.items() if k in target}, strict=False)
    # BatchNorm keeps its own num_batches_tracked when the source lacks it and does not report it as missing
    assert set(result.missing_keys) | {k for k in missing if k.endswith("num_batches_tracked")} == set(missing), \
        (result.missing_keys, missing)
    if missing:
        logger.warning("%s: %d weights of the model are not in %s and keep their initial values: %s", key,
                       len(missing), source_dir, missing[:10])
    if unexpected:
        logger.warning("%s: %d weights of %s are not used: %s", key, len(unexpected), source_dir, unexpected[:10])
    logger.warning("%s: started from %d weights of %s", key, len(target) - len(missing), source_dir)
    return {"source": source_dir, "loaded": len(target) - len(missing), "missing": missing, "unexpected": unexpected}


BEST_DIR = "best"
BEST_FILES = ("config.json", "model.safetensors", "pytorch_model.bin", PREPROCESSING_CONFIG_NAME, "ema",
              "preprocessor_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def copy_best_checkpoint(phases: list[Phase], output_dir: str) -> dict | None:
    """With `metric_for_best_model`: the best evaluated checkpoint over every phase (each phase's Trainer tracks its
    own best) copied to `output_dir/best/` (its model, not its optimizer), with `best.json` saying which phase, step
    and run epoch it came from and its value. None without the key or without a checkpoint at a best evaluation."""
    args = phases[-1].training_args
    metric = args.metric_for_best_model
    if not metric:
        return None
    better = (lambda a, b: a > b) if args.greater_is_better else (lambda a, b: a < b)
    best = None
    for phase in phases:
        with open(os.path.join(phase.folder, "trainer_state.json")) as handle:
            state = json.load(handle)
        folder = state.get("best_model_checkpoint")
        value = state.get("best_metric")
        if value is None or not folder or not os.path.isdir(folder):
            continue
        if best is None or better(value, best["value"]):
            steps_per_epoch = state["global_step"] / max(phase.epochs, 1)
            best = {"metric": metric, "value": value, "phase": phase.name, "step": state.get("best_global_step"),
                    "epoch": phase.epoch_offset + round((state.get("best_global_step") or 0) / steps_per_epoch),
                    "source": os.path.relpath(folder, output_dir)}
    if best is None:
        logger.warning("metric_for_best_model %s: no phase saved a checkpoint at an evaluation; no best/", metric)
        return None
    source, target = os.path.join(output_dir, best["source"]), os.path.join(output_dir, BEST_DIR)
    shutil.rmtree(target, ignore_errors=True)
    os.makedirs(target)
    for name in BEST_FILES:
        src = os.path.join(source, name)
        if os.path.isdir(src):
            shutil.copytree(src, os.path.join(target, name))
        elif os.path.isfile(src):
            shutil.copy2(src, os.path.join(target, name))
    write_json_atomic(os.path.join(target, "best.json"), best, indent=1)
    logger.warning("best checkpoint by %s over the phases: %s (%s %.4f, run epoch %d) -> %s", metric, best["source"],
                   metric, best["value"], best["epoch"], target)
    return best


def _shown_init_from(value: str | None, output_dir: str) -> str:
    if not value:
        return "the recipe"
    return ", ".join(os.path.relpath(one, output_dir) for one in init_from_folders(value))


def _saved_model_class(model, folder: str):
    """The class to load `folder`'s model with: the target model's own class when the folder holds the same kind of
    model (e.g. an RT-DETR detector subclass, which AutoModel would load as the bare RTDetrModel without its `model.`
    prefix), else AutoModel (the folder's own registered class)."""
    from transformers import AutoConfig, AutoModel

    if AutoConfig.from_pretrained(folder).model_type == getattr(model.config, "model_type", None):
        return type(model)
    return AutoModel


def merged_log_history(phases: list[Phase]) -> tuple[list[dict], list[dict]]:
    """The phases' log histories as one run's: steps and epochs count on across phases. Returns (history,
    boundaries) with one boundary {step, epoch, name} where each phase after the first starts."""
    history, boundaries, step_offset = [], [], 0
    for phase in phases:
        with open(os.path.join(phase.folder, "trainer_state.json")) as handle:
            state = json.load(handle)
        if phase.index > 0:
            boundaries.append({"step": step_offset, "epoch": phase.epoch_offset, "name": phase.name})
        for entry in state["log_history"]:
            entry = dict(entry, phase=phase.name)
            if "step" in entry:
                entry["step"] += step_offset
            if "epoch" in entry:
                entry["epoch"] += phase.epoch_offset
            history.append(entry)
        step_offset += state["global_step"]
    return history, boundaries


def assemble_top_folder(phases: list[Phase], output_dir: str, title: str, run_info: dict,
                        repo: str | None = None) -> dict:
    """After the last phase: its model and outputs copied into `output_dir`, the curves over all phases (boundaries
    marked), the merged log history, a summary of the phases, the best checkpoint over all phases in `best/` (with
    metric_for_best_model) and the model card with a phases section and its "Use"
    section pointing at the top folder (and `repo`, the store repo it is pushed to)."""
    from .plotting.curves import plot_training_curves

    last = phases[-1]
    for name in os.listdir(last.folder):
        if name.startswith(_NOT_COPIED):
            continue
        src, dst = os.path.join(last.folder, name), os.path.join(output_dir, name)
        if os.path.isdir(src):
            shutil.rmtree(dst, ignore_errors=True)
            shutil.copytree(src, dst)
        else:
            shutil.copy2(src, dst)
    # the final model's own settings, so evaluate-only of the top folder (or of its store repo, which has no phase
    # folders) needs no recipe
    with open(os.path.join(last.folder, "recipe_resolved.yaml"), encoding="utf-8") as handle:
        last_recipe = handle.read()
    write_text_atomic(os.path.join(output_dir, "recipe_resolved.yaml"),
                      f"# The last phase's resolved recipe ({last.label}): the settings of the final model in this "
                      f"folder.\n# The run's phases: phases.json and each phase's folder.\n" + last_recipe)
    history, boundaries = merged_log_history(phases)
    write_json_atomic(os.path.join(output_dir, MERGED_HISTORY), history)
    curves = plot_training_curves(history, os.path.join(output_dir, "training_curves.png"), title=title,
                                  boundaries=boundaries)
    summary = []
    for phase in phases:
        with open(os.path.join(phase.folder, MARKER)) as handle:
            marker = json.load(handle)
        metrics = {}
        path = os.path.join(phase.folder, "eval_results.json")
        if os.path.isfile(path):
            with open(path) as handle:
                metrics = json.load(handle)
        summary.append({"phase": phase.index, "name": phase.name, "folder": os.path.relpath(phase.folder, output_dir),
                        "epochs": phase.epochs, "epoch_offset": phase.epoch_offset,
                        "global_step": marker["global_step"], "init_from": phase.init_from, "eval": metrics})
    write_json_atomic(os.path.join(output_dir, SUMMARY), summary, indent=1)
    best = copy_best_checkpoint(phases, output_dir)
    write_json_atomic(os.path.join(output_dir, "run_info.json"),
                      {**run_info, "phases": summary, **({"best": best} if best else {})}, indent=2)
    card = os.path.join(output_dir, "README.md")
    if os.path.isfile(card):
        rows = ["", "## Phases", "", "| phase | epochs | steps | started from | final evaluation |", "|---|---|---|---|---|"]
        for entry in summary:
            shown = ", ".join(f"{k.removeprefix('eval_')} {v:.2f}" for k, v in sorted(entry["eval"].items())
                              if isinstance(v, float) and "runtime" not in k and "per_second" not in k)
            rows.append(f"| {entry['phase'] + 1}: {entry['name']} | {entry['epoch_offset'] + 1}-"
                        f"{entry['epoch_offset'] + entry['epochs']} | {entry['global_step']} | "
                        f"{_shown_init_from(entry['init_from'], output_dir)} "
                        f"| {shown or '-'} |")
        with open(card, encoding="utf-8") as handle:
            text = handle.read().replace("The full resolved recipe is in `recipe_resolved.yaml`.",
                                         "The run was trained in phases (below).")
        preprocessing = os.path.join(output_dir, PREPROCESSING_CONFIG_NAME)
        if "## Use\n" in text and "## Reproduce\n" in text and os.path.isfile(preprocessing):
            from .trainers.base import model_card_use_section

            head, rest = text.split("## Use\n", 1)
            use = model_card_use_section(read_preprocessing_config(output_dir), output_dir, repo)
            text = head + "\n".join(use) + "## Reproduce\n" + rest.split("## Reproduce\n", 1)[1]
        with open(card, "w", encoding="utf-8") as handle:
            handle.write(text + "\n".join(rows) + "\n\nThe model here is the last phase's; each phase's folder holds its "
                         "resolved recipe, checkpoints, logs and evaluations.\n")
    return {"curves": curves, "summary": summary}
