"""Task `har`, action recognition from RGB and pose: EPAM-Net on NTU RGB+D 60 in PYSKL's format. The recipe keys of
the model (HARModelArguments; the data keys are data/ntu60's HARDataArguments, the training keys VTrainingArguments),
how the model is built (a new one from its config, or a saved one: a single-stream model's weights load into the
fused one through `init_from`, phase by phase), and the setup that hands run.py its Trainer's pieces.

Missing (issue 17): RGBPoseConv3D, predict."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from ..data.ntu60 import HARDataArguments, collate_har, load_ntu60, validate_ntu60
from ..parser import RecipeError
from ..pretrained_sources import check_pretrained_source, loading
from ..trainers.arguments import VTrainingArguments
from ..trainers.har import HARTrainer
from .common import TaskRun, TaskSpec, check_config_overrides, config_errors

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


SPEC = TaskSpec(
    description="action recognition from RGB and pose (EPAM-Net, NTU RGB+D 60 in PYSKL's format)",
    model_args=HARModelArguments,
    data_args=HARDataArguments,
    training_args=VTrainingArguments,
    trainer_cls=HARTrainer,
    setup=setup,
    validate=validate_ntu60,
)
