"""Task `har`, action recognition from RGB and pose on NTU RGB+D 60 in PYSKL's format: EPAM-Net and RGBPoseConv3D.
The recipe keys of the model (HARModelArguments; the data keys are data/ntu60's HARDataArguments, the training keys
VTrainingArguments), how the model is built (a new one from its config, or a saved one: single-stream weights load
into the fused model through `init_from`, phase by phase), the setup that hands run.py its Trainer's pieces, and the
predictor of `python -m hf_vtrain.predict` (top-5 classes of a video from its frames and its keypoints)."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from typing import NamedTuple

from ..data import ntu60
from ..data.ntu60 import HARDataArguments, collate_har, load_ntu60, validate_ntu60
from ..parser import RecipeError
from ..pretrained_sources import check_pretrained_source, loading
from ..trainers.arguments import VTrainingArguments
from ..trainers.har import HARTrainer
from ..data.common import write_json_atomic
from ..models.rgb_pose_recognition import count_parameters
from .common import PredictRuntime, TaskPredictor, TaskRun, TaskSpec, VideoPlan, check_config_overrides, config_errors

logger = logging.getLogger(__name__)


class HARModelType(NamedTuple):
    name: str
    reference: str  # the published full-size fused model's parameter count
    package: str  # hf_vtrain.models.<package>: its config and model classes
    config_class: str
    model_class: str
    parts: tuple[str, ...]  # submodules whose parameter counts are printed


MODEL_TYPES = {
    "epam": HARModelType("EPAM-Net", "about 2.5 M (Abdelkawy et al. 2025)", "epam", "EPAMConfig",
                         "EPAMForActionRecognition", ("rgb_backbone", "pose_backbone", "attention_module")),
    "rgbpose_conv3d": HARModelType("RGBPoseConv3D", "about 36 M (MMAction2's rgbpose_conv3d)", "rgbpose_conv3d",
                                   "RGBPoseConv3DConfig", "RGBPoseConv3DForActionRecognition",
                                   ("backbone.rgb_path", "backbone.pose_path")),
}


def model_classes(model_type: str):
    """(config class, model class) of a har model type."""
    import importlib

    entry = MODEL_TYPES[model_type]
    module = importlib.import_module(f"hf_vtrain.models.{entry.package}")
    return getattr(module, entry.config_class), getattr(module, entry.model_class)


@dataclass
class HARModelArguments:
    model_type: str = field(default="epam", metadata={"help": "epam (EPAM-Net) or rgbpose_conv3d (RGBPoseConv3D)."})
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "A saved model (folder or hub id) to start from; none: a new model."}
    )
    streams: str = field(
        default="rgb+pose",
        metadata={"help": "rgb+pose (the fused model), pose or rgb (one stream alone, e.g. the first phase)."},
    )
    model_config_overrides: dict = field(default_factory=dict, metadata={"help": "The model config's fields."})

    def __post_init__(self):
        if self.model_type not in MODEL_TYPES:
            raise ValueError(f"model_type must be one of {sorted(MODEL_TYPES)}, got {self.model_type!r}")
        if self.streams not in ("rgb+pose", "pose", "rgb"):
            raise ValueError(f"streams must be rgb+pose, pose or rgb, got {self.streams!r}")
        config_class, _ = model_classes(self.model_type)
        check_config_overrides("model_config_overrides", self.model_config_overrides, config_class)
        clash = sorted(set(self.model_config_overrides) & {"streams", "rgb_frames", "pose_frames", "rgb_image_size",
                                                             "pose_image_size", "id2label", "label2id"})
        if clash:
            raise ValueError(f"model_config_overrides sets {clash}: streams is its own key, the frame counts and sizes "
                             f"come from the data keys (rgb_frames, pose_frames, rgb_size, pose_size) and the classes "
                             f"from the corpus")


def _config_keys(model_args: HARModelArguments, data_args: HARDataArguments) -> dict:
    return {"streams": model_args.streams, "rgb_frames": data_args.rgb_frames, "pose_frames": data_args.pose_frames,
            "rgb_image_size": data_args.rgb_size, "pose_image_size": data_args.pose_size}


def new_config(model_args: HARModelArguments, data_args: HARDataArguments, class_names: list[str]):
    """The config of a new model from the recipe (its architecture checked: an error names model_config_overrides)."""
    id2label = dict(enumerate(class_names))
    config_class, _ = model_classes(model_args.model_type)
    with config_errors("the model config (model_config_overrides and the data keys rgb_frames, pose_frames, rgb_size, "
                       "pose_size)"):
        return config_class(**_config_keys(model_args, data_args), id2label=id2label,
                            label2id={v: k for k, v in id2label.items()}, **model_args.model_config_overrides)


def check_recipe(model_args: HARModelArguments, data_args: HARDataArguments) -> None:
    """Before any phase trains: the model config each phase's keys make (frame counts and sizes the model cannot
    take, e.g. RGBPoseConv3D's pose_frames = 4 x rgb_frames, end the run before phase 1 instead of after it)."""
    if not model_args.model_name_or_path:
        new_config(model_args, data_args, [str(i) for i in range(data_args.num_classes)])


