"""Pictures of task `har`: the confusion matrix of an evaluation (rows: labels, columns: top-1 predictions)."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_confusion_matrix(matrix, class_names: list[str], path: str, title: str = "") -> str:
    """Row-normalised confusion matrix (each label's share of predictions), counts written in small classes."""
    counts = np.asarray(matrix, dtype=np.float64)
    rows = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    n = len(class_names)
    side = min(2 + 0.35 * n, 24)
    fig, ax = plt.subplots(figsize=(side, side))
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                if counts[i, j]:
                    ax.text(j, i, int(counts[i, j]), ha="center", va="center", fontsize=8,
                            color="white" if share[i, j] > 0.5 else "black")
    ticks = np.arange(n)
    ax.set_xticks(ticks, class_names, rotation=90, fontsize=7 if n > 20 else 9)
    ax.set_yticks(ticks, class_names, fontsize=7 if n > 20 else 9)
    ax.set_xlabel("predicted (top-1)")
    ax.set_ylabel("label")
    accuracy = np.trace(counts) / max(counts.sum(), 1)
    ax.set_title(f"{title}{': ' if title else ''}top-1 {100 * accuracy:.1f}% of {int(counts.sum())} samples")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


__all__ = ["plot_confusion_matrix"]
