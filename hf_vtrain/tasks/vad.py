"""Task `vad`, video anomaly detection: FG-CLIP video fine-tuning on UCF-Crime-format corpora. The recipe keys of the
model (VADModelArguments; the data keys are data/ucf_crime's VADDataArguments), how the model and tokenizer are loaded
(a CLIP checkpoint or a saved FGCLIPVideoModel), the setup that hands run.py its Trainer's pieces, and the predictor
of `python -m hf_vtrain.predict` (anomaly score per snippet and per frame, and a score plot, per video)."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from ..data import ucf_crime
from ..data.common import write_json_atomic
from ..data.ucf_crime import (
    SNIPPET_FRAMES,
    VADDataArguments,
    eval_frame_indices,
    expand_eval_scores,
    load_ucf_crime,
    num_video_snippets,
    resize_frames,
    resize_frames_decode_size,
    validate_ucf_crime,
)
from ..models.fgclip_video import FGCLIPVideoModel
from ..parser import RecipeError
from ..pretrained_sources import check_pretrained_source, loading
from ..trainers.vad import VADTrainer, VADTrainingArguments
from .common import (
    PredictRuntime,
    TaskPredictor,
    TaskRun,
    TaskSpec,
    VideoPlan,
    check_config_overrides,
    check_loss_terms_have_data,
    config_errors,
    ensure_random_checkpoint,
    prefetched,
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
    stage: str = field(
        default="fgclip",
        metadata={"help": "fgclip (train the FG-CLIP video model on captions) or head (the weakly supervised anomaly "
                          "head on the snippet features of a trained FG-CLIP, `feature_model`)."},
    )
    feature_model: str | None = field(
        default=None,
        metadata={"help": "head stage: the trained FGCLIPVideoModel folder whose snippet features the head learns "
                          "from ('previous' in a phase: the FG-CLIP phase before it)."},
    )
    head_config_overrides: dict = field(default_factory=dict, metadata={"help": "head stage: VADHeadConfig fields."})
    feature_cache_dir: str = field(
        default=".cache/vad_snippet_features",
        metadata={"help": "head stage: where snippet features are kept (one folder per model and preprocessing)."},
    )
    head_max_train_snippets: int = field(
        default=256, metadata={"help": "head stage: a training video longer than this is cut into this many "
                                       "segments of averaged snippets (VadCLIP)."},
    )
    vad_score: str = field(
        default="both",
        metadata={"help": "head stage: what scores the test snippets: head, prompts (FG-CLIP's zero-shot prompts on "
                          "the same features) or both (head first, prompts beside it)."},
    )

    def __post_init__(self):
        from transformers import CLIPConfig, CLIPTextConfig, CLIPVisionConfig

        from ..models.fgclip_video import FGCLIPVideoConfig

        if self.stage not in ("fgclip", "head"):
            raise ValueError(f"stage must be fgclip or head, got {self.stage!r}")
        if self.vad_score not in ("head", "prompts", "both"):
            raise ValueError(f"vad_score must be head, prompts or both, got {self.vad_score!r}")
        if self.stage == "head":
            from ..models.vad_head import VADHeadConfig

            if not self.feature_model:
                raise ValueError("stage head needs feature_model: a trained FGCLIPVideoModel folder ('previous' in a "
                                 "phase after the FG-CLIP phase)")
            check_config_overrides("head_config_overrides", self.head_config_overrides, VADHeadConfig)
            if "feature_dim" in self.head_config_overrides:
                raise ValueError("head_config_overrides sets feature_dim: it is the feature model's")
            return
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
    if model_args.stage == "head":
        return setup_head(model_args, data_args, training_args)
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
        trainer_kwargs={"corpus": corpus, "processing_class": tokenizer,
                        "preprocessing_config": preprocessing_config(data_args)},
        epoch_hooks=[corpus.set_epoch],
        corpus=corpus,
    )


def preprocessing_config(data_args: VADDataArguments) -> dict:
    """How evaluation reads a test video (hf_vtrain.model_folders): saved with the weights, read by predict. Prompts,
    classes, normalisation and the scoring window are the model config's; the tokenizer is saved beside it."""
    return {
        "task": "vad",
        "snippet_frames": SNIPPET_FRAMES,
        "image_size": data_args.image_size,
        "resize_mode": data_args.resize_mode,
        "max_eval_snippets": data_args.max_eval_snippets,
    }


