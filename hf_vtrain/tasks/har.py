"""Task `har`, action recognition from RGB and pose: EPAM-Net on NTU RGB+D 60 in PYSKL's format. The recipe keys of
the model (HARModelArguments; the data keys are data/ntu60's HARDataArguments, the training keys VTrainingArguments),
how the model is built (a new one from its config, or a saved one: a single-stream model's weights load into the
fused one through `init_from`, phase by phase), the setup that hands run.py its Trainer's pieces, and the predictor of
`python -m hf_vtrain.predict` (top-5 classes of a video from its frames and its keypoints).

Missing (issue 17): RGBPoseConv3D."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field

from ..data.ntu60 import HARDataArguments, collate_har, load_ntu60, validate_ntu60
from ..parser import RecipeError
from ..pretrained_sources import check_pretrained_source, loading
from ..trainers.arguments import VTrainingArguments
from ..trainers.har import HARTrainer
from ..data.common import write_json_atomic
from .common import PredictRuntime, TaskPredictor, TaskRun, TaskSpec, VideoPlan, check_config_overrides, config_errors

logger = logging.getLogger(__name__)

REFERENCE_PARAMETERS = {"epam": ("EPAM-Net", "about 2.5 M (Abdelkawy et al. 2025)")}


@dataclass
class HARModelArguments:
    model_type: str = field(default="epam", metadata={"help": "epam (EPAM-Net)."})
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "A saved model (folder or hub id) to start from; none: a new model."}
    )
    streams: str = field(
        default="rgb+pose",
        metadata={"help": "rgb+pose (the fused model), pose or rgb (one stream alone, e.g. the first phase)."},
    )
    model_config_overrides: dict = field(default_factory=dict, metadata={"help": "The model config's fields."})

    def __post_init__(self):
        if self.model_type not in REFERENCE_PARAMETERS:
            raise ValueError(f"model_type must be one of {sorted(REFERENCE_PARAMETERS)}, got {self.model_type!r}")
        if self.streams not in ("rgb+pose", "pose", "rgb"):
            raise ValueError(f"streams must be rgb+pose, pose or rgb, got {self.streams!r}")
        from ..models.epam import EPAMConfig

        check_config_overrides("model_config_overrides", self.model_config_overrides, EPAMConfig)
        clash = sorted(set(self.model_config_overrides) & {"streams", "rgb_frames", "pose_frames", "rgb_image_size",
                                                             "pose_image_size", "id2label", "label2id"})
        if clash:
            raise ValueError(f"model_config_overrides sets {clash}: streams is its own key, the frame counts and sizes "
                             f"come from the data keys (rgb_frames, pose_frames, rgb_size, pose_size) and the classes "
                             f"from the corpus")


def build_model(model_args: HARModelArguments, data_args: HARDataArguments, class_names: list[str]):
    from ..models.epam import EPAMConfig, EPAMForActionRecognition, count_parameters

    id2label = dict(enumerate(class_names))
    wanted = {"streams": model_args.streams, "rgb_frames": data_args.rgb_frames, "pose_frames": data_args.pose_frames,
              "rgb_image_size": data_args.rgb_size, "pose_image_size": data_args.pose_size}
    if model_args.model_name_or_path:
        source = model_args.model_name_or_path
        check_pretrained_source("model_name_or_path", source, "EPAM-Net model")
        with loading("model_name_or_path", source, "EPAM-Net model"):
            model = EPAMForActionRecognition.from_pretrained(source)
        differ = {k: (getattr(model.config, k), v) for k, v in wanted.items() if getattr(model.config, k) != v}
        if differ or model.config.id2label != id2label:
            raise RecipeError(f"model_name_or_path: {source} was built for other data: "
                              f"{ {**differ, **({'classes': 'differ'} if model.config.id2label != id2label else {})} }"
                              f" (saved, recipe); to start a fused model from a single-stream one use init_from")
    else:
        with config_errors("model_config_overrides"):
            config = EPAMConfig(**wanted, id2label=id2label, label2id={v: k for k, v in id2label.items()},
                                **model_args.model_config_overrides)
        model = EPAMForActionRecognition(config)
    name, reference = REFERENCE_PARAMETERS[model_args.model_type]
    parts = {n: count_parameters(getattr(model, n)) for n in ("rgb_backbone", "pose_backbone", "attention_module")
             if hasattr(model, n)}
    logger.warning("%s (%s): %s parameters (%s); the published full-size fused model: %s", name,
                   model.config.streams, f"{count_parameters(model):,}",
                   ", ".join(f"{k} {v:,}" for k, v in parts.items()), reference)
    return model


def preprocessing_config(data_args: HARDataArguments, streams: str) -> dict:
    """How evaluation reads a sample (hf_vtrain.model_folders); classes and normalisation are the model config's."""
    return {"task": "har", "streams": streams, "rgb_frames": data_args.rgb_frames,
            "pose_frames": data_args.pose_frames, "rgb_size": data_args.rgb_size, "pose_size": data_args.pose_size,
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
        from ..models.epam import EPAMForActionRecognition

        with loading("--model", folder, "EPAM-Net model"):
            self.model = EPAMForActionRecognition.from_pretrained(folder)
        self.model.to(runtime.device).eval()
        self.config, self.pre, self.runtime = self.model.config, preprocessing, runtime
        self.keypoints_dir = options.keypoints_dir
        self.class_names = [self.config.id2label[i] for i in range(len(self.config.id2label))]

    def describe(self) -> str:
        p = self.pre
        return (f"EPAM-Net ({p['streams']}), {len(self.class_names)} classes; {p['rgb_frames']} RGB / "
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
        from ..trainers.har import flatten_clips, fuse_clips

        p = self.pre
        transform = HARSampleTransform([plan.extra["sample"]], [plan.path], p["rgb_frames"], p["pose_frames"],
                                       p["rgb_size"], p["pose_size"], p["heatmap_sigma"], train=False,
                                       num_clips=p["num_test_clips"], with_rgb="rgb" in p["streams"],
                                       decode_threads=self.runtime.decode_threads)
        batch, clips = flatten_clips(collate_har([transform.transform_row({"index": 0})]))
        with torch.no_grad(), self.runtime.autocast():
            logits = self.model(**{k: v.to(self.runtime.device) for k, v in batch.items() if k != "labels"}).logits
        fused = fuse_clips(logits, clips, p["test_clip_fusion"])[0]
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
    description="action recognition from RGB and pose (EPAM-Net, NTU RGB+D 60 in PYSKL's format)",
    model_args=HARModelArguments,
    data_args=HARDataArguments,
    training_args=VTrainingArguments,
    trainer_cls=HARTrainer,
    setup=setup,
    validate=validate_ntu60,
    predictor=HARPredictor,
)
