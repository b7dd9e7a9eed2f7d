"""Pictures of task `tad`: per-video timelines of ground-truth and predicted segments."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_detection_timeline(video_id: str, duration: float, ground_truth: list[dict] | None, predictions: list[dict],
                            class_names: list[str], path: str, min_score: float = 0.1, max_per_class: int = 5) -> str:
    """Per class: the ground-truth segments on one row, then the top predictions one per row (shade = score).
    `ground_truth` None (a video without annotations, as predict sees it): prediction rows only."""
    preds = [p for p in predictions if p["score"] >= min_score]
    present = {g["label"] for g in ground_truth or []} | {p["label"] for p in preds}
    classes = [c for c in class_names if c in present] or class_names[:1]
    rows = []  # (label text, class name, list of (start, end, score or None))
    for name in classes:
        if ground_truth is not None:
            rows.append((f"{name}: ground truth", name,
                         [(*g["segment"], None) for g in ground_truth if g["label"] == name]))
        top = sorted((p for p in preds if p["label"] == name), key=lambda p: -p["score"])[:max_per_class]
        for rank, p in enumerate(top, 1):
            rows.append((f"{name} #{rank}" if ground_truth is None else f"pred #{rank}", name,
                         [(*p["segment"], p["score"])]))
    if not rows:
        rows.append((f"no detection >= {min_score}", classes[0], []))
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
    what = "ground truth (outlined) and " if ground_truth is not None else ""
    ax.set_title(f"{video_id}: {what}top-{max_per_class} predictions per class (score >= {min_score}, shade = score)",
                 fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
