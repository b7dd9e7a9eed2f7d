"""Pictures of an anomaly-detection evaluation: one test video's anomaly score over time against its ground-truth
anomalous spans, the figure every video anomaly detection paper shows."""

from __future__ import annotations

import os
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..metrics.vad import SNIPPET_FRAMES  # noqa: E402


def plot_anomaly_scores(
    video: str,
    snippet_scores: Sequence[float],
    num_frames: int,
    segments: Sequence[tuple[int, int]] | None,
    path: str,
    class_name: str | None = None,
    fps: float | None = None,
    snippet: int = SNIPPET_FRAMES,
    threshold: float | None = None,
    label: str = "anomaly score",
    others: dict | None = None,
) -> str:
    """Score per frame (each snippet score held over its `snippet` frames) with the ground-truth anomalous spans
    (end-exclusive frame numbers) shaded; frames past the last whole snippet, which carry no score and no label in
    the metric, are greyed. A second x axis gives seconds when `fps` is known. `segments` None: a video without
    annotation (predict). `others` {name: snippet scores}: more scorers drawn beside it (the head stage's prompts).
    Returns `path`."""
    scores = np.asarray(snippet_scores, dtype=np.float64).reshape(-1)
    scored = len(scores) * snippet
    fig, ax = plt.subplots(figsize=(11, 3.4))
    for i, (start, end) in enumerate(segments or []):
        ax.axvspan(start, end, color="tab:red", alpha=0.22, lw=0, label="ground-truth anomaly" if i == 0 else None)
    if num_frames > scored:
        ax.axvspan(scored, num_frames, color="0.85", alpha=0.6, lw=0, label="not scored (partial snippet)")
    edges = np.arange(len(scores) + 1) * snippet
    ax.stairs(scores, edges, baseline=None, color="tab:blue", lw=1.8, label=label)
    for (name, other), colour in zip((others or {}).items(), ("tab:orange", "tab:green", "tab:purple")):
        other = np.asarray(other, dtype=np.float64).reshape(-1)
        ax.stairs(other, np.arange(len(other) + 1) * snippet, baseline=None, color=colour, lw=1.2, ls="--",
                  label=name)
    if threshold is not None:
        ax.axhline(threshold, color="0.4", ls="--", lw=0.8)
    ax.set_xlim(0, max(num_frames, scored))
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("frame")
    ax.set_ylabel("anomaly score")
    kind = ("no annotation" if segments is None else "normal" if not segments
            else f"{len(segments)} anomalous span(s)")
    fig.suptitle(f"{video}" + (f" ({class_name})" if class_name else "") + f": {kind}, {num_frames} frames",
                 fontsize=11)
    if fps:
        top = ax.secondary_xaxis("top", functions=(lambda f: f / fps, lambda s: s * fps))
        top.set_xlabel("seconds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


__all__ = ["plot_anomaly_scores"]
