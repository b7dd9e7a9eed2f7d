"""EPAM-Net: X-ShiftNet RGB and pose streams, pose-driven spatial-temporal attention on the RGB features, summed
logits (Abdelkawy et al., Neurocomputing 2025). Module and parameter names are those of the reference implementation
(ahmed-nady/Multimodal-Action-Recognition: `rgb_backbone`, `pose_backbone`, `attention_module`, `rgb_cls_head`,
`pose_cls_head`, mmcv's `conv` / `bn` inside each conv unit), so its checkpoints map onto this model by name, and a
single-stream model's weights load into the fused one.

Inputs: `pixel_values` (batch, rgb_frames, 3, H, W) uint8 (or floats on the 0-255 scale), normalised inside;
`heatmaps` (batch, joints, pose_frames, h, w) floats in [0, 1] (hf_vtrain.data.pose_heatmaps). The two streams sample
the same temporal positions, so pose feature frame `k * pose_frame_stride` guides RGB frame k.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init

from ..rgb_pose_recognition import (RGBPoseRecognitionOutput, count_parameters, init_recognition_layer, normalized_rgb,
                                    recognition_output)
from .configuration_epam import EPAMConfig


def temporal_shift(x: torch.Tensor, shift_div: int) -> torch.Tensor:
    """TSM on (N, C, T, H, W): the first C/shift_div channels move one frame back in time, the next C/shift_div one
    frame forward (zeros enter at the ends), the rest stay."""
    fold = x.shape[1] // shift_div
    out = torch.zeros_like(x)
    out[:, :fold, :-1] = x[:, :fold, 1:]
    out[:, fold: 2 * fold, 1:] = x[:, fold: 2 * fold, :-1]
    out[:, 2 * fold:] = x[:, 2 * fold:]
    return out


def round_width(width: float, multiplier: float, min_width: int = 8, divisor: int = 8) -> int:
    """X3D's channel rounding: width x multiplier to a multiple of `divisor`, at least `min_width`, never below 90%."""
    width *= multiplier
    out = max(min_width, int(width + divisor / 2) // divisor * divisor)
    if out < 0.9 * width:
        out += divisor
    return int(out)


class EPAMConvUnit(nn.Module):
    """Conv3d without bias, BatchNorm3d, optional ReLU (mmcv's ConvModule, whose parameter names it keeps)."""

    def __init__(self, cin, cout, kernel, stride=1, padding=0, groups=1, relu=True):
        super().__init__()
        self.conv = nn.Conv3d(cin, cout, kernel, stride=stride, padding=padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm3d(cout)
        self.relu = relu

    def forward(self, x):
        x = self.bn(self.conv(x))
        return F.relu(x) if self.relu else x


class EPAMSqueezeExcitation(nn.Module):
    def __init__(self, channels: int, ratio: float):
        super().__init__()
        bottleneck = round_width(channels, ratio)
        self.fc1 = nn.Conv3d(channels, bottleneck, 1)
        self.fc2 = nn.Conv3d(bottleneck, channels, 1)

    def forward(self, x):
        w = F.adaptive_avg_pool3d(x, 1)
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(w))))


class EPAMBlock(nn.Module):
    """X3D bottleneck with a temporal shift in front: shift -> 1x1x1 -> depthwise 1x3x3 (stride) -> [SE] -> swish ->
    1x1x1, plus the (projected) input, ReLU."""

    def __init__(self, cin, planes, cout, stride, shift_div, se_ratio, use_swish, downsample):
        super().__init__()
        self.shift_div = shift_div
        self.conv1 = EPAMConvUnit(cin, planes, 1)
        self.conv2 = EPAMConvUnit(planes, planes, (1, 3, 3), stride=(1, stride, stride), padding=(0, 1, 1),
                                  groups=planes, relu=False)
        self.se_module = EPAMSqueezeExcitation(planes, se_ratio) if se_ratio is not None else None
        self.use_swish = use_swish
        self.conv3 = EPAMConvUnit(planes, cout, 1, relu=False)
        self.downsample = EPAMConvUnit(cin, cout, 1, stride=(1, stride, stride), relu=False) if downsample else None

    def forward(self, x):
        out = self.conv2(self.conv1(temporal_shift(x, self.shift_div)))
        if self.se_module is not None:
            out = self.se_module(out)
        if self.use_swish:
            out = out * torch.sigmoid(out)
        out = self.conv3(out)
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)


class EPAMXShiftNet(nn.Module):
    """X3D backbone with temporal shift blocks and no temporal striding: stem 1x3x3, stages, 1x1x1 expansion."""

    def __init__(self, in_channels, base, stage_blocks, strides, stem_stride, shift_div, ratio, se_ratio, use_swish):
        super().__init__()
        self.conv1_s = EPAMConvUnit(in_channels, base, (1, 3, 3), stride=(1, stem_stride, stem_stride),
                                    padding=(0, 1, 1))
        self.num_stages = len(stage_blocks)
        cin = base
        for i, (blocks, stride) in enumerate(zip(stage_blocks, strides)):
            width = base * 2**i
            planes = int(width * ratio)
            layers = [EPAMBlock(cin if j == 0 else width, planes, width, stride if j == 0 else 1, shift_div,
                                se_ratio if j % 2 == 0 else None, use_swish,
                                downsample=j == 0 and (stride != 1 or cin != width)) for j in range(blocks)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*layers))
            cin = width
        self.out_channels = int(cin * ratio)
        self.conv5 = EPAMConvUnit(cin, self.out_channels, 1)

    def forward(self, x):
        x = self.conv1_s(x)
        for i in range(self.num_stages):
            x = getattr(self, f"layer{i + 1}")(x)
        return self.conv5(x)


