"""The trainer of task `tad` (temporal action detection, AdaTAD): sliding-window evaluation and OpenTAD's mAP.

Evaluation decodes each sliding window to a fixed-size detection tensor in `prediction_step` (so the Trainer can
gather them across processes, each window exactly once), then merges windows per video, runs soft-NMS and computes
OpenTAD's mAP in `compute_metrics`. The decoded windows are saved too (`raw_detections_step{N}.npz`), so
post-processing can be re-tuned and checkpoints ensembled without running the model again (scripts/).
LoRA on the backbone (peft) comes from the `lora_*` recipe keys; a LoRA run ends with a peft adapter folder and a
merged plain model next to the full weights (`hf_vtrain.models.adatad.lora_adatad`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from typing import Any

import numpy as np
import torch

from ..data.common import write_json_atomic
from ..metrics.tad import evaluate_detections
from ..models.adatad.postprocessing_adatad import (
    RawDetections,
    decode_window_detections,
    merge_raw_detections,
    postprocess_settings,
    save_raw_detections,
    to_opentad_results,
)
from .base import EMA_DIR, VTrainer
from .distributed import is_zero3_partitioned, outside_zero_init

logger = logging.getLogger(__name__)


class TADTrainer(VTrainer):
    """Adds window decoding in `prediction_step` and video-level mAP in `compute_metrics`."""

    def __init__(self, *args, corpus: Any, lora_base_model: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.corpus = corpus
        self.lora_base_model = lora_base_model
        self.compute_metrics = self._compute_tad_metrics
        # Read once from the raw table: a column of a dataset with set_transform runs the transform on every row,
        # i.e. decodes and augments every evaluation window.
        table = corpus.eval_dataset.with_format(None)
        self._eval_windows = sorted(zip(table["video_index"], table["window_start"]))
        self.last_predictions_path: str | None = None
        self.last_raw_detections_path: str | None = None
        self.last_raw_detections: Any = None

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            outputs = model(**inputs)
        loss = outputs.loss.detach().mean() if outputs.loss is not None else None
        if prediction_loss_only:
            return loss, None, None
        config = self.accelerator.unwrap_model(model).config
        detections = decode_window_detections(outputs, config)
        meta = torch.stack([inputs["video_index"], inputs["window_start"]], dim=1)
        return loss, detections.float(), meta

    def _compute_tad_metrics(self, eval_pred) -> dict[str, float]:
        detections = np.asarray(eval_pred.predictions)
        meta = np.asarray(eval_pred.label_ids).astype(np.int64)
        # Every window exactly once, whatever the number of processes (gather_for_metrics drops the padding).
        seen = sorted(map(tuple, meta.tolist()))
        expected = self._eval_windows
        if seen != expected:
            raise RuntimeError(f"evaluation gathered {len(seen)} windows ({len(set(seen))} distinct); the eval set has "
                               f"{len(expected)}: windows were dropped or counted twice")
        config = self.model.config
        # Post-processing runs on the raw windows exactly as scripts/tune_postprocess.py re-runs it from the file.
        raw = RawDetections(
            detections=detections.astype(np.float32),
            meta=meta,
            videos=[{k: video[k] for k in ("video_id", "fps", "sample_stride", "duration")}
                    for video in self.corpus.videos],
            class_names=list(self.corpus.class_names),
            postprocess=postprocess_settings(config),
            ground_truth=self.corpus.ground_truth,
            step=self.state.global_step,
        )
        merged = merge_raw_detections(raw)
        results = to_opentad_results(merged, config.id2label)
        os.makedirs(self.args.output_dir, exist_ok=True)
        path = os.path.join(self.args.output_dir, f"predictions_step{self.state.global_step}.json")
        raw_path = os.path.join(self.args.output_dir, f"raw_detections_step{self.state.global_step}.npz")
        if self.args.should_save:
            write_json_atomic(path, results)
            save_raw_detections(raw_path, raw)
        self.last_predictions_path = path
        self.last_raw_detections_path = raw_path
        self.last_raw_detections = raw
        # corpus.ground_truth holds exactly the evaluation subset (ignored labels removed)
        result = evaluate_detections(self.corpus.ground_truth, results, subset=None,
                                     class_names=self.corpus.class_names)
        logger.info("mAP at step %d:\n%s", self.state.global_step, result.table())
        self.last_metric_result = result
        return result.as_dict()

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False):
        """The final save (to output_dir, not a checkpoint) of a LoRA model also writes the peft adapter folder and
        the merged plain model, from the weights the evaluation uses (EMA when eval_with_ema)."""
        super().save_model(output_dir, _internal_call)
        target = output_dir or self.args.output_dir
        model = self.accelerator.unwrap_model(self.model)
        final = os.path.abspath(target) == os.path.abspath(self.args.output_dir)
        if not (final and self.args.should_save and getattr(model.config, "lora_r", 0) > 0):
            return
        from ..models.adatad.lora_adatad import export_lora

        use_ema = self.ema is not None and self.args.eval_with_ema
        if any(is_zero3_partitioned(p) for p in model.parameters()):
            # ZeRO-3: this process holds parameter partitions only; export from the whole weights just written
            with outside_zero_init():
                whole = type(model).from_pretrained(os.path.join(target, EMA_DIR) if use_ema else target)
            paths = export_lora(whole, target, self.lora_base_model)
        else:
            with (self.ema.swapped(model) if use_ema else contextlib.nullcontext()):
                paths = export_lora(model, target, self.lora_base_model)
        logger.info("LoRA exports (%s weights): %s", "EMA" if use_ema else "raw", paths)

    def write_final_outputs(self, output_dir: str) -> None:
        """predictions.json (OpenTAD format), raw_detections.npz + ground_truth.json (for scripts/tune_postprocess.py
        and scripts/ensemble_detections.py), the mAP table, and timelines for the first videos."""
        from ..plotting.tad import plot_detection_timeline

        if self.last_predictions_path is None or not os.path.isfile(self.last_predictions_path):
            return
        shutil.copyfile(self.last_predictions_path, os.path.join(output_dir, "predictions.json"))
        with open(self.last_predictions_path) as handle:
            results = json.load(handle)  # for the timelines
        if self.last_raw_detections_path and os.path.isfile(self.last_raw_detections_path):
            shutil.copyfile(self.last_raw_detections_path, os.path.join(output_dir, "raw_detections.npz"))
        write_json_atomic(os.path.join(output_dir, "ground_truth.json"), self.corpus.ground_truth)
        table = self.last_metric_result.table()
        with open(os.path.join(output_dir, "eval_map_table.txt"), "w") as handle:
            handle.write(table + "\n")
        print(f"\nmAP (tIoU 0.3-0.7), {len(self.corpus.videos)} videos:\n{table}\n")
        database = self.corpus.ground_truth["database"]
        drawn = self.corpus.videos[: self.args.plot_eval_videos]
        print(f"timelines/: {len(drawn)} of {len(self.corpus.videos)} evaluation videos, the first in the annotation "
              f"file (plot_eval_videos: {self.args.plot_eval_videos})")
        for video in drawn:
            vid = video["video_id"]
            plot_detection_timeline(
                vid, video["duration"], database.get(vid, {}).get("annotations", []),
                results["results"].get(vid, []), self.corpus.class_names,
                os.path.join(output_dir, "timelines", f"{vid}.png"),
            )
