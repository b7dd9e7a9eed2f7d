"""AdaTAD: end-to-end temporal action detection with a VideoMAE backbone, temporal adapters and an ActionFormer head.

Facts (layer order, inits, target assignment, loss normaliser) follow OpenTAD's AdaTAD THUMOS recipe
(sming256/OpenTAD, configs/adatad/thumos/e2e_thumos_videomae_s_768x1_160_adapter.py; Liu et al., CVPR 2024). Decoding and NMS live in `hf_vtrain.models.adatad.postprocessing_adatad`.
"""

import logging
import math
import re
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import PreTrainedModel, VideoMAEConfig, VideoMAEModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from .losses_adatad import diou_loss_1d, sigmoid_focal_loss
from .configuration_adatad import AdaTADConfig


logger = logging.getLogger(__name__)


@dataclass
class AdaTADDetectionOutput(ModelOutput):
    r"""
    Output of [`AdaTADForActionDetection`]. P = sum over pyramid levels of T / stride (fixed for a window size).

    loss (`torch.Tensor`, scalar): `cls_loss + reg_loss_weight * reg_loss`, when labels are given.
    cls_loss (`torch.Tensor`, scalar): sigmoid focal loss over valid points / running positive count.
    reg_loss (`torch.Tensor`, scalar): DIoU loss over positive points / running positive count.
    class_logits (`torch.Tensor` of shape `(batch, P, num_labels)`): per-point class logits (apply a sigmoid).
    segment_offsets (`torch.Tensor` of shape `(batch, P, 2)`): distances from each point to the predicted start
        and end, in window frame units (already multiplied by the level stride).
    point_mask (`torch.Tensor` of shape `(batch, P)`, bool): points that lie on real (unpadded) frames.
    """

    loss: torch.Tensor | None = None
    cls_loss: torch.Tensor | None = None
    reg_loss: torch.Tensor | None = None
    class_logits: torch.Tensor | None = None
    segment_offsets: torch.Tensor | None = None
    point_mask: torch.Tensor | None = None


def build_point_table(config: AdaTADConfig, seq_len: int | None = None, device=None) -> dict[str, torch.Tensor]:
    """The detector's points, concatenated over pyramid levels (finest first), as in OpenTAD's PointGenerator.

    Point i of a level with stride s sits at frame i * s (no half-stride offset, `use_offset=False`), so a decoded
    segment is [position - left, position + right] in window frame units. Returns `positions` (P,), `strides` (P,),
    `regression_ranges` (P, 2) and `levels` (P,).
    """
    seq_len = config.window_size if seq_len is None else seq_len
    positions, strides, ranges, levels = [], [], [], []
    for level, (stride, (low, high)) in enumerate(zip(config.pyramid_strides, config.regression_ranges)):
        num = seq_len // stride
        positions.append(torch.arange(num, dtype=torch.float32, device=device) * stride)
        strides.append(torch.full((num,), float(stride), device=device))
        ranges.append(torch.tensor([[low, high]], dtype=torch.float32, device=device).expand(num, 2))
        levels.append(torch.full((num,), level, dtype=torch.long, device=device))
    return {
        "positions": torch.cat(positions),
        "strides": torch.cat(strides),
        "regression_ranges": torch.cat(ranges),
        "levels": torch.cat(levels),
    }