# ---------------------------------------------------------------------------------------------------------------
# Snippet features for the weakly supervised head (issue 19): computed once per model and preprocessing

SNIPPET_FEATURES_VERSION = 1


def snippet_feature_videos(corpus) -> list[dict]:
    """The videos whose snippet features the head trains and is evaluated on: each training video once (its class;
    label 0 for Normal, 1 for an anomaly class), then the test videos. [{key, path, class_name, label, split}]."""
    from ..data.ucf_crime import NORMAL_CLASS

    out, seen = [], set()
    table = corpus.train_dataset.data  # the Arrow table: the dataset's own transform decodes clips
    columns = [table.column(name).to_pylist() for name in ("key", "path", "class_name")]
    for key, path, class_name in zip(*columns):
        if key not in seen:
            seen.add(key)
            out.append({"key": key, "path": path, "class_name": class_name,
                        "label": int(class_name != NORMAL_CLASS), "split": "train"})
    for video in corpus.test_videos:
        out.append({"key": video["key"], "path": video["path"], "class_name": video["class_name"],
                    "label": int(video["class_name"] != NORMAL_CLASS), "split": "test"})
    return out


def snippet_feature_fingerprint(model_folder: str, data_args: VADDataArguments) -> dict:
    """What the cached snippet features depend on: the saved FG-CLIP model (config and weights) and how frames are
    read (one centre frame per 16-frame snippet, every snippet, resized as evaluation resizes)."""
    from ..feature_cache import model_fingerprint

    return {"kind": "fgclip_video snippet features", "version": SNIPPET_FEATURES_VERSION,
            "model": model_fingerprint(model_folder),
            "preprocessing": {"snippet_frames": SNIPPET_FRAMES, "image_size": data_args.image_size,
                              "resize_mode": data_args.resize_mode, "frame": "centre of each snippet"}}


def compute_snippet_features(model: FGCLIPVideoModel, path: str, data_args: VADDataArguments, reader=None,
                             device="cpu", chunk_windows: int = 4):
    """(num_snippets, D) float32 features of one video: every snippet's centre frame, through the model in chunks of
    whole `score_window_frames` windows (the temporal module restarts at each window, so chunks give exactly what one
    pass over the video gives)."""
    import torch

    from ..data.video_io import ReaderCache

    reader = reader or ReaderCache(data_args.decode_threads)
    video = reader.get_for(path, partial(resize_frames_decode_size, size=data_args.image_size,
                                         mode=data_args.resize_mode))  # as the evaluation decodes
    indices = eval_frame_indices(video.num_frames, None)
    step = model.config.score_window_frames * chunk_windows
    parts = []
    with torch.no_grad():
        for lo in range(0, len(indices), step):
            pixels, _ = resize_frames(video.get_frames(indices[lo: lo + step]), data_args.image_size,
                                      data_args.resize_mode)
            parts.append(model.get_snippet_features(pixels[None].to(device))[0].float().cpu())
    return torch.cat(parts)


def extract_snippet_features(model: FGCLIPVideoModel, model_folder: str, videos: list[dict],
                             data_args: VADDataArguments, cache_root: str, rank: int = 0, world_size: int = 1,
                             device="cpu"):
    """The FeatureCache of (model, preprocessing) holding `features` (T, D) of every video: this process's share of
    those it lacks computed and saved one by one (a stopped extraction resumes; processes split the videos)."""
    from ..data.video_io import ReaderCache
    from ..feature_cache import FeatureCache, extract

    cache = FeatureCache(cache_root, snippet_feature_fingerprint(model_folder, data_args))
    model.eval()
    reader = ReaderCache(data_args.decode_threads)
    paths = {v["key"]: v["path"] for v in videos}
    done = extract(cache, [v["key"] for v in videos],
                   lambda key: {"features": compute_snippet_features(model, paths[key], data_args, reader, device)},
                   rank=rank, world_size=world_size)
    logger.warning("snippet features: %d of %d videos computed, the rest cached, in %s", done, len(videos),
                   cache.folder)
    return cache


class PromptScorer:
    """FG-CLIP's zero-shot prompt scores of snippet features (the head stage's `vad_score: prompts|both`): the prompt
    embeddings once, the model moved to the features' device on first use."""

    def __init__(self, model: FGCLIPVideoModel, tokenizer):
        import torch

        self.model = model.eval()
        with torch.no_grad():
            self.prompt_embeds = model.get_prompt_embeddings(**model.encode_prompts(tokenizer)).float()

    def __call__(self, features, mask):
        if self.prompt_embeds.device != features.device:
            self.model.to(features.device)
            self.prompt_embeds = self.prompt_embeds.to(features.device)
        return self.model.score_snippet_features(features, mask, self.prompt_embeds).scores


