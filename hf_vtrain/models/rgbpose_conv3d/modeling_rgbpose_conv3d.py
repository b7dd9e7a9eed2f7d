"""RGBPoseConv3D (Duan et al., "Revisiting skeleton-based action recognition", CVPR 2022; MMAction2's
`RGBPoseConv3D` backbone with its `RGBPoseHead`): a ResNet3d RGB pathway and a ResNet3d pose-heatmap pathway
exchanging features through lateral connections (a strided temporal convolution from pose to RGB, a transposed one
from RGB to pose), one linear classifier per stream.

Module and parameter names are MMAction2's (`backbone.rgb_path.layer3.0.conv1.conv.weight`, mmcv's `conv` / `bn` in
each conv unit, `backbone.pose_path.layer1_lateral`, `cls_head.fc_rgb`), so its checkpoints map onto this model by
name; a single-stream model (MMAction2's rgb_only / pose_only `ResNet3dSlowOnly`) has the same names without the
laterals, and `adapt_init_state_dict` widens its weights for the fused model as MMAction2's merge_pretrain does.

Inputs: `pixel_values` (batch, rgb_frames, 3, H, W) uint8 (or floats on the 0-255 scale), normalised inside;
`heatmaps` (batch, joints, pose_frames, h, w) floats in [0, 1] (hf_vtrain.data.pose_heatmaps).
"""

from __future__ import annotations

import math
import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init

from ..rgb_pose_recognition import RGBPoseRecognitionOutput, init_recognition_layer, normalized_rgb, recognition_output
from .configuration_rgbpose_conv3d import BOTTLENECK_EXPANSION, RGBPoseConv3DConfig


class ConvUnit(nn.Module):
    """Conv3d without bias, optional BatchNorm3d, optional ReLU (mmcv's ConvModule: its `conv` / `bn` names)."""

    def __init__(self, cin, cout, kernel, stride=1, padding=0, norm=True, relu=True):
        super().__init__()
        self.conv = nn.Conv3d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm3d(cout) if norm else None
        self.relu = relu

    def forward(self, x):
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.relu else x


class DeConvUnit(nn.Module):
    """ConvTranspose3d without bias, BatchNorm3d, ReLU, its output `stride` times the input's size (MMAction2's
    DeConvModule, which asks for that size explicitly)."""

    def __init__(self, cin, cout, kernel, stride, padding):
        super().__init__()
        self.conv = nn.ConvTranspose3d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm3d(cout)
        self.stride = stride

    def forward(self, x):
        size = [s * d for s, d in zip(self.stride, x.shape[2:])]
        return F.relu(self.bn(self.conv(x, output_size=size)))