def build_model(model_args: HARModelArguments, data_args: HARDataArguments, class_names: list[str]):
    entry = MODEL_TYPES[model_args.model_type]
    _, model_class = model_classes(model_args.model_type)
    id2label = dict(enumerate(class_names))
    wanted = _config_keys(model_args, data_args)
    if model_args.model_name_or_path:
        source = model_args.model_name_or_path
        check_pretrained_source("model_name_or_path", source, f"{entry.name} model")
        with loading("model_name_or_path", source, f"{entry.name} model"):
            model = model_class.from_pretrained(source)
        differ = {k: (getattr(model.config, k), v) for k, v in wanted.items() if getattr(model.config, k) != v}
        if differ or model.config.id2label != id2label:
            raise RecipeError(f"model_name_or_path: {source} was built for other data: "
                              f"{ {**differ, **({'classes': 'differ'} if model.config.id2label != id2label else {})} }"
                              f" (saved, recipe); to start a fused model from a single-stream one use init_from")
    else:
        model = model_class(new_config(model_args, data_args, class_names))
    parts = {n: count_parameters(model.get_submodule(n)) for n in entry.parts if _has_submodule(model, n)}
    logger.warning("%s (%s): %s parameters (%s); the published full-size fused model: %s", entry.name,
                   model.config.streams, f"{count_parameters(model):,}",
                   ", ".join(f"{k} {v:,}" for k, v in parts.items()), entry.reference)
    return model


def _has_submodule(model, name: str) -> bool:
    try:
        model.get_submodule(name)
    except AttributeError:
        return False
    return True


def preprocessing_config(data_args: HARDataArguments, streams: str) -> dict:
    """How evaluation reads a sample (hf_vtrain.model_folders); classes and normalisation are the model config's."""
    return {"task": "har", "streams": streams, "rgb_frames": data_args.rgb_frames,
            "pose_frames": data_args.pose_frames, "rgb_size": data_args.eval_sizes[0],
            "pose_size": data_args.eval_sizes[1],
            "heatmap_sigma": data_args.heatmap_sigma, "num_test_clips": data_args.num_test_clips,
            "test_clip_fusion": data_args.test_clip_fusion, "compact_padding": 0.25}


def setup(model_args: HARModelArguments, data_args: HARDataArguments, training_args: VTrainingArguments):
    with training_args.main_process_first(desc="corpus and model"):
        corpus = load_ntu60(data_args, seed=training_args.seed, with_rgb="rgb" in model_args.streams)
        logger.info("corpus: %s", corpus.report.format())
        model = build_model(model_args, data_args, corpus.class_names)
    return TaskRun(
        model=model,
        train_dataset=corpus.train_dataset,
        eval_dataset=corpus.eval_dataset,
        data_collator=collate_har,
        trainer_kwargs={"corpus": corpus, "test_clip_fusion": data_args.test_clip_fusion,
                        "preprocessing_config": preprocessing_config(data_args, model_args.streams)},
        epoch_hooks=[corpus.set_epoch],
        corpus=corpus,
    )


