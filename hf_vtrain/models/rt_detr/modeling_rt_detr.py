"""RT-DETR for the toolkit. The model is transformers' RTDetrForObjectDetection with its own RTDetrConfig, so the
published checkpoints (PekingU/rtdetr_r18vd ...) load as they are; this class adds only:

- the loss parts of the last decoder layer as `vfl_loss`, `bbox_loss`, `giou_loss` (the Trainer logs `*_loss`
  outputs; the total `loss` is transformers' weighted sum with the auxiliary and denoising terms);
- `widen_input_channels`: early fusion of more input channels (RGB + event frames) by widening the backbone's first
  convolution, the pretrained RGB filters kept and the new channels' filters zero, so the widened model computes what
  the RGB model computed until training moves them; `backbone_config.num_channels` records it, so a saved widened
  model loads back as such;
- `detections_from_outputs`: the image processor's post-processing (sigmoid scores, the top-k over queries x classes
  as RTDetrImageProcessor.post_process_object_detection with use_focal_loss) with boxes in each image's pixels, kept
  as floats.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import RTDetrForObjectDetection

LOSS_PARTS = {"loss_vfl": "vfl_loss", "loss_bbox": "bbox_loss", "loss_giou": "giou_loss", "loss_focal": "focal_loss",
              "loss_ce": "ce_loss"}


class RTDetrDetector(RTDetrForObjectDetection):
    def __init__(self, config):
        super().__init__(config)
        self.loss_type = "RTDetrForObjectDetection"  # transformers picks the loss by class name: RT-DETR's own

    def forward(self, pixel_values: torch.Tensor, labels=None, **kwargs):
        out = super().forward(pixel_values=pixel_values, labels=labels, **kwargs)
        if labels is not None and out.loss_dict is not None:
            for key, name in LOSS_PARTS.items():
                if key in out.loss_dict:
                    out[name] = out.loss_dict[key]
        return out


def first_convolution(model: RTDetrForObjectDetection) -> tuple[nn.Module, str, nn.Conv2d]:
    """(parent module, attribute name, conv) of the backbone's first convolution (the one reading the pixels)."""
    for name, module in model.model.backbone.named_modules():
        for child_name, child in module.named_children():
            if isinstance(child, nn.Conv2d):
                return module, child_name, child
    raise ValueError("no convolution in the RT-DETR backbone")


def widen_input_channels(model: RTDetrForObjectDetection, channels: int) -> RTDetrForObjectDetection:
    """The backbone's first convolution reads `channels` input channels: the existing filters kept for the first ones,
    zero filters for the rest. The config records it (`backbone_config.num_channels`)."""
    parent, name, conv = first_convolution(model)
    if conv.in_channels == channels:
        return model
    if conv.in_channels > channels:
        raise ValueError(f"the backbone reads {conv.in_channels} channels already, more than {channels}")
    wide = nn.Conv2d(channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                     conv.groups, conv.bias is not None, conv.padding_mode).to(conv.weight.device, conv.weight.dtype)
    with torch.no_grad():
        wide.weight.zero_()
        wide.weight[:, : conv.in_channels] = conv.weight
        if conv.bias is not None:
            wide.bias.copy_(conv.bias)
    setattr(parent, name, wide)
    model.config.backbone_config.num_channels = channels
    for module in model.model.backbone.modules():  # RTDetrResNetEmbeddings checks the channels it is given
        if hasattr(module, "num_channels") and not isinstance(module, nn.Conv2d):
            module.num_channels = channels
    return model


@torch.no_grad()
def detections_from_outputs(logits: torch.Tensor, pred_boxes: torch.Tensor, sizes: torch.Tensor,
                            max_detections: int) -> torch.Tensor:
    """(B, k, 6) [x1, y1, x2, y2, score, class] per image, k = min(max_detections, queries x classes), boxes in the
    pixels of each image's (height, width) in `sizes`, sorted by score."""
    batch, queries, classes = logits.shape
    scores = logits.float().sigmoid().flatten(1)  # (B, Q * C)
    k = min(int(max_detections), queries * classes)
    top, index = scores.topk(k, dim=1)
    query, cls = index // classes, index % classes
    boxes = pred_boxes.float().gather(1, query[..., None].expand(-1, -1, 4))
    cx, cy, w, h = boxes.unbind(-1)
    height, width = sizes[:, 0, None].float(), sizes[:, 1, None].float()
    xyxy = torch.stack([(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height], -1)
    return torch.cat([xyxy, top[..., None], cls[..., None].float()], dim=-1)