class EPAMSpatialTemporalAttention(nn.Module):
    """From pose features (N, C, T, h, w): a spatial map (channels -> 1 by a 1x3x3 conv, ReLU, a 1x7x7 conv,
    sigmoid) times a temporal weight per frame (the map's spatial mean through a 2-layer MLP over the T frames,
    sigmoid). Parameter names as the reference (including its `conv_sptial_attention`)."""

    def __init__(self, channels: int, frames: int, hidden: int):
        super().__init__()
        self.conv_ch_compress = nn.Conv3d(channels, 1, (1, 3, 3), padding="same")
        self.conv_sptial_attention = nn.Conv3d(1, 1, (1, 7, 7), padding="same")
        self.fc1 = nn.Linear(frames, hidden, bias=False)
        self.fc2 = nn.Linear(hidden, frames, bias=False)

    def forward(self, x):
        batch, _, frames, height, width = x.shape
        spatial = torch.sigmoid(self.conv_sptial_attention(F.relu(self.conv_ch_compress(x))))
        pooled = spatial.mean(dim=(3, 4)).view(batch, frames)
        temporal = torch.sigmoid(self.fc2(F.relu(self.fc1(pooled)))).view(batch, 1, frames, 1, 1)
        return spatial * temporal


class EPAMHead(nn.Module):
    """Global average pooling, dropout, linear classifier (MMAction2's I3DHead; `fc_cls` as there)."""

    def __init__(self, channels: int, num_classes: int, dropout: float):
        super().__init__()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc_cls = nn.Linear(channels, num_classes)

    def forward(self, x):
        return self.fc_cls(self.dropout(F.adaptive_avg_pool3d(x, 1).flatten(1)))


EPAMOutput = RGBPoseRecognitionOutput


class EPAMPreTrainedModel(PreTrainedModel):
    config: EPAMConfig
    config_class = EPAMConfig
    base_model_prefix = "epam"
    main_input_name = "pixel_values"
    input_modalities = ("video",)

    @torch.no_grad()
    def _init_weights(self, module):
        # The reference's init_weights (MMAction2's), and the last BN of every residual branch at zero
        init_recognition_layer(module, self.config.init_std)
        if isinstance(module, EPAMBlock):
            init.zeros_(module.conv3.bn.weight)


class EPAMForActionRecognition(EPAMPreTrainedModel):
    def __init__(self, config: EPAMConfig):
        super().__init__(config)
        c = config
        if "rgb" in c.streams:
            self.rgb_backbone = EPAMXShiftNet(3, c.rgb_base_channels, c.rgb_stage_blocks, c.rgb_spatial_strides,
                                              c.rgb_stem_stride, c.rgb_shift_div, c.bottleneck_ratio, c.se_ratio,
                                              c.use_swish)
            self.rgb_cls_head = EPAMHead(self.rgb_backbone.out_channels, c.num_labels, c.dropout)
        if "pose" in c.streams:
            self.pose_backbone = EPAMXShiftNet(c.num_joints, c.pose_base_channels, c.pose_stage_blocks,
                                               c.pose_spatial_strides, c.pose_stem_stride, c.pose_shift_div,
                                               c.bottleneck_ratio, c.se_ratio, c.use_swish)
            self.pose_cls_head = EPAMHead(self.pose_backbone.out_channels, c.num_labels, c.dropout)
        if c.streams == "rgb+pose":
            self.attention_module = EPAMSpatialTemporalAttention(self.pose_backbone.out_channels, c.rgb_frames,
                                                                 c.attention_hidden)
        self.post_init()

    def forward(self, pixel_values: torch.Tensor | None = None, heatmaps: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, **kwargs) -> RGBPoseRecognitionOutput:
        c = self.config
        rgb_logits = pose_logits = None
        if "pose" in c.streams:
            if heatmaps is None:
                raise ValueError(f"streams {c.streams!r} needs heatmaps (batch, joints, frames, h, w)")
            pose_feats = self.pose_backbone(heatmaps.float())
            pose_logits = self.pose_cls_head(pose_feats)
        if "rgb" in c.streams:
            if pixel_values is None:
                raise ValueError(f"streams {c.streams!r} needs pixel_values (batch, frames, 3, H, W)")
            rgb_feats = self.rgb_backbone(normalized_rgb(pixel_values, c.image_mean, c.image_std))
            if c.streams == "rgb+pose":
                guide = pose_feats[:, :, :: c.pose_frame_stride][:, :, : rgb_feats.shape[2]]
                rgb_feats = rgb_feats + rgb_feats * self.attention_module(guide)
            rgb_logits = self.rgb_cls_head(rgb_feats)
        return recognition_output(rgb_logits, pose_logits, labels)


__all__ = ["EPAMForActionRecognition", "EPAMOutput", "EPAMPreTrainedModel", "count_parameters"]
