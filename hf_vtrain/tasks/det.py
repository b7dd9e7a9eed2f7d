"""Task `det`, drone detection on FRED's RGB and event frames with RT-DETR (transformers' RTDetrForObjectDetection).
The recipe keys of the model (DetModelArguments; the data keys are data/fred's DetDataArguments, the training keys
VTrainingArguments), how the model is built (a published or saved checkpoint, its class heads sized for the corpus's
classes; or a new one from its config; widened to 6 input channels for `modality: rgb_event`) and the setup that
hands run.py its Trainer's pieces.

Why RT-DETR (not D-FINE): on this CPU a tiny RT-DETR from random weights reaches mAP@0.5 0.6 on a synthetic drone
in about 300 steps of batch 8 at 128 px, with its denoising queries and IoU-aware classification; D-FINE's
distribution-refinement heads add losses (FGL, DDF) that need more steps and a teacher layer to pay off. The
published RT-DETR checkpoints (PekingU/rtdetr_r18vd, ... on the Hub) load through `model_name_or_path`.

The RT-DETR backbone freezes its BatchNorms by default (`freeze_backbone_batch_norms`); here they are ordinary
BatchNorms, and the phases decide what is frozen (`param_groups` with lr 0) and `freeze_norm_stats` what keeps its
statistics.

Missing (issue 18): predict (boxes per frame as COCO JSON and an annotated video).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from ..data.fred import DetDataArguments, collate_det, load_fred, validate_fred
from ..parser import RecipeError
from ..pretrained_sources import check_pretrained_source, loading
from ..trainers.arguments import VTrainingArguments
from ..trainers.det import DetTrainer
from .common import TaskRun, TaskSpec, check_config_overrides, config_errors

logger = logging.getLogger(__name__)

# A small RT-DETR for a CPU: ResNet backbone of bottlenecks (one per stage), 64-wide hybrid encoder, 2 decoder layers.
TINY_BACKBONE = {"embedding_size": 16, "hidden_sizes": [32, 64, 128, 256], "depths": [1, 1, 1, 1],
                 "layer_type": "bottleneck"}


@dataclass
class DetModelArguments:
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "A published or saved RT-DETR (folder or hub id, e.g. PekingU/rtdetr_r18vd); "
                                        "none: a new one from model_config_overrides."},
    )
    model_config_overrides: dict = field(default_factory=dict, metadata={"help": "RTDetrConfig fields."})
    backbone_config_overrides: dict = field(
        default_factory=dict, metadata={"help": "RTDetrResNetConfig fields of a new model's backbone."}
    )
    max_detections: int = field(default=100, metadata={"help": "Detections kept per frame (COCO's maxDets)."})
    map_during_training: bool = field(
        default=True, metadata={"help": "false: evaluations during training compute the loss only (no mAP); the "
                                        "final evaluation computes mAP (the users' switch that saves the time)."},
    )

    def __post_init__(self):
        from transformers import RTDetrConfig, RTDetrResNetConfig

        check_config_overrides("model_config_overrides", self.model_config_overrides, RTDetrConfig)
        check_config_overrides("backbone_config_overrides", self.backbone_config_overrides, RTDetrResNetConfig)
        clash = sorted(set(self.model_config_overrides) & {"num_labels", "id2label", "label2id", "backbone_config"})
        if clash:
            raise ValueError(f"model_config_overrides sets {clash}: the classes come from the corpus's class_names "
                             f"and the backbone from backbone_config_overrides")
        if self.max_detections < 1:
            raise ValueError(f"max_detections must be >= 1, got {self.max_detections}")


def count_parameters(module) -> int:
    return sum(p.numel() for p in module.parameters())


def new_config(model_args: DetModelArguments, data_args: DetDataArguments):
    from transformers import RTDetrConfig, RTDetrResNetConfig

    names = list(data_args.class_names)
    with config_errors("backbone_config_overrides"):
        backbone = RTDetrResNetConfig(**{"out_features": ["stage2", "stage3", "stage4"],
                                         **model_args.backbone_config_overrides, "num_channels": data_args.in_channels})
    with config_errors("model_config_overrides"):
        return RTDetrConfig(**{"encoder_in_channels": backbone.hidden_sizes[-3:], "freeze_backbone_batch_norms": False,
                               **model_args.model_config_overrides},
                            backbone_config=backbone, id2label=dict(enumerate(names)),
                            label2id={n: i for i, n in enumerate(names)})


def check_recipe(model_args: DetModelArguments, data_args: DetDataArguments) -> None:
    if not model_args.model_name_or_path:
        new_config(model_args, data_args)


def build_model(model_args: DetModelArguments, data_args: DetDataArguments):
    from ..models.rt_detr import RTDetrDetector, widen_input_channels

    names = list(data_args.class_names)
    if model_args.model_name_or_path:
        source = model_args.model_name_or_path
        check_pretrained_source("model_name_or_path", source, "RT-DETR model")
        with loading("model_name_or_path", source, "RT-DETR model"):
            # class heads sized for the corpus (re-initialised when the checkpoint has other classes, e.g. COCO's 80);
            # ordinary BatchNorms in the backbone: the phases freeze them
            model = RTDetrDetector.from_pretrained(source, id2label=dict(enumerate(names)),
                                                   label2id={n: i for i, n in enumerate(names)},
                                                   freeze_backbone_batch_norms=False, ignore_mismatched_sizes=True)
        channels = model.config.backbone_config.num_channels
        if channels != data_args.in_channels:
            if channels == 3 and data_args.in_channels == 6:
                widen_input_channels(model, 6)
                logger.warning("modality rgb_event: the backbone's first convolution widened to 6 channels (RGB "
                               "filters kept, event filters zero)")
            else:
                raise RecipeError(f"model_name_or_path: {source} reads {channels} channels, modality "
                                  f"{data_args.modality} gives {data_args.in_channels}")
        for key in model_args.model_config_overrides:
            logger.warning("model_config_overrides.%s is not applied to a loaded model", key)
    else:
        model = RTDetrDetector(new_config(model_args, data_args))
    parts = {n: count_parameters(getattr(model.model, n)) for n in ("backbone", "encoder", "decoder")}
    logger.warning("RT-DETR: %s parameters (%s); %d input channels, %d classes", f"{count_parameters(model):,}",
                   ", ".join(f"{k} {v:,}" for k, v in parts.items()), data_args.in_channels, len(names))
    return model


def preprocessing_config(model_args: DetModelArguments, data_args: DetDataArguments) -> dict:
    """How evaluation reads a frame (hf_vtrain.model_folders): the RT-DETR image processor's resize and rescale."""
    return {"task": "det", "modality": data_args.modality, "image_size": data_args.image_size, "rescale": 1 / 255,
            "normalize": False, "class_names": list(data_args.class_names),
            "max_detections": model_args.max_detections}


