"""The trainer of task `vad` (video anomaly detection, FG-CLIP video): snippet scoring and the UCF-Crime frame AUC.

Training batches come from the loader's train collator (clips, captions, region boxes, hard negatives) and the model
returns its named contrastive losses. Evaluation uses the eval collator (one fed frame per 16-frame snippet of each
test video): `prediction_step` scores the snippets against the anomaly prompts (embedded once per evaluation) and
returns fixed-width padded scores with (video_index, num_snippets, num_fed) as labels, so the Trainer gathers them
across processes; `compute_metrics` expands them to frames per video and computes the UCF-Crime frame AUC / AP.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..data.common import write_json_atomic
from ..metrics.vad import evaluate_frame_auc
from .arguments import VTrainingArguments
from .base import VTrainer
from .distributed import deepspeed_zero_stage

logger = logging.getLogger(__name__)

SCORE_PADDING = -1.0  # snippet scores are in [0, 1]; the width beyond a video's fed snippets holds this


@dataclass
class VADTrainingArguments(VTrainingArguments):
    """VTrainingArguments plus gradient caching for the contrastive losses."""

    contrastive_chunk_size: int = field(
        default=0,
        metadata={"help": "Gradient caching (Gao et al., 2021): the model runs the per-device batch in chunks of this "
                          "many clips, so activations are held for one chunk at a time, while every contrastive term "
                          "contrasts the whole per-device batch (gathered over processes). Exact: the same loss and "
                          "gradients as one forward of the whole batch, for one extra forward without gradients per "
                          "chunk. Set per_device_train_batch_size to the contrastive batch (e.g. 16) and this to "
                          "what fits in memory (e.g. 2); gradient accumulation adds no negatives. 0: off."},
    )

    def __post_init__(self):
        super().__post_init__()
        if self.contrastive_chunk_size < 0:
            raise ValueError(f"contrastive_chunk_size must be >= 0, got {self.contrastive_chunk_size}")
        if self.contrastive_chunk_size and deepspeed_zero_stage(self) is not None:
            raise ValueError("contrastive_chunk_size (gradient caching) runs several backward passes per step, which "
                             "the DeepSpeed engine does not take; use it with one process or DDP, or set it to 0 and "
                             "use gradient_accumulation_steps under DeepSpeed")


def split_batch(inputs: dict, size: int) -> list[dict]:
    """A collated batch cut into chunks of `size` samples along the first dimension (every tensor is per sample)."""
    batch = inputs["pixel_values"].shape[0]
    return [{k: v[start: start + size] if torch.is_tensor(v) else v for k, v in inputs.items()}
            for start in range(0, batch, size)]


def _cat_or_none(values: list):
    return None if values[0] is None else torch.cat(values, dim=0)


def interleave_anomalous_and_normal(videos: list[dict], annotations: dict) -> list[dict]:
    """Test videos in the order anomalous, normal, anomalous, ... (each kind in test-list order), for plots."""
    anomalous = [v for v in videos if annotations.get(v["key"])]
    normal = [v for v in videos if not annotations.get(v["key"])]
    out = []
    for i in range(max(len(anomalous), len(normal))):
        out += [kind[i] for kind in (anomalous, normal) if i < len(kind)]
    return out


def frame_scores_and_auc(corpus, scores: np.ndarray, meta: np.ndarray):
    """(payload {scores per frame-snippet, num_frames}, FrameAUCResult) of the gathered evaluation: `scores` (N, W)
    padded per video, `meta` (N, 3) = (video_index, num_snippets, fed); every test video exactly once, whatever the
    number of processes (gather_for_metrics drops the padding)."""
    meta = meta.astype(np.int64).reshape(-1, 3)
    videos = corpus.test_videos
    counts = Counter(meta[:, 0].tolist())
    missing = [videos[i]["key"] for i in range(len(videos)) if counts[i] == 0]
    repeated = [videos[i]["key"] if 0 <= i < len(videos) else i for i, c in counts.items() if c > 1]
    unknown = [i for i in counts if not 0 <= i < len(videos)]
    if missing or repeated or unknown:
        raise RuntimeError(
            f"evaluation gathered {len(meta)} test videos for {len(videos)} in the test list: missing "
            f"{missing[:10]}, seen more than once {repeated[:10]}, unknown indices {unknown[:10]}"
        )
    per_video = {}
    for row, (index, num_snippets, fed) in zip(scores, meta):
        video = videos[index]
        if num_snippets != video["num_snippets"]:
            raise RuntimeError(f"{video['key']}: {num_snippets} snippets scored, the corpus has "
                               f"{video['num_snippets']}")
        per_video[video["key"]] = corpus.expand_eval_scores(row[:fed], num_snippets).tolist()
    ordered = {v["key"]: per_video[v["key"]] for v in videos}
    num_frames = {v["key"]: int(v["num_frames"]) for v in videos}
    result = evaluate_frame_auc(corpus.annotations, list(ordered), ordered, num_frames=num_frames)
    return {"scores": ordered, "num_frames": num_frames}, result


MODEL_FILE_SUFFIXES = (".json", ".safetensors", ".bin", ".txt", ".model")


def link_or_copy_model(source: str, target: str) -> str:
    """The model files of `source` (config, weights, tokenizer, preprocessing config; not its checkpoints or logs)
    into `target`, hard-linked when possible; an existing complete target is kept."""
    import shutil

    if os.path.isfile(os.path.join(target, "config.json")):
        return target
    tmp = f"{target}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    for name in sorted(os.listdir(source)):
        src = os.path.join(source, name)
        if not os.path.isfile(src) or not name.endswith(MODEL_FILE_SUFFIXES) or name.startswith(("trainer_state",
                                                                                                  "all_results",
                                                                                                  "train_results",
                                                                                                  "eval_results")):
            continue
        try:
            os.link(src, os.path.join(tmp, name))
        except OSError:
            shutil.copy2(src, os.path.join(tmp, name))
    os.replace(tmp, target)
    return target


class VADOutputsMixin:
    """The final outputs of a vad evaluation (both trainers): needs corpus, args, last_scores, last_metric_result and,
    when several scorers ran, other_results {name: result}."""

    def write_final_outputs(self, output_dir: str) -> None:
        """anomaly_scores.json (readable by `python -m hf_vtrain.metrics.vad`), the metric table, and score-over-time
        plots for the first `plot_eval_videos` test videos (anomalous and normal alternately)."""
        from ..plotting.vad import plot_anomaly_scores

        if self.last_scores is None:
            return
        write_json_atomic(os.path.join(output_dir, "anomaly_scores.json"), self.last_scores)
        table = self.last_metric_result.table()
        for name, result in getattr(self, "other_results", {}).items():  # scored side by side (vad_score: both)
            table += f"\n\n{name}:\n{result.table()}"
        with open(os.path.join(output_dir, "eval_auc_table.txt"), "w") as handle:
            handle.write(table + "\n")
        print(f"\nframe-level metrics (UCF-Crime protocol):\n{table}\n")
        chosen = interleave_anomalous_and_normal(self.corpus.test_videos, self.corpus.annotations)
        drawn = chosen[: self.args.plot_eval_videos]
        print(f"score_plots/: {len(drawn)} of {len(chosen)} test videos, anomalous and normal alternately "
              f"(plot_eval_videos: {self.args.plot_eval_videos})")
        for video in drawn:
            key = video["key"]
            others = {name: payload["scores"][key] for name, payload in getattr(self, "other_scores", {}).items()}
            plot_anomaly_scores(
                key, self.last_scores["scores"][key], int(video["num_frames"]), self.corpus.annotations.get(key, []),
                os.path.join(output_dir, "score_plots", f"{key}.png"), class_name=video["class_name"],
                fps=video.get("fps"), label=getattr(self, "main_scorer", "anomaly score"), others=others,
            )


class VADTrainer(VADOutputsMixin, VTrainer):
    """Train collator for training, eval collator for evaluation; snippet scoring and frame AUC."""

    def __init__(self, *args, corpus: Any, **kwargs):
        super().__init__(*args, **kwargs)
        self.corpus = corpus
        self.eval_collator = corpus.eval_collator
        self.compute_metrics = self._compute_vad_metrics
        max_fed = corpus.eval_transform.max_eval_snippets
        self.score_width = max([1] + [v["num_snippets"] if max_fed is None else min(v["num_snippets"], max_fed)
                                      for v in corpus.test_videos])
        self._prompt_embeds: torch.Tensor | None = None
        self.last_scores: dict | None = None
        self.last_scores_path: str | None = None
        self.last_metric_result = None

    # ---- gradient caching (contrastive_chunk_size)
    def training_step(self, model, inputs, num_items_in_batch=None):
        chunk = getattr(self.args, "contrastive_chunk_size", 0)
        if not chunk or inputs["pixel_values"].shape[0] <= chunk:
            return super().training_step(model, inputs, num_items_in_batch)
        model.train()
        inputs = self._prepare_inputs(inputs)
        pieces = split_batch(inputs, chunk)
        net = self.accelerator.unwrap_model(model)
        accumulation = getattr(self, "current_gradient_accumulation_steps", self.args.gradient_accumulation_steps)
        # 1. the embeddings of the whole batch, chunk by chunk, without a graph
        with torch.no_grad(), self.compute_loss_context_manager():
            outputs = [net(**piece, return_loss=False, return_contrastive_inputs=True) for piece in pieces]
        cached = [out.contrastive_inputs for out in outputs]
        scales = outputs[0]  # the temperatures' multipliers, the same for every chunk
        # 2. the losses of the whole batch on detached copies: their gradients w.r.t. the embeddings and temperatures
        leaves = {key: _cat_or_none([c[key] for c in cached]) for key in cached[0]}
        leaves = {k: v.detach().float().requires_grad_() if v is not None else None for k, v in leaves.items()}
        scale_leaves = {"global": scales.logit_scale, "region": scales.region_logit_scale,
                        "hard_negative": scales.hard_negative_logit_scale}
        scale_leaves = {k: v.detach().float().requires_grad_() for k, v in scale_leaves.items()}
        with self.compute_loss_context_manager():
            parts = net.contrastive_loss(leaves, scale_leaves)
        loss = self.record_training_loss(model, inputs, parts, parts["loss"])
        if loss is not parts["loss"]:  # a non-finite batch, skipped by every process: zero gradients, as in compute_loss
            self.accelerator.backward(loss / accumulation)
            return loss.detach()
        wanted = [t for t in [*leaves.values(), *scale_leaves.values()] if t is not None]
        grads = torch.autograd.grad(parts["loss"], wanted, allow_unused=True)
        grad_of = {id(t): g for t, g in zip(wanted, grads)}
        # 3. each chunk again with its graph; the backward of sum(embedding . cached gradient) puts the whole batch's
        # gradient on the weights (the temperatures' share divided over the chunks). DDP syncs after the last chunk.
        scale_fields = {"global": "logit_scale", "region": "region_logit_scale",
                        "hard_negative": "hard_negative_logit_scale"}
        offsets = {key: 0 for key in leaves}
        for i, piece in enumerate(pieces):
            sync = i == len(pieces) - 1
            with (contextlib.nullcontext() if sync else self.accelerator.no_sync(model)):
                with self.compute_loss_context_manager():
                    out = model(**piece, return_loss=False, return_contrastive_inputs=True)
                    surrogate = 0.0
                    for key, value in out.contrastive_inputs.items():
                        if value is None:
                            continue
                        n = value.shape[0]
                        grad = grad_of.get(id(leaves[key]))
                        if grad is not None and n:
                            surrogate = surrogate + (value.float() * grad[offsets[key]: offsets[key] + n]).sum()
                        else:
                            surrogate = surrogate + value.float().sum() * 0.0
                        offsets[key] += n
                    for name, field_name in scale_fields.items():
                        grad = grad_of.get(id(scale_leaves[name]))
                        multiplier = getattr(out, field_name).float()
                        surrogate = surrogate + multiplier * (grad / len(pieces) if grad is not None else 0.0)
                self.accelerator.backward(surrogate / accumulation)
        return (parts["loss"] / accumulation).detach()

    def get_eval_dataloader(self, eval_dataset=None):
        train_collator = self.data_collator
        self.data_collator = self.eval_collator
        try:
            return super().get_eval_dataloader(eval_dataset)
        finally:
            self.data_collator = train_collator

    def evaluation_loop(self, *args, **kwargs):
        # Prompt embeddings once per evaluation, with the weights being evaluated (EMA ones are swapped in before).
        self._prompt_embeds = None
        try:
            return super().evaluation_loop(*args, **kwargs)
        finally:
            self._prompt_embeds = None

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        if prediction_loss_only:  # no captions at test time: there is no evaluation loss
            return None, None, None
        inputs = self._prepare_inputs(inputs)
        net = self.accelerator.unwrap_model(model)
        with torch.no_grad(), self.compute_loss_context_manager():
            if self._prompt_embeds is None:
                prompts = net.encode_prompts(self.corpus.tokenizer)
                self._prompt_embeds = net.get_prompt_embeddings(**prompts).float()
            out = net.score_snippets(inputs["pixel_values"], inputs["pixel_mask"], prompt_embeds=self._prompt_embeds)
        fed = inputs["pixel_mask"].sum(dim=1)
        batch, width = out.scores.shape
        if width > self.score_width:
            raise RuntimeError(f"a test video fed {width} snippets, more than the {self.score_width} expected")
        scores = out.scores.new_full((batch, self.score_width), SCORE_PADDING, dtype=torch.float32)
        scores[:, :width] = torch.where(inputs["pixel_mask"], out.scores.float(), SCORE_PADDING)
        labels = torch.stack([inputs["video_index"], inputs["num_snippets"], fed], dim=1).long()
        return None, scores, labels

    def _compute_vad_metrics(self, eval_pred) -> dict[str, float]:
        payload, result = frame_scores_and_auc(self.corpus, np.asarray(eval_pred.predictions, dtype=np.float64),
                                               np.asarray(eval_pred.label_ids))
        self._keep_scores(payload, result)
        return result.as_dict()

    def _keep_scores(self, payload: dict, result) -> None:
        path = os.path.join(self.args.output_dir, f"scores_step{self.state.global_step}.json")
        if self.args.should_save:
            os.makedirs(self.args.output_dir, exist_ok=True)
            write_json_atomic(path, payload)
        logger.info("frame AUC at step %d:\n%s", self.state.global_step, result.table())
        self.last_scores, self.last_scores_path, self.last_metric_result = payload, path, result


class VADHeadTrainer(VADOutputsMixin, VTrainer):
    """The weakly supervised head (models/vad_head) on cached snippet features: top-k MIL on the video labels in
    training; evaluation scores every snippet of each test video with the head and/or the FG-CLIP prompts from the
    same features (`vad_score`: head, prompts or both; the first named is the run's metric, the other reported
    beside it as prompts_* / head_*)."""

    MODEL_INPUTS = ("features", "snippet_mask", "labels", "class_labels")

    FEATURE_MODEL_DIR = "feature_model"  # inside every saved head folder: the FG-CLIP model it reads features of

    def __init__(self, *args, corpus: Any, prompt_scorer=None, vad_score: str = "both",
                 feature_model_dir: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.corpus, self.prompt_scorer, self.vad_score = corpus, prompt_scorer, vad_score
        self.feature_model_dir = feature_model_dir
        self.scorers = {"both": ["head", "prompts"], "head": ["head"], "prompts": ["prompts"]}[vad_score]
        if "prompts" in self.scorers and prompt_scorer is None:
            raise ValueError("vad_score with prompts needs the FG-CLIP prompt scorer")
        self.compute_metrics = self._compute_head_metrics
        self.score_width = max([1] + [v["num_snippets"] for v in corpus.test_videos])
        self.last_scores = self.last_scores_path = self.last_metric_result = None
        self.other_results: dict = {}
        self.other_scores: dict = {}  # name -> payload of the scorers after the first (plotted beside it)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        return super().compute_loss(model, {k: inputs[k] for k in self.MODEL_INPUTS}, return_outputs,
                                    num_items_in_batch)

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """The head, and beside it (`feature_model/`) the FG-CLIP model whose features it reads, so that a saved
        head folder (a checkpoint, the final one, a pushed repo) is whole for evaluation and predict. Hard links
        where the file system allows (checkpoints cost no space for it), else copies."""
        super()._save(output_dir, state_dict)
        folder = output_dir or self.args.output_dir
        if self.feature_model_dir and self.args.should_save:
            link_or_copy_model(self.feature_model_dir, os.path.join(folder, self.FEATURE_MODEL_DIR))

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        mask = inputs["snippet_mask"]
        with torch.no_grad(), self.compute_loss_context_manager():
            out = model(**{k: inputs[k] for k in self.MODEL_INPUTS})
            heads = {"head": out.scores}
            if "prompts" in self.scorers:
                heads["prompts"] = self.prompt_scorer(inputs["features"], mask)
        loss = out.loss.detach().mean() if out.loss is not None else None
        if prediction_loss_only:
            return loss, None, None
        batch, width = mask.shape
        if width > self.score_width:
            raise RuntimeError(f"a test video has {width} snippets, more than the {self.score_width} expected")
        scores = mask.new_full((batch, len(self.scorers), self.score_width), SCORE_PADDING, dtype=torch.float32)
        for h, name in enumerate(self.scorers):
            scores[:, h, :width] = torch.where(mask, heads[name].float(), SCORE_PADDING)
        labels = torch.stack([inputs["video_index"], inputs["num_snippets"], mask.sum(dim=1)], dim=1).long()
        return loss, scores, labels

    def _compute_head_metrics(self, eval_pred) -> dict[str, float]:
        scores = np.asarray(eval_pred.predictions, dtype=np.float64)
        meta = np.asarray(eval_pred.label_ids)
        metrics, self.other_results, self.other_scores = {}, {}, {}
        self.main_scorer = f"{self.scorers[0]} score"
        for h, name in enumerate(self.scorers):
            payload, result = frame_scores_and_auc(self.corpus, scores[:, h], meta)
            if h == 0:
                metrics.update(result.as_dict())
                path = os.path.join(self.args.output_dir, f"scores_step{self.state.global_step}.json")
                if self.args.should_save:
                    os.makedirs(self.args.output_dir, exist_ok=True)
                    write_json_atomic(path, {**payload, "scorer": name})
                self.last_scores, self.last_scores_path, self.last_metric_result = payload, path, result
            else:
                metrics.update(result.as_dict(f"{name}_"))
                self.other_results[name] = result
                self.other_scores[f"{name} score"] = payload
            logger.info("frame AUC (%s) at step %d:\n%s", name, self.state.global_step, result.table())
        return metrics
