"""Temporal action detection: AdaTAD on THUMOS-14 format corpora.

Evaluation decodes each sliding window to a fixed-size detection tensor in `prediction_step` (so the Trainer can
gather them across processes, each window exactly once), then merges windows per video, runs soft-NMS and computes
OpenTAD's mAP in `compute_metrics`.
"""

from __future__ import annotations

import json
import logging
import os
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..data.thumos14 import TADCorpus, TADDataArguments, collate_tad, load_thumos14
from ..metrics.tad import evaluate_detections
from ..models.adatad import AdaTADConfig, AdaTADForActionDetection
from ..postprocess import decode_window_detections, merge_video_detections, to_opentad_results
from .base import VTrainer, VTrainingArguments

logger = logging.getLogger(__name__)


@dataclass
class TADModelArguments:
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "A saved AdaTAD model (folder or hub id) to start from."}
    )
    backbone_name_or_path: str | None = field(
        default=None, metadata={"help": "A Hugging Face VideoMAE checkpoint (hub id or folder) for the backbone."}
    )
    create_random_backbone: bool = field(
        default=False,
        metadata={"help": "Demo/tests only: when backbone_name_or_path does not exist, first write a randomly "
                          "initialised VideoMAE (backbone_config_overrides) there with save_pretrained, then load "
                          "it through the same path as a real checkpoint."},
    )
    backbone_config_overrides: dict = field(
        default_factory=dict, metadata={"help": "VideoMAEConfig fields to override (e.g. drop_path_rate)."}
    )
    model_config_overrides: dict = field(
        default_factory=dict, metadata={"help": "AdaTADConfig fields (detector sizes, post-processing, ...)."}
    )


def _write_random_backbone(path: str, overrides: dict) -> None:
    from transformers import VideoMAEConfig, VideoMAEModel

    tmp = path.rstrip("/") + f".tmp{os.getpid()}"
    # Its own seed, so the global RNG (and so the adapters' and detector's init) is the same whether or not this
    # run had to write the backbone.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        VideoMAEModel(VideoMAEConfig(**overrides)).save_pretrained(tmp)
    os.replace(tmp, path)


def build_model(model_args: TADModelArguments, data_args: TADDataArguments, corpus: TADCorpus):
    id2label = dict(enumerate(corpus.class_names))
    backbone_overrides = {
        "image_size": data_args.crop_size,
        **model_args.backbone_config_overrides,
    }
    config_overrides = {
        "window_size": data_args.window_size,
        "id2label": id2label,
        "label2id": {v: k for k, v in id2label.items()},
        **model_args.model_config_overrides,
    }
    if model_args.model_name_or_path:
        model = AdaTADForActionDetection.from_pretrained(model_args.model_name_or_path)
        if model.config.id2label != id2label:
            raise ValueError(
                f"{model_args.model_name_or_path}: model classes {list(model.config.id2label.values())} differ from "
                f"the corpus class map {corpus.class_names}"
            )
        return model
    if not model_args.backbone_name_or_path:
        raise ValueError("set backbone_name_or_path (a VideoMAE checkpoint) or model_name_or_path (an AdaTAD model)")
    path = model_args.backbone_name_or_path
    if model_args.create_random_backbone and not os.path.exists(path):
        logger.warning("writing a RANDOMLY INITIALISED VideoMAE to %s (create_random_backbone)", path)
        _write_random_backbone(path, backbone_overrides)
    return AdaTADForActionDetection.from_videomae_pretrained(
        path, backbone_config_overrides=backbone_overrides, **config_overrides
    )


class TADTrainer(VTrainer):
    """Adds window decoding in `prediction_step` and video-level mAP in `compute_metrics`."""

    def __init__(self, *args, corpus: TADCorpus, **kwargs):
        super().__init__(*args, **kwargs)
        self.corpus = corpus
        self.compute_metrics = self._compute_tad_metrics
        self.last_predictions_path: str | None = None
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
        per_video = defaultdict(list)
        for dets, (video_index, window_start) in zip(detections, meta):
            per_video[int(video_index)].append((dets, int(window_start)))
        # Every window exactly once, whatever the number of processes (gather_for_metrics drops the padding).
        seen = sorted(map(tuple, meta.tolist()))
        expected = sorted(zip(self.corpus.eval_dataset["video_index"], self.corpus.eval_dataset["window_start"]))
        if seen != expected:
            raise RuntimeError(f"evaluation gathered {len(seen)} windows ({len(set(seen))} distinct); the eval set has "
                               f"{len(expected)}: windows were dropped or counted twice")
        config = self.model.config
        merged = {}
        for index, video in enumerate(self.corpus.videos):
            windows = per_video.get(index, [])
            merged[video["video_id"]] = merge_video_detections(
                windows, video["fps"], video["sample_stride"], video["duration"], config
            )
        results = to_opentad_results(merged, config.id2label)
        os.makedirs(self.args.output_dir, exist_ok=True)
        path = os.path.join(self.args.output_dir, f"predictions_step{self.state.global_step}.json")
        if self.args.should_save:
            with open(path + ".tmp", "w") as handle:
                json.dump(results, handle)
            os.replace(path + ".tmp", path)
        self.last_predictions_path = path
        self.last_raw_detections = (detections, meta)
        # corpus.ground_truth holds exactly the evaluation subset (ignored labels removed)
        result = evaluate_detections(self.corpus.ground_truth, results, subset=None,
                                     class_names=self.corpus.class_names)
        logger.info("mAP at step %d:\n%s", self.state.global_step, result.table())
        self.last_metric_result = result
        return result.as_dict()

    def write_final_outputs(self, output_dir: str) -> None:
        """predictions.json (OpenTAD format), the mAP table, and timelines for the first videos."""
        from ..plotting import plot_detection_timeline

        if self.last_predictions_path is None or not os.path.isfile(self.last_predictions_path):
            return
        final = os.path.join(output_dir, "predictions.json")
        with open(self.last_predictions_path) as handle:
            results = json.load(handle)
        with open(final, "w") as handle:
            json.dump(results, handle)
        table = self.last_metric_result.table()
        with open(os.path.join(output_dir, "eval_map_table.txt"), "w") as handle:
            handle.write(table + "\n")
        print(f"\nmAP (tIoU 0.3-0.7), {len(self.corpus.videos)} videos:\n{table}\n")
        database = self.corpus.ground_truth["database"]
        for video in self.corpus.videos[: self.args.plot_eval_videos]:
            vid = video["video_id"]
            plot_detection_timeline(
                vid, video["duration"], database.get(vid, {}).get("annotations", []),
                results["results"].get(vid, []), self.corpus.class_names,
                os.path.join(output_dir, "timelines", f"{vid}.png"),
            )


@dataclass
class TADTaskRun:
    model: Any
    train_dataset: Any
    eval_dataset: Any
    data_collator: Any
    trainer_kwargs: dict
    epoch_hooks: list
    corpus: TADCorpus


def setup_tad(model_args: TADModelArguments, data_args: TADDataArguments, training_args: VTrainingArguments):
    # The main process writes what is missing (synthetic corpus, demo backbone) before the others read it.
    with training_args.main_process_first(desc="corpus and model"):
        corpus = load_thumos14(data_args, seed=training_args.seed)
        logger.info("corpus: %s", corpus.report.format())
        model = build_model(model_args, data_args, corpus)
    return TADTaskRun(
        model=model,
        train_dataset=corpus.train_dataset,
        eval_dataset=corpus.eval_dataset,
        data_collator=collate_tad,
        trainer_kwargs={"corpus": corpus},
        epoch_hooks=[corpus.set_epoch],
        corpus=corpus,
    )
