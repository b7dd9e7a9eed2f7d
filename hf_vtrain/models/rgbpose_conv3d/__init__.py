"""RGBPoseConv3D for RGB + pose action recognition; registered with AutoConfig / AutoModel under model_type
"rgbpose_conv3d"."""

from transformers import AutoConfig, AutoModel

from .configuration_rgbpose_conv3d import RGBPoseConv3DConfig
from .modeling_rgbpose_conv3d import (RGBPoseConv3DForActionRecognition, RGBPoseConv3DOutput,
                                      RGBPoseConv3DPreTrainedModel)

AutoConfig.register("rgbpose_conv3d", RGBPoseConv3DConfig, exist_ok=True)
AutoModel.register(RGBPoseConv3DConfig, RGBPoseConv3DForActionRecognition, exist_ok=True)

__all__ = ["RGBPoseConv3DConfig", "RGBPoseConv3DForActionRecognition", "RGBPoseConv3DOutput",
           "RGBPoseConv3DPreTrainedModel"]