def setup_head(model_args: VADModelArguments, data_args: VADDataArguments, training_args: VADTrainingArguments):
    """The weakly supervised head's stage: the corpus (checked as for FG-CLIP training, the leakage check included),
    the trained FG-CLIP's snippet features of every training and test video (extracted once into the feature cache,
    each process its share), a new head sized for them, and the datasets of cached features."""
    import datasets
    from accelerate import PartialState
    from transformers import AutoTokenizer

    from ..data.ucf_crime import VADFeatureTransform, collate_vad_features
    from ..models.vad_head import VADHeadConfig, VADHeadForAnomalyScoring
    from ..trainers.vad import VADHeadTrainer

    folder = model_args.feature_model
    check_pretrained_source("feature_model", folder, "FGCLIPVideoModel")
    with training_args.main_process_first(desc="corpus"):
        corpus = load_ucf_crime(data_args, seed=training_args.seed,
                                tokenizer_loader=lambda: AutoTokenizer.from_pretrained(folder))
        logger.info("corpus: %s", corpus.report.format())
    with loading("feature_model", folder, "FGCLIPVideoModel"):
        fgclip = FGCLIPVideoModel.from_pretrained(folder)
    videos = snippet_feature_videos(corpus)
    cache = extract_snippet_features(fgclip, folder, videos, data_args, model_args.feature_cache_dir,
                                     rank=training_args.process_index, world_size=training_args.world_size,
                                     device=training_args.device)
    fgclip.to("cpu")
    PartialState().wait_for_everyone()  # every process's share is on disk
    missing = cache.missing([v["key"] for v in videos])
    if missing:
        raise RuntimeError(f"snippet features of {len(missing)} videos are missing from {cache.folder}: {missing[:5]}")
    dim = int(cache.load(videos[0]["key"])["features"].shape[1])
    classes = list(fgclip.config.anomaly_classes)
    unknown = sorted({v["class_name"] for v in videos} - set(classes))
    if unknown:
        raise RecipeError(f"feature_model: the corpus has classes {unknown} that {folder}'s anomaly_classes "
                          f"{classes} lack (the alignment term needs each video's class among them)")
    with config_errors("head_config_overrides"):
        config = VADHeadConfig(**{"num_align_classes": len(classes), **model_args.head_config_overrides},
                               feature_dim=dim)
    head = VADHeadForAnomalyScoring(config)
    scorer = PromptScorer(fgclip, corpus.tokenizer)
    if config.num_align_classes:  # VadCLIP's MIL-Align against the FG-CLIP prompts' text embeddings
        if config.num_align_classes != len(classes):
            raise RecipeError(f"head_config_overrides.num_align_classes must be 0 or the feature model's "
                              f"{len(classes)} classes, got {config.num_align_classes}")
        head.set_class_embeddings(scorer.prompt_embeds)
    logger.warning("anomaly head: %s parameters on %d-d snippet features of %s (cache %s)",
                   f"{head.num_parameters():,}", dim, folder, cache.folder)
    train = [v for v in videos if v["split"] == "train"]
    test = {v["key"]: v for v in videos if v["split"] == "test"}
    tables = {}
    for part, rows in (("train", [dict(v, video_index=-1, num_snippets=0) for v in train]),
                       ("test", [dict(test[v["key"]], video_index=i, num_snippets=v["num_snippets"])
                                 for i, v in enumerate(corpus.test_videos)])):
        rows = [dict(r, class_index=classes.index(r["class_name"])) for r in rows]
        tables[part] = datasets.Dataset.from_dict({c: [r[c] for r in rows] for c in
                                                   ("key", "label", "class_index", "video_index", "num_snippets")})
        tables[part].set_transform(VADFeatureTransform(lambda key: cache.load(key)["features"],
                                                       model_args.head_max_train_snippets if part == "train"
                                                       else None))
    if model_args.vad_score == "head":
        scorer = None
    return TaskRun(
        model=head,
        train_dataset=tables["train"],
        eval_dataset=tables["test"],
        data_collator=collate_vad_features,
        trainer_kwargs={"corpus": corpus, "prompt_scorer": scorer, "vad_score": model_args.vad_score,
                        "feature_model_dir": folder,
                        # the FG-CLIP model travels with the head (VADHeadTrainer._save): feature_model/ beside it
                        "preprocessing_config": {**preprocessing_config(data_args), "max_eval_snippets": None,
                                                 "stage": "head", "feature_model": VADHeadTrainer.FEATURE_MODEL_DIR,
                                                 "feature_model_source": os.path.abspath(folder),
                                                 "vad_score": model_args.vad_score}},
        epoch_hooks=[],
        corpus=corpus,
        trainer_cls=VADHeadTrainer,
    )


