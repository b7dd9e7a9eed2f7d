"""The weakly supervised anomaly head (VADHeadConfig): snippet features (B, T, feature_dim) with their mask -> a
linear projection, sinusoidal positions, `local_layers` pre-norm transformer layers attending within a window,
`global_layers` over the whole video, a linear score per snippet. With `labels` (B,) (1: anomalous, 0: normal) the
loss is top-k MIL (losses_vad_head); `scores` are the sigmoid of the snippet logits, 0 on padding."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from .configuration_vad_head import VADHeadConfig
from .losses_vad_head import topk_align_loss, topk_mil_loss


def sinusoidal_positions(length: int, dim: int, device) -> torch.Tensor:
    position = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    rate = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    out = torch.zeros(length, dim, device=device)
    out[:, 0::2] = torch.sin(position * rate)
    out[:, 1::2] = torch.cos(position * rate[: dim // 2])
    return out


class VADHeadLayer(nn.Module):
    def __init__(self, config: VADHeadConfig):
        super().__init__()
        d = config.hidden_size
        self.norm1 = nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, config.num_heads, dropout=config.dropout, batch_first=True)
        self.norm2 = nn.LayerNorm(d)
        self.ffn = nn.Sequential(nn.Linear(d, int(d * config.ffn_ratio)), nn.GELU(), nn.Dropout(config.dropout),
                                 nn.Linear(int(d * config.ffn_ratio), d))
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, blocked: torch.Tensor) -> torch.Tensor:
        """`blocked` (B * heads, T, T) True where a snippet may not attend."""
        h = self.norm1(x)
        x = x + self.dropout(self.attn(h, h, h, attn_mask=blocked, need_weights=False)[0])
        return x + self.dropout(self.ffn(self.norm2(x)))


@dataclass
class VADHeadOutput(ModelOutput):
    loss: torch.Tensor | None = None
    mil_loss: torch.Tensor | None = None
    align_loss: torch.Tensor | None = None  # with num_align_classes and class_labels
    logits: torch.Tensor | None = None  # (B, T) snippet logits
    scores: torch.Tensor | None = None  # (B, T) sigmoid, 0 on padding
    bag_logits: torch.Tensor | None = None  # (B,) top-k means (with labels)


class VADHeadPreTrainedModel(PreTrainedModel):
    config: VADHeadConfig
    config_class = VADHeadConfig
    base_model_prefix = "vad_head"
    main_input_name = "features"

    @torch.no_grad()
    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            init.normal_(module.weight, std=self.config.initializer_range)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, nn.MultiheadAttention):
            init.xavier_uniform_(module.in_proj_weight)
            init.zeros_(module.in_proj_bias)


class VADHeadForAnomalyScoring(VADHeadPreTrainedModel):
    def __init__(self, config: VADHeadConfig):
        super().__init__(config)
        self.input_proj = nn.Linear(config.feature_dim, config.hidden_size)
        self.local_layers = nn.ModuleList(VADHeadLayer(config) for _ in range(config.local_layers))
        self.global_layers = nn.ModuleList(VADHeadLayer(config) for _ in range(config.global_layers))
        self.norm = nn.LayerNorm(config.hidden_size)
        self.classifier = nn.Linear(config.hidden_size, 1)
        if config.num_align_classes:
            self.align_proj = nn.Linear(config.hidden_size, config.feature_dim)
            # the class text embeddings (set_class_embeddings), saved with the head
            self.register_buffer("class_embeds", torch.zeros(config.num_align_classes, config.feature_dim))
        self.post_init()

    @torch.no_grad()
    def set_class_embeddings(self, embeds: torch.Tensor) -> None:
        """The (C, feature_dim) class text embeddings the alignment term compares snippets with."""
        if not self.config.num_align_classes or tuple(embeds.shape) != tuple(self.class_embeds.shape):
            raise ValueError(f"class embeddings {tuple(embeds.shape)} for a head with num_align_classes "
                             f"{self.config.num_align_classes} and feature_dim {self.config.feature_dim}")
        self.class_embeds.copy_(F.normalize(embeds.float(), dim=-1))

    def _blocked(self, mask: torch.Tensor, window: int | None) -> torch.Tensor:
        batch, length = mask.shape
        blocked = ~mask[:, None, :].expand(batch, length, length)  # padding is never attended to
        if window is not None:
            idx = torch.arange(length, device=mask.device)
            blocked = blocked | ((idx[None, :] - idx[:, None]).abs() > window // 2)[None]
        # a padded query would see nothing (NaN): let it see itself; its output is masked out
        blocked = blocked & ~torch.eye(length, dtype=torch.bool, device=mask.device)[None]
        return blocked.repeat_interleave(self.config.num_heads, dim=0)

    def forward(self, features: torch.Tensor, snippet_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, class_labels: torch.Tensor | None = None,
                **kwargs) -> VADHeadOutput:
        if features.dim() != 3:
            raise ValueError(f"features must be (B, T, feature_dim), got {tuple(features.shape)}")
        mask = snippet_mask.bool() if snippet_mask is not None else torch.ones(features.shape[:2], dtype=torch.bool,
                                                                               device=features.device)
        x = self.input_proj(F.normalize(features.float(), dim=-1))
        x = x + sinusoidal_positions(x.shape[1], x.shape[2], x.device)[None]
        local = self._blocked(mask, self.config.local_window)
        for layer in self.local_layers:
            x = layer(x, local)
        full = self._blocked(mask, None)
        for layer in self.global_layers:
            x = layer(x, full)
        hidden = self.norm(x)
        logits = self.classifier(hidden).squeeze(-1)
        out = VADHeadOutput(logits=logits, scores=torch.sigmoid(logits) * mask)
        if labels is not None:
            out.mil_loss, out.bag_logits = topk_mil_loss(logits, mask, labels, self.config.topk_divisor)
            out.loss = out.mil_loss
            if self.config.num_align_classes and class_labels is not None:
                embeds = F.normalize(self.align_proj(hidden).float(), dim=-1)
                class_logits = embeds @ self.class_embeds.t() / self.config.align_temperature
                out.align_loss, _ = topk_align_loss(class_logits, mask, class_labels, self.config.topk_divisor)
                out.loss = out.loss + self.config.align_loss_weight * out.align_loss
        return out


__all__ = ["VADHeadForAnomalyScoring", "VADHeadOutput", "VADHeadPreTrainedModel"]
