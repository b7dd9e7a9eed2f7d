"""Task `tad`, temporal action detection: AdaTAD on THUMOS-14-format corpora. The recipe keys of the model
(TADModelArguments; the data keys are data/thumos14's TADDataArguments, the training keys VTrainingArguments), how the
model is built (a VideoMAE checkpoint or a saved AdaTAD model, LoRA), and the setup that hands run.py its Trainer's
pieces."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from ..data.thumos14 import TADCorpus, TADDataArguments, collate_tad, load_thumos14, validate_thumos14
from ..models.adatad import AdaTADForActionDetection
from ..parser import RecipeError
from ..pretrained_sources import check_pretrained_source, loading
from ..trainers.arguments import VTrainingArguments
from ..trainers.tad import TADTrainer
from .common import TaskRun, TaskSpec, check_config_overrides, config_errors, ensure_random_checkpoint

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
                        "lora_base_model": model_args.model_name_or_path or model_args.backbone_name_or_path},
        epoch_hooks=[corpus.set_epoch],
        corpus=corpus,
    )


SPEC = TaskSpec(
    description="temporal action detection (AdaTAD, THUMOS-14 format)",
    model_args=TADModelArguments,
    data_args=TADDataArguments,
    training_args=VTrainingArguments,
    trainer_cls=TADTrainer,
    setup=setup,
    validate=validate_thumos14,
)
