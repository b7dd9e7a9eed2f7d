"""Task `tad`, temporal action detection: AdaTAD on THUMOS-14-format corpora. The recipe keys of the model
(TADModelArguments; the data keys are data/thumos14's TADDataArguments, the training keys VTrainingArguments), how the
model is built (a VideoMAE checkpoint or a saved AdaTAD model, LoRA), and the setup that hands run.py its Trainer's
pieces, and the predictor of `python -m hf_vtrain.predict` (OpenTAD results, SubRip subtitles and a timeline per
video)."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field

import numpy as np

from ..data import thumos14
from ..data.common import write_json_atomic, write_text_atomic
from ..data.thumos14 import (
    EvalWindowTransform,
    TADCorpus,
    TADDataArguments,
    collate_tad,
    eval_window_starts,
    load_thumos14,
    num_sampled_frames,
    validate_thumos14,
)
from ..models.adatad import AdaTADForActionDetection
from ..parser import RecipeError
from ..pretrained_sources import check_pretrained_source, loading
from ..trainers.arguments import VTrainingArguments
from ..trainers.tad import TADTrainer
from .common import (
    PredictRuntime,
    TaskPredictor,
    TaskRun,
    TaskSpec,
    VideoPlan,
    check_config_overrides,
    config_errors,
    ensure_random_checkpoint,
    format_srt,
    prefetched,
)

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
            from ..models.adatad.lora_adatad import expand_target_modules

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
    from ..models.adatad.lora_adatad import lora_formula, lora_parameter_count

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


def setup(model_args: TADModelArguments, data_args: TADDataArguments, training_args: VTrainingArguments):
    # The main process writes what is missing (synthetic corpus, demo backbone) before the others read it.
    with training_args.main_process_first(desc="corpus and model"):
        corpus = load_thumos14(data_args, seed=training_args.seed)
        logger.info("corpus: %s", corpus.report.format())
        if corpus.report.adjusted:  # on the console too: what was tolerated in the user's annotations
            logger.warning("annotations adjusted as OpenTAD does (counts; details in train.log): %s",
                           "; ".join(f"{what}: {n}" for what, n in corpus.report.adjusted.items()))
        describe = getattr(corpus.train_transform.clip_transform, "describe", None)
        if describe is not None:
            logger.info("training augmentation: %s", describe())
        model = build_model(model_args, data_args, corpus)
    return TaskRun(
        model=model,
        train_dataset=corpus.train_dataset,
        eval_dataset=corpus.eval_dataset,
        data_collator=collate_tad,
        trainer_kwargs={"corpus": corpus,
                        "lora_base_model": model_args.model_name_or_path or model_args.backbone_name_or_path,
                        "preprocessing_config": preprocessing_config(data_args)},
        epoch_hooks=[corpus.set_epoch],
        corpus=corpus,
    )


def preprocessing_config(data_args: TADDataArguments) -> dict:
    """How evaluation reads a video (hf_vtrain.model_folders): saved with the weights, read by predict. Class names,
    normalisation and post-processing are the model config's."""
    return {
        "task": "tad",
        "sample_stride": data_args.sample_stride,
        "window_size": data_args.window_size,
        "eval_window_stride": data_args.eval_window_stride,
        "eval_resize": data_args.eval_resize,
        "eval_crop": data_args.eval_resize,
    }