class HARPredictor(TaskPredictor):
    """Top-5 classes of a video from its frames and its 2D keypoints, read as evaluation reads a test sample (the
    same sampling, compact crop, heatmaps and clip fusion). The keypoints of `VIDEO.mp4` are `VIDEO.pkl` next to it
    (or in `--keypoints_dir`): one PYSKL annotation (keypoint (M, T, 17, 2), keypoint_score (M, T, 17), img_shape),
    read with the restricted unpickler. Per video `<id>.top5.json` ({"top5": [{label, score}], "scores": softmax per
    class}); `predictions.json` at the end."""

    unit = "clip"
    default_batch_size = 1
    result_suffix = ".top5.json"
    default_threshold = 0.0

    @staticmethod
    def add_arguments(group) -> None:
        group.add_argument("--keypoints_dir", default=None,
                           help="har: folder of <video id>.pkl keypoint files (default: next to each video)")

    def __init__(self, folder: str, preprocessing: dict, options, runtime: PredictRuntime):
        with open(os.path.join(folder, "config.json"), encoding="utf-8") as handle:
            model_type = json.load(handle).get("model_type")
        if model_type not in MODEL_TYPES:
            raise RecipeError(f"--model: {folder} holds a {model_type!r} model, not one of task har's "
                              f"{sorted(MODEL_TYPES)}")
        self.model_name = MODEL_TYPES[model_type].name
        with loading("--model", folder, f"{self.model_name} model"):
            self.model = model_classes(model_type)[1].from_pretrained(folder)
        self.model.to(runtime.device).eval()
        self.config, self.pre, self.runtime = self.model.config, preprocessing, runtime
        self.keypoints_dir = options.keypoints_dir
        self.class_names = [self.config.id2label[i] for i in range(len(self.config.id2label))]

    def describe(self) -> str:
        p = self.pre
        return (f"{self.model_name} ({p['streams']}), {len(self.class_names)} classes; {p['rgb_frames']} RGB / "
                f"{p['pose_frames']} pose frames at {p['rgb_size']} / {p['pose_size']} px, {p['num_test_clips']} "
                f"clip(s), {p['test_clip_fusion']}; keypoints from <video>.pkl")

    def plan(self, path: str, video_id: str) -> VideoPlan:
        from ..data.restricted_pickle import RefusedPickleError, load_restricted
        from ..data.video_io import VideoDecodeError, probe_video

        info = probe_video(path, decode_last=True, num_threads=self.runtime.decode_threads)
        kp_path = os.path.join(self.keypoints_dir or os.path.dirname(path), f"{video_id}.pkl")
        try:
            ann = load_restricted(kp_path)
        except (OSError, ValueError, RefusedPickleError) as err:  # named and skipped like an undecodable video
            raise VideoDecodeError(f"{path}: its keypoints {kp_path} cannot be read ({err})") from None
        missing = [k for k in ("keypoint", "keypoint_score", "img_shape") if not isinstance(ann, dict) or k not in ann]
        if missing:
            raise VideoDecodeError(f"{path}: its keypoints {kp_path} lack {missing}")
        if ann["keypoint"].shape[1] != info.num_frames:
            raise VideoDecodeError(f"{path}: {info.num_frames} frames, its keypoints {kp_path} "
                                   f"{ann['keypoint'].shape[1]}")
        sample = {"label": 0, "total_frames": info.num_frames, **{k: ann[k] for k in ("keypoint", "keypoint_score",
                                                                                     "img_shape")}}
        return VideoPlan(video_id, path, info.num_frames, info.fps, info.height, info.width,
                         int(self.pre["num_test_clips"]), {"sample": sample})

    def run(self, plan: VideoPlan, advance) -> dict:
        import torch

        from ..data.ntu60 import HARSampleTransform, collate_har
        from ..trainers.har import flatten_clips, fuse_heads

        p = self.pre
        transform = HARSampleTransform([plan.extra["sample"]], [plan.path], p["rgb_frames"], p["pose_frames"],
                                       p["rgb_size"], p["pose_size"], p["heatmap_sigma"], train=False,
                                       num_clips=p["num_test_clips"], with_rgb="rgb" in p["streams"],
                                       decode_threads=self.runtime.decode_threads)
        batch, clips = flatten_clips(collate_har([transform.transform_row({"index": 0})]))
        with torch.no_grad(), self.runtime.autocast():
            outputs = self.model(**{k: v.to(self.runtime.device) for k, v in batch.items() if k != "labels"})
        fused = fuse_heads(outputs, clips, p["test_clip_fusion"])[0][1][0]
        probs = fused if p["test_clip_fusion"] == "mean_softmax" else fused.softmax(-1)
        advance(plan.units)
        top = torch.argsort(-probs, stable=True)[:5].tolist()
        return {"top5": [{"label": self.class_names[i], "score": float(probs[i])} for i in top],
                "scores": [float(v) for v in probs]}

    def write(self, plan: VideoPlan, result: dict, out_dir: str) -> tuple[list[str], str]:
        path = write_json_atomic(os.path.join(out_dir, plan.video_id + self.result_suffix), result)
        best = result["top5"][0]
        return [path], f"{best['label']} ({best['score']:.2f})"

    def read(self, out_dir: str, video_id: str) -> dict:
        with open(os.path.join(out_dir, video_id + self.result_suffix), encoding="utf-8") as handle:
            return json.load(handle)

    def write_combined(self, results: dict, out_dir: str) -> list[str]:
        return [write_json_atomic(os.path.join(out_dir, "predictions.json"),
                                  {"scores": {k: v["scores"] for k, v in results.items()},
                                   "top5": {k: v["top5"] for k, v in results.items()}})]


SPEC = TaskSpec(
    description="action recognition from RGB and pose (EPAM-Net, RGBPoseConv3D; NTU RGB+D 60 in PYSKL's format)",
    model_args=HARModelArguments,
    data_args=HARDataArguments,
    training_args=VTrainingArguments,
    trainer_cls=HARTrainer,
    setup=setup,
    validate=validate_ntu60,
    predictor=HARPredictor,
    check_recipe=check_recipe,
    load_corpus=ntu60.load_corpus,
)
