"""Comparing runs: read each run's resolved recipe and Trainer log history, list what differs and how it scored, and
draw their loss and evaluation curves on shared axes (used by scripts/compare_runs.py)."""

from __future__ import annotations

import glob
import json
import os
import re
from dataclasses import dataclass

import matplotlib
import yaml

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# Keys that differ between any two runs without being an experimental choice.
IGNORED_KEYS = {"output_dir", "logging_dir", "run_name", "hub_model_id", "resume_from_checkpoint"}
_TIMING = ("_runtime", "_samples_per_second", "_steps_per_second")


@dataclass
class RunRecord:
    name: str
    path: str
    recipe: dict
    log_history: list


def _state_file(run_dir: str) -> str | None:
    """trainer_state.json of the finished run, else of its newest checkpoint (a run still going or interrupted)."""
    top = os.path.join(run_dir, "trainer_state.json")
    if os.path.isfile(top):
        return top
    found = []
    for path in glob.glob(os.path.join(run_dir, "checkpoint-*", "trainer_state.json")):
        match = re.search(r"checkpoint-(\d+)", path)
        found.append((int(match.group(1)), path))
    return max(found)[1] if found else None


def _load_phased_run(run_dir: str) -> RunRecord:
    """A phased run's top folder: the phases' log histories merged (steps and epochs counting on across phases, from
    log_history.json); the recipe holds the keys all phases share as they are and the others as `phases[k].<key>`."""
    with open(os.path.join(run_dir, "phases.json"), encoding="utf-8") as handle:
        phases = json.load(handle)
    recipes = []
    for phase in phases:
        with open(os.path.join(run_dir, phase["folder"], "recipe_resolved.yaml"), encoding="utf-8") as handle:
            recipes.append({k: v for k, v in (yaml.safe_load(handle) or {}).items()
                            if k not in IGNORED_KEYS and k != "init_from"})
    keys = set().union(*recipes)
    recipe = {}
    for key in sorted(keys):
        values = [json.dumps(r.get(key), sort_keys=True, default=str) for r in recipes]
        if len(set(values)) == 1 and all(key in r for r in recipes):
            recipe[key] = recipes[0][key]
        else:
            recipe.update({f"phases[{k}].{key}": r[key] for k, r in enumerate(recipes) if key in r})
    history = []
    merged = os.path.join(run_dir, "log_history.json")
    if os.path.isfile(merged):
        with open(merged, encoding="utf-8") as handle:
            history = json.load(handle)
    return RunRecord(os.path.basename(os.path.abspath(run_dir)), run_dir, recipe, history)


def load_run(run_dir: str) -> RunRecord:
    """A run folder (recipe_resolved.yaml + trainer_state.json), a phase's folder, or a phased run's top folder."""
    if os.path.isfile(os.path.join(run_dir, "phases.json")):
        return _load_phased_run(run_dir)
    recipe_path = os.path.join(run_dir, "recipe_resolved.yaml")
    if not os.path.isfile(recipe_path):
        raise FileNotFoundError(f"{run_dir}: no recipe_resolved.yaml (not an hf_vtrain run folder?)")
    with open(recipe_path, encoding="utf-8") as handle:
        recipe = yaml.safe_load(handle) or {}
    state = _state_file(run_dir)
    history = []
    if state:
        with open(state, encoding="utf-8") as handle:
            history = json.load(handle).get("log_history", [])
    return RunRecord(os.path.basename(os.path.abspath(run_dir)), run_dir, recipe, history)


def recipe_differences(runs: list[RunRecord]) -> list[str]:
    """Keys whose values differ across the runs (a key missing from a run counts as a difference), sorted."""
    keys = set().union(*(r.recipe for r in runs)) - IGNORED_KEYS

    def value(run, key):
        return json.dumps(run.recipe[key], sort_keys=True, default=str) if key in run.recipe else "<unset>"

    return sorted(k for k in keys if len({value(r, k) for r in runs}) > 1)


def eval_metric_names(runs: list[RunRecord]) -> list[str]:
    names = []
    for run in runs:
        for entry in run.log_history:
            for key in entry:
                if key.startswith("eval_") and not key.endswith(_TIMING) and key not in names:
                    names.append(key)
    return names


def pick_metric(runs: list[RunRecord], metric: str | None = None) -> str | None:
    names = eval_metric_names(runs)
    if metric:
        return metric
    for preferred in ("eval_average_mAP", "eval_auc", "eval_accuracy", "eval_mAP"):
        if preferred in names:
            return preferred
    return next((n for n in names if n != "eval_loss"), "eval_loss" if "eval_loss" in names else None)


def train_counterpart(metric: str | None) -> str | None:
    """The training figure a model logs beside an eval metric (its batch_metrics: eval_accuracy <-> train_accuracy)."""
    return "train_" + metric.removeprefix("eval_") if metric and metric.startswith("eval_") else None


