"""FG-CLIP-style video-text model (video anomaly detection); registered with AutoConfig / AutoModel under model_type
"fgclip_video"."""

from transformers import AutoConfig, AutoModel

from .configuration_fgclip_video import UCF_CRIME_CLASSES, UCF_CRIME_PROMPTS, FGCLIPVideoConfig
from .modeling_fgclip_video import (
    FGCLIPVideoModel,
    FGCLIPVideoOutput,
    FGCLIPVideoPreTrainedModel,
    FGCLIPVideoSnippetScores,
    stretch_text_position_embeddings,
)


AutoConfig.register("fgclip_video", FGCLIPVideoConfig, exist_ok=True)
AutoModel.register(FGCLIPVideoConfig, FGCLIPVideoModel, exist_ok=True)

__all__ = [
    "UCF_CRIME_CLASSES",
    "UCF_CRIME_PROMPTS",
    "FGCLIPVideoConfig",
    "FGCLIPVideoModel",
    "FGCLIPVideoOutput",
    "FGCLIPVideoPreTrainedModel",
    "FGCLIPVideoSnippetScores",
    "stretch_text_position_embeddings",
]
