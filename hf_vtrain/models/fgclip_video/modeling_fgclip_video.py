"""FG-CLIP-style video-text model for video anomaly detection: a transformers `CLIPModel` with FG-CLIP's long-caption
positions and box-region features, a small temporal transformer over frame embeddings, and zero-shot snippet scoring.

FG-CLIP facts used (Xie et al., ICML 2025; qihoo360/FG-CLIP, `fgclip/model/clip_strc/fgclip.py` and its
`modeling_clip.py`):
- Long captions use a 248-position table: CLIP's first 20 positions unchanged, positions 20..76 stretched x4 by linear
  interpolation between neighbours, the last 4 extrapolated from the last two positions (`resize_postion_embeding`).
  Short captions (regions, hard negatives) keep CLIP's own 77-position table (`walk_short_pos=True`).
- Long captions are projected by their own projection (`text_filip_projection`, initialised as a copy of CLIP's
  `text_projection`); short captions use `text_projection`.
- Region features: the penultimate layer's tokens go once more through the LAST layer's weights with attention
  replaced by the value path only (`forward_without_attn`: x + out_proj(v_proj(ln1(x))), then the MLP), then
  `post_layernorm` and `visual_projection`, reshaped to the patch grid; RoIAlign(output 1x1, spatial scale 1 on boxes
  scaled to the grid, sampling_ratio -1, aligned=True) gives one vector per box. No new parameters.
- Three temperatures: CLIP's `logit_scale` (global), `logit_scale_finegraind` (region), `logit_scale_hardneg`.
Decoding anomaly scores into frame labels/AUC happens in `hf_vtrain.metrics`, never here.
"""

from __future__ import annotations

import logging
import math
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from transformers import CLIPModel, PreTrainedModel
from transformers import initialization as init
from transformers.models.clip.modeling_clip import CLIPTextEmbeddings
from transformers.utils import ModelOutput

from .losses_fgclip_video import fgclip_losses
from .roi_align import roi_align
from .configuration_fgclip_video import FGCLIPVideoConfig


logger = logging.getLogger(__name__)


@dataclass
class FGCLIPVideoOutput(ModelOutput):
    r"""
    loss (`torch.Tensor`, scalar): `global_loss_weight * global_loss + short_global_loss_weight * short_global_loss +
        region_loss_weight * region_loss + hard_negative_loss_weight * hard_negative_loss`; None without captions or
        with `return_loss=False`.
    global_loss: symmetric InfoNCE between clip and global (long) caption embeddings over the (gathered) batch.
    short_global_loss: the same with the short captions (CLIP's 77-position path); 0 without short captions.
    region_loss: symmetric InfoNCE between region and region-caption embeddings over every valid region of the
        (gathered) batch; 0 when the batch has no region inputs (regions without any box never take part).
    hard_negative_loss: (1 + K)-way cross-entropy of each region among its caption and K hard negatives; 0 when the
        batch has no negative inputs or no region with negatives.
    video_embeds (`(B, D)`), text_embeds (`(B, D)`): L2-normalised clip and caption embeddings.
    frame_embeds (`(B, T, D)`): per-frame embeddings after the temporal module (not normalised; 0 on padded frames).
    region_embeds, region_text_embeds (`(B, R, D)`): L2-normalised, 0 where `region_valid_mask` is False.
    region_valid_mask (`(B, R)` bool): regions that exist and have a box on at least one real frame.
    logit_scale, region_logit_scale, hard_negative_logit_scale: the multipliers exp(t) (clamped) of each loss.
    contrastive_inputs (`dict`): with `return_contrastive_inputs`, the keyword arguments of `fgclip_losses` (the
        normalised video, caption, short-caption, region and hard-negative embeddings the losses contrast).
    """

    loss: torch.Tensor | None = None
    global_loss: torch.Tensor | None = None
    short_global_loss: torch.Tensor | None = None
    region_loss: torch.Tensor | None = None
    hard_negative_loss: torch.Tensor | None = None
    video_embeds: torch.Tensor | None = None
    text_embeds: torch.Tensor | None = None
    short_text_embeds: torch.Tensor | None = None
    frame_embeds: torch.Tensor | None = None
    region_embeds: torch.Tensor | None = None
    region_text_embeds: torch.Tensor | None = None
    region_valid_mask: torch.Tensor | None = None
    logit_scale: torch.Tensor | None = None
    region_logit_scale: torch.Tensor | None = None
    hard_negative_logit_scale: torch.Tensor | None = None
    contrastive_inputs: dict | None = None


@dataclass
class FGCLIPVideoSnippetScores(ModelOutput):
    r"""
    scores (`(B, T)`): anomaly score per snippet, 1 - p(normal prompt), in [0, 1]; 0 where `snippet_mask` is False.
    class_probs (`(B, T, C)`): softmax over the C prompts.
    snippet_mask (`(B, T)` bool): real snippets (the input `pixel_mask`).
    """

    scores: torch.Tensor | None = None
    class_probs: torch.Tensor | None = None
    snippet_mask: torch.Tensor | None = None


def stretch_text_position_embeddings(weight: torch.Tensor, keep: int, factor: int) -> torch.Tensor:
    """FG-CLIP's long-caption table from CLIP's (S, D) position table: (keep + factor * (S - keep), D) rows.

    Rows [0, keep) are copied; row keep + factor * i + j (0 <= i < S - keep - 1, 0 <= j < factor) interpolates
    linearly between CLIP rows keep + i and keep + i + 1 at j / factor; the last `factor` rows continue from the last
    row with the last difference: w[S-1] + j / factor * (w[S-1] - w[S-2]). For CLIP (77 rows), keep 20, factor 4:
    248 rows, and row 20 + 4 i equals CLIP row 20 + i.
    """
    rows, dim = weight.shape
    if not 1 <= keep < rows - 1 or factor < 1:
        raise ValueError(f"cannot stretch {rows} positions keeping {keep} by {factor}")
    w = weight.detach().float()
    frac = torch.arange(factor, device=w.device, dtype=w.dtype) / factor  # (f,)
    left, right = w[keep : rows - 1], w[keep + 1 : rows]  # (S - keep - 1, D)
    middle = left[:, None] * (1 - frac)[None, :, None] + right[:, None] * frac[None, :, None]
    tail = w[rows - 1] + frac[:, None] * (w[rows - 1] - w[rows - 2])
    return torch.cat([w[:keep], middle.reshape(-1, dim), tail], dim=0).to(weight.dtype)


