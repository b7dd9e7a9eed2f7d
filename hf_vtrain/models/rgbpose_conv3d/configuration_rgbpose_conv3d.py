"""RGBPoseConv3D configuration: two ResNet3d (bottleneck) pathways, RGB (SlowFast's slow one) and pose heatmaps (the
fast one, 4x the frames and a quarter of the resolution), joined by bilateral lateral connections; one classifier per
stream.

Defaults reproduce MMAction2's published NTU-60 model (configs/skeleton/posec3d/rgbpose_conv3d/rgbpose_conv3d.py,
`RGBPoseConv3D` + `RGBPoseHead`, Duan et al., CVPR 2022): RGB pathway ResNet3d-50 (stages 3, 4, 6, 3, base 64, stem
1x7x7 with stride 2 and a stride-2 max pool, 3x1x1 inflation in stages 3 and 4, laterals from the pose pathway into
stages 3 and 4), pose pathway ResNet3d from 17 heatmap channels (stages 4, 6, 3, base 32, stem and pool without
stride, spatial strides 2, 2, 2, inflation in stages 2 and 3, transposed-convolution laterals from the RGB pathway into
stages 2 and 3), speed ratio 4, channel ratio 4, fusion kernel 7; 8 RGB frames at 224 px, 32 pose frames at 56 px.
"""

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig
from transformers.utils.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

NTU60_NUM_CLASSES = 60
BOTTLENECK_EXPANSION = 4


