"""The trainer of task `det` (object detection, RT-DETR): the model gets its pixels and labels only, evaluation
post-processes each batch into the top detections per frame (the image processor's rule, boxes in the frame's pixels
as floats) and gathers them with the frames' ids across processes; `compute_metrics` checks every evaluated frame came
once and computes COCO mAP through pycocotools on the whole gathered set (hf_vtrain.metrics.det), empty frames
included. The final outputs: the detections (COCO results JSON) and the ground truth they were scored against, the
precision-recall curve and frames drawn with their predicted and true boxes.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
import torch

from ..data.common import write_json_atomic
from ..metrics.det import evaluate_detections
from ..models.rt_detr import detections_from_outputs
from .base import VTrainer

logger = logging.getLogger(__name__)

MODEL_INPUTS = ("pixel_values", "labels")


def coco_results(detections: np.ndarray, image_ids: np.ndarray, min_score: float = 0.0) -> list[dict]:
    """COCO results ({image_id, category_id, bbox [x, y, w, h] floats, score}) from (N, k, 6) detections."""
    out = []
    for image_id, rows in zip(image_ids.tolist(), detections):
        for x1, y1, x2, y2, score, cls in rows.tolist():
            if score > min_score:
                out.append({"image_id": int(image_id), "category_id": int(cls) + 1,
                            "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score})
    return out


class DetTrainer(VTrainer):
    def __init__(self, *args, corpus: Any, max_detections: int = 100, frames_to_draw: int = 8,
                 map_during_training: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.corpus = corpus
        self.max_detections = max_detections
        self.map_during_training = map_during_training
        self.frames_to_draw = frames_to_draw
        self.compute_metrics = self._compute_det_metrics
        self.last_result = None
        self.last_detections: list[dict] | None = None

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        return super().compute_loss(model, {k: inputs[k] for k in MODEL_INPUTS}, return_outputs, num_items_in_batch)

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            outputs = model(**{k: inputs[k] for k in MODEL_INPUTS})
        loss = outputs.loss.detach().mean() if outputs.loss is not None else None
        if prediction_loss_only or (self.is_in_train and not self.map_during_training):
            return loss, None, None
        detections = detections_from_outputs(outputs.logits, outputs.pred_boxes, inputs["orig_size"],
                                             self.max_detections)
        return loss, detections, inputs["image_id"]

    def evaluate(self, *args, **kwargs):
        metrics = super().evaluate(*args, **kwargs)
        if self.is_in_train and not self.map_during_training:
            self.last_eval = None  # a loss-only evaluation: the final one after training computes mAP
        return metrics

    def _compute_det_metrics(self, eval_pred) -> dict[str, float]:
        detections = np.asarray(eval_pred.predictions, dtype=np.float64)  # (N, k, 6)
        image_ids = np.asarray(eval_pred.label_ids).astype(np.int64).reshape(-1)
        records = self.corpus.eval_records
        if sorted(image_ids.tolist()) != list(range(1, len(records) + 1)):
            raise RuntimeError(f"evaluation gathered {len(image_ids)} frames ({len(set(image_ids.tolist()))} "
                               f"distinct); the evaluation split has {len(records)}: frames were dropped or counted "
                               f"twice")
        results = coco_results(detections, image_ids)
        result = evaluate_detections(self.corpus.coco_ground_truth(), results, self.max_detections)
        logger.info("detection at step %d:\n%s", self.state.global_step, result.table())
        self.last_result, self.last_detections = result, results
        return result.as_dict()

    def write_final_outputs(self, output_dir: str) -> None:
        """detections.json (COCO results) and ground_truth.json (`python -m hf_vtrain.metrics.det ground_truth.json
        detections.json` scores them), the metric table, the precision-recall curve and drawn frames."""
        from ..plotting.det import draw_frames, plot_precision_recall

        if self.last_result is None:
            return
        write_json_atomic(os.path.join(output_dir, "detections.json"), self.last_detections)
        write_json_atomic(os.path.join(output_dir, "ground_truth.json"), self.corpus.coco_ground_truth())
        table = self.last_result.table()
        with open(os.path.join(output_dir, "eval_detection_table.txt"), "w") as handle:
            handle.write(table + "\n")
        print(f"\ndetection (COCO, pycocotools), {self.last_result.num_images} frames:\n{table}\n")
        plot_precision_recall(self.last_result, os.path.join(output_dir, "precision_recall.png"),
                              title=os.path.basename(os.path.abspath(output_dir)))
        draw_frames(self.corpus.eval_records, self.last_detections, os.path.join(output_dir, "frames"),
                    self.corpus.class_names, count=self.frames_to_draw)