class _CappedLogScale(torch.autograd.Function):
    """min(t, cap) whose gradient stays open whenever descent would lower t.

    A plain clamp has zero gradient at the cap, and OpenAI CLIP checkpoints ship t = 4.6052 > log(100): their
    temperature could then never move again. Here a capped t can still decrease but is never pushed further up (the
    effect of open_clip's in-place clamp after each step, without touching the parameter in `forward`).
    """

    @staticmethod
    def forward(ctx, log_scale: torch.Tensor, cap: float) -> torch.Tensor:
        ctx.save_for_backward(log_scale)
        ctx.cap = cap
        return log_scale.clamp(max=cap)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (log_scale,) = ctx.saved_tensors
        return grad * ((log_scale < ctx.cap) | (grad > 0)).to(grad.dtype), None


def runs_under_zero3(module: nn.Module) -> bool:
    """True when DeepSpeed ZeRO-3 manages `module`'s parameters (each carries a `ds_id`) and several processes run.

    ZeRO-3 gathers a module's partitioned weights in a collective every time the module runs, in forward and again in
    backward, so every process must run the same modules the same number of times in the same order. The FG-CLIP video
    model's calls follow the data (chunks of real frames, frames with boxes, hard negatives); under ZeRO-3 each process
    pads its calls to the most any process makes, with stand-in calls whose outputs enter the graph times 0.
    """
    param = next(module.parameters(), None)
    return (param is not None and hasattr(param, "ds_id") and dist.is_available() and dist.is_initialized()
            and dist.get_world_size() > 1)