@strict
class RGBPoseConv3DConfig(PreTrainedConfig):
    r"""
    Configuration of [`RGBPoseConv3DForActionRecognition`].

    Streams:
        streams (`str`, "rgb+pose"): "rgb+pose" (the fused model with its laterals), "pose" or "rgb" (one pathway
            alone, without laterals: MMAction2's `ResNet3dSlowOnly` pretraining models `pose_only.py` / `rgb_only.py`).
            A fused model starts from single-stream weights by name: the first convolutions of the stages that receive
            a lateral are widened with zero input channels (MMAction2's merge_pretrain), see
            `RGBPoseConv3DForActionRecognition.adapt_init_state_dict`.
        rgb_frames (`int`, 8), pose_frames (`int`, 32): frames per clip; `pose_frames` = `speed_ratio` x `rgb_frames`.
        rgb_image_size (`int`, 224), pose_image_size (`int`, 56): input sizes; the feature maps a lateral joins must
            have one size (with the defaults: RGB 1/8 and pose 1/2 after the first joined stages).
        num_joints (`int`, 17): heatmap channels.
    Pathways (rgb_* and pose_*): base_channels (64 / 32), stage_blocks ([3, 4, 6, 3] / [4, 6, 3]), spatial_strides
        ([1, 2, 2, 2] / [2, 2, 2]), inflate ([0, 0, 1, 1] / [0, 1, 1]: 3x1x1 first convolutions in those stages),
        conv1_kernel ([1, 7, 7] both), conv1_stride (2 / 1), pool1_stride (2 / 1), lateral_infl (1 / 16),
        lateral_activate ([0, 0, 1, 1] / [0, 1, 1]: the stages that receive the other pathway's features). The RGB
        pathway has one stage more than the pose pathway: RGB stage k+1 runs beside pose stage k.
    Laterals: speed_ratio (`int`, 4, the temporal stride of a lateral), channel_ratio (`int`, 4), fusion_kernel
        (`int`, 7), rgb_detach / pose_detach (`bool`, False: stop the gradient into the other pathway), rgb_drop_path /
        pose_drop_path (`float`, 0: in training, drop the lateral into that pathway with this probability).
    Head: dropout (`float`, 0.5) before each stream's classifier (`fc_rgb`, `fc_pose`), init_std 0.01, loss_weights
        ([1, 1]: rgb, pose).
    Input: image_mean / image_std (ImageNet) applied by the model to uint8 RGB frames / 255 (MMAction2's 123.675 ... on
        the 0-255 scale); heatmaps are used as they are.
    """

    model_type = "rgbpose_conv3d"

    streams: str = "rgb+pose"
    rgb_frames: int = 8
    pose_frames: int = 32
    rgb_image_size: int = 224
    pose_image_size: int = 56
    num_joints: int = 17
    rgb_base_channels: int = 64
    rgb_stage_blocks: list | tuple = (3, 4, 6, 3)
    rgb_spatial_strides: list | tuple = (1, 2, 2, 2)
    rgb_inflate: list | tuple = (0, 0, 1, 1)
    rgb_conv1_kernel: list | tuple = (1, 7, 7)
    rgb_conv1_stride: int = 2
    rgb_pool1_stride: int = 2
    rgb_lateral_infl: int = 1
    rgb_lateral_activate: list | tuple = (0, 0, 1, 1)
    pose_base_channels: int = 32
    pose_stage_blocks: list | tuple = (4, 6, 3)
    pose_spatial_strides: list | tuple = (2, 2, 2)
    pose_inflate: list | tuple = (0, 1, 1)
    pose_conv1_kernel: list | tuple = (1, 7, 7)
    pose_conv1_stride: int = 1
    pose_pool1_stride: int = 1
    pose_lateral_infl: int = 16
    pose_lateral_activate: list | tuple = (0, 1, 1)
    speed_ratio: int = 4
    channel_ratio: int = 4
    fusion_kernel: int = 7
    rgb_detach: bool = False
    pose_detach: bool = False
    rgb_drop_path: float | int = 0.0
    pose_drop_path: float | int = 0.0
    dropout: float | int = 0.5
    init_std: float = 0.01
    loss_weights: list | tuple = (1.0, 1.0)
    image_mean: list | tuple = tuple(IMAGENET_DEFAULT_MEAN)
    image_std: list | tuple = tuple(IMAGENET_DEFAULT_STD)

    _INT_LISTS = ("rgb_stage_blocks", "rgb_spatial_strides", "rgb_inflate", "rgb_conv1_kernel", "rgb_lateral_activate",
                  "pose_stage_blocks", "pose_spatial_strides", "pose_inflate", "pose_conv1_kernel",
                  "pose_lateral_activate")

    def __post_init__(self, **kwargs):
        if self.id2label is None and kwargs.get("num_labels") is None:
            kwargs["num_labels"] = NTU60_NUM_CLASSES
        for key in self._INT_LISTS:
            setattr(self, key, [int(v) for v in getattr(self, key)])
        for key in ("image_mean", "image_std", "loss_weights"):
            setattr(self, key, [float(v) for v in getattr(self, key)])
        super().__post_init__(**kwargs)

    def pathway(self, stream: str) -> dict:
        """One pathway's settings (stream "rgb" or "pose"), with `lateral` on for the fused model."""
        p = f"{stream}_"
        return {"in_channels": 3 if stream == "rgb" else self.num_joints,
                "base_channels": getattr(self, p + "base_channels"),
                "stage_blocks": getattr(self, p + "stage_blocks"),
                "spatial_strides": getattr(self, p + "spatial_strides"),
                "inflate": getattr(self, p + "inflate"),
                "conv1_kernel": getattr(self, p + "conv1_kernel"),
                "conv1_stride": getattr(self, p + "conv1_stride"),
                "pool1_stride": getattr(self, p + "pool1_stride"),
                "lateral": self.streams == "rgb+pose",
                "lateral_inv": stream == "pose",
                "lateral_infl": getattr(self, p + "lateral_infl"),
                "lateral_activate": getattr(self, p + "lateral_activate"),
                "speed_ratio": self.speed_ratio, "channel_ratio": self.channel_ratio,
                "fusion_kernel": self.fusion_kernel}

    def feature_channels(self, stream: str) -> int:
        p = self.pathway(stream)
        return p["base_channels"] * 2 ** (len(p["stage_blocks"]) - 1) * BOTTLENECK_EXPANSION

    def validate_architecture(self):
        if self.streams not in ("rgb+pose", "rgb", "pose"):
            raise ValueError(f"streams must be 'rgb+pose', 'rgb' or 'pose', got {self.streams!r}.")
        for stream in ("rgb", "pose"):
            p = self.pathway(stream)
            stages = len(p["stage_blocks"])
            for key in ("spatial_strides", "inflate", "lateral_activate"):
                if len(p[key]) != stages:
                    raise ValueError(f"{stream}_{key} needs one value per stage ({stages}), got {p[key]}.")
            if len(p["conv1_kernel"]) != 3:
                raise ValueError(f"{stream}_conv1_kernel needs 3 values (t, h, w), got {p['conv1_kernel']}.")
            if p["lateral_activate"][0]:
                raise ValueError(f"{stream}_lateral_activate[0]: a lateral into the first stage is not part of "
                                 f"RGBPoseConv3D.")
        offset = len(self.rgb_stage_blocks) - len(self.pose_stage_blocks)
        if offset < 0:
            raise ValueError("the RGB pathway needs at least as many stages as the pose pathway.")
        if len(self.loss_weights) != 2:
            raise ValueError(f"loss_weights needs 2 values (rgb, pose), got {self.loss_weights}.")
        if self.streams != "rgb+pose":
            return
        if self.pose_frames != self.speed_ratio * self.rgb_frames:
            raise ValueError(f"pose_frames ({self.pose_frames}) must be speed_ratio ({self.speed_ratio}) x rgb_frames "
                             f"({self.rgb_frames}): a lateral strides time by speed_ratio.")
        # where the pathways meet: RGB stage j + offset + 1 beside pose stage j + 1
        rgb_size = self.rgb_image_size // (self.rgb_conv1_stride * self.rgb_pool1_stride)
        pose_size = self.pose_image_size // (self.pose_conv1_stride * self.pose_pool1_stride)
        for i in range(offset):
            rgb_size //= self.rgb_spatial_strides[i]
        for j in range(len(self.pose_stage_blocks) - 1):
            rgb_size //= self.rgb_spatial_strides[j + offset]
            pose_size //= self.pose_spatial_strides[j]
            joined = self.rgb_lateral_activate[j + offset + 1] or self.pose_lateral_activate[j + 1]
            if joined and rgb_size != pose_size:
                raise ValueError(f"RGB stage {j + offset + 1} and pose stage {j + 1} meet at other sizes ({rgb_size} "
                                 f"vs {pose_size} px): set rgb_image_size / pose_image_size (the defaults: 4 to 1) "
                                 f"or the strides to match.")
            rgb_out = self.rgb_base_channels * 2 ** (j + offset) * BOTTLENECK_EXPANSION
            pose_out = self.pose_base_channels * 2 ** j * BOTTLENECK_EXPANSION
            if joined and rgb_out != pose_out * self.channel_ratio:
                raise ValueError(f"RGB stage {j + offset + 1} ({rgb_out} channels) and pose stage {j + 1} "
                                 f"({pose_out}) must differ by channel_ratio ({self.channel_ratio}): with the "
                                 f"defaults pose_base_channels x channel_ratio = 2 x rgb_base_channels.")


__all__ = ["RGBPoseConv3DConfig"]
