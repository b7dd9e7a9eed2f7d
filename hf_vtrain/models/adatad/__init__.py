"""AdaTAD for temporal action detection; registered with AutoConfig / AutoModel under model_type "adatad"."""

from transformers import AutoConfig, AutoModel

from .configuration_adatad import AdaTADConfig
from .modeling_adatad import (
    AdaTADDetectionOutput,
    AdaTADForActionDetection,
    AdaTADPreTrainedModel,
    assign_action_targets,
    build_point_table,
)


AutoConfig.register("adatad", AdaTADConfig, exist_ok=True)
AutoModel.register(AdaTADConfig, AdaTADForActionDetection, exist_ok=True)

__all__ = [
    "AdaTADConfig",
    "AdaTADDetectionOutput",
    "AdaTADForActionDetection",
    "AdaTADPreTrainedModel",
    "assign_action_targets",
    "build_point_table",
]