def _max_over_processes(values: list[int], device: torch.device) -> list[int]:
    """Element-wise maximum of `values` over every process (one all-reduce)."""
    tensor = torch.tensor(values, dtype=torch.long, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor.tolist()


def _zero_anchor(*tensors: torch.Tensor) -> torch.Tensor:
    """A scalar 0 connected to `tensors`: a stand-in call's outputs enter the graph (so its backward runs, and ZeRO-3
    gathers its weights there too) without changing any value or gradient."""
    return sum(t.float().sum() for t in tensors) * 0.0


# FG-CLIP checkpoints (a CLIPModel subclass) hold these besides CLIP's own tensors.
FGCLIP_CHECKPOINT_KEYS = {
    "position_ori": "text_model.embeddings.position_embedding_ori.weight",
    "position_res": "text_model.embeddings.position_embedding_res.weight",
    "long_projection": "text_filip_projection.weight",
    "region_scale": "logit_scale_finegraind",
    "hard_negative_scale": "logit_scale_hardneg",
}


def read_checkpoint_tensors(name_or_path: str, keys: list[str], **hub_kwargs) -> dict[str, torch.Tensor]:
    """The tensors `keys` of a checkpoint (folder or Hub id): model.safetensors, a sharded safetensors index, or
    pytorch_model.bin (read with weights_only)."""
    import json

    from safetensors import safe_open
    from transformers.utils import cached_file

    def fetch(filename):
        return cached_file(name_or_path, filename, _raise_exceptions_for_missing_entries=False,
                           **{k: v for k, v in hub_kwargs.items() if k in ("revision", "cache_dir", "token")})

    wanted, found = set(keys), {}
    single = fetch("model.safetensors")
    files = [single] if single is not None else []
    if single is None and (index := fetch("model.safetensors.index.json")) is not None:
        with open(index) as handle:
            weight_map = json.load(handle)["weight_map"]
        files = [fetch(shard) for shard in sorted({weight_map[k] for k in wanted if k in weight_map})]
    for file in files:
        with safe_open(file, framework="pt") as handle:
            found.update({k: handle.get_tensor(k) for k in wanted & set(handle.keys())})
    if not files and (binary := fetch("pytorch_model.bin")) is not None:
        state = torch.load(binary, map_location="cpu", weights_only=True)
        found.update({k: state[k] for k in wanted if k in state})
    if set(found) != wanted:
        raise ValueError(f"{name_or_path}: could not read {sorted(wanted - set(found))} from its weight files")
    return found


class FGCLIPVideoTextEmbeddings(CLIPTextEmbeddings):
    """CLIP's token and 77-position embeddings (same parameter names, so CLIP checkpoints load unchanged) plus FG-CLIP's
    long-caption position table `long_position_embedding`.

    The long table is used when `use_long_positions` is set (by `FGCLIPVideoModel.get_text_features`) or the
    sequence is longer than CLIP's table. FG-CLIP keeps two 248-row tables (`position_embedding_ori` used for the
    first 20 positions, `position_embedding_res` for the rest), both initialised to the same stretched table; since
    each row is read from exactly one of them, one table gives the same outputs and gradients.
    """

    def __init__(self, config, max_text_positions: int):
        super().__init__(config)
        self.long_position_embedding = nn.Embedding(max_text_positions, config.hidden_size)
        self.use_long_positions = False

    def forward(self, input_ids=None, position_ids=None, inputs_embeds=None) -> torch.Tensor:
        seq_length = input_ids.shape[-1] if input_ids is not None else inputs_embeds.shape[-2]
        if not self.use_long_positions and seq_length <= self.position_embedding.num_embeddings:
            return super().forward(input_ids=input_ids, position_ids=position_ids, inputs_embeds=inputs_embeds)
        max_positions = self.long_position_embedding.num_embeddings
        if seq_length > max_positions:
            raise ValueError(f"captions of {seq_length} tokens exceed max_text_positions={max_positions}")
        if position_ids is None:
            position_ids = torch.arange(seq_length, device=self.long_position_embedding.weight.device)[None]
        if inputs_embeds is None:
            inputs_embeds = self.token_embedding(input_ids)
        return inputs_embeds + self.long_position_embedding(position_ids)


class FGCLIPVideoTemporalBlock(nn.Module):
    """Pre-LayerNorm transformer block over frames with a key-padding mask. Output projections start at zero, so a
    fresh block is the identity and a fresh model's video embedding is the mean of CLIP's frame embeddings."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.num_heads = num_heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out_proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(round(dim * mlp_ratio))
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        batch, length, dim = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(batch, length, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        # A row without real frames attends to all (its output is never used) instead of producing NaN.
        keys = mask | ~mask.any(dim=1, keepdim=True)
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=keys[:, None, None, :])
        x = x + self.out_proj(attn.transpose(1, 2).reshape(batch, length, dim))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class FGCLIPVideoTemporalModule(nn.Module):
    """Learnable temporal position embeddings (zero-initialised) + `temporal_layers` blocks, in the joint space."""

    def __init__(self, config: FGCLIPVideoConfig):
        super().__init__()
        dim = config.clip_config.projection_dim
        self.position_embedding = nn.Parameter(torch.zeros(config.max_frames, dim))
        self.blocks = nn.ModuleList(
            FGCLIPVideoTemporalBlock(dim, config.temporal_num_heads, config.temporal_mlp_ratio)
            for _ in range(config.temporal_layers)
        )

    def forward(self, frame_embeds: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if not len(self.blocks):
            return frame_embeds
        length = frame_embeds.shape[1]
        if length > self.position_embedding.shape[0]:
            raise ValueError(f"{length} frames exceed max_frames={self.position_embedding.shape[0]}")
        x = frame_embeds + self.position_embedding[:length].to(frame_embeds.dtype)
        for block in self.blocks:
            x = block(x, mask)
        return x


class FGCLIPVideoPreTrainedModel(PreTrainedModel):
    config: FGCLIPVideoConfig
    config_class = FGCLIPVideoConfig
    base_model_prefix = "fgclip_video"
    main_input_name = "pixel_values"
    input_modalities = ("video", "text")
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _no_split_modules = ["CLIPTextEmbeddings", "CLIPEncoderLayer", "CLIPVisionEmbeddings", "FGCLIPVideoTemporalBlock"]

    @torch.no_grad()
    def _init_weights(self, module):
        # The CLIP submodel initialises itself (transformers dispatches each sub-model's own `_init_weights`); the
        # init functions skip tensors loaded from a checkpoint. Children come before parents, so the model-level
        # rules below see CLIP's initialised tables.
        # Modules without direct parameters (the temporal blocks) are never passed here, so the temporal module
        # initialises its blocks.
        config = self.config
        if isinstance(module, FGCLIPVideoTemporalModule):
            init.zeros_(module.position_embedding)
            for block in module.blocks:
                for linear in (block.qkv, block.fc1):
                    init.trunc_normal_(linear.weight, std=config.initializer_range)
                    init.zeros_(linear.bias)
                for linear in (block.out_proj, block.fc2):  # zero: a fresh temporal module is the identity
                    init.zeros_(linear.weight)
                    init.zeros_(linear.bias)
                for norm in (block.norm1, block.norm2):
                    init.ones_(norm.weight)
                    init.zeros_(norm.bias)
        elif isinstance(module, FGCLIPVideoModel):
            init.constant_(module.region_logit_scale, float(config.logit_scale_init_value))
            init.constant_(module.hard_negative_logit_scale, float(config.logit_scale_init_value))
            init.copy_(module.long_text_projection.weight, module.clip.text_projection.weight)
            embeddings = module.clip.text_model.embeddings
            init.copy_(
                embeddings.long_position_embedding.weight,
                stretch_text_position_embeddings(
                    embeddings.position_embedding.weight, config.keep_text_positions, config.text_stretch_factor
                ),
            )


class FGCLIPVideoModel(FGCLIPVideoPreTrainedModel):
    """FG-CLIP for videos: CLIP frame embeddings -> temporal module -> masked mean = video embedding, contrasted with
    the global (long) caption; box regions pooled over their frames, contrasted with region captions and hard
    negatives.

    Parameter names: `clip.` (the whole transformers CLIPModel: `clip.vision_model.`, `clip.text_model.`,
    `clip.visual_projection`, `clip.text_projection` (short captions), `clip.logit_scale` (global temperature),
    `clip.text_model.embeddings.long_position_embedding`), `long_text_projection` (long captions), `temporal.`,
    `region_logit_scale`, `hard_negative_logit_scale`. A text-tower learning rate: match `^clip\\.text_model\\.|
    ^clip\\.text_projection|^long_text_projection`.

    Under DDP, a batch without region (or negative) inputs leaves the short-caption path unused: give every batch
    the region keys (possibly all masked) or set `ddp_find_unused_parameters`. Under DeepSpeed ZeRO-3 with several
    processes the CLIP calls are padded to the same count on every process (`runs_under_zero3`); every process must
    then give region inputs when one does.
    """

    def __init__(self, config: FGCLIPVideoConfig):
        super().__init__(config)
        clip_config = config.clip_config
        self.clip = CLIPModel._from_config(clip_config)
        text_config = clip_config.text_config
        self.clip.text_model.embeddings = FGCLIPVideoTextEmbeddings(text_config, config.max_text_positions)
        self.long_text_projection = nn.Linear(text_config.hidden_size, clip_config.projection_dim, bias=False)
        self.temporal = FGCLIPVideoTemporalModule(config)
        self.region_logit_scale = nn.Parameter(torch.tensor(float(config.logit_scale_init_value)))
        self.hard_negative_logit_scale = nn.Parameter(torch.tensor(float(config.logit_scale_init_value)))
        self.post_init()

    # ----------------------------------------------------------------------------------------------------------------
    # Loading

    @classmethod
    def from_clip_pretrained(
        cls, clip_name_or_path: str, clip_kwargs: dict | None = None, **config_overrides
    ) -> "FGCLIPVideoModel":
        """Builds the video model around a Hugging Face CLIP checkpoint (hub id or folder of a `CLIPModel`), or an
        FG-CLIP one (`qihoo360/fg-clip-base`, ...), whose fine-grained tensors are all used.

        Every CLIP tensor must load: a missing or mismatched weight raises (a partly random CLIP trains silently
        badly). A plain CLIP: the long-caption table is stretched from the loaded 77 positions and the long-caption
        projection copied from `text_projection` (FG-CLIP's `resize_postion_embeding` / `copy_weight`); the region and
        hard-negative temperatures start at the checkpoint's `logit_scale`, as FG-CLIP's training script sets them
        (unless `logit_scale_init_value` is given). An FG-CLIP checkpoint: its `position_embedding_ori` (first
        `keep_text_positions` rows) and `position_embedding_res` (the rest) are the long table,
        `text_filip_projection` the long projection, `logit_scale_finegraind` / `logit_scale_hardneg` the two
        temperatures. Other keys the CLIPModel does not use are logged. The temporal module starts as the identity.
        `clip_kwargs` go to `CLIPModel.from_pretrained` (revision, cache_dir, ...); `config_overrides` to
        `FGCLIPVideoConfig`.
        """
        clip, info = CLIPModel.from_pretrained(clip_name_or_path, output_loading_info=True, **(clip_kwargs or {}))
        missing = sorted(info.get("missing_keys", []))
        mismatched = sorted(str(key) for key in info.get("mismatched_keys", []))
        unexpected = set(info.get("unexpected_keys", []))
        fine_grained = {name: key for name, key in FGCLIP_CHECKPOINT_KEYS.items() if key in unexpected}
        if unexpected - set(fine_grained.values()):
            logger.warning("CLIP checkpoint keys not used by FGCLIPVideoModel: %s",
                           sorted(unexpected - set(fine_grained.values())))
        if missing or mismatched:
            raise ValueError(
                f"{clip_name_or_path} does not hold every CLIPModel weight; missing: {missing}, mismatched: "
                f"{mismatched}. Refusing to build on a partly random CLIP."
            )
        clip_config = clip.config
        clip_config.architectures = None
        config_overrides.setdefault("logit_scale_init_value", float(clip.logit_scale.detach()))
        model = cls(FGCLIPVideoConfig(clip_config=clip_config, **config_overrides))
        result = model.clip.load_state_dict(clip.state_dict(), strict=False)
        new_keys = {"text_model.embeddings.long_position_embedding.weight"}
        if set(result.missing_keys) != new_keys or result.unexpected_keys:
            raise RuntimeError(f"unexpected CLIP state dict layout: {result}")
        model.reset_long_text_from_short()
        if fine_grained:
            model._load_fgclip_tensors(read_checkpoint_tensors(clip_name_or_path, list(fine_grained.values()),
                                                               **(clip_kwargs or {})), clip_name_or_path)
        logger.info("Loaded all %d CLIP tensors from %s%s", len(clip.state_dict()), clip_name_or_path,
                    f" and FG-CLIP's {sorted(fine_grained)}" if fine_grained else "")
        return model

    @torch.no_grad()
    def _load_fgclip_tensors(self, tensors: dict[str, torch.Tensor], source: str) -> None:
        """FG-CLIP's fine-grained tensors (checkpoint key -> tensor) into this model: the long table from
        `position_embedding_ori[:keep]` and `position_embedding_res[keep:]`, the long projection, the temperatures."""
        keys = FGCLIP_CHECKPOINT_KEYS
        present = {name for name, key in keys.items() if key in tensors}
        if ("position_ori" in present) != ("position_res" in present):
            raise ValueError(f"{source}: an FG-CLIP checkpoint holds both position_embedding_ori and _res; this one "
                             f"has only {sorted(present & {'position_ori', 'position_res'})}")
        long_table = self.clip.text_model.embeddings.long_position_embedding.weight
        if "position_ori" in present:
            keep = self.config.keep_text_positions
            ori, res = tensors[keys["position_ori"]], tensors[keys["position_res"]]
            if ori.shape != long_table.shape or res.shape != long_table.shape:
                raise ValueError(f"{source}: position_embedding_ori/_res {tuple(ori.shape)}/{tuple(res.shape)} do not "
                                 f"match max_text_positions x hidden {tuple(long_table.shape)}")
            long_table.copy_(torch.cat([ori[:keep], res[keep:]]).to(long_table.dtype))
        targets = {"long_projection": self.long_text_projection.weight, "region_scale": self.region_logit_scale,
                   "hard_negative_scale": self.hard_negative_logit_scale}
        for name, target in targets.items():
            if name in present:
                value = tensors[keys[name]]
                if value.numel() != target.numel():
                    raise ValueError(f"{source}: {keys[name]} has shape {tuple(value.shape)}, the model's "
                                     f"{tuple(target.shape)}")
                target.copy_(value.reshape(target.shape).to(target.dtype))

    @torch.no_grad()
    def reset_long_text_from_short(self) -> None:
        """FG-CLIP's long-caption initialisation: the position table stretched from CLIP's 77 positions
        (`resize_postion_embeding`) and the long projection copied from `text_projection` (`copy_weight`)."""
        embeddings = self.clip.text_model.embeddings
        embeddings.long_position_embedding.weight.copy_(
            stretch_text_position_embeddings(
                embeddings.position_embedding.weight, self.config.keep_text_positions, self.config.text_stretch_factor
            )
        )
        self.long_text_projection.weight.copy_(self.clip.text_projection.weight)

    # ----------------------------------------------------------------------------------------------------------------
    # Encoders

    def _logit_scale(self, parameter: nn.Parameter) -> torch.Tensor:
        return _CappedLogScale.apply(parameter, math.log(self.config.max_logit_scale)).exp()

    def _normalize(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """uint8 frames in [0, 255] (or floats in [0, 1]) -> CLIP-normalised floats in the vision tower's dtype."""
        dtype = self.clip.visual_projection.weight.dtype
        x = pixel_values.float()
        if pixel_values.dtype == torch.uint8:
            x = x / 255.0
        mean = torch.tensor(self.config.image_mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.config.image_std, device=x.device).view(1, 3, 1, 1)
        return ((x - mean) / std).to(dtype)

    @contextmanager
    def _long_positions(self, enabled: bool):
        embeddings = self.clip.text_model.embeddings
        previous = embeddings.use_long_positions
        embeddings.use_long_positions = enabled
        try:
            yield
        finally:
            embeddings.use_long_positions = previous

    def get_text_features(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        long_caption: bool | None = None,
    ) -> torch.Tensor:
        """Projected (not normalised) caption embeddings, shape `input_ids.shape[:-1] + (projection_dim,)`.

        long_caption: True -> FG-CLIP's long path (248-position table, `long_text_projection`), as the global
            captions and the anomaly prompts use; False -> CLIP's own path (77 positions, `text_projection`), exactly
            `CLIPModel.get_text_features(...).pooler_output`; None -> long only when the captions exceed 77 tokens.
        Returns a tensor (transformers 5's CLIPModel returns an output object with the vector in `.pooler_output`).
        """
        leading = input_ids.shape[:-1]
        input_ids = input_ids.reshape(-1, input_ids.shape[-1])
        if attention_mask is not None:
            attention_mask = attention_mask.reshape(input_ids.shape)
        if long_caption is None:
            long_caption = input_ids.shape[-1] > self.config.short_text_positions
        if not long_caption and input_ids.shape[-1] > self.config.short_text_positions:
            raise ValueError(
                f"short captions use CLIP's {self.config.short_text_positions} positions, got {input_ids.shape[-1]}"
            )
        with self._long_positions(long_caption):
            pooled = self.clip.text_model(input_ids=input_ids, attention_mask=attention_mask).pooler_output
        projection = self.long_text_projection if long_caption else self.clip.text_projection
        return projection(pooled).reshape(*leading, -1)

    def _dense_features(self, hidden_states: torch.Tensor, layer_index: int) -> torch.Tensor:
        """FG-CLIP's patch features: (n, 1 + h*w, C) hidden states -> (n, D, h, w) maps in the joint space.

        The tokens go through encoder layer `layer_index` with its attention reduced to the value path (each token
        attends only to itself), then post-LayerNorm and the visual projection, like the CLS token does.
        """
        layer = self.clip.vision_model.encoder.layers[layer_index]
        x = hidden_states[:, 1:]  # without attention mixing the CLS token does not affect the patches
        x = x + layer.self_attn.out_proj(layer.self_attn.v_proj(layer.layer_norm1(x)))
        x = x + layer.mlp(layer.layer_norm2(x))
        x = self.clip.visual_projection(self.clip.vision_model.post_layernorm(x))
        grid = self.config.grid_size
        if x.shape[1] != grid * grid:
            raise ValueError(f"{x.shape[1]} patch tokens do not form the {grid}x{grid} grid of the config")
        return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], grid, grid)

    def _encode_frames(
        self,
        pixel_values: torch.Tensor,
        pixel_mask: torch.Tensor,
        region_boxes: torch.Tensor | None = None,
        box_valid: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Frame embeddings (B, T, D) (0 on padded frames) and, with boxes, region embeddings (B, R, D): the masked
        mean over frames of the RoIAlign vector of each box.

        Only real frames go through the vision tower, `frame_chunk_size` at a time; the dense branch runs only on the
        frames of a chunk that hold at least one valid box, and RoIAlign per chunk, so no dense map outlives its chunk.
        """
        batch, frames = pixel_values.shape[:2]
        dim = self.config.clip_config.projection_dim
        flat_pixels = pixel_values.reshape(batch * frames, *pixel_values.shape[2:])
        real = pixel_mask.reshape(-1).nonzero().squeeze(1)
        frame_embeds = []
        chunk = self.config.frame_chunk_size
        num_chunks = -(-real.numel() // chunk)
        with_regions = box_valid is not None
        # Under ZeRO-3 every process makes the same CLIP calls (see `runs_under_zero3`): as many chunks as the process
        # with the most real frames, and the dense branch on every chunk when regions are given.
        uniform = runs_under_zero3(self)
        if uniform:
            num_chunks, most_regions, fewest_regions = _max_over_processes(
                [num_chunks, int(with_regions), -int(with_regions)], pixel_values.device
            )
            if most_regions != -fewest_regions:
                raise ValueError("under DeepSpeed ZeRO-3 every process must give region inputs when one does")
        stand_in_outputs = []  # enter the graph times 0 (`_zero_anchor`)

        if with_regions:
            num_regions = box_valid.shape[1]
            num_layers = self.clip.config.vision_config.num_hidden_layers
            hidden_index = num_layers + 1 + self.config.region_feature_layer  # into (embeddings, layer 1..L)
            dense_frame = box_valid.any(dim=1).reshape(-1)  # (B*T,)
            pair_b, pair_r, pair_t = box_valid.nonzero(as_tuple=True)
            pair_frame = pair_b * frames + pair_t
            pair_region = pair_b * num_regions + pair_r
            pair_boxes = region_boxes[pair_b, pair_r, pair_t].float() * self.config.grid_size
            region_sum = torch.zeros(batch * num_regions, dim, device=pixel_values.device)
            map_slot = torch.full((batch * frames,), -1, dtype=torch.long, device=pixel_values.device)

        for start in range(0, num_chunks * chunk, chunk):
            index = real[start : start + chunk]
            stand_in = index.numel() == 0  # a padding call: this process has no real frames left
            if stand_in:
                index = torch.zeros(1, dtype=torch.long, device=real.device)
            dense_index = index[dense_frame[index]] if with_regions and not stand_in else index[:0]
            dense_stand_in = uniform and with_regions and dense_index.numel() == 0
            outputs = self.clip.vision_model(
                pixel_values=self._normalize(flat_pixels[index]),
                output_hidden_states=dense_index.numel() > 0 or dense_stand_in,
            )
            pooled = self.clip.visual_projection(outputs.pooler_output)
            (stand_in_outputs if stand_in else frame_embeds).append(pooled)
            if dense_stand_in:
                stand_in_outputs.append(self._dense_features(outputs.hidden_states[hidden_index][:1], hidden_index))
            if dense_index.numel() == 0:
                continue
            hidden = outputs.hidden_states[hidden_index][dense_frame[index]]
            maps = self._dense_features(hidden, hidden_index)
            map_slot[dense_index] = torch.arange(dense_index.numel(), device=map_slot.device)
            pairs = (map_slot[pair_frame] >= 0).nonzero().squeeze(1)
            rois = torch.cat([map_slot[pair_frame[pairs]].float()[:, None], pair_boxes[pairs]], dim=1)
            vectors = roi_align(
                maps.float(), rois, self.config.roi_output_size, spatial_scale=1.0,
                sampling_ratio=self.config.roi_sampling_ratio, aligned=True,
            ).mean(dim=(2, 3))
            region_sum = region_sum.index_add(0, pair_region[pairs], vectors)
            map_slot[dense_index] = -1

        dtype = self.clip.visual_projection.weight.dtype
        embeds = torch.zeros(batch * frames, dim, device=pixel_values.device, dtype=dtype)
        if frame_embeds:
            embeds = embeds.index_copy(0, real, torch.cat(frame_embeds).to(embeds.dtype))
        if stand_in_outputs:
            embeds = embeds + _zero_anchor(*stand_in_outputs).to(embeds.dtype)
        embeds = embeds.reshape(batch, frames, dim)
        if not with_regions:
            return embeds, None
        counts = box_valid.sum(dim=2).reshape(-1, 1).clamp(min=1).to(region_sum.dtype)
        return embeds, (region_sum / counts).reshape(batch, num_regions, dim)

    def get_frame_features(self, pixel_values: torch.Tensor, pixel_mask: torch.Tensor | None = None) -> torch.Tensor:
        """CLIP image embeddings of every frame, (B, T, projection_dim), before the temporal module (0 on padded
        frames). Equal to `CLIPModel.get_image_features(...).pooler_output` of the normalised frames."""
        pixel_mask = self._default_mask(pixel_values, pixel_mask)
        return self._encode_frames(pixel_values, pixel_mask)[0]

    def get_video_features(self, pixel_values: torch.Tensor, pixel_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Video embeddings (B, projection_dim), not normalised: temporal module, then the mean over real frames."""
        pixel_mask = self._default_mask(pixel_values, pixel_mask)
        frames = self.temporal(self.get_frame_features(pixel_values, pixel_mask), pixel_mask)
        return self._masked_mean(frames, pixel_mask)

    @staticmethod
    def _default_mask(pixel_values: torch.Tensor, pixel_mask: torch.Tensor | None) -> torch.Tensor:
        if pixel_values.dim() != 5:
            raise ValueError(f"pixel_values must be (B, T, 3, H, W), got {tuple(pixel_values.shape)}")
        if pixel_mask is None:
            return torch.ones(pixel_values.shape[:2], dtype=torch.bool, device=pixel_values.device)
        return pixel_mask.bool()

    @staticmethod
    def _masked_mean(frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        weights = mask.to(frames.dtype)[..., None]
        return (frames * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)

    # ----------------------------------------------------------------------------------------------------------------
    # Training

    def forward(
        self,
        pixel_values: torch.Tensor,
        pixel_mask: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        short_input_ids: torch.Tensor | None = None,
        short_attention_mask: torch.Tensor | None = None,
        region_boxes: torch.Tensor | None = None,
        region_box_mask: torch.Tensor | None = None,
        region_mask: torch.Tensor | None = None,
        region_input_ids: torch.Tensor | None = None,
        region_attention_mask: torch.Tensor | None = None,
        negative_input_ids: torch.Tensor | None = None,
        negative_attention_mask: torch.Tensor | None = None,
        negative_mask: torch.Tensor | None = None,
        return_loss: bool = True,
        return_contrastive_inputs: bool = False,
        **kwargs,
    ) -> FGCLIPVideoOutput:
        r"""
        pixel_values (`(B, T, 3, H, W)` uint8): frames sampled over each clip; pixel_mask (`(B, T)` bool): real ones.
        input_ids, attention_mask (`(B, L)`, L <= max_text_positions): global captions (long path).
        short_input_ids, short_attention_mask (`(B, Ls)`, Ls <= 77): short captions (CLIP's short path).
        region_boxes (`(B, R, T, 4)`): normalised x1, y1, x2, y2; region_box_mask (`(B, R, T)`): box present;
            region_mask (`(B, R)`): region exists. A region takes part only where it has a box on a real frame.
        region_input_ids, region_attention_mask (`(B, R, Lr)`, Lr <= 77): region captions (CLIP's short path).
        negative_input_ids, negative_attention_mask (`(B, R, K, Lr)`), negative_mask (`(B, R)`): hard negatives.
        return_contrastive_inputs: also return `contrastive_inputs`, the normalised embeddings the losses contrast
            (`contrastive_loss` computes the parts from them).
        Other keys (`video_index`, ...) are ignored.
        """
        pixel_mask = self._default_mask(pixel_values, pixel_mask)
        batch, frames = pixel_mask.shape
        with_regions = region_boxes is not None and region_input_ids is not None
        box_valid = None
        if with_regions:
            num_regions = region_input_ids.shape[1]
            if region_box_mask is None:
                region_box_mask = torch.ones(batch, num_regions, frames, dtype=torch.bool, device=pixel_mask.device)
            if region_mask is None:
                region_mask = torch.ones(batch, num_regions, dtype=torch.bool, device=pixel_mask.device)
            box_valid = region_box_mask.bool() & region_mask.bool()[..., None] & pixel_mask[:, None, :]

        frame_embeds, region_vectors = self._encode_frames(pixel_values, pixel_mask, region_boxes, box_valid)
        frame_embeds = self.temporal(frame_embeds, pixel_mask)
        video_embeds = F.normalize(self._masked_mean(frame_embeds, pixel_mask), dim=-1)
        scales = {
            "global": self._logit_scale(self.clip.logit_scale),
            "region": self._logit_scale(self.region_logit_scale),
            "hard_negative": self._logit_scale(self.hard_negative_logit_scale),
        }
        output = {
            "video_embeds": video_embeds,
            "frame_embeds": frame_embeds,
            "logit_scale": scales["global"],
            "region_logit_scale": scales["region"],
            "hard_negative_logit_scale": scales["hard_negative"],
        }
        text_embeds = None
        if input_ids is not None:
            text_embeds = F.normalize(self.get_text_features(input_ids, attention_mask, long_caption=True), dim=-1)
            output["text_embeds"] = text_embeds
        short_embeds = None
        if short_input_ids is not None:
            short_embeds = F.normalize(self.get_text_features(short_input_ids, short_attention_mask,
                                                              long_caption=False), dim=-1)
            output["short_text_embeds"] = short_embeds

        region_args = {}
        if with_regions:
            valid = box_valid.any(dim=2)  # (B, R)
            index = valid.nonzero(as_tuple=True)
            region_embeds = F.normalize(region_vectors[index], dim=-1)
            region_text = self._short_text(region_input_ids, region_attention_mask, index, keep_graph=True)
            zeros = region_vectors.new_zeros(region_vectors.shape)
            output.update(
                region_valid_mask=valid,
                region_embeds=zeros.index_put(index, region_embeds),
                region_text_embeds=zeros.index_put(index, region_text.to(zeros.dtype)),
            )
            region_args = {"region_embeds": region_embeds, "region_text_embeds": region_text}
            uniform = runs_under_zero3(self)
            if negative_input_ids is not None:
                has_negatives = valid if negative_mask is None else valid & negative_mask.bool()
                selected = has_negatives[index]  # among the valid regions, in the same (row-major) order
                region_args.update(
                    negative_anchor_embeds=region_embeds[selected],
                    negative_positive_embeds=region_text[selected],
                    negative_text_embeds=self._short_text(
                        negative_input_ids, negative_attention_mask, has_negatives.nonzero(as_tuple=True),
                        keep_graph=uniform,
                    ),
                )
            elif uniform:  # the text call another process makes for its hard negatives: a stand-in, none selected
                nothing = tuple(i[:0] for i in index)
                region_args.update(
                    negative_anchor_embeds=region_embeds[:0],
                    negative_positive_embeds=region_text[:0],
                    negative_text_embeds=self._short_text(
                        region_input_ids, region_attention_mask, nothing, keep_graph=True
                    )[:, None],
                )

        contrastive = {"video_embeds": video_embeds, "text_embeds": text_embeds, "short_text_embeds": short_embeds,
                       **region_args}
        if return_contrastive_inputs:
            output["contrastive_inputs"] = contrastive
        if return_loss and text_embeds is not None:
            output.update(self.contrastive_loss(contrastive, scales))
        return FGCLIPVideoOutput(**output)

    def contrastive_loss(self, inputs: dict, scales: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The loss parts (`fgclip_losses`) of `forward(..., return_contrastive_inputs=True).contrastive_inputs`,
        with the config's weights and the given multipliers {"global", "region", "hard_negative"}. Gradient caching
        (VADTrainer) calls it on the embeddings of a whole batch computed in chunks."""
        weights = {
            "global": self.config.global_loss_weight,
            "short_global": self.config.short_global_loss_weight,
            "region": self.config.region_loss_weight,
            "hard_negative": self.config.hard_negative_loss_weight,
        }
        inputs = dict(inputs)
        return fgclip_losses(inputs.pop("video_embeds"), inputs.pop("text_embeds"), scales, weights,
                             gather=self.config.gather_across_processes, **inputs)

    def _short_text(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, index: tuple, keep_graph: bool = False
    ) -> torch.Tensor:
        """Normalised short-path embeddings of `input_ids[index]`, shape (N, ..., D). When nothing is selected and
        `keep_graph`, the first entry is still encoded and dropped, so the short-caption path stays in the graph (with
        zero gradient) and DDP sees its parameters used."""
        selected_ids = input_ids[index]
        selected_mask = attention_mask[index] if attention_mask is not None else None
        if selected_ids.shape[0] == 0:
            trailing = input_ids.shape[len(index) :]
            if not keep_graph or input_ids.numel() == 0:
                dim = self.config.clip_config.projection_dim
                return self.clip.text_projection.weight.new_zeros(0, *trailing[:-1], dim)
            first = input_ids.reshape(-1, *trailing)[:1]
            first_mask = attention_mask.reshape(-1, *trailing)[:1] if attention_mask is not None else None
            return F.normalize(self.get_text_features(first, first_mask, long_caption=False), dim=-1)[:0]
        return F.normalize(self.get_text_features(selected_ids, selected_mask, long_caption=False), dim=-1)

    # ----------------------------------------------------------------------------------------------------------------
    # Anomaly scoring (evaluation)

    def encode_prompts(self, tokenizer, prompts: list[str] | None = None) -> dict[str, torch.Tensor]:
        """Tokenises `prompts` (default `config.anomaly_prompts`) with the given CLIP tokenizer: {input_ids,
        attention_mask}, padded to the longest, truncated to the positions of `config.prompt_text_path`, on the
        model's device."""
        max_length = (self.config.max_text_positions if self.config.prompt_text_path == "long"
                      else self.config.short_text_positions)
        encoded = tokenizer(
            list(prompts if prompts is not None else self.config.anomaly_prompts),
            padding=True, truncation=True, max_length=max_length, return_tensors="pt",
        )
        return {key: encoded[key].to(self.device) for key in ("input_ids", "attention_mask")}

    def get_prompt_embeddings(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(C, D) L2-normalised prompt embeddings on `config.prompt_text_path`: the short path by default (FG-CLIP
        encodes short texts there; the short global loss aligns it with the video embeddings), or the long one."""
        long_caption = self.config.prompt_text_path == "long"
        if not long_caption:
            input_ids = input_ids[..., : self.config.short_text_positions]
            attention_mask = attention_mask[..., : self.config.short_text_positions] if attention_mask is not None \
                else None
        return F.normalize(self.get_text_features(input_ids, attention_mask, long_caption=long_caption), dim=-1)

    def get_snippet_features(self, pixel_values: torch.Tensor, pixel_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, D) features of the snippets, one fed frame each (as `score_snippets` reads them): each frame's CLIP
        embedding through the temporal module over non-overlapping windows of `score_window_frames` snippets, not
        normalised. What the prompts are scored against, and what the weakly supervised head trains on."""
        pixel_mask = self._default_mask(pixel_values, pixel_mask)
        frame_embeds = self.get_frame_features(pixel_values, pixel_mask)
        batch, frames, dim = frame_embeds.shape
        window = self.config.score_window_frames
        padded = -(-frames // window) * window
        windows = F.pad(frame_embeds, (0, 0, 0, padded - frames)).reshape(-1, window, dim)
        window_mask = F.pad(pixel_mask, (0, padded - frames)).reshape(-1, window)
        return self.temporal(windows, window_mask).reshape(batch, padded, dim)[:, :frames]

    def score_snippets(
        self,
        pixel_values: torch.Tensor,
        pixel_mask: torch.Tensor | None = None,
        prompt_input_ids: torch.Tensor | None = None,
        prompt_attention_mask: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
    ) -> FGCLIPVideoSnippetScores:
        """Zero-shot anomaly scores, one per snippet.

        Design: the evaluation loader feeds ONE frame per `snippet_frames`-frame snippet (e.g. the centre frame of
        each 16-frame snippet), so T is the number of snippets. Each frame's CLIP embedding goes through the temporal
        module over non-overlapping windows of `score_window_frames` consecutive snippets (positions restart in each
        window, so a long video may be split at window multiples with identical results); its cosine similarity to
        each prompt embedding, times the learned global logit scale, is soft-maxed over the prompts, and
        score = 1 - p(prompt `normal_prompt_index`). Give `prompt_input_ids`/`prompt_attention_mask` (from
        `encode_prompts`) or precomputed `prompt_embeds` (C, D) from `get_prompt_embeddings`. Gradients are not
        switched off here: call it under `torch.no_grad()` for evaluation.
        """
        pixel_mask = self._default_mask(pixel_values, pixel_mask)
        if prompt_embeds is None:
            if prompt_input_ids is None:
                raise ValueError("give prompt_input_ids (see encode_prompts) or prompt_embeds")
            prompt_embeds = self.get_prompt_embeddings(prompt_input_ids, prompt_attention_mask)
        prompt_embeds = F.normalize(prompt_embeds.float(), dim=-1)
        if not 0 <= self.config.normal_prompt_index < prompt_embeds.shape[0]:
            raise ValueError(f"normal_prompt_index {self.config.normal_prompt_index} is not among the prompts")

        frame_embeds = self.get_snippet_features(pixel_values, pixel_mask)
        return self.score_snippet_features(frame_embeds, pixel_mask, prompt_embeds)

    def score_snippet_features(self, snippet_features: torch.Tensor, snippet_mask: torch.Tensor,
                               prompt_embeds: torch.Tensor) -> FGCLIPVideoSnippetScores:
        """The zero-shot scores of `score_snippets` from snippet features (B, T, D) already computed (e.g. cached by
        `get_snippet_features`): cosine similarity to each prompt times the learned logit scale, soft-maxed over the
        prompts, score = 1 - p(normal prompt)."""
        prompt_embeds = F.normalize(prompt_embeds.float(), dim=-1)
        logits = self._logit_scale(self.clip.logit_scale).float() * F.normalize(snippet_features.float(), dim=-1) @ (
            prompt_embeds.t()
        )
        probs = logits.softmax(dim=-1)
        scores = (1.0 - probs[..., self.config.normal_prompt_index]) * snippet_mask
        return FGCLIPVideoSnippetScores(scores=scores, class_probs=probs, snippet_mask=snippet_mask)


__all__ = [
    "FGCLIPVideoModel",
    "FGCLIPVideoOutput",
    "FGCLIPVideoPreTrainedModel",
    "FGCLIPVideoSnippetScores",
    "runs_under_zero3",
    "stretch_text_position_embeddings",
]