def setup(model_args: DetModelArguments, data_args: DetDataArguments, training_args: VTrainingArguments):
    best = training_args.metric_for_best_model
    if best and not model_args.map_during_training and "loss" not in best:
        raise RecipeError(f"metric_for_best_model {best} needs the metric during training: map_during_training is "
                          f"false (choose eval_loss, or compute mAP during training)")
    with training_args.main_process_first(desc="corpus and model"):
        corpus = load_fred(data_args, seed=training_args.seed)
        logger.info("corpus: %s", corpus.report.format())
        model = build_model(model_args, data_args)
    return TaskRun(
        model=model,
        train_dataset=corpus.train_dataset,
        eval_dataset=corpus.eval_dataset,
        data_collator=collate_det,
        trainer_kwargs={"corpus": corpus, "max_detections": model_args.max_detections,
                        "map_during_training": model_args.map_during_training,
                        "preprocessing_config": preprocessing_config(model_args, data_args)},
        epoch_hooks=[corpus.set_epoch],
        corpus=corpus,
    )


SPEC = TaskSpec(
    description="drone detection on RGB and event frames (RT-DETR; FRED's layout), COCO mAP through pycocotools",
    model_args=DetModelArguments,
    data_args=DetDataArguments,
    training_args=VTrainingArguments,
    trainer_cls=DetTrainer,
    setup=setup,
    validate=validate_fred,
    check_recipe=check_recipe,
)
