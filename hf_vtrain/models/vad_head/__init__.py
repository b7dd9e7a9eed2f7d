"""The weakly supervised anomaly head over FG-CLIP snippet features; registered with AutoConfig / AutoModel under
model_type "vad_head"."""

from transformers import AutoConfig, AutoModel

from .configuration_vad_head import VADHeadConfig
from .losses_vad_head import topk_align_loss, topk_bag_logits, topk_counts, topk_mil_loss
from .modeling_vad_head import VADHeadForAnomalyScoring, VADHeadOutput, VADHeadPreTrainedModel

AutoConfig.register("vad_head", VADHeadConfig, exist_ok=True)
AutoModel.register(VADHeadConfig, VADHeadForAnomalyScoring, exist_ok=True)

__all__ = ["VADHeadConfig", "VADHeadForAnomalyScoring", "VADHeadOutput", "VADHeadPreTrainedModel", "topk_bag_logits",
           "topk_align_loss", "topk_counts", "topk_mil_loss"]