class VADPredictor(TaskPredictor):
    """Anomaly scores for any video, as evaluation scores a test video: one frame fed per 16-frame snippet (the same
    frames, resize and prompts), the temporal module over windows of `score_window_frames` snippets. A long video
    runs in pieces of whole windows (positions restart in each window): the scores of one pass up to float rounding
    (a video of up to `--batch_size` windows is one piece, as evaluation scores it). Per
    video `<key>.scores.json` (a snippet score list with the frame count: the input of `python -m
    hf_vtrain.metrics.vad`), `<key>.frame_scores.json` (one score per scored frame: the same metric with `--snippet
    1`) and `<key>.scores.png`; `anomaly_scores.json` holds every video at the end."""

    unit = "snippet"
    default_batch_size = 32
    result_suffix = ".scores.json"
    default_threshold = 0.5

    def __init__(self, folder: str, preprocessing: dict, options, runtime: PredictRuntime):
        import torch
        from transformers import AutoTokenizer

        self.head = None
        if preprocessing.get("stage") == "head":  # a head run: its head, on the features of its FG-CLIP model
            from ..models.vad_head import VADHeadForAnomalyScoring

            with loading("--model", folder, "anomaly head"):
                self.head = VADHeadForAnomalyScoring.from_pretrained(folder).to(runtime.device).eval()
            feature = preprocessing["feature_model"]
            if not os.path.isabs(feature):  # beside the head; an ema/ folder's is its run folder's
                feature = next((c for c in (os.path.join(folder, feature),
                                            os.path.join(os.path.dirname(os.path.abspath(folder)), feature))
                                if os.path.isfile(os.path.join(c, "config.json"))), os.path.join(folder, feature))
            if not os.path.isfile(os.path.join(feature, "config.json")):
                raise RecipeError(f"--model: {folder} is an anomaly head on the features of {feature}, which is not "
                                  f"here (predict needs that FG-CLIP folder too)")
            folder = feature
        with loading("--model", folder, "FGCLIPVideoModel"):
            self.model = FGCLIPVideoModel.from_pretrained(folder)
        if not _has_tokenizer(folder):
            raise RecipeError(f"{folder} holds no tokenizer (tokenizer_config.json): the anomaly prompts cannot be "
                              f"encoded; save the CLIP tokenizer into it")
        tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model.to(runtime.device).eval()
        self.config = self.model.config
        self.runtime = runtime
        self.threshold = runtime.threshold if runtime.threshold is not None else self.default_threshold
        self.snippet = int(preprocessing["snippet_frames"])
        self.image_size = int(preprocessing["image_size"])
        self.resize_mode = preprocessing["resize_mode"]
        self.max_snippets = preprocessing.get("max_eval_snippets") if self.head is None else None  # head: all
        with torch.no_grad(), runtime.autocast():  # once, as evaluation does
            prompts = self.model.encode_prompts(tokenizer)
            self.prompt_embeds = self.model.get_prompt_embeddings(**prompts).float()

    def describe(self) -> str:
        c = self.config
        cap = "every snippet" if self.max_snippets is None else f"at most {self.max_snippets} per video"
        if self.head is not None:
            return (f"anomaly head ({self.head.num_parameters():,} parameters) on FG-CLIP video snippet features; "
                    f"one frame per {self.snippet}-frame snippet ({cap}), {self.resize_mode} to {self.image_size} px; "
                    f"plot threshold {self.threshold}")
        return (f"FG-CLIP video, {len(c.anomaly_prompts)} prompts (normal: {c.anomaly_prompts[c.normal_prompt_index]!r}); "
                f"one frame per {self.snippet}-frame snippet ({cap}), {self.resize_mode} to {self.image_size} px, "
                f"windows of {c.score_window_frames} snippets; plot threshold {self.threshold}")

    def plan(self, path: str, video_id: str) -> VideoPlan:
        from ..data.video_io import probe_video

        info = probe_video(path, decode_last=True, num_threads=self.runtime.decode_threads)
        fed = eval_frame_indices(info.num_frames, self.max_snippets, self.snippet)
        return VideoPlan(video_id, path, info.num_frames, info.fps, info.height, info.width, len(fed),
                         {"fed": fed, "num_snippets": num_video_snippets(info.num_frames, self.snippet)})

    def run(self, plan: VideoPlan, advance) -> dict:
        import torch

        from ..data.video_io import ReaderCache

        reader = ReaderCache(self.runtime.decode_threads).get_for(  # as the evaluation decodes
            plan.path, partial(resize_frames_decode_size, size=self.image_size, mode=self.resize_mode))
        fed = plan.extra["fed"]
        piece = self.config.score_window_frames * max(1, self.runtime.batch_size)  # whole windows per forward
        pieces = [fed[i: i + piece] for i in range(0, len(fed), piece)]
        scores = []
        for pixels in prefetched(pieces, lambda idx: resize_frames(reader.get_frames(idx), self.image_size,
                                                                   self.resize_mode)[0]):
            pixel_values = pixels.unsqueeze(0).to(self.runtime.device)
            mask = torch.ones(pixel_values.shape[:2], dtype=torch.bool, device=self.runtime.device)
            with torch.no_grad(), self.runtime.autocast():
                if self.head is not None:  # features now, the head over the whole video below
                    scores.append(self.model.get_snippet_features(pixel_values, mask)[0].float())
                else:
                    out = self.model.score_snippets(pixel_values, mask, prompt_embeds=self.prompt_embeds)
                    scores.append(out.scores[0].float().cpu().numpy().astype(np.float64))
            advance(len(pixels))
        if self.head is not None:
            with torch.no_grad():
                head_scores = self.head(torch.cat(scores)[None]).scores[0]
            scores = [head_scores.float().cpu().numpy().astype(np.float64)]
        return {"scores": expand_eval_scores(np.concatenate(scores), plan.extra["num_snippets"]).tolist(),
                "num_frames": plan.num_frames}

    def write(self, plan: VideoPlan, result: dict, out_dir: str) -> tuple[list[str], str]:
        from ..plotting.vad import plot_anomaly_scores

        scores = result["scores"]
        stem = os.path.join(out_dir, plan.video_id)
        frames = np.repeat(np.asarray(scores), self.snippet).tolist()
        files = [
            write_json_atomic(f"{stem}.scores.json", {"scores": {plan.video_id: scores},
                                                      "num_frames": {plan.video_id: plan.num_frames}}),
            write_json_atomic(f"{stem}.frame_scores.json", {"scores": {plan.video_id: frames}}),
            plot_anomaly_scores(plan.video_id, scores, plan.num_frames, None, f"{stem}.scores.png", fps=plan.fps,
                                snippet=self.snippet, threshold=self.threshold),
        ]
        above = sum(s >= self.threshold for s in scores)
        peak = int(np.argmax(scores))
        return files, (f"{len(scores)} snippets, {above} with score >= {self.threshold}; peak {scores[peak]:.3f} at "
                       f"{peak * self.snippet / plan.fps:.1f} s")

    def read(self, out_dir: str, video_id: str) -> dict:
        with open(os.path.join(out_dir, video_id + self.result_suffix), encoding="utf-8") as handle:
            saved = json.load(handle)
        return {"scores": saved["scores"][video_id], "num_frames": saved["num_frames"][video_id]}

    def write_combined(self, results: dict, out_dir: str) -> list[str]:
        return [write_json_atomic(os.path.join(out_dir, "anomaly_scores.json"),
                                  {"scores": {k: v["scores"] for k, v in results.items()},
                                   "num_frames": {k: v["num_frames"] for k, v in results.items()}})]


SPEC = TaskSpec(
    description="video anomaly detection (FG-CLIP video, UCF-Crime format)",
    model_args=VADModelArguments,
    data_args=VADDataArguments,
    training_args=VADTrainingArguments,
    trainer_cls=VADTrainer,
    setup=setup,
    validate=validate_ucf_crime,
    predictor=VADPredictor,
    phase_folder_keys=("feature_model",),
    load_corpus=ucf_crime.load_corpus,
)
