"""Task `vad`, video anomaly detection: FG-CLIP video fine-tuning on UCF-Crime-format corpora. The recipe keys of the
model (VADModelArguments; the data keys are data/ucf_crime's VADDataArguments), how the model and tokenizer are loaded
(a CLIP checkpoint or a saved FGCLIPVideoModel), and the setup that hands run.py its Trainer's pieces."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from ..data.ucf_crime import VADDataArguments, load_ucf_crime, validate_ucf_crime
from ..models.fgclip_video import FGCLIPVideoModel
from ..parser import RecipeError
from ..pretrained_sources import check_pretrained_source, loading
from ..trainers.vad import VADTrainer, VADTrainingArguments
from .common import (
    TaskRun,
    TaskSpec,
    check_config_overrides,
    check_loss_terms_have_data,
    config_errors,
    ensure_random_checkpoint,
)

logger = logging.getLogger(__name__)


@dataclass
class VADModelArguments:
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "A saved FGCLIPVideoModel (folder or hub id) to start from."}
    )
    clip_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Any Hugging Face CLIP checkpoint (hub id or folder), e.g. openai/clip-vit-base-patch16; "
                          "every CLIP weight must load (FGCLIPVideoModel.from_clip_pretrained)."},
    )
    create_random_clip: bool = field(
        default=False,
        metadata={"help": "Demo/tests only: when clip_name_or_path does not exist, first write a tiny RANDOMLY "
                          "INITIALISED CLIPModel (clip_config_overrides) and the real CLIP tokenizer there, then load "
                          "it through the same path as a real checkpoint."},
    )
    clip_config_overrides: dict = field(
        default_factory=dict,
        metadata={"help": "CLIPConfig fields for create_random_clip (text_config, vision_config, projection_dim, "
                          "...); ignored when loading an existing checkpoint."},
    )
    model_config_overrides: dict = field(
        default_factory=dict,
        metadata={"help": "FGCLIPVideoConfig fields (temporal module, loss weights, anomaly prompts, ...)."},
    )

    def __post_init__(self):
        from transformers import CLIPConfig, CLIPTextConfig, CLIPVisionConfig

        from ..models.fgclip_video import FGCLIPVideoConfig

        if not self.model_name_or_path and not self.clip_name_or_path:
            raise ValueError("set clip_name_or_path (a CLIP checkpoint) or model_name_or_path (an FGCLIPVideoModel)")
        # At parse time, before anything is written or loaded.
        check_config_overrides("model_config_overrides", self.model_config_overrides, FGCLIPVideoConfig)
        check_config_overrides("clip_config_overrides", self.clip_config_overrides, CLIPConfig,
                               nested={"text_config": CLIPTextConfig, "vision_config": CLIPVisionConfig})


def _build_random_clip(overrides: dict):
    from transformers import CLIPConfig, CLIPModel

    from ..data.clip_tokenizer import build_clip_tokenizer

    def build(tmp: str) -> None:
        CLIPModel(CLIPConfig(**overrides)).save_pretrained(tmp)
        build_clip_tokenizer(tmp)

    return build


def _has_tokenizer(path: str | None) -> bool:
    return bool(path) and os.path.isfile(os.path.join(path, "tokenizer_config.json"))


def load_tokenizer(model_args: VADModelArguments, data_args: VADDataArguments):
    """data_args.tokenizer_name_or_path, else the saved model's folder when it holds one, else the CLIP checkpoint."""
    from transformers import AutoTokenizer

    if data_args.tokenizer_name_or_path:
        key, source = "tokenizer_name_or_path", data_args.resolve(data_args.tokenizer_name_or_path)
    elif _has_tokenizer(model_args.model_name_or_path):
        key, source = "model_name_or_path", model_args.model_name_or_path
    elif model_args.clip_name_or_path:
        key, source = "clip_name_or_path", model_args.clip_name_or_path
    else:
        raise RecipeError(f"model_name_or_path: {model_args.model_name_or_path} holds no tokenizer: set "
                          f"tokenizer_name_or_path")
    check_pretrained_source(key, source, "CLIP tokenizer")
    with loading(key, source, "CLIP tokenizer"):
        return AutoTokenizer.from_pretrained(source)


def build_model(model_args: VADModelArguments, data_args: VADDataArguments) -> FGCLIPVideoModel:
    overrides = dict(model_args.model_config_overrides)
    if model_args.model_name_or_path:
        key, source, what = "model_name_or_path", model_args.model_name_or_path, "FGCLIPVideoModel"
    else:
        key, source, what = "clip_name_or_path", model_args.clip_name_or_path, "CLIP checkpoint"
    check_pretrained_source(key, source, what)
    with config_errors("model_config_overrides"), loading(key, source, what):
        if model_args.model_name_or_path:
            return FGCLIPVideoModel.from_pretrained(model_args.model_name_or_path, **overrides)
        if data_args.num_frames > overrides.get("max_frames", 256):
            overrides["max_frames"] = data_args.num_frames  # temporal positions for every training frame
        return FGCLIPVideoModel.from_clip_pretrained(model_args.clip_name_or_path, **overrides)


def setup(model_args: VADModelArguments, data_args: VADDataArguments, training_args: VADTrainingArguments):
    # The main process writes what is missing (synthetic corpus, demo CLIP) before the others read it.
    with training_args.main_process_first(desc="corpus and model"):
        path = model_args.clip_name_or_path
        if not model_args.model_name_or_path and model_args.create_random_clip:
            overrides = model_args.clip_config_overrides
            ensure_random_checkpoint(path, overrides, _build_random_clip(overrides), "CLIP (+ CLIP tokenizer)")
        # The corpus check comes first (cheap, every problem listed); the tokenizer and weights after it.
        corpus = load_ucf_crime(data_args, seed=training_args.seed,
                                tokenizer_loader=lambda: load_tokenizer(model_args, data_args))
        logger.info("corpus: %s", corpus.report.format())
        tokenizer = corpus.tokenizer
        model = build_model(model_args, data_args)
    config = model.config
    check_loss_terms_have_data([
        ("model_config_overrides.region_loss_weight", config.region_loss_weight, corpus.num_records_with_boxes,
         "no training record has a region with boxes (box_infos); add them or set the weight to 0"),
        ("model_config_overrides.hard_negative_loss_weight", config.hard_negative_loss_weight,
         corpus.num_records_with_negatives,
         "no training record has hard negatives (region_negatives); write them with `python "
         "scripts/make_hard_negatives.py TRAIN_JSON --out TRAIN_JSON_WITH_NEGATIVES` (10 per region caption, as "
         "FG-CLIP) and point train_json at the result, or set the weight to 0"),
    ])
    return TaskRun(
        model=model,
        train_dataset=corpus.train_dataset,
        eval_dataset=corpus.eval_dataset,
        data_collator=corpus.train_collator,
        trainer_kwargs={"corpus": corpus, "processing_class": tokenizer},
        epoch_hooks=[corpus.set_epoch],
        corpus=corpus,
    )


SPEC = TaskSpec(
    description="video anomaly detection (FG-CLIP video, UCF-Crime format)",
    model_args=VADModelArguments,
    data_args=VADDataArguments,
    training_args=VADTrainingArguments,
    trainer_cls=VADTrainer,
    setup=setup,
    validate=validate_ucf_crime,
)
