"""EPAM-Net for RGB + pose action recognition; registered with AutoConfig / AutoModel under model_type "epam"."""

from transformers import AutoConfig, AutoModel

from .configuration_epam import EPAMConfig
from .modeling_epam import EPAMForActionRecognition, EPAMOutput, EPAMPreTrainedModel, count_parameters

AutoConfig.register("epam", EPAMConfig, exist_ok=True)
AutoModel.register(EPAMConfig, EPAMForActionRecognition, exist_ok=True)

__all__ = ["EPAMConfig", "EPAMForActionRecognition", "EPAMOutput", "EPAMPreTrainedModel", "count_parameters"]