class TADPredictor(TaskPredictor):
    """Detections for any video: the evaluation's sliding windows (EvalWindowTransform, so the same frames, resize
    and crop), the model's window decoding and the evaluation's merge + soft-NMS. Per video `<id>.detections.json`
    (OpenTAD results format, seconds), `<id>.srt` (segments scoring >= the threshold, by start time) and
    `<id>.timeline.png`; `predictions.json` holds every video at the end."""

    unit = "window"
    default_batch_size = 1
    result_suffix = ".detections.json"
    default_threshold = 0.3

    @staticmethod
    def add_arguments(group) -> None:
        group.add_argument("--max_plot_per_class", type=int, default=5,
                           help="tad: detections per class drawn on the timeline (default 5)")

    def __init__(self, folder: str, preprocessing: dict, options, runtime: PredictRuntime):
        from ..data.video_io import EvalClipTransform

        with loading("--model", folder, "AdaTAD model"):
            self.model = AdaTADForActionDetection.from_pretrained(folder)
        self.model.to(runtime.device).eval()
        self.config = self.model.config
        self.runtime = runtime
        self.threshold = runtime.threshold if runtime.threshold is not None else self.default_threshold
        self.max_plot_per_class = options.max_plot_per_class
        self.sample_stride = int(preprocessing["sample_stride"])
        self.window_size = int(preprocessing["window_size"])
        self.window_stride = int(preprocessing["eval_window_stride"])
        self.transform = EvalWindowTransform(
            self.window_size, self.sample_stride,
            clip_transform=EvalClipTransform(resize=preprocessing["eval_resize"], crop=preprocessing["eval_crop"]),
            decode_threads=runtime.decode_threads,
        )
        self.class_names = [self.config.id2label[i] for i in range(len(self.config.id2label))]

    def describe(self) -> str:
        c = self.config
        return (f"AdaTAD, {len(self.class_names)} classes; sample stride {self.sample_stride}, windows of "
                f"{self.window_size} every {self.window_stride}, {self.transform.clip_transform!r}; soft-NMS sigma "
                f"{c.nms_sigma}, score_threshold {c.score_threshold}, max_segments {c.max_segments}; .srt and "
                f"timeline: score >= {self.threshold}")

    def plan(self, path: str, video_id: str) -> VideoPlan:
        from ..data.video_io import probe_video

        info = probe_video(path, decode_last=True, num_threads=self.runtime.decode_threads)
        starts = eval_window_starts(num_sampled_frames(info.num_frames, self.sample_stride), self.window_size,
                                    self.window_stride)
        return VideoPlan(video_id, path, info.num_frames, info.fps, info.height, info.width, len(starts),
                         {"starts": starts})

    def _batch(self, plan: VideoPlan, starts: list[int]) -> dict:
        row = {"path": plan.path, "num_frames": plan.num_frames, "fps": plan.fps, "video_index": 0,
               "segments": [], "labels": []}
        return collate_tad([self.transform.transform_row({**row, "window_start": start}) for start in starts])

    def run(self, plan: VideoPlan, advance) -> list[dict]:
        import torch

        from ..models.adatad.postprocessing_adatad import (
            RawDetections,
            decode_window_detections,
            merge_raw_detections,
            postprocess_settings,
            to_opentad_results,
        )

        starts = plan.extra["starts"]
        batches = [starts[i: i + self.runtime.batch_size] for i in range(0, len(starts), self.runtime.batch_size)]
        detections = []
        for batch in prefetched(batches, lambda b: self._batch(plan, b)):
            with torch.no_grad(), self.runtime.autocast():
                outputs = self.model(pixel_values=batch["pixel_values"].to(self.runtime.device),
                                     pixel_mask=batch["pixel_mask"].to(self.runtime.device))
                decoded = decode_window_detections(outputs, self.config)
            detections.append(decoded.float().cpu().numpy())
            advance(len(batch["window_start"]))
        raw = RawDetections(
            detections=np.concatenate(detections).astype(np.float32),
            meta=np.asarray([[0, start] for start in starts], dtype=np.int64),
            videos=[{"video_id": plan.video_id, "fps": plan.fps, "sample_stride": self.sample_stride,
                     "duration": plan.duration}],
            class_names=self.class_names,
            postprocess=postprocess_settings(self.config),
        )
        return to_opentad_results(merge_raw_detections(raw), self.config.id2label)["results"][plan.video_id]

    def write(self, plan: VideoPlan, detections: list[dict], out_dir: str) -> tuple[list[str], str]:
        from ..plotting.tad import plot_detection_timeline

        stem = os.path.join(out_dir, plan.video_id)
        files = [write_json_atomic(f"{stem}.detections.json", {"results": {plan.video_id: detections}})]
        shown = sorted((d for d in detections if d["score"] >= self.threshold),
                       key=lambda d: (d["segment"][0], -d["score"]))
        cues = [(d["segment"][0], d["segment"][1], f"{d['label']} {d['score']:.2f}") for d in shown]
        files.append(write_text_atomic(f"{stem}.srt", format_srt(cues)))
        # nothing reaches the threshold: the best detections are drawn all the same (the title gives the floor)
        floor = self.threshold if shown else min([d["score"] for d in detections], default=0.0)
        files.append(plot_detection_timeline(plan.video_id, plan.duration, None, detections, self.class_names,
                                             f"{stem}.timeline.png", min_score=floor,
                                             max_per_class=self.max_plot_per_class))
        best = max(detections, key=lambda d: d["score"], default=None)
        top = f"; best {best['label']} {best['segment'][0]:.2f}-{best['segment'][1]:.2f} s ({best['score']:.2f})" \
            if best else ""
        return files, f"{len(detections)} detections, {len(shown)} with score >= {self.threshold}{top}"

    def read(self, out_dir: str, video_id: str) -> list[dict]:
        with open(os.path.join(out_dir, video_id + self.result_suffix), encoding="utf-8") as handle:
            return json.load(handle)["results"][video_id]

    def write_combined(self, results: dict, out_dir: str) -> list[str]:
        return [write_json_atomic(os.path.join(out_dir, "predictions.json"), {"results": results})]


SPEC = TaskSpec(
    description="temporal action detection (AdaTAD, THUMOS-14 format)",
    model_args=TADModelArguments,
    data_args=TADDataArguments,
    training_args=VTrainingArguments,
    trainer_cls=TADTrainer,
    setup=setup,
    validate=validate_thumos14,
    predictor=TADPredictor,
    load_corpus=thumos14.load_corpus,
)
