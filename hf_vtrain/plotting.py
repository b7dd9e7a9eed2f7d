"""Pictures of a run: training curves from the Trainer's log history, and per-video detection timelines."""

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


def plot_training_curves(log_history: list[dict], path: str, title: str = "") -> str:
    """One PNG with three panels: loss and its parts per step, lr per group per step, eval metrics per epoch."""
    losses = _series(log_history, "step", lambda k: k == "loss" or (k.endswith("_loss") and not k.startswith(("eval", "train_"))))
    lrs = _series(log_history, "step", lambda k: k.startswith("lr/") or k == "learning_rate")
    if any(k.startswith("lr/") for k in lrs):
        lrs.pop("learning_rate", None)
    evals = _series(log_history, "epoch", lambda k: k.startswith("eval_") and not k.endswith(
        ("_runtime", "_samples_per_second", "_steps_per_second")) and k != "eval_loss")
    eval_loss = _series(log_history, "epoch", lambda k: k == "eval_loss")

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    for key, (xs, ys) in sorted(losses.items()):
        axes[0].plot(xs, ys, label=key, lw=1.5 if key == "loss" else 1.0)
    axes[0].set(xlabel="step", ylabel="loss", title="training loss and parts")
    for key, (xs, ys) in sorted(lrs.items()):
        axes[1].plot(xs, ys, label=key.removeprefix("lr/"))
    axes[1].set(xlabel="step", ylabel="learning rate", title="learning rate per group")
    for key, (xs, ys) in sorted(evals.items()):
        axes[2].plot(xs, ys, marker="o", label=key.removeprefix("eval_"))
    axes[2].set(xlabel="epoch", ylabel="metric", title="evaluation")
    if eval_loss:
        twin = axes[2].twinx()
        xs, ys = eval_loss["eval_loss"]
        twin.plot(xs, ys, "k--", alpha=0.5, label="eval loss")
        twin.set_ylabel("eval loss")
    for ax, data in zip(axes, (losses, lrs, evals)):
        if data:
            ax.legend(fontsize=7, loc="best")
        else:
            ax.text(0.5, 0.5, "nothing logged", ha="center", va="center", transform=ax.transAxes)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_detection_timeline(video_id: str, duration: float, ground_truth: list[dict], predictions: list[dict],
                            class_names: list[str], path: str, min_score: float = 0.1, max_per_class: int = 5) -> str:
    """Per class: the ground-truth segments on one row, then the top predictions one per row (shade = score)."""
    preds = [p for p in predictions if p["score"] >= min_score]
    present = {g["label"] for g in ground_truth} | {p["label"] for p in preds}
    classes = [c for c in class_names if c in present] or class_names[:1]
    rows = []  # (label text, class name, list of (start, end, score or None))
    for name in classes:
        rows.append((f"{name}: ground truth", name, [(*g["segment"], None) for g in ground_truth if g["label"] == name]))
        top = sorted((p for p in preds if p["label"] == name), key=lambda p: -p["score"])[:max_per_class]
        for rank, p in enumerate(top, 1):
            rows.append((f"pred #{rank}", name, [(*p["segment"], p["score"])]))
    cmap = plt.get_cmap("tab10")
    fig, ax = plt.subplots(figsize=(12, 0.32 * len(rows) + 1.4))
    for i, (_, name, spans) in enumerate(rows):
        y = len(rows) - 1 - i
        colour = cmap(class_names.index(name) % 10)
        for start, end, score in spans:
            if score is None:
                ax.broken_barh([(start, end - start)], (y + 0.1, 0.8), facecolors=colour, edgecolors="black")
            else:
                ax.broken_barh([(start, end - start)], (y + 0.2, 0.6), facecolors=colour,
                               alpha=0.25 + 0.75 * min(score, 1.0), edgecolors="none")
                ax.text(end, y + 0.5, f" {score:.2f}", fontsize=7, va="center")
    ax.set_yticks([len(rows) - 1 - i + 0.5 for i in range(len(rows))])
    ax.set_yticklabels([r[0] for r in rows], fontsize=7)
    ax.set_xlim(0, duration)
    ax.set_ylim(0, len(rows))
    ax.set_xlabel("time (s)")
    ax.set_title(f"{video_id}: ground truth (outlined) and top-{max_per_class} predictions per class "
                 f"(score >= {min_score}, shade = score)", fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
