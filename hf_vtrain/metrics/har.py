"""Action recognition metrics as MMAction2 defines them: top-k accuracy and mean class accuracy over the whole
(gathered) evaluation set, and the confusion matrix.
Python: `evaluate_recognition(labels, scores)`; shell: `python -m hf_vtrain.metrics.har LABELS.json PREDICTIONS.json`.

Definitions (MMAction2 `mmaction/evaluation/functional/accuracy.py`):
- top-k accuracy: the fraction of samples whose label is among the k highest scores.
- mean class accuracy: the top-1 prediction (argmax) of every sample; over the classes that are labelled OR
  predicted, each class's hits / its labelled samples, a class predicted but never labelled counting 0; the mean of
  those. A class neither labelled nor predicted is not in the mean.
- Ties in score: MMAction2 ranks with numpy's default (unstable) argsort, so tied classes fall in an order numpy does
  not promise. Here the lower class index ranks first, for top-k as for the argmax (numpy's argmax already does).
Values are fractions in [0, 1] here; `as_dict()` reports percent, as the other metric modules.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..exit_codes import BAD_INPUT


def _as_arrays(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels)
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or labels.ndim != 1 or len(labels) != len(scores):
        raise ValueError(f"scores must be (samples, classes) and labels (samples,); got {scores.shape} and "
                         f"{labels.shape}")
    if len(labels) == 0:
        raise ValueError("no samples to evaluate")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers, got {labels.dtype}")
    if labels.min() < 0 or labels.max() >= scores.shape[1]:
        raise ValueError(f"labels must be in [0, {scores.shape[1]}) (one score per class); got {labels.min()}.."
                         f"{labels.max()}")
    if not np.isfinite(scores).all():
        raise ValueError("scores hold NaN or inf")
    return labels.astype(np.int64), scores


def ranked_classes(scores: np.ndarray) -> np.ndarray:
    """Classes by decreasing score per sample; ties: the lower class index first."""
    return np.argsort(-np.asarray(scores, dtype=np.float64), axis=1, kind="stable")


def top_k_accuracy(labels, scores, ks: Sequence[int] = (1, 5)) -> dict[int, float]:
    labels, scores = _as_arrays(labels, scores)
    return _top_k(labels, ranked_classes(scores), ks)


def _top_k(labels: np.ndarray, ranked: np.ndarray, ks) -> dict[int, float]:
    return {k: float((ranked[:, :k] == labels[:, None]).any(axis=1).mean()) for k in ks}


def confusion_matrix(labels, predicted, num_classes: int) -> np.ndarray:
    """(num_classes, num_classes) counts: row = label, column = prediction."""
    labels, predicted = np.asarray(labels, dtype=np.int64), np.asarray(predicted, dtype=np.int64)
    return np.bincount(labels * num_classes + predicted, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes)


def mean_class_accuracy(labels, scores) -> float:
    labels, scores = _as_arrays(labels, scores)
    return _mean_class(confusion_matrix(labels, ranked_classes(scores)[:, 0], scores.shape[1]))


def _mean_class(matrix: np.ndarray) -> float:
    present = (matrix.sum(axis=0) + matrix.sum(axis=1)) > 0  # labelled or predicted
    labelled = matrix.sum(axis=1)
    hits = np.diag(matrix)
    per_class = np.where(labelled > 0, hits / np.maximum(labelled, 1), 0.0)
    return float(per_class[present].mean())


@dataclass
class HARMetricResult:
    top1: float
    top5: float
    mean_class_accuracy: float
    num_samples: int
    num_classes: int
    confusion: np.ndarray  # row = label, column = top-1 prediction

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        return {f"{prefix}top1_acc": 100 * self.top1, f"{prefix}top5_acc": 100 * self.top5,
                f"{prefix}mean_class_acc": 100 * self.mean_class_accuracy}

    def table(self) -> str:
        return "\n".join([
            f"{'samples':<16}{self.num_samples:>10}",
            f"{'top-1':<16}{100 * self.top1:>10.2f}",
            f"{'top-5':<16}{100 * self.top5:>10.2f}",
            f"{'mean class acc':<16}{100 * self.mean_class_accuracy:>10.2f}",
        ])


def evaluate_recognition(labels, scores) -> HARMetricResult:
    """Top-1, top-5 (top-k with k = min(5, classes)) and mean class accuracy of (samples, classes) scores."""
    labels, scores = _as_arrays(labels, scores)
    k5 = min(5, scores.shape[1])
    ranked = ranked_classes(scores)  # one ranking for every figure
    top = _top_k(labels, ranked, (1, k5))
    matrix = confusion_matrix(labels, ranked[:, 0], scores.shape[1])
    return HARMetricResult(top1=top[1], top5=top[k5], mean_class_accuracy=_mean_class(matrix),
                           num_samples=len(labels), num_classes=scores.shape[1], confusion=matrix)


# ----------------------------------------------------------------------------------------------- files


def _read_json(path: str) -> object:
    with open(path, encoding="utf-8") as handle:
        try:
            return json.load(handle)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err.msg} at line {err.lineno} column {err.colno})") from None


def load_labels(path: str | os.PathLike) -> dict[str, int]:
    """{sample: label} from JSON ({sample: label} or {"labels": {...}}) or text lines `sample label`."""
    src = os.fspath(path)
    if src.endswith(".json"):
        data = _read_json(src)
        data = data.get("labels", data) if isinstance(data, dict) else data
        if not isinstance(data, dict):
            raise ValueError(f"{src}: expected an object {{sample: label}}")
        items = list(data.items())
    else:
        items = []
        with open(src, encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                parts = line.split()
                if not parts:
                    continue
                if len(parts) != 2:
                    raise ValueError(f"{src} line {number}: expected 'sample label', got {line.strip()!r}")
                items.append((parts[0], parts[1]))
    labels = {}
    for key, value in items:
        try:
            label = int(value)
        except (TypeError, ValueError):
            raise ValueError(f"{src}: sample {key!r}: label {value!r} is not an integer") from None
        if isinstance(value, bool) or label != float(value) or label < 0:
            raise ValueError(f"{src}: sample {key!r}: label {value!r} is not a class index")
        labels[str(key)] = label
    return labels


def load_scores(path: str | os.PathLike) -> dict[str, list[float]]:
    """{sample: [score per class]} from JSON ({sample: scores} or {"scores": {...}})."""
    src = os.fspath(path)
    data = _read_json(src)
    if isinstance(data, dict) and isinstance(data.get("scores"), dict):
        data = data["scores"]
    if not isinstance(data, dict):
        raise ValueError(f"{src}: expected an object {{sample: [score per class]}}")
    widths = set()
    for key, value in data.items():
        if not isinstance(value, list) or not value or not all(
                isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in value):
            raise ValueError(f"{src}: sample {key!r}: scores must be a non-empty list of finite numbers")
        widths.add(len(value))
    if len(widths) > 1:
        raise ValueError(f"{src}: samples have different numbers of class scores {sorted(widths)}")
    return data


def evaluate_files(labels_path, scores_path) -> HARMetricResult:
    labels, scores = load_labels(labels_path), load_scores(scores_path)
    missing = [k for k in labels if k not in scores]
    extra = [k for k in scores if k not in labels]
    if missing or extra:
        raise ValueError(f"{scores_path}: {len(missing)} labelled samples have no scores (e.g. {missing[:3]}), "
                         f"{len(extra)} scored samples have no label (e.g. {extra[:3]})")
    keys = list(labels)
    return evaluate_recognition([labels[k] for k in keys], [scores[k] for k in keys])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hf_vtrain.metrics.har",
        description="Top-1, top-5 and mean class accuracy (MMAction2's definitions) of per-class scores.",
    )
    parser.add_argument("labels", help="JSON {sample: label} (or {'labels': {...}}), or text lines 'sample label'")
    parser.add_argument("scores", help="JSON {sample: [score per class]} (or {'scores': {...}})")
    parser.add_argument("--json", dest="json_out", help="also write the metrics (percent) here")
    args = parser.parse_args(argv)
    try:
        result = evaluate_files(args.labels, args.scores)
        print(result.table())
        if args.json_out:
            with open(args.json_out, "w", encoding="utf-8") as handle:
                json.dump({**result.as_dict(), "num_samples": result.num_samples}, handle, indent=2)
    except OSError as err:
        print(f"error: {err.filename or ''}: {err.strerror or err}", file=sys.stderr)
        return BAD_INPUT
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return BAD_INPUT
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["HARMetricResult", "confusion_matrix", "evaluate_recognition", "mean_class_accuracy", "top_k_accuracy"]
