"""Temporal action detection: AdaTAD on THUMOS-14 format corpora.

Evaluation decodes each sliding window to a fixed-size detection tensor in `prediction_step` (so the Trainer can
gather them across processes, each window exactly once), then merges windows per video, runs soft-NMS and computes
OpenTAD's mAP in `compute_metrics`. The decoded windows are saved too (`raw_detections_step{N}.npz`), so
post-processing can be re-tuned and checkpoints ensembled without running the model again (scripts/).
LoRA on the backbone (peft) comes from the `lora_*` recipe keys; a LoRA run ends with a peft adapter folder and a
merged plain model next to the full weights (`hf_vtrain.lora`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..data.thumos14 import TADCorpus, TADDataArguments, collate_tad, load_thumos14
from ..metrics.tad import evaluate_detections
from ..models.adatad import AdaTADForActionDetection
from ..postprocess import (
    RawDetections,
    decode_window_detections,
    merge_raw_detections,
    postprocess_settings,
    save_raw_detections,
    to_opentad_results,
)
from ..parser import RecipeError
from ..pretrained_sources import check_pretrained_source, loading
from ..tasks import TaskRun
from .base import VTrainer, VTrainingArguments, check_config_overrides, config_errors, ensure_random_checkpoint
from .base import write_json_atomic

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
        default_factory=dict,
        metadata={"help": "AdaTADConfig fields (detector sizes, post-processing, use_adapters, drop_path_rate: "
                          "stochastic depth of the ViT blocks, ...)."},
    )
    lora_r: int = field(
        default=0,
        metadata={"help": "LoRA rank on the VideoMAE blocks (peft); 0 = no LoRA. Recorded in the model config. "
                          "Freezing stays with param_groups: put a group on 'lora_' BEFORE the frozen backbone group."},
    )
    lora_alpha: float = field(default=16.0, metadata={"help": "LoRA alpha: the update is (alpha / r) * B @ A."})
    lora_dropout: float = field(default=0.0, metadata={"help": "Dropout on the LoRA branch input."})
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["query", "value"],
        metadata={"help": "VideoMAE block Linear layers to adapt: query, key, value, attention.output.dense, "
                          "intermediate.dense, output.dense, or all-linear."},
    )
    mixup_alpha: float = field(
        default=0.0, metadata={"help": "Refused for temporal action detection (must stay 0); see the error message."}
    )
    cutmix_alpha: float = field(
        default=0.0, metadata={"help": "Refused for temporal action detection (must stay 0); see the error message."}
    )

    def __post_init__(self):
        from transformers import VideoMAEConfig

        from ..models.adatad import AdaTADConfig

        # At parse time, before anything loads. drop_path_rate (stochastic depth of the ViT blocks) is an alias that
        # from_videomae_pretrained moves to the AdaTAD config.
        check_config_overrides("backbone_config_overrides", self.backbone_config_overrides, VideoMAEConfig,
                               extra=("drop_path_rate",))
        check_config_overrides("model_config_overrides", self.model_config_overrides, AdaTADConfig)
        for key in ("mixup_alpha", "cutmix_alpha"):
            if getattr(self, key) != 0:
                raise ValueError(
                    f"{key}: {getattr(self, key)} is refused for temporal action detection. Mixing two videos' frames "
                    f"(Mixup: blended frames; CutMix: pasted regions or spans) makes the segment targets ambiguous for "
                    f"a detector: a mixed frame is neither video's action and has no start/end, and a detector's "
                    f"per-point class and boundary targets have no mixed equivalent the way a classifier's soft label "
                    f"does. Use RandAugment (rand_augment_num_ops/rand_augment_magnitude), colour jitter, flips and "
                    f"drop_path_rate (model_config_overrides) instead; set {key}: 0."
                )
        if self.lora_r < 0 or self.lora_alpha <= 0 or not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"lora_r must be >= 0, lora_alpha > 0 and lora_dropout in [0, 1); got {self.lora_r}, "
                             f"{self.lora_alpha}, {self.lora_dropout}")
        if self.lora_r > 0:
            from ..lora import expand_target_modules

            expand_target_modules(self.lora_target_modules)


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
    misplaced = sorted(k for k in model_args.model_config_overrides if k.startswith("lora_"))
    if misplaced:
        raise ValueError(f"model_config_overrides sets {misplaced}: LoRA has its own recipe keys (lora_r, lora_alpha, "
                         f"lora_dropout, lora_target_modules)")
    lora = {}
    if model_args.lora_r > 0:
        lora = {"lora_r": model_args.lora_r, "lora_alpha": model_args.lora_alpha,
                "lora_dropout": model_args.lora_dropout, "lora_target_modules": list(model_args.lora_target_modules)}
    if model_args.model_name_or_path:
        check_pretrained_source("model_name_or_path", model_args.model_name_or_path, "AdaTAD model")
        with loading("model_name_or_path", model_args.model_name_or_path, "AdaTAD model"):
            model = AdaTADForActionDetection.from_pretrained(model_args.model_name_or_path)
        if model.config.id2label != id2label:
            raise RecipeError(
                f"{model_args.model_name_or_path}: model classes {list(model.config.id2label.values())} differ from "
                f"the corpus class map {corpus.class_names}"
            )
        if lora and model.config.lora_r == 0:
            model.enable_lora(model_args.lora_r, model_args.lora_alpha, model_args.lora_dropout,
                              model_args.lora_target_modules)
        elif lora and any(getattr(model.config, k) != v for k, v in lora.items()):
            saved = {k: getattr(model.config, k) for k in lora}
            raise RecipeError(f"model_name_or_path: {model_args.model_name_or_path} already has LoRA {saved}; the "
                              f"recipe asks for {lora}")
        _log_lora(model)
        return model
    if not model_args.backbone_name_or_path:
        raise RecipeError("set backbone_name_or_path (a VideoMAE checkpoint) or model_name_or_path (an AdaTAD model)")
    path = model_args.backbone_name_or_path
    if model_args.create_random_backbone:
        from transformers import VideoMAEConfig, VideoMAEModel

        def build(tmp: str) -> None:
            VideoMAEModel(VideoMAEConfig(**backbone_overrides)).save_pretrained(tmp)

        ensure_random_checkpoint(path, backbone_overrides, build, "VideoMAE")
    check_pretrained_source("backbone_name_or_path", path, "VideoMAE checkpoint")
    with config_errors("model_config_overrides / backbone_config_overrides"), \
            loading("backbone_name_or_path", path, "VideoMAE checkpoint"):
        model = AdaTADForActionDetection.from_videomae_pretrained(
            path, backbone_config_overrides=backbone_overrides, **config_overrides, **lora
        )
    _log_lora(model)
    return model


def _log_lora(model) -> None:
    from ..lora import lora_formula, lora_parameter_count

    config = model.config
    if config.lora_r <= 0:
        return
    formula = lora_formula(config.backbone_config, config.lora_target_modules, config.lora_r)
    counted = lora_parameter_count(model)
    layers = formula["num_layers"] * len(formula["per_layer"])
    logger.info(
        "LoRA r=%d alpha=%g dropout=%g on %d Linear layers (%s per block, %d blocks): %s parameters; formula "
        "r*(in+out) summed: %s%s", config.lora_r, config.lora_alpha, config.lora_dropout, layers,
        ", ".join(formula["per_layer"]), formula["num_layers"], f"{counted:,}", f"{formula['total']:,}",
        "" if counted == formula["total"] else "  (MISMATCH)",
    )


class TADTrainer(VTrainer):
    """Adds window decoding in `prediction_step` and video-level mAP in `compute_metrics`."""

    def __init__(self, *args, corpus: TADCorpus, lora_base_model: str | None = None, **kwargs):
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
        from ..lora import export_lora
        from .base import EMA_DIR, is_zero3_partitioned, outside_zero_init

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
        from ..plotting import plot_detection_timeline

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


def setup_tad(model_args: TADModelArguments, data_args: TADDataArguments, training_args: VTrainingArguments):
    # The main process writes what is missing (synthetic corpus, demo backbone) before the others read it.
    with training_args.main_process_first(desc="corpus and model"):
        corpus = load_thumos14(data_args, seed=training_args.seed)
        logger.info("corpus: %s", corpus.report.format())
        model = build_model(model_args, data_args, corpus)
    return TaskRun(
        model=model,
        train_dataset=corpus.train_dataset,
        eval_dataset=corpus.eval_dataset,
        data_collator=collate_tad,
        trainer_kwargs={"corpus": corpus,
                        "lora_base_model": model_args.model_name_or_path or model_args.backbone_name_or_path},
        epoch_hooks=[corpus.set_epoch],
        corpus=corpus,
    )