def summarize(run: RunRecord, metric: str | None, lower_is_better: bool = False) -> dict:
    evals = [e for e in run.log_history if metric and metric in e]
    train_key = train_counterpart(metric)
    trains = [e[train_key] for e in run.log_history if train_key and train_key in e]
    losses = [e for e in run.log_history if "loss" in e and "step" in e]
    out = {"run": run.name, "evals": len(evals), "final_loss": losses[-1]["loss"] if losses else None,
           "steps": max((e.get("step", 0) for e in run.log_history), default=0)}
    if evals:
        best = (min if lower_is_better else max)(evals, key=lambda e: e[metric])
        out.update(best=best[metric], best_epoch=best.get("epoch"), final=evals[-1][metric],
                   final_epoch=evals[-1].get("epoch"))
    if trains:
        out["final_train"] = trains[-1]
    return out


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value, default=str)
    return str(value)


def format_comparison(runs: list[RunRecord], metric: str | None, lower_is_better: bool = False,
                      width: int = 60) -> str:
    diffs = recipe_differences(runs)
    lines = [f"recipe keys that differ ({len(diffs)}):" if diffs else "recipes: identical (apart from output paths)"]
    names = [r.name for r in runs]
    col = max([len(n) for n in names] + [8])
    for key in diffs:
        lines.append(f"  {key}")
        for run in runs:
            value = _fmt(run.recipe[key]) if key in run.recipe else "<unset>"
            lines.append(f"    {run.name:<{col}}  {value[:width]}{'...' if len(value) > width else ''}")
    lines.append("")
    lines.append(f"metric: {metric or '(none logged)'} ({'lower' if lower_is_better else 'higher'} is better)")
    summaries = [summarize(run, metric, lower_is_better) for run in runs]
    with_train = any("final_train" in s for s in summaries)
    header = f"  {'run':<{col}} {'best':>10} {'@epoch':>7} {'final':>10} {'@epoch':>7} {'evals':>5} {'last loss':>10}"
    if with_train:
        header += f" {'train (final)':>13} {'gap':>8}"
    lines.append(header)
    for run, s in zip(runs, summaries):
        best = f"{s['best']:.4g}" if "best" in s else "-"
        final = f"{s['final']:.4g}" if "final" in s else "-"
        be = f"{s['best_epoch']:g}" if s.get("best_epoch") is not None else "-"
        fe = f"{s['final_epoch']:g}" if s.get("final_epoch") is not None else "-"
        loss = f"{s['final_loss']:.4g}" if s["final_loss"] is not None else "-"
        line = f"  {run.name:<{col}} {best:>10} {be:>7} {final:>10} {fe:>7} {s['evals']:>5} {loss:>10}"
        if with_train:
            train = f"{s['final_train']:.4g}" if "final_train" in s else "-"
            gap = f"{s['final_train'] - s['final']:.4g}" if "final_train" in s and "final" in s else "-"
            line += f" {train:>13} {gap:>8}"
        lines.append(line)
    if with_train:
        lines.append(f"  (train: the last epoch mean of {train_counterpart(metric)}; gap: train - final eval)")
    return "\n".join(lines)


def plot_comparison(runs: list[RunRecord], metric: str | None, path: str, title: str = "") -> str:
    """Two panels: training loss per step, and the evaluation metric per epoch; one colour per run on shared axes
    (the eval loss, when logged, dashed on the first panel at the step of each evaluation)."""
    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(13, 4.8))
    cmap = plt.get_cmap("tab10")
    for i, run in enumerate(runs):
        colour = cmap(i % 10)
        steps = [(e["step"], e["loss"]) for e in run.log_history if "loss" in e and "step" in e]
        if steps:
            ax_loss.plot(*zip(*steps), color=colour, lw=1.4, label=f"{run.name} train")
        evals = [(e["step"], e["eval_loss"]) for e in run.log_history if "eval_loss" in e and "step" in e]
        if evals:
            ax_loss.plot(*zip(*evals), color=colour, ls="--", marker=".", lw=1.0, label=f"{run.name} eval")
        points = [(e.get("epoch", 0), e[metric]) for e in run.log_history if metric and metric in e]
        if points:
            ax_metric.plot(*zip(*points), color=colour, marker="o", label=f"{run.name} eval")
        train_key = train_counterpart(metric)
        train_points = [(e.get("epoch", 0), e[train_key]) for e in run.log_history if train_key and train_key in e]
        if train_points:
            ax_metric.plot(*zip(*train_points), color=colour, ls="--", lw=1.0, label=f"{run.name} train")
    ax_loss.set(xlabel="step", ylabel="loss", title="loss (solid: training, dashed: evaluation)")
    ax_metric.set(xlabel="epoch", ylabel=metric or "metric", title=f"evaluation: {metric or 'nothing logged'}")
    for ax in (ax_loss, ax_metric):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="best")
        else:
            ax.text(0.5, 0.5, "nothing logged", ha="center", va="center", transform=ax.transAxes)
    diffs = recipe_differences(runs)
    subtitle = title or ("differ: " + ", ".join(diffs[:6]) + (" ..." if len(diffs) > 6 else "") if diffs else "")
    if subtitle:
        fig.suptitle(subtitle, fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