class Bottleneck3d(nn.Module):
    """ResNet3d bottleneck, 'pytorch' style (the stride in the 1x3x3 conv): 1x1x1 (3x1x1 when inflated) -> 1x3x3 ->
    1x1x1 x4, plus the (projected) input, ReLU."""

    def __init__(self, cin, planes, spatial_stride, inflate, downsample):
        super().__init__()
        t = 3 if inflate else 1
        self.conv1 = ConvUnit(cin, planes, (t, 1, 1), padding=((t - 1) // 2, 0, 0))
        self.conv2 = ConvUnit(planes, planes, (1, 3, 3), stride=(1, spatial_stride, spatial_stride), padding=(0, 1, 1))
        self.conv3 = ConvUnit(planes, planes * BOTTLENECK_EXPANSION, 1, relu=False)
        self.downsample = ConvUnit(cin, planes * BOTTLENECK_EXPANSION, 1, stride=(1, spatial_stride, spatial_stride),
                                   relu=False) if downsample else None

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(self.conv3(self.conv2(self.conv1(x))) + identity)


def stage_input_channels(base: int, stage: int) -> int:
    """Channels a stage receives from the one before it (the stem's `base` for the first)."""
    return base if stage == 0 else base * 2 ** (stage - 1) * BOTTLENECK_EXPANSION


def lateral_channels(p: dict, stage: int) -> int:
    """Channels the other pathway's lateral adds to `stage`'s input (0 where it receives none)."""
    if not (p["lateral"] and p["lateral_activate"][stage]):
        return 0
    planes = stage_input_channels(p["base_channels"], stage)
    if p["lateral_inv"]:
        return planes * p["channel_ratio"] // p["lateral_infl"]
    return planes * p["lateral_infl"] // p["channel_ratio"]


class ResNet3dPathway(nn.Module):
    """One pathway: stem (conv 1x7x7 + max pool 1x3x3), bottleneck stages, and the laterals `layer{i}_lateral` that
    carry this pathway's stage-i features to the other pathway (only with `lateral`)."""

    def __init__(self, in_channels, base_channels, stage_blocks, spatial_strides, inflate, conv1_kernel,
                 conv1_stride, pool1_stride, lateral, lateral_inv, lateral_infl, lateral_activate, speed_ratio,
                 channel_ratio, fusion_kernel):
        super().__init__()
        p = locals()
        self.num_stages = len(stage_blocks)
        self.conv1 = ConvUnit(in_channels, base_channels, tuple(conv1_kernel), stride=(1, conv1_stride, conv1_stride),
                              padding=tuple((k - 1) // 2 for k in conv1_kernel))
        self.maxpool = nn.MaxPool3d((1, 3, 3), stride=(1, pool1_stride, pool1_stride), padding=(0, 1, 1))
        for i, blocks in enumerate(stage_blocks):
            planes = base_channels * 2**i
            cin = stage_input_channels(base_channels, i) + lateral_channels(p, i)
            out = planes * BOTTLENECK_EXPANSION
            layers = [Bottleneck3d(cin if j == 0 else out, planes, spatial_strides[i] if j == 0 else 1,
                                   bool(inflate[i]), downsample=j == 0 and (spatial_strides[i] != 1 or cin != out))
                      for j in range(blocks)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*layers))
        self.lateral_names = []
        if lateral:
            kernel, padding = (fusion_kernel, 1, 1), ((fusion_kernel - 1) // 2, 0, 0)
            for i in range(self.num_stages - 1):
                if not lateral_activate[i + 1]:
                    continue
                channels = base_channels * 2**i * BOTTLENECK_EXPANSION
                if lateral_inv:  # from the slower pathway: up in time, fewer channels
                    module = DeConvUnit(channels * channel_ratio, channels * channel_ratio // lateral_infl, kernel,
                                        (speed_ratio, 1, 1), padding)
                else:  # from the faster pathway: down in time
                    module = ConvUnit(channels // channel_ratio, channels * lateral_infl // channel_ratio, kernel,
                                      stride=(speed_ratio, 1, 1), padding=padding, norm=False, relu=False)
                name = f"layer{i + 1}_lateral"
                self.add_module(name, module)
                self.lateral_names.append(name)

    def stem(self, x):
        return self.maxpool(self.conv1(x))

    def stage(self, i: int):
        return getattr(self, f"layer{i}")

    def forward(self, x):
        """The pathway alone (no laterals)."""
        x = self.stem(x)
        for i in range(self.num_stages):
            x = self.stage(i + 1)(x)
        return x


class RGBPoseConv3DBackbone(nn.Module):
    def __init__(self, config: RGBPoseConv3DConfig):
        super().__init__()
        self.config = config
        if "rgb" in config.streams:
            self.rgb_path = ResNet3dPathway(**config.pathway("rgb"))
        if "pose" in config.streams:
            self.pose_path = ResNet3dPathway(**config.pathway("pose"))

    def _lateral(self, path, name, feat, detach, drop):
        if not hasattr(path, name):
            return None
        out = getattr(path, name)(feat.detach() if detach else feat)
        return torch.zeros_like(out) if drop else out

    def forward(self, imgs: torch.Tensor | None, heatmaps: torch.Tensor | None):
        c = self.config
        if c.streams == "rgb":
            return self.rgb_path(imgs), None
        if c.streams == "pose":
            return None, self.pose_path(heatmaps)
        rgb, pose = self.rgb_path, self.pose_path
        if self.training:  # one draw per batch, as MMAction2
            rgb_drop = bool(torch.rand(1) < c.rgb_drop_path)
            pose_drop = bool(torch.rand(1) < c.pose_drop_path)
        else:
            rgb_drop = pose_drop = False
        x_rgb, x_pose = rgb.stem(imgs), pose.stem(heatmaps)
        offset = rgb.num_stages - pose.num_stages
        for i in range(offset):
            x_rgb = rgb.stage(i + 1)(x_rgb)
        for j in range(pose.num_stages):
            x_rgb = rgb.stage(j + offset + 1)(x_rgb)
            x_pose = pose.stage(j + 1)(x_pose)
            if j == pose.num_stages - 1:
                break
            # both laterals from the features before either is joined
            into_rgb = self._lateral(rgb, f"layer{j + offset + 1}_lateral", x_pose, c.rgb_detach, rgb_drop)
            into_pose = self._lateral(pose, f"layer{j + 1}_lateral", x_rgb, c.pose_detach, pose_drop)
            if into_rgb is not None:
                x_rgb = torch.cat((x_rgb, into_rgb), dim=1)
            if into_pose is not None:
                x_pose = torch.cat((x_pose, into_pose), dim=1)
        return x_rgb, x_pose


class RGBPoseConv3DHead(nn.Module):
    """Global average pooling, dropout and a linear classifier per stream (MMAction2's RGBPoseHead)."""

    def __init__(self, config: RGBPoseConv3DConfig):
        super().__init__()
        for stream in ("rgb", "pose"):
            if stream in config.streams:
                setattr(self, f"dropout_{stream}", nn.Dropout(config.dropout))
                setattr(self, f"fc_{stream}", nn.Linear(config.feature_channels(stream), config.num_labels))

    def forward(self, stream: str, x: torch.Tensor) -> torch.Tensor:
        x = F.adaptive_avg_pool3d(x, 1).flatten(1)
        return getattr(self, f"fc_{stream}")(getattr(self, f"dropout_{stream}")(x))


# logits of the fused model: the sum of the two streams' (the ranking of MMAction2's equal-weight fusion of
# probabilities comes from the trainer's clip fusion, which combines the streams' probabilities)
RGBPoseConv3DOutput = RGBPoseRecognitionOutput


class RGBPoseConv3DPreTrainedModel(PreTrainedModel):
    config: RGBPoseConv3DConfig
    config_class = RGBPoseConv3DConfig
    base_model_prefix = "rgbpose_conv3d"
    main_input_name = "pixel_values"
    input_modalities = ("video",)

    @torch.no_grad()
    def _init_weights(self, module):
        # MMAction2's (the last BN of every bottleneck at zero: zero_init_residual); transposed convolutions keep
        # PyTorch's own rule, as there
        init_recognition_layer(module, self.config.init_std)
        if isinstance(module, nn.ConvTranspose3d):
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
        if isinstance(module, Bottleneck3d):
            init.zeros_(module.conv3.bn.weight)


class RGBPoseConv3DForActionRecognition(RGBPoseConv3DPreTrainedModel):
    def __init__(self, config: RGBPoseConv3DConfig):
        super().__init__(config)
        self.backbone = RGBPoseConv3DBackbone(config)
        self.cls_head = RGBPoseConv3DHead(config)
        self.post_init()

    def adapt_init_state_dict(self, state_dict: dict) -> dict:
        """A single-stream model's weights shaped for this one (phases' `init_from`): the first convolution and the
        projection of each stage that receives a lateral get zero input channels for it, so the stage computes what
        it computed alone until the lateral learns (MMAction2's merge_pretrain). Other weights pass unchanged."""
        target = self.state_dict()
        out = dict(state_dict)
        for key, value in state_dict.items():
            if key not in target or value.shape == target[key].shape or not key.endswith("conv.weight"):
                continue
            want = target[key].shape
            if value.dim() == 5 and value.shape[0] == want[0] and value.shape[2:] == want[2:] and \
                    value.shape[1] < want[1]:
                padded = value.new_zeros(want)
                padded[:, : value.shape[1]] = value
                out[key] = padded
        return out

    def forward(self, pixel_values: torch.Tensor | None = None, heatmaps: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, **kwargs) -> RGBPoseRecognitionOutput:
        c = self.config
        if "rgb" in c.streams and pixel_values is None:
            raise ValueError(f"streams {c.streams!r} needs pixel_values (batch, frames, 3, H, W)")
        if "pose" in c.streams and heatmaps is None:
            raise ValueError(f"streams {c.streams!r} needs heatmaps (batch, joints, frames, h, w)")
        imgs = normalized_rgb(pixel_values, c.image_mean, c.image_std) if "rgb" in c.streams else None
        x_rgb, x_pose = self.backbone(imgs, heatmaps.float() if heatmaps is not None else None)
        rgb_logits = self.cls_head("rgb", x_rgb) if x_rgb is not None else None
        pose_logits = self.cls_head("pose", x_pose) if x_pose is not None else None
        return recognition_output(rgb_logits, pose_logits, labels, c.loss_weights)


__all__ = ["RGBPoseConv3DForActionRecognition", "RGBPoseConv3DOutput", "RGBPoseConv3DPreTrainedModel"]
