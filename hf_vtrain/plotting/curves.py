"""Training curves of any run, from the Trainer's log history (every task)."""

from __future__ import annotations

import os
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _series(log_history: list[dict], x_key: str, predicate) -> dict[str, tuple[list, list]]:
    out: dict[str, tuple[list, list]] = defaultdict(lambda: ([], []))
    for entry in log_history:
        if x_key not in entry:
            continue
        for key, value in entry.items():
            if predicate(key) and isinstance(value, (int, float)):
                out[key][0].append(entry[x_key])
                out[key][1].append(value)
    return dict(out)


def _merge_identical(series: dict[str, tuple[list, list]]) -> dict[str, tuple[list, list]]:
    """Series with the same points drawn once, labelled with every name ("adapters = detector"): one line hiding
    another would otherwise look like a group that is not there."""
    merged: dict[str, tuple[list, list]] = {}
    for key, value in sorted(series.items()):
        same = next((k for k, v in merged.items() if v == value), None)
        if same is None:
            merged[key] = value
        else:
            merged[f"{same} = {key}"] = merged.pop(same)
    return merged


def _legend_below(ax, handles, labels) -> None:
    """Below the axes, so that no line ends under it."""
    ax.legend(handles, labels, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3, frameon=False)


def plot_training_curves(log_history: list[dict], path: str, title: str = "", boundaries: list[dict] = ()) -> str:
    """Writes `training_curves_figure` as a PNG at `path`."""
    fig = training_curves_figure(log_history, title, boundaries)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def training_curves_figure(log_history: list[dict], title: str = "", boundaries: list[dict] = ()):
    """Three panels: loss and its parts per step, lr per group per step, eval metrics (and the eval
    loss, right axis) per epoch. Every line is in its panel's legend; identical lines are drawn once and named
    together."""
    losses = _series(log_history, "step", lambda k: k == "loss" or (k.endswith("_loss") and not k.startswith(("eval", "train_"))))
    lrs = _series(log_history, "step", lambda k: k.startswith("lr/") or k == "learning_rate")
    if any(k.startswith("lr/") for k in lrs):
        lrs.pop("learning_rate", None)
    lrs = _merge_identical({k.removeprefix("lr/"): v for k, v in lrs.items()})
    evals = _series(log_history, "epoch", lambda k: k.startswith("eval_") and not k.endswith(
        ("_runtime", "_samples_per_second", "_steps_per_second")) and k != "eval_loss")
    # a model's batch_metrics (epoch means, train_<name>) beside the eval metrics: the train/val gap
    evals.update(_series(log_history, "epoch", lambda k: k.startswith("train_") and not k.startswith(
        ("train_runtime", "train_samples_per_second", "train_steps_per_second", "train_loss"))))
    eval_loss = _series(log_history, "epoch", lambda k: k == "eval_loss")

    fig, axes = plt.subplots(1, 3, figsize=(16, 5.2))
    for key, (xs, ys) in sorted(losses.items()):
        axes[0].plot(xs, ys, label=key, lw=1.5 if key == "loss" else 1.0)
    axes[0].set(xlabel="step", ylabel="loss", title="training loss and parts")
    for key, (xs, ys) in lrs.items():
        axes[1].plot(xs, ys, label=key)
    axes[1].set(xlabel="step", ylabel="learning rate", title="learning rate per group")
    for key, (xs, ys) in sorted(evals.items()):
        axes[2].plot(xs, ys, marker="o", label=key.removeprefix("eval_"), ls="--" if key.startswith("train_") else "-")
    axes[2].set(xlabel="epoch", ylabel="metric", title="evaluation")
    extra_handles, extra_labels = [], []
    if eval_loss:
        twin = axes[2].twinx()
        xs, ys = eval_loss["eval_loss"]
        twin.plot(xs, ys, "k--", alpha=0.6, marker=".", label="eval loss (right axis)")
        twin.set_ylabel("eval loss")
        extra_handles, extra_labels = twin.get_legend_handles_labels()
    for boundary in boundaries:  # phases: where each one after the first starts
        for ax, x in zip(axes, (boundary["step"], boundary["step"], boundary["epoch"])):
            ax.axvline(x, color="grey", lw=1, ls=":")
            ax.text(x, 1.0, f" {boundary['name']}", transform=ax.get_xaxis_transform(), fontsize=7, va="top",
                    color="grey")
    for ax, data in zip(axes, (losses, lrs, evals)):
        handles, labels = ax.get_legend_handles_labels()
        if ax is axes[2]:
            handles, labels = handles + extra_handles, labels + extra_labels
        if handles:
            _legend_below(ax, handles, labels)
        elif not data:
            ax.text(0.5, 0.5, "nothing logged", ha="center", va="center", transform=ax.transAxes)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
