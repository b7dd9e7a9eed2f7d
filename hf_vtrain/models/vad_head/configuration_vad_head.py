"""Configuration of the weakly supervised anomaly head: a small temporal transformer over a video's snippet features
(from the trained FG-CLIP video encoder), a score per snippet, trained with top-k MIL on video-level labels.

Why a transformer of local then global layers (not VadCLIP's local transformer + graph convolution): the local layers
(attention within `local_window` snippets, VadCLIP's local module) see the motion around a snippet, and a global layer
relates snippets across the whole video, the role VadCLIP gives its similarity/distance graph; both come from standard
attention blocks, train in seconds on cached features on a CPU, and run on videos of any length (sinusoidal
positions, no table to outgrow).
"""

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig


@strict
class VADHeadConfig(PreTrainedConfig):
    r"""
    feature_dim (`int`, 512): the snippet features' size (FG-CLIP's projection_dim).
    hidden_size (`int`, 256), num_heads (`int`, 4), local_layers (`int`, 2), global_layers (`int`, 1),
    local_window (`int`, 8): a local layer attends to snippets at most local_window // 2 away.
    ffn_ratio (`float`, 2.0), dropout (`float`, 0.1).
    topk_divisor (`int`, 16): MIL's k = floor(length / topk_divisor) + 1 (VadCLIP).
    num_align_classes (`int`, 0): with C > 0, VadCLIP's MIL-Align term: each snippet's embedding against C fixed
        class text embeddings (the `class_embeds` buffer, e.g. FG-CLIP's anomaly prompts, normal included), the
        top-k mean per class, cross-entropy with the video's class; align_loss_weight (`float`, 1.0),
        align_temperature (`float`, 0.07, CLIP's).
    """

    model_type = "vad_head"

    feature_dim: int = 512
    hidden_size: int = 256
    num_heads: int = 4
    local_layers: int = 2
    global_layers: int = 1
    local_window: int = 8
    ffn_ratio: float | int = 2.0
    dropout: float | int = 0.1
    topk_divisor: int = 16
    num_align_classes: int = 0
    align_loss_weight: float | int = 1.0
    align_temperature: float = 0.07
    initializer_range: float = 0.02

    def validate_architecture(self):
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size ({self.hidden_size}) must be a multiple of num_heads ({self.num_heads}).")
        if self.local_layers + self.global_layers < 1 or self.local_window < 1 or self.topk_divisor < 1:
            raise ValueError("at least one layer; local_window and topk_divisor >= 1.")


__all__ = ["VADHeadConfig"]
