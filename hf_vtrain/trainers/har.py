"""The trainer of task `har` (RGB + pose action recognition): clips flattened for the model, multi-clip testing,
and MMAction2's top-1 / top-5 / mean class accuracy of the fused prediction and of each stream.

Evaluation: `prediction_step` runs every clip of a test sample and combines them per the recipe
(`fuse_heads`: mean of the logits, or of each stream's softmax probabilities), returning (batch, heads, classes) scores
(heads: the fused prediction, then each stream the model has) and (label, sample index) as labels, so the Trainer
gathers them across processes; `compute_metrics` checks every sample came once and computes the metrics on the
whole gathered set.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
import torch

from ..data.common import write_json_atomic
from ..metrics.har import evaluate_recognition
from .base import VTrainer

logger = logging.getLogger(__name__)

STREAM_OUTPUTS = (("rgb", "rgb_logits"), ("pose", "pose_logits"))


def flatten_clips(inputs: dict) -> tuple[dict, int]:
    """(B, K, ...) clip tensors to (B*K, ...) and labels repeated per clip; returns the inputs and K."""
    clips = None
    out = {}
    for key in ("pixel_values", "heatmaps"):
        if key in inputs:
            value = inputs[key]
            clips = value.shape[1]
            out[key] = value.flatten(0, 1)
    if clips is None:
        raise ValueError("a har batch needs pixel_values or heatmaps")
    if "labels" in inputs:
        out["labels"] = inputs["labels"].repeat_interleave(clips)
    return out, clips


def fuse_clips(logits: torch.Tensor, clips: int, rule: str) -> torch.Tensor:
    """(B * K, C) logits of the K clips of each sample to (B, C): their mean (`mean_logits`, EPAM-Net) or the mean of
    their softmax probabilities (`mean_softmax`, RGBPoseConv3D)."""
    logits = logits.float().view(-1, clips, logits.shape[-1])
    return logits.softmax(-1).mean(1) if rule == "mean_softmax" else logits.mean(1)


def fuse_heads(outputs, clips: int, rule: str) -> list[tuple[str, torch.Tensor]]:
    """The (B, C) scores of each head from the model's outputs for B x `clips` clips: ("fused", ...) first, then each
    stream when the model has two. With `mean_logits` the fused head is the clips' mean of the summed logits (EPAM-Net);
    with `mean_softmax` each stream's probabilities are averaged over the clips and the fused head is the mean of the
    two streams' (MMAction2's RGBPoseConv3D evaluation: `RGBPose_1:1`, the same ranking as its sum)."""
    streams = [(name, fuse_clips(getattr(outputs, key), clips, rule)) for name, key in STREAM_OUTPUTS
               if getattr(outputs, key, None) is not None]
    if len(streams) > 1 and rule == "mean_softmax":
        fused = sum(scores for _, scores in streams) / len(streams)
    else:
        fused = fuse_clips(outputs.logits, clips, rule)
    return [("fused", fused)] + (streams if len(streams) > 1 else [])


class HARTrainer(VTrainer):
    def __init__(self, *args, corpus: Any, test_clip_fusion: str = "mean_logits", **kwargs):
        super().__init__(*args, **kwargs)
        self.corpus = corpus
        self.test_clip_fusion = test_clip_fusion
        self.compute_metrics = self._compute_har_metrics
        self.last_scores: dict | None = None
        self.last_metric_result = None
        self.last_stream_results: dict = {}

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        flat, _ = flatten_clips(inputs)
        return super().compute_loss(model, flat, return_outputs, num_items_in_batch)

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        flat, clips = flatten_clips(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            outputs = model(**flat)
        loss = outputs.loss.detach().mean() if outputs.loss is not None else None
        if prediction_loss_only:
            return loss, None, None
        scores = [head for _, head in fuse_heads(outputs, clips, self.test_clip_fusion)]
        labels = torch.stack([inputs["labels"], inputs["sample_index"]], dim=1)
        return loss, torch.stack(scores, dim=1), labels

    def _compute_har_metrics(self, eval_pred) -> dict[str, float]:
        scores = np.asarray(eval_pred.predictions, dtype=np.float64)  # (N, heads, C)
        meta = np.asarray(eval_pred.label_ids).astype(np.int64).reshape(-1, 2)
        samples = self.corpus.eval_samples
        seen = sorted(meta[:, 1].tolist())
        if seen != list(range(len(samples))):
            raise RuntimeError(f"evaluation gathered {len(seen)} samples ({len(set(seen))} distinct); the validation "
                               f"split has {len(samples)}: samples were dropped or counted twice")
        order = np.argsort(meta[:, 1])
        scores, labels = scores[order], meta[order, 0]
        model = self.accelerator.unwrap_model(self.model)
        names = ["fused"] + ([name for name, _ in STREAM_OUTPUTS] if model.config.streams == "rgb+pose" else [])
        metrics, results = {}, {}
        for h, name in enumerate(names[: scores.shape[1]]):
            result = evaluate_recognition(labels, scores[:, h])
            results[name] = result
            metrics.update(result.as_dict("" if name == "fused" else f"{name}_"))
        fused = results["fused"]
        logger.info("recognition at step %d:\n%s", self.state.global_step, fused.table())
        payload = {"scores": {name: s.tolist() for name, s in zip(samples.frame_dirs, scores[:, 0])},
                   "labels": {name: int(label) for name, label in zip(samples.frame_dirs, samples.labels)}}
        if self.args.should_save:
            write_json_atomic(os.path.join(self.args.output_dir, f"scores_step{self.state.global_step}.json"),
                              payload)
        self.last_scores, self.last_metric_result, self.last_stream_results = payload, fused, results
        return metrics

    def write_final_outputs(self, output_dir: str) -> None:
        """scores.json and labels.json (`python -m hf_vtrain.metrics.har labels.json scores.json` reads them), the
        accuracy table per head and the confusion matrix PNG."""
        from ..plotting.har import plot_confusion_matrix

        if self.last_scores is None:
            return
        write_json_atomic(os.path.join(output_dir, "scores.json"), {"scores": self.last_scores["scores"]})
        write_json_atomic(os.path.join(output_dir, "labels.json"), {"labels": self.last_scores["labels"]})
        lines = [f"{name}:\n{result.table()}" for name, result in self.last_stream_results.items()]
        table = "\n".join(lines)
        with open(os.path.join(output_dir, "eval_accuracy_table.txt"), "w") as handle:
            handle.write(table + "\n")
        print(f"\nrecognition (MMAction2's definitions), {self.last_metric_result.num_samples} samples:\n{table}\n")
        plot_confusion_matrix(self.last_metric_result.confusion, list(self.corpus.class_names),
                              os.path.join(output_dir, "confusion_matrix.png"),
                              title=os.path.basename(os.path.abspath(output_dir)))
