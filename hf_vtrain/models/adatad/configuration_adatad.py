"""AdaTAD configuration: VideoMAE backbone with temporal adapters + ActionFormer-style detector + post-processing.

Defaults reproduce OpenTAD's AdaTAD THUMOS-14 VideoMAE-S recipe (768 frames x 160 px, adapters on all 12 blocks).
"""

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig, VideoMAEConfig
from transformers.configuration_utils import SubConfigSpec
from transformers.utils.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD


# VideoMAE-S (ViT-S/16, tubelet 2) at the AdaTAD crop size; `num_frames` is the chunk size fed to one backbone call.
VIDEOMAE_SMALL_KWARGS = {
    "image_size": 160,
    "patch_size": 16,
    "num_frames": 16,
    "tubelet_size": 2,
    "hidden_size": 384,
    "num_hidden_layers": 12,
    "num_attention_heads": 6,
    "intermediate_size": 1536,
    "use_mean_pooling": True,
    "layer_norm_eps": 1e-6,  # the original VideoMAE / OpenTAD ViT value (transformers' default is 1e-12)
}

THUMOS14_NUM_CLASSES = 20


@strict
class AdaTADConfig(PreTrainedConfig):
    r"""
    Configuration of [`AdaTADForActionDetection`].

    Backbone:
        backbone_config (`VideoMAEConfig` or `dict`): the VideoMAE encoder. `image_size` must be the crop size and
            `num_frames` must equal `chunk_size`: VideoMAE's position embeddings are a fixed sinusoid table built from
            these two values (it is not in the state dict), so they decide the token grid of every chunk.
        window_size (`int`, 768): frames per window (sampled frames). Also the feature length seen by the detector.
        chunk_size (`int`, 16): frames per backbone call; a window runs as `window_size / chunk_size` chunks.
        pretrained_image_size (`int` or `None`, 224): image size the VideoMAE weights were trained at. When it differs
            from `backbone_config.image_size`, the position table is built on the pretraining grid and resized
            bicubically to the crop grid, as OpenTAD does (`None` keeps transformers' table for the crop size).
        use_adapters, adapter_dim, adapter_kernel_size: AdaTAD temporal adapter after every encoder block.
        drop_path_rate (`float`, 0.1): stochastic depth of the ViT blocks (linear 0 -> rate over the depth).
        freeze_backbone (`bool`, True): set `requires_grad=False` on the VideoMAE weights (adapters and LoRA weights
            stay trainable). A training recipe's `param_groups` decide in the end (lr 0 freezes).
        lora_r (`int`, 0): LoRA rank on the VideoMAE Linear layers named by `lora_target_modules` (0: no LoRA).
            Injected through peft (`inject_adapter_in_model`) when the model is built, so `from_pretrained` rebuilds
            the same parameter names (`...query.base_layer.weight`, `...query.lora_A.default.weight`).
        lora_alpha (`float`, 16): LoRA scaling numerator; the update is `(lora_alpha / lora_r) * B @ A`.
        lora_dropout (`float`, 0.0): dropout on the LoRA branch input.
        lora_target_modules (`list[str]`, ["query", "value"]): Linear layers of every VideoMAE block, named relative
            to the block with peft's suffix rule: `query`, `key`, `value`, `attention.output.dense`,
            `intermediate.dense`, `output.dense` (`output.dense` also matches `attention.output.dense`), or
            `all-linear` for all six. Only `videomae.encoder.layer.*` is matched (the detector has its own `query`
            convolutions, which LoRA never touches).

    Detector (ActionFormer as configured in OpenTAD):
        detector_dim, num_embed_convs, num_stem_blocks, num_pyramid_levels, num_attention_heads, regression_ranges
        (one (min, max) per level, in frames), head_num_convs, dropout (projection/MLP dropout),
        detector_drop_path_rate (affine drop path in the detector transformer blocks), center_sample_radius,
        cls_prior_prob, focal_alpha, focal_gamma, loss_normalizer_init, loss_normalizer_momentum, reg_loss_weight.

    Post-processing (used by `hf_vtrain.models.adatad.postprocessing_adatad`, never inside `forward`):
        score_threshold, pre_nms_topk (per window), nms_sigma, max_segments (per video), class_agnostic,
        voting_threshold (segment voting, class-agnostic mode only; OpenTAD's `voting_thresh`).
        opentad_rounding (True): as OpenTAD's post-processing, every window's segments are rounded to 0.01 s and
            scores to 1e-4 before the video's soft-NMS and again after it, and zero-length segments are kept (False:
            unrounded values, zero-length segments dropped).

    Input: image_mean / image_std applied by the model to uint8 frames / 255.
    """

    model_type = "adatad"
    sub_configs_defaults = {
        "backbone_config": SubConfigSpec(config_class=VideoMAEConfig, init_kwargs=VIDEOMAE_SMALL_KWARGS),
    }

    backbone_config: dict | PreTrainedConfig | None = None
    window_size: int = 768
    chunk_size: int = 16
    pretrained_image_size: int | None = 224
    use_adapters: bool = True
    adapter_dim: int = 96
    adapter_kernel_size: int = 3
    drop_path_rate: float | int = 0.1
    freeze_backbone: bool = True
    lora_r: int = 0
    lora_alpha: float | int = 16
    lora_dropout: float | int = 0.0
    lora_target_modules: list | tuple = ("query", "value")

    detector_dim: int = 512
    num_embed_convs: int = 2
    num_stem_blocks: int = 2
    num_pyramid_levels: int = 6
    num_attention_heads: int = 4
    regression_ranges: list | tuple = ((0, 4), (4, 8), (8, 16), (16, 32), (32, 64), (64, 10000))
    head_num_convs: int = 2
    dropout: float | int = 0.0
    detector_drop_path_rate: float | int = 0.1
    center_sample_radius: float | int = 1.5
    cls_prior_prob: float = 0.01
    focal_alpha: float = 0.25
    focal_gamma: float | int = 2.0
    loss_normalizer_init: float | int = 100.0
    loss_normalizer_momentum: float = 0.9
    reg_loss_weight: float | int = 1.0

    score_threshold: float = 0.001
    pre_nms_topk: int = 2000
    nms_sigma: float = 0.7
    max_segments: int = 2000
    class_agnostic: bool = False
    voting_threshold: float = 0.7
    opentad_rounding: bool = True

    image_mean: list | tuple = tuple(IMAGENET_DEFAULT_MEAN)
    image_std: list | tuple = tuple(IMAGENET_DEFAULT_STD)
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        # THUMOS-14 has 20 classes; an explicit id2label / num_labels wins.
        if self.id2label is None and kwargs.get("num_labels") is None:
            kwargs["num_labels"] = THUMOS14_NUM_CLASSES
        # JSON turns tuples into lists; keep one canonical form so configs compare equal after a round trip.
        self.regression_ranges = [[float(lo), float(hi)] for lo, hi in self.regression_ranges]
        self.image_mean = [float(v) for v in self.image_mean]
        self.image_std = [float(v) for v in self.image_std]
        self.lora_target_modules = [str(name) for name in self.lora_target_modules]
        super().__post_init__(**kwargs)

    @property
    def pyramid_strides(self) -> list[int]:
        return [2**level for level in range(self.num_pyramid_levels)]

    def validate_architecture(self):
        """Part of `@strict` validation: the window must split into chunks and pyramid levels without remainder."""
        backbone = self.backbone_config
        if backbone.num_frames != self.chunk_size:
            raise ValueError(
                f"backbone_config.num_frames ({backbone.num_frames}) must equal chunk_size ({self.chunk_size}): "
                "VideoMAE builds its position table for num_frames."
            )
        if self.chunk_size % backbone.tubelet_size != 0:
            raise ValueError(f"chunk_size ({self.chunk_size}) must be a multiple of tubelet_size.")
        if self.window_size % self.chunk_size != 0:
            raise ValueError(f"window_size ({self.window_size}) must be a multiple of chunk_size ({self.chunk_size}).")
        if self.window_size % self.pyramid_strides[-1] != 0:
            raise ValueError(
                f"window_size ({self.window_size}) must divide by the coarsest stride {self.pyramid_strides[-1]}."
            )
        if len(self.regression_ranges) != self.num_pyramid_levels:
            raise ValueError(
                f"regression_ranges has {len(self.regression_ranges)} entries for {self.num_pyramid_levels} levels."
            )
        if self.detector_dim % self.num_attention_heads != 0:
            raise ValueError("detector_dim must be a multiple of num_attention_heads.")
        if self.lora_r < 0 or self.lora_alpha <= 0 or not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"LoRA needs lora_r >= 0, lora_alpha > 0 and lora_dropout in [0, 1); got r={self.lora_r}, "
                             f"alpha={self.lora_alpha}, dropout={self.lora_dropout}.")
        if self.lora_r > 0 and not self.lora_target_modules:
            raise ValueError("lora_r > 0 needs at least one entry in lora_target_modules.")
        if len(self.image_mean) != backbone.num_channels or len(self.image_std) != backbone.num_channels:
            raise ValueError("image_mean / image_std need one value per channel.")


__all__ = ["AdaTADConfig"]
