"""EPAM-Net configuration: two X-ShiftNet streams (X3D blocks with a temporal shift) for RGB clips and pose heatmap
volumes, pose-driven spatial-temporal attention on the RGB features, summed logits.

Defaults reproduce the published NTU-60 model (Abdelkawy et al., Neurocomputing 2025; ahmed-nady/
Multimodal-Action-Recognition, `RGBPoseAttentionActionRecognizer` with `backbone_type='poseX3dTShiftSE'` and
`attention='spatial_temporal'`): RGB X3D gamma_w 1, gamma_b 2.25, gamma_d 2.2 (stages of 3, 5, 11, 7 blocks, 432
features), pose X3D from 17 heatmap channels, base 24, stages of 5, 11, 7 blocks, stem stride 1 (216 features), 16 RGB
frames at 224 px and 48 pose frames at 56 px, every 3rd pose frame guiding an RGB frame.
"""

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig
from transformers.utils.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

NTU60_NUM_CLASSES = 60


@strict
class EPAMConfig(PreTrainedConfig):
    r"""
    Configuration of [`EPAMForActionRecognition`].

    Streams:
        streams (`str`, "rgb+pose"): "rgb+pose" (the fused model), "pose" or "rgb" (one stream alone, for the first
            phase of training; the module names are those of the fused model, so its weights load into it by name).
        rgb_frames (`int`, 16), pose_frames (`int`, 48): frames per clip of each stream, sampled at the same temporal
            positions; `pose_frames` must be a multiple of `rgb_frames` (every `pose_frames / rgb_frames`-th pose
            feature frame guides an RGB frame).
        rgb_image_size (`int`, 224), pose_image_size (`int`, 56): input sizes (both streams end at 1/32 and 1/8).
        num_joints (`int`, 17): heatmap channels (COCO-17).
    RGB X-ShiftNet: rgb_base_channels 24, rgb_stage_blocks [3, 5, 11, 7] (X3D's [1, 2, 5, 3] x gamma_d 2.2, rounded
        up), rgb_spatial_strides [2, 2, 2, 2], rgb_stem_stride 2, rgb_shift_div 8 (1/8 of the channels shifted each
        way in time).
    Pose X-ShiftNet: pose_base_channels 24, pose_stage_blocks [5, 11, 7], pose_spatial_strides [2, 2, 2],
        pose_stem_stride 1, pose_shift_div 4.
    Both: bottleneck_ratio (`float`, 2.25, X3D's gamma_b), se_ratio (`float`, 1/16; SE in every other block),
        use_swish (`bool`, True).
    Attention: attention_channels derive from the pose stream; attention_hidden (`int`, 16): the temporal MLP width.
    Heads: dropout (`float`, 0.5) before each stream's linear classifier (MMAction2's I3DHead), init_std 0.01.
    Input: image_mean / image_std (ImageNet) applied by the model to uint8 RGB frames / 255; heatmaps are used as
        they are (values in [0, 1]).
    """

    model_type = "epam"

    streams: str = "rgb+pose"
    rgb_frames: int = 16
    pose_frames: int = 48
    rgb_image_size: int = 224
    pose_image_size: int = 56
    num_joints: int = 17
    rgb_base_channels: int = 24
    rgb_stage_blocks: list | tuple = (3, 5, 11, 7)
    rgb_spatial_strides: list | tuple = (2, 2, 2, 2)
    rgb_stem_stride: int = 2
    rgb_shift_div: int = 8
    pose_base_channels: int = 24
    pose_stage_blocks: list | tuple = (5, 11, 7)
    pose_spatial_strides: list | tuple = (2, 2, 2)
    pose_stem_stride: int = 1
    pose_shift_div: int = 4
    bottleneck_ratio: float = 2.25
    se_ratio: float | None = 1 / 16
    use_swish: bool = True
    attention_hidden: int = 16
    dropout: float | int = 0.5
    init_std: float = 0.01
    image_mean: list | tuple = tuple(IMAGENET_DEFAULT_MEAN)
    image_std: list | tuple = tuple(IMAGENET_DEFAULT_STD)

    def __post_init__(self, **kwargs):
        if self.id2label is None and kwargs.get("num_labels") is None:
            kwargs["num_labels"] = NTU60_NUM_CLASSES
        for key in ("rgb_stage_blocks", "rgb_spatial_strides", "pose_stage_blocks", "pose_spatial_strides"):
            setattr(self, key, [int(v) for v in getattr(self, key)])
        self.image_mean = [float(v) for v in self.image_mean]
        self.image_std = [float(v) for v in self.image_std]
        super().__post_init__(**kwargs)

    @property
    def pose_frame_stride(self) -> int:
        return self.pose_frames // self.rgb_frames

    def validate_architecture(self):
        if self.streams not in ("rgb+pose", "rgb", "pose"):
            raise ValueError(f"streams must be 'rgb+pose', 'rgb' or 'pose', got {self.streams!r}.")
        if self.pose_frames % self.rgb_frames:
            raise ValueError(f"pose_frames ({self.pose_frames}) must be a multiple of rgb_frames ({self.rgb_frames}).")
        if len(self.rgb_stage_blocks) != len(self.rgb_spatial_strides) or \
                len(self.pose_stage_blocks) != len(self.pose_spatial_strides):
            raise ValueError("each stream needs one spatial stride per stage.")
        rgb_out = self.rgb_image_size // (self.rgb_stem_stride * _product(self.rgb_spatial_strides))
        pose_out = self.pose_image_size // (self.pose_stem_stride * _product(self.pose_spatial_strides))
        if self.streams == "rgb+pose" and rgb_out != pose_out:
            raise ValueError(f"the RGB and pose feature maps must have one size for the attention: {rgb_out} vs "
                             f"{pose_out} (rgb_image_size / pose_image_size and the strides).")


def _product(values) -> int:
    out = 1
    for v in values:
        out *= int(v)
    return out


__all__ = ["EPAMConfig"]