@torch.no_grad()
def assign_action_targets(
    point_table: dict[str, torch.Tensor],
    segment_labels: torch.Tensor,
    class_labels: torch.Tensor,
    num_classes: int,
    center_sample_radius: float = 1.5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """ActionFormer/OpenTAD target assignment for a padded batch.

    A point at x (stride s, range [lo, hi]) is positive for a ground truth [a, b] when x lies strictly inside
    [max(a, c - r*s), min(b, c + r*s)] (c the centre, r the radius) and lo <= max(x - a, b - x) <= hi. Among the
    candidates the shortest ground truth wins; ground truths whose length is within 1e-3 of the shortest add their
    class as well (OpenTAD's `filter_similar_gt`), so targets are one-hot unless equal-length actions overlap.
    Rows with class -1 are padding.

    Returns class targets (B, P, num_classes) in {0, 1} and regression targets (B, P, 2) = (x - a, b - x) of the
    assigned ground truth, in frame units (zeros where no ground truth is assigned).
    """
    positions = point_table["positions"].to(segment_labels.device)
    strides = point_table["strides"].to(segment_labels.device)
    ranges = point_table["regression_ranges"].to(segment_labels.device)
    segments = segment_labels.float()
    valid_gt = class_labels >= 0  # (B, N)
    starts, ends = segments[..., 0][:, None, :], segments[..., 1][:, None, :]  # (B, 1, N)
    x = positions[None, :, None]  # (1, P, 1)
    left, right = x - starts, ends - x  # (B, P, N)

    centres = 0.5 * (starts + ends)
    radius = strides[None, :, None] * center_sample_radius
    inside = torch.minimum(
        x - torch.maximum(centres - radius, starts), torch.minimum(centres + radius, ends) - x
    ) > 0
    max_distance = torch.maximum(left, right)
    in_range = (max_distance >= ranges[None, :, 0, None]) & (max_distance <= ranges[None, :, 1, None])

    lengths = (ends - starts).expand_as(left).clone()
    lengths.masked_fill_(~(inside & in_range & valid_gt[:, None, :]), float("inf"))
    min_length, assigned = lengths.min(dim=-1)  # (B, P)
    similar = (lengths <= min_length[..., None] + 1e-3) & torch.isfinite(lengths)

    one_hot = F.one_hot(class_labels.clamp(min=0).long(), num_classes).float()  # (B, N, C)
    cls_targets = torch.bmm(similar.float(), one_hot).clamp_(0.0, 1.0)
    reg_targets = torch.stack((left, right), dim=-1).gather(
        2, assigned[..., None, None].expand(-1, -1, 1, 2)
    ).squeeze(2)
    reg_targets = reg_targets * torch.isfinite(min_length)[..., None]
    return cls_targets, reg_targets


def drop_path(x: torch.Tensor, drop_prob: float, training: bool) -> torch.Tensor:
    """Stochastic depth per sample (dim 0), the timm/mmcv rule: in the backbone a sample is one 16-frame chunk."""
    if drop_prob == 0.0 or not training:
        return x
    keep_prob = 1.0 - drop_prob
    mask = (keep_prob + torch.rand((x.shape[0],) + (1,) * (x.ndim - 1), dtype=x.dtype, device=x.device)).floor_()
    return x.div(keep_prob) * mask


def _resize_mask(mask: torch.Tensor, length: int) -> torch.Tensor:
    if mask.shape[-1] == length:
        return mask
    # Nearest neighbour, as OpenTAD: a downsampled point is valid iff the frame it sits on is.
    return F.interpolate(mask[:, None].float(), size=length, mode="nearest")[:, 0].bool()


class AdaTADAdapter(nn.Module):
    """Temporal adapter after a ViT block: x + gamma * up(h + pw(dw(h))), h = GELU(down(x)).

    The depthwise temporal conv runs over the whole window: tokens of all chunks of a video are regrouped per
    spatial position into one sequence of `num_chunks * t` steps, so information crosses chunk borders.
    """

    def __init__(self, hidden_size: int, adapter_dim: int, kernel_size: int):
        super().__init__()
        self.down_proj = nn.Linear(hidden_size, adapter_dim)
        self.act = nn.GELU()
        self.dwconv = nn.Conv1d(adapter_dim, adapter_dim, kernel_size, padding=kernel_size // 2, groups=adapter_dim)
        self.conv = nn.Conv1d(adapter_dim, adapter_dim, 1)
        self.up_proj = nn.Linear(adapter_dim, hidden_size)
        self.gamma = nn.Parameter(torch.ones(1))

    def forward(self, hidden_states: torch.Tensor, num_chunks: int, height: int, width: int) -> torch.Tensor:
        # hidden_states: (batch * num_chunks, t * height * width, hidden)
        x = self.act(self.down_proj(hidden_states))
        chunks_total, tokens, channels = x.shape
        # (B*n, t*h*w, C) -> (B, n*t, h, w, C) -> (B*h*w, C, n*t)
        temporal = x.reshape(chunks_total // num_chunks, -1, height, width, channels)
        temporal = temporal.permute(0, 2, 3, 4, 1).flatten(0, 2)
        temporal = self.conv(self.dwconv(temporal))
        temporal = temporal.unflatten(0, (-1, height, width)).permute(0, 4, 1, 2, 3)
        x = x + temporal.reshape(chunks_total, tokens, channels)
        return hidden_states + self.up_proj(x) * self.gamma


class AdaTADScale(nn.Module):
    """Learnable scalar on the regression output of one pyramid level."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


class AdaTADAffineDropPath(nn.Module):
    """Per-channel scale (init 1e-4, LayerScale) followed by drop path, on (B, C, T) residual branches."""

    def __init__(self, channels: int, drop_prob: float):
        super().__init__()
        self.scale = nn.Parameter(torch.full((1, channels, 1), 1e-4))
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(self.scale * x, self.drop_prob, self.training)


class AdaTADMaskedConv(nn.Module):
    """Conv1d -> mask -> optional LayerNorm over channels -> optional ReLU -> mask (OpenTAD's ConvModule)."""

    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, groups=1, norm=False, act=False):
        super().__init__()
        self.conv = nn.Conv1d(
            in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, groups=groups,
            bias=not norm and groups == 1,
        )
        self.norm = nn.LayerNorm(out_channels, eps=1e-6) if norm else None
        self.act = nn.ReLU() if act else None

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.conv(x)
        mask = _resize_mask(mask, x.shape[-1])
        x = x * mask[:, None].to(x.dtype)
        if self.norm is not None:
            x = self.norm(x.transpose(1, 2)).transpose(1, 2)
        if self.act is not None:
            x = self.act(x)
        return x * mask[:, None].to(x.dtype), mask


class AdaTADMaskedAttention(nn.Module):
    """Masked multi-head conv attention (ActionFormer's MaskedMHCA) with global attention over the sequence.

    Depthwise convs before q/k/v encode local order and, with stride 2, downsample the sequence.
    """

    def __init__(self, dim: int, num_heads: int, stride: int, dropout: float):
        super().__init__()
        self.num_heads = num_heads
        kernel_size = stride + 1 if stride > 1 else 3
        self.query_conv = AdaTADMaskedConv(dim, dim, kernel_size, stride, groups=dim)
        self.key_conv = AdaTADMaskedConv(dim, dim, kernel_size, stride, groups=dim)
        self.value_conv = AdaTADMaskedConv(dim, dim, kernel_size, stride, groups=dim)
        self.query_norm = nn.LayerNorm(dim)
        self.key_norm = nn.LayerNorm(dim)
        self.value_norm = nn.LayerNorm(dim)
        self.query = nn.Conv1d(dim, dim, 1)
        self.key = nn.Conv1d(dim, dim, 1)
        self.value = nn.Conv1d(dim, dim, 1)
        self.proj = nn.Conv1d(dim, dim, 1)
        self.proj_drop = nn.Dropout(dropout)

    @staticmethod
    def _norm(norm: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
        return norm(x.transpose(1, 2)).transpose(1, 2)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch, channels, _ = x.shape
        q, q_mask = self.query_conv(x, mask)
        k, kv_mask = self.key_conv(x, mask)
        v, _ = self.value_conv(x, mask)
        q = self.query(self._norm(self.query_norm, q))
        k = self.key(self._norm(self.key_norm, k))
        v = self.value(self._norm(self.value_norm, v))
        # (B, C, T) -> (B, heads, T, C/heads)
        q, k, v = (t.view(batch, self.num_heads, channels // self.num_heads, -1).transpose(2, 3) for t in (q, k, v))
        v = v * kv_mask[:, None, :, None].to(v.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=kv_mask[:, None, None, :])
        out = out.transpose(2, 3).reshape(batch, channels, -1)
        out = self.proj_drop(self.proj(out)) * q_mask[:, None].to(out.dtype)
        return out, q_mask


class AdaTADTransformerBlock(nn.Module):
    """Pre-LN transformer block on (B, C, T); stride 2 halves the sequence (max-pooled skip)."""

    def __init__(self, dim: int, num_heads: int, stride: int, dropout: float, drop_path_rate: float):
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.ln2 = nn.LayerNorm(dim)
        self.attn = AdaTADMaskedAttention(dim, num_heads, stride, dropout)
        if stride > 1:
            self.pool_skip = nn.MaxPool1d(stride + 1, stride=stride, padding=(stride + 1) // 2)
        else:
            self.pool_skip = nn.Identity()
        self.mlp = nn.Sequential(
            nn.Conv1d(dim, 4 * dim, 1), nn.GELU(), nn.Dropout(dropout), nn.Conv1d(4 * dim, dim, 1), nn.Dropout(dropout)
        )
        if drop_path_rate > 0:
            self.drop_path_attn = AdaTADAffineDropPath(dim, drop_path_rate)
            self.drop_path_mlp = AdaTADAffineDropPath(dim, drop_path_rate)
        else:
            self.drop_path_attn = nn.Identity()
            self.drop_path_mlp = nn.Identity()

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out, out_mask = self.attn(self.ln1(x.transpose(1, 2)).transpose(1, 2), mask)
        mask_float = out_mask[:, None].to(out.dtype)
        out = self.pool_skip(x) * mask_float + self.drop_path_attn(out)
        mlp = self.mlp(self.ln2(out.transpose(1, 2)).transpose(1, 2)) * mask_float
        return out + self.drop_path_mlp(mlp), out_mask


class AdaTADProjection(nn.Module):
    """Conv embedding (backbone dim -> detector dim), stride-1 stem blocks, then one stride-2 block per extra level."""

    def __init__(self, config: AdaTADConfig):
        super().__init__()
        in_dim, dim = config.backbone_config.hidden_size, config.detector_dim
        self.embed = nn.ModuleList(
            AdaTADMaskedConv(in_dim if i == 0 else dim, dim, 3, norm=True, act=True)
            for i in range(config.num_embed_convs)
        )
        block = partial(
            AdaTADTransformerBlock,
            dim,
            config.num_attention_heads,
            dropout=config.dropout,
            drop_path_rate=config.detector_drop_path_rate,
        )
        self.stem = nn.ModuleList(block(stride=1) for _ in range(config.num_stem_blocks))
        self.branch = nn.ModuleList(block(stride=2) for _ in range(config.num_pyramid_levels - 1))

    def forward(self, x, mask):
        for layer in self.embed:
            x, mask = layer(x, mask)
        for layer in self.stem:
            x, mask = layer(x, mask)
        levels = [(x, mask)]
        for layer in self.branch:
            x, mask = layer(x, mask)
            levels.append((x, mask))
        return levels


class AdaTADHead(nn.Module):
    """Classification and regression heads shared over pyramid levels; a learnable scale per level."""

    def __init__(self, config: AdaTADConfig):
        super().__init__()
        dim = config.detector_dim
        self.cls_convs = nn.ModuleList(
            AdaTADMaskedConv(dim, dim, 3, norm=True, act=True) for _ in range(config.head_num_convs)
        )
        self.reg_convs = nn.ModuleList(
            AdaTADMaskedConv(dim, dim, 3, norm=True, act=True) for _ in range(config.head_num_convs)
        )
        self.cls_head = nn.Conv1d(dim, config.num_labels, 3, padding=1)
        self.reg_head = nn.Conv1d(dim, 2, 3, padding=1)
        self.scales = nn.ModuleList(AdaTADScale() for _ in range(config.num_pyramid_levels))

    def forward(self, x, mask, level: int):
        cls_feat, reg_feat = x, x
        for conv in self.cls_convs:
            cls_feat, _ = conv(cls_feat, mask)
        for conv in self.reg_convs:
            reg_feat, _ = conv(reg_feat, mask)
        # Regression in stride units, non-negative.
        return self.cls_head(cls_feat), F.relu(self.scales[level](self.reg_head(reg_feat)))


def _sinusoid_table(num_positions: int, dim: int) -> np.ndarray:
    """VideoMAE's fixed 1D sin-cos table, computed in numpy (safe under transformers' meta-device init)."""
    exponents = 2 * (np.arange(dim) // 2) / dim
    angles = np.arange(num_positions)[:, None] / np.power(10000, exponents)[None, :]
    angles[:, 0::2] = np.sin(angles[:, 0::2])
    angles[:, 1::2] = np.cos(angles[:, 1::2])
    return angles


def interpolated_position_embeddings(backbone_config: VideoMAEConfig, pretrained_image_size: int) -> torch.Tensor:
    """VideoMAE position table of the pretraining grid resized bicubically to the crop grid (OpenTAD's ViT)."""
    patch = backbone_config.patch_size
    patch = patch if isinstance(patch, int) else patch[0]
    size = backbone_config.image_size
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    grid = pretrained_image_size // patch
    frames = backbone_config.num_frames // backbone_config.tubelet_size
    table = _sinusoid_table(frames * grid * grid, backbone_config.hidden_size)
    table = torch.from_numpy(table).to(device="cpu", dtype=torch.float32)
    table = table.reshape(frames, grid, grid, -1).permute(0, 3, 1, 2)
    table = F.interpolate(table, size=(height // patch, width // patch), mode="bicubic", align_corners=False)
    return table.permute(0, 2, 3, 1).reshape(1, -1, backbone_config.hidden_size)


_LEGACY_BIAS = re.compile(r"(attention\.attention\.)(q|v)_bias$")


def _rename_legacy_videomae_keys(state_dict: dict) -> dict:
    """`...attention.attention.q_bias/v_bias` (original VideoMAE names, what save_pretrained writes by default in
    transformers 5.23) -> `...query.bias/value.bias` (the in-memory names)."""
    if not any(_LEGACY_BIAS.search(key) for key in state_dict):
        return state_dict
    names = {"q": "query", "v": "value"}
    return type(state_dict)(
        (_LEGACY_BIAS.sub(lambda m: f"{m.group(1)}{names[m.group(2)]}.bias", key), value)
        for key, value in state_dict.items()
    )


class AdaTADPreTrainedModel(PreTrainedModel):
    config: AdaTADConfig
    config_class = AdaTADConfig
    base_model_prefix = "adatad"
    main_input_name = "pixel_values"
    input_modalities = ("video",)
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _no_split_modules = ["VideoMAEEmbeddings", "VideoMAELayer", "AdaTADAdapter", "AdaTADTransformerBlock"]

    @torch.no_grad()
    def _init_weights(self, module):
        # transformers' init functions skip tensors loaded from a checkpoint (`_is_hf_initialized`), so nothing here
        # re-randomises loaded weights. Children are visited before parents, so the adapter rule overrides the generic
        # Linear/Conv1d one. (A custom module without direct parameters is never passed here by transformers.)
        config = self.config
        if isinstance(module, AdaTADAdapter):
            init.trunc_normal_(module.down_proj.weight, std=0.02)
            init.zeros_(module.down_proj.bias)
            init.normal_(module.dwconv.weight, std=math.sqrt(2.0 / config.adapter_kernel_size))
            init.zeros_(module.dwconv.bias)
            init.normal_(module.conv.weight, std=math.sqrt(2.0 / config.adapter_dim))
            init.zeros_(module.conv.bias)
            # Zero up-projection: the adapted backbone starts equal to the plain one.
            init.zeros_(module.up_proj.weight)
            init.zeros_(module.up_proj.bias)
            init.ones_(module.gamma)
        elif isinstance(module, AdaTADScale):
            init.ones_(module.scale)
        elif isinstance(module, AdaTADAffineDropPath):
            init.constant_(module.scale, 1e-4)
        elif isinstance(module, (nn.Conv1d, nn.Linear)):
            # PyTorch's default weight init (OpenTAD keeps it), zero biases.
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            if module is getattr(getattr(self, "head", None), "cls_head", None):
                # Classification prior: sigmoid(bias) = cls_prior_prob at the start (RetinaNet / ActionFormer).
                prior = config.cls_prior_prob
                init.constant_(module.bias, -math.log((1 - prior) / prior))
            elif module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        if isinstance(module, AdaTADForActionDetection):
            init.constant_(module.loss_normalizer, float(config.loss_normalizer_init))

    def save_pretrained(self, save_directory, *args, save_original_format: bool = False, **kwargs):
        """Saves with the in-memory parameter names by default (`query.bias`, not VideoMAE's legacy `q_bias`), so that
        loaders that do not rename (the Trainer's resume, `load_state_dict`) restore every weight."""
        return super().save_pretrained(save_directory, *args, save_original_format=save_original_format, **kwargs)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Accepts checkpoints written with the legacy VideoMAE names (`q_bias`/`v_bias`) as well."""
        return super().load_state_dict(_rename_legacy_videomae_keys(state_dict), strict=strict, assign=assign)


class AdaTADForActionDetection(AdaTADPreTrainedModel):
    """VideoMAE (+ adapters) on 16-frame chunks -> spatially pooled temporal features -> ActionFormer detector.

    Parameter name prefixes: `videomae.` (ViT), `adapters.` (temporal adapters), `projection.`, `neck.`, `head.`
    (detector). The running loss normaliser is the buffer `loss_normalizer`. With `config.lora_r > 0` the targeted
    VideoMAE Linear layers are peft LoRA layers: `<name>.base_layer.weight` (frozen) and `<name>.lora_A.default.weight`,
    `<name>.lora_B.default.weight` (see `hf_vtrain.models.adatad.lora_adatad`).
    """

    def __init__(self, config: AdaTADConfig):
        super().__init__(config)
        backbone_config = config.backbone_config
        self.videomae = VideoMAEModel(backbone_config)
        num_layers = backbone_config.num_hidden_layers
        self.adapters = nn.ModuleList(
            AdaTADAdapter(backbone_config.hidden_size, config.adapter_dim, config.adapter_kernel_size)
            for _ in range(num_layers if config.use_adapters else 0)
        )
        # Stochastic depth, linear over the depth (Python floats: no tensor op under meta-device init).
        self.drop_path_rates = [config.drop_path_rate * i / max(num_layers - 1, 1) for i in range(num_layers)]
        self.projection = AdaTADProjection(config)
        self.neck = nn.ModuleDict(
            {"norms": nn.ModuleList(nn.LayerNorm(config.detector_dim, eps=1e-6) for _ in config.pyramid_strides)}
        )
        self.head = AdaTADHead(config)
        # Saved with the weights so that a resumed run continues the same running normaliser.
        self.register_buffer("loss_normalizer", torch.tensor(float(config.loss_normalizer_init)))
        self.gradient_checkpointing = False

        pretrained_size = config.pretrained_image_size
        image_size = backbone_config.image_size
        if pretrained_size is not None and pretrained_size != image_size and image_size != [pretrained_size] * 2:
            # A plain tensor attribute in transformers (not in the state dict): rebuilt from the config on every load.
            self.videomae.embeddings.position_embeddings = interpolated_position_embeddings(
                backbone_config, pretrained_size
            )
        if config.lora_r > 0:
            self._inject_lora()
        self._freeze_backbone()
        self.post_init()

    def _freeze_backbone(self):
        if self.config.freeze_backbone:
            for name, param in self.videomae.named_parameters():
                param.requires_grad_(".lora_" in name)

    def _inject_lora(self):
        from .lora_adatad import inject_lora

        inject_lora(self, self.config)

    def enable_lora(self, r: int, alpha: float, dropout: float = 0.0, target_modules=("query", "value")) -> None:
        """Adds LoRA to a model built without it (e.g. one loaded with `from_pretrained`); the config records it, so
        `save_pretrained` / `from_pretrained` round-trip. New LoRA weights start with B = 0: outputs are unchanged."""
        if self.config.lora_r > 0:
            raise ValueError(f"this model already has LoRA (r={self.config.lora_r}); build it without LoRA to add one.")
        self.config.lora_r = int(r)
        self.config.lora_alpha = alpha
        self.config.lora_dropout = dropout
        self.config.lora_target_modules = [str(name) for name in target_modules]
        self.config.validate_architecture()
        self._inject_lora()
        self._freeze_backbone()

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        want_info = kwargs.pop("output_loading_info", False)
        model, info = super().from_pretrained(*args, output_loading_info=True, **kwargs)
        if model.config.lora_r > 0 and any(".lora_" in key for key in info.get("missing_keys", ())):
            raise ValueError(
                "the checkpoint holds no LoRA layers but the config asks for them (lora_r > 0): load it without LoRA, "
                "then call `model.enable_lora(...)` (which keeps the weights and starts LoRA at B = 0)."
            )
        # transformers 5.23 materialises loaded weights as new Parameters (requires_grad=True): freeze again.
        model._freeze_backbone()
        return (model, info) if want_info else model

    # ----------------------------------------------------------------------------------------------------------------
    # Loading

    @classmethod
    def from_lora_adapter(cls, adapter_dir: str, base_model_name_or_path: str | None = None, merge: bool = False):
        """Rebuilds a LoRA AdaTAD model from an adapter folder written by `lora_adatad.export_lora`: the plain AdaTAD
        model of the folder's config.json, its frozen VideoMAE weights from `base_model_name_or_path` (default: the
        adapter config's; a VideoMAE checkpoint, or an AdaTAD one whose backbone is used), then
        `PeftModel.from_pretrained`. Returns the `PeftModel` in eval mode, or the merged plain model with
        `merge=True`."""
        from peft import PeftConfig, PeftModel
        from transformers import AutoConfig

        from .lora_adatad import strip_lora_state_dict

        config = AdaTADConfig.from_pretrained(adapter_dir)
        base_path = base_model_name_or_path or PeftConfig.from_pretrained(adapter_dir).base_model_name_or_path
        if not base_path:
            raise ValueError(f"{adapter_dir}: the adapter config names no base model; pass base_model_name_or_path")
        model = cls(config)
        if getattr(AutoConfig.from_pretrained(base_path), "model_type", None) == "adatad":
            source = cls.from_pretrained(base_path)
            backbone = {k[len("videomae."):]: v for k, v in strip_lora_state_dict(source.state_dict()).items()
                        if k.startswith("videomae.")}
        else:
            backbone = VideoMAEModel.from_pretrained(base_path, config=config.backbone_config).state_dict()
        model.load_videomae_state_dict(backbone)
        peft_model = PeftModel.from_pretrained(model, adapter_dir)
        peft_model.eval()
        return peft_model.merge_and_unload() if merge else peft_model

    @classmethod
    def from_videomae_pretrained(
        cls,
        videomae_name_or_path: str,
        image_size: int | None = 160,
        backbone_config_overrides: dict | None = None,
        **config_kwargs,
    ) -> "AdaTADForActionDetection":
        """Builds AdaTAD around pretrained VideoMAE weights (a `VideoMAEModel`, `VideoMAEForVideoClassification` or
        `VideoMAEForPreTraining` checkpoint: hub id or folder); adapters and detector are freshly initialised.

        The VideoMAE config is read from the checkpoint, then `num_frames` is set to `chunk_size`, `image_size` to the
        crop size and `backbone_config_overrides` are applied (`drop_path_rate` there is moved to the AdaTAD config,
        which owns it: transformers' VideoMAE has no stochastic depth). `pretrained_image_size` defaults to the
        checkpoint's image size, so the position table is resized as in OpenTAD. Missing or mismatched backbone
        weights raise; unexpected keys (classifier, decoder) are logged. `config_kwargs` go to `AdaTADConfig`.
        """
        backbone_config = VideoMAEConfig.from_pretrained(videomae_name_or_path)
        config_kwargs.setdefault("pretrained_image_size", backbone_config.image_size)
        overrides = {"num_frames": config_kwargs.get("chunk_size", AdaTADConfig.chunk_size)}
        if image_size is not None:
            overrides["image_size"] = image_size
        overrides.update(backbone_config_overrides or {})
        if "drop_path_rate" in overrides:
            rate = overrides.pop("drop_path_rate")
            if config_kwargs.setdefault("drop_path_rate", rate) != rate:
                raise ValueError("drop_path_rate given twice with different values.")
        for key, value in overrides.items():
            setattr(backbone_config, key, value)
        # The checkpoint's own classifier labels (e.g. Kinetics-400) mean nothing here.
        backbone_config.id2label = None
        backbone_config.label2id = None
        backbone_config.architectures = None

        model = cls(AdaTADConfig(backbone_config=backbone_config, **config_kwargs))
        videomae, info = VideoMAEModel.from_pretrained(
            videomae_name_or_path, config=backbone_config, output_loading_info=True
        )
        missing = sorted(info.get("missing_keys", []))
        mismatched = sorted(str(key) for key in info.get("mismatched_keys", []))
        unexpected = sorted(info.get("unexpected_keys", []))
        if unexpected:
            logger.info("VideoMAE checkpoint keys not used by the backbone: %s", unexpected)
        if missing or mismatched:
            raise ValueError(
                f"{videomae_name_or_path} does not hold every backbone weight; missing: {missing}, mismatched: "
                f"{mismatched}. Refusing to train on a partly random backbone."
            )
        logger.info("Loaded all %d VideoMAE tensors from %s", len(videomae.state_dict()), videomae_name_or_path)
        model.load_videomae_state_dict(videomae.state_dict())
        return model

    def load_videomae_state_dict(self, state_dict: dict) -> None:
        """Copies a plain `VideoMAEModel` state dict into the backbone. With LoRA, a targeted Linear keeps its weight
        under `<name>.base_layer.`: plain names are mapped there, and only the LoRA weights may be left out."""
        target = self.videomae.state_dict()
        mapped = {}
        for key, value in state_dict.items():
            if key not in target:
                alternative = re.sub(r"\.(weight|bias)$", r".base_layer.\1", key)
                key = alternative if alternative in target else key
            mapped[key] = value
        result = self.videomae.load_state_dict(mapped, strict=False)
        missing = [key for key in result.missing_keys if ".lora_" not in key]
        if missing or result.unexpected_keys:
            raise ValueError(f"VideoMAE weights do not match the backbone: missing {missing}, unexpected "
                             f"{result.unexpected_keys}")

    # ----------------------------------------------------------------------------------------------------------------
    # Backbone

    def get_point_table(self, seq_len: int | None = None, device=None) -> dict[str, torch.Tensor]:
        """Point positions (frames), strides, regression ranges and levels, concatenated like the outputs."""
        return build_point_table(self.config, seq_len, device)

    def no_weight_decay_parameter_names(self) -> set[str]:
        """The parameters OpenTAD trains without weight decay (its ActionFormer `get_optim_groups` and AdaTAD's
        optimizer config): in the detector, biases, LayerNorm weights and the scales of `Scale` / `AffineDropPath`;
        every adapter parameter is decayed (OpenTAD's backbone group `custom=[dict(name="adapter", weight_decay=0.05)]`
        takes them all, biases and gamma included); in the VideoMAE (frozen there; trained with LoRA or unfrozen)
        biases and LayerNorm weights. The trainer's optimizer groups read it (one source of truth)."""
        names = set()
        for module_name, module in self.named_modules():
            if module_name == "adapters" or module_name.startswith("adapters."):
                continue
            for param_name, _ in module.named_parameters(recurse=False):
                full_name = f"{module_name}.{param_name}" if module_name else param_name
                if param_name == "bias" or isinstance(module, (nn.LayerNorm, AdaTADScale, AdaTADAffineDropPath)):
                    names.add(full_name)
        return names

    def _normalize(self, pixel_values: torch.Tensor) -> torch.Tensor:
        channels = pixel_values.shape[2]
        mean = torch.tensor(self.config.image_mean, device=pixel_values.device).view(1, 1, channels, 1, 1)
        std = torch.tensor(self.config.image_std, device=pixel_values.device).view(1, 1, channels, 1, 1)
        # In the backbone's dtype: DeepSpeed fp16/bf16 (and `model.half()`) cast the weights, not the inputs; under
        # autocast the weights stay fp32 and autocast casts per op.
        dtype = self.videomae.embeddings.patch_embeddings.projection.weight.dtype
        return ((pixel_values.float() / 255.0 - mean) / std).to(dtype)

    def _block(self, hidden_states, index: int, num_chunks: int, height: int, width: int) -> torch.Tensor:
        # VideoMAELayer's forward with drop path on both residual branches (transformers' layer has none), then the
        # adapter. The layer's own submodules are used, so weights and numerics equal VideoMAEModel's.
        layer = self.videomae.encoder.layer[index]
        rate = self.drop_path_rates[index]
        attention = layer.attention(layer.layernorm_before(hidden_states))
        hidden_states = hidden_states + drop_path(attention, rate, self.training)
        mlp = layer.output.dropout(layer.output.dense(layer.intermediate(layer.layernorm_after(hidden_states))))
        hidden_states = hidden_states + drop_path(mlp, rate, self.training)
        if len(self.adapters) > 0:
            hidden_states = self.adapters[index](hidden_states, num_chunks, height, width)
        return hidden_states

    def backbone_tokens(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Token features of every chunk: (batch * num_chunks, t * h * w, hidden), t = chunk_size / tubelet_size.

        `pixel_values` are already normalised floats (batch, frames, channels, height, width).
        """
        batch, frames, channels, height, width = pixel_values.shape
        chunk = self.config.chunk_size
        if frames % chunk != 0:
            raise ValueError(f"{frames} frames do not split into chunks of {chunk}.")
        num_chunks = frames // chunk
        patch = self.config.backbone_config.patch_size
        patch = patch if isinstance(patch, int) else patch[0]
        grid_h, grid_w = height // patch, width // patch

        chunks = pixel_values.reshape(batch * num_chunks, chunk, channels, height, width)
        hidden_states = self.videomae.embeddings(chunks, None)
        use_checkpointing = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        checkpoint_fn = getattr(self, "_gradient_checkpointing_func", None) or partial(checkpoint, use_reentrant=False)
        for index in range(len(self.videomae.encoder.layer)):
            if use_checkpointing:
                hidden_states = checkpoint_fn(self._block, hidden_states, index, num_chunks, grid_h, grid_w)
            else:
                hidden_states = self._block(hidden_states, index, num_chunks, grid_h, grid_w)
        if self.videomae.layernorm is not None:
            hidden_states = self.videomae.layernorm(hidden_states)
        return hidden_states

    def extract_features(self, pixel_values: torch.Tensor, pixel_mask: torch.Tensor | None = None) -> torch.Tensor:
        """uint8 frames (batch, T, 3, H, W) -> temporal features (batch, hidden, T), zero on padded frames."""
        batch, frames = pixel_values.shape[:2]
        tokens = self.backbone_tokens(self._normalize(pixel_values))
        steps = tokens.shape[0] // batch * (self.config.chunk_size // self.config.backbone_config.tubelet_size)
        features = tokens.reshape(batch, steps, -1, tokens.shape[-1]).mean(2).transpose(1, 2)  # average over space
        features = F.interpolate(features, size=frames, mode="linear", align_corners=False)
        if pixel_mask is not None:
            features = features * pixel_mask[:, None].to(features.dtype)
        return features

    # ----------------------------------------------------------------------------------------------------------------
    # Detector and loss

    def forward(
        self,
        pixel_values: torch.Tensor,
        pixel_mask: torch.Tensor | None = None,
        class_labels: torch.Tensor | None = None,
        segment_labels: torch.Tensor | None = None,
        **kwargs,
    ) -> AdaTADDetectionOutput:
        r"""
        pixel_values (`torch.Tensor` of shape `(batch, T, 3, H, W)`): uint8 frames (or floats on the 0-255 scale);
            divided by 255 and normalised with `image_mean` / `image_std` inside. T must divide by `chunk_size` and
            by the coarsest pyramid stride; H, W must equal `backbone_config.image_size`.
        pixel_mask (`torch.BoolTensor` of shape `(batch, T)`): True on real frames.
        class_labels (`torch.LongTensor` of shape `(batch, N)`): action classes, -1 on padding rows.
        segment_labels (`torch.Tensor` of shape `(batch, N, 2)`): [start, end] in window frame units.
        Other keys (`video_index`, `window_start`, ...) are ignored.
        """
        batch, frames = pixel_values.shape[:2]
        if pixel_mask is None:
            pixel_mask = torch.ones(batch, frames, dtype=torch.bool, device=pixel_values.device)
        pixel_mask = pixel_mask.bool()
        features = self.extract_features(pixel_values, pixel_mask)

        class_logits, offsets, masks = [], [], []
        levels = self.projection(features, pixel_mask)
        for level, ((x, mask), norm) in enumerate(zip(levels, self.neck["norms"])):
            x = norm(x.transpose(1, 2)).transpose(1, 2)
            logits, regression = self.head(x, mask, level)
            class_logits.append(logits.transpose(1, 2))
            offsets.append(regression.transpose(1, 2) * self.config.pyramid_strides[level])
            masks.append(mask)
        class_logits = torch.cat(class_logits, dim=1)
        segment_offsets = torch.cat(offsets, dim=1)
        point_mask = torch.cat(masks, dim=1)

        loss = cls_loss = reg_loss = None
        if class_labels is not None or segment_labels is not None:
            if class_labels is None or segment_labels is None:
                raise ValueError("class_labels and segment_labels must be given together.")
            cls_loss, reg_loss = self._loss(
                class_logits, segment_offsets, point_mask, class_labels, segment_labels, seq_len=frames
            )
            loss = cls_loss + self.config.reg_loss_weight * reg_loss

        return AdaTADDetectionOutput(
            loss=loss,
            cls_loss=cls_loss,
            reg_loss=reg_loss,
            class_logits=class_logits,
            segment_offsets=segment_offsets,
            point_mask=point_mask,
        )

    def _loss(self, class_logits, segment_offsets, point_mask, class_labels, segment_labels, seq_len: int):
        points = self.get_point_table(seq_len, class_logits.device)
        cls_targets, reg_targets = assign_action_targets(
            points, segment_labels, class_labels, self.config.num_labels, self.config.center_sample_radius
        )
        positive = (cls_targets.sum(-1) > 0) & point_mask
        num_positive = positive.sum().float()
        world = 1
        if self.training and torch.distributed.is_available() and torch.distributed.is_initialized():
            world = torch.distributed.get_world_size()
        if world > 1:
            # Normalise by the positives of the GLOBAL batch and undo DDP's gradient averaging below, so the update
            # equals one process holding the whole batch: results do not change with the number of GPUs.
            num_positive = num_positive.detach().clone()
            torch.distributed.all_reduce(num_positive)
        num_positive = num_positive.clamp(min=1.0)
        if self.training:
            # EMA of the positive count (OpenTAD/ActionFormer), updated only in training; a buffer, so it resumes.
            momentum = self.config.loss_normalizer_momentum
            self.loss_normalizer.mul_(momentum).add_((1 - momentum) * num_positive.detach())
            normalizer = self.loss_normalizer.clone().float()
        else:
            normalizer = num_positive

        # Losses in fp32 whatever the weights' dtype (DeepSpeed fp16/bf16 run the model in half precision).
        class_logits, segment_offsets = class_logits.float(), segment_offsets.float()
        cls_loss = sigmoid_focal_loss(
            class_logits[point_mask],
            cls_targets[point_mask],
            alpha=self.config.focal_alpha,
            gamma=self.config.focal_gamma,
            reduction="sum",
        ) / normalizer
        reg_loss = diou_loss_1d(segment_offsets[positive], reg_targets[positive], reduction="sum") / normalizer
        return cls_loss * world, reg_loss * world


__all__ = [
    "AdaTADDetectionOutput",
    "AdaTADForActionDetection",
    "AdaTADPreTrainedModel",
    "assign_action_targets",
    "build_point_table",
]
