"""RT-DETR (transformers' RTDetrForObjectDetection, its published checkpoints and RTDetrConfig as they are) for the
toolkit: its loss parts under `*_loss` names and early fusion of more input channels."""

from .modeling_rt_detr import RTDetrDetector, detections_from_outputs, widen_input_channels

__all__ = ["RTDetrDetector", "detections_from_outputs", "widen_input_channels"]
