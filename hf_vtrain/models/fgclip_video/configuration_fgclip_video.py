"""FG-CLIP-style video model configuration: a CLIP checkpoint with FG-CLIP's long-caption positions, a small temporal
transformer over frame embeddings, box-region features, the three contrastive losses and UCF-Crime anomaly prompts.

Defaults follow FG-CLIP v1 (Xie et al., ICML 2025; qihoo360/FG-CLIP `fgclip/model/clip_strc/fgclip.py`).
"""

from huggingface_hub.dataclasses import strict
from transformers import CLIPConfig, PreTrainedConfig
from transformers.utils.constants import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD


# The 13 official UCF-Crime anomaly classes (folder names of the release), then the normal class.
UCF_CRIME_CLASSES = (
    "Abuse", "Arrest", "Arson", "Assault", "Burglary", "Explosion", "Fighting", "RoadAccidents", "Robbery",
    "Shooting", "Shoplifting", "Stealing", "Vandalism", "Normal",
)
UCF_CRIME_PROMPTS = (
    "a video of abuse",
    "a video of an arrest",
    "a video of arson",
    "a video of assault",
    "a video of burglary",
    "a video of an explosion",
    "a video of fighting",
    "a video of a road accident",
    "a video of robbery",
    "a video of shooting",
    "a video of shoplifting",
    "a video of stealing",
    "a video of vandalism",
    "a video of normal activity",
)


@strict
class FGCLIPVideoConfig(PreTrainedConfig):
    r"""
    Configuration of [`FGCLIPVideoModel`].

    CLIP and text positions:
        clip_config (`CLIPConfig` or `dict`): the CLIP model the video model is built on (any Hugging Face CLIP
            checkpoint's config; `FGCLIPVideoModel.from_clip_pretrained` reads it from the checkpoint).
        max_text_positions (`int`, 248): positions of the long-caption table (FG-CLIP's `longtext_len`).
        keep_text_positions (`int`, 20): the first positions copied unchanged from CLIP's table (FG-CLIP `keep_len`);
            the remaining `77 - keep` CLIP positions are stretched to fill `max_text_positions - keep`, which must be
            a whole multiple of them (FG-CLIP: 20 + 57 x 4 = 248).

    Temporal module (over the per-frame CLIP embeddings, in the projection space):
        temporal_layers (`int`, 1): pre-LayerNorm transformer blocks (0: plain mean of the frame embeddings).
        temporal_num_heads (`int`, 8), temporal_mlp_ratio (`float`, 4.0).
        max_frames (`int`, 256): learnable temporal position embeddings (frames per clip or per scoring window).
        frame_chunk_size (`int`, 64): frames per vision-tower call (bounds activation memory).

    Region branch (FG-CLIP's dense features):
        region_feature_layer (`int`, -2): index into the vision tower's hidden states (-2 = input of the last layer,
            i.e. output of the penultimate one). The next layer's weights then run once without attention mixing.
        roi_output_size (`int`, 1): RoIAlign bins per side; bins are averaged into one vector (FG-CLIP uses 1).
        roi_sampling_ratio (`int`, -1): RoIAlign samples per bin (-1: adaptive, FG-CLIP's value).

    Losses:
        global_loss_weight (1.0): the long-caption InfoNCE; short_global_loss_weight (1.0): the short-caption InfoNCE
            (FG-CLIP's second global term, 77 positions and `text_projection`); region_loss_weight (0.1),
            hard_negative_loss_weight (0.5): FG-CLIP's weights.
        logit_scale_init_value (`float` or `None`): initial log logit scale of the region and hard-negative
            temperatures. `FGCLIPVideoModel.from_clip_pretrained` sets it to the checkpoint's `logit_scale`, as
            FG-CLIP's training does (4.6052 for OpenAI CLIP); None in a config built by hand:
            `clip_config.logit_scale_init_value`. The global one is CLIP's own `logit_scale`, loaded with the
            checkpoint.
        max_logit_scale (`float`, 100.0): the multiplier exp(logit_scale) is clamped to this (CLIP's cap).
        gather_across_processes (`bool`, True): contrast against the whole global batch under torch.distributed.

    Anomaly scoring (evaluation, `FGCLIPVideoModel.score_snippets`):
        anomaly_classes, anomaly_prompts: one text prompt per class, aligned (default: the 13 UCF-Crime classes then
            "Normal").
        normal_prompt_index (`int`, 13): the prompt whose probability means "normal"; score = 1 - p(normal).
        prompt_text_path (`str`, "short"): the text path the prompts are encoded on: "short" (CLIP's 77 positions
            and `text_projection`, as FG-CLIP encodes short texts) or "long" (the long-caption path).
        snippet_frames (`int`, 16): video frames per scored snippet (one frame per snippet is fed; the frame AUC
            repeats each score this many times).
        score_window_frames (`int`, 32): snippets per temporal-module window when scoring (<= max_frames).

    Input: image_mean / image_std applied by the model to uint8 frames / 255 (OpenAI CLIP's by default).
    """

    model_type = "fgclip_video"
    sub_configs_defaults = {"clip_config": CLIPConfig}

    clip_config: dict | PreTrainedConfig | None = None
    max_text_positions: int = 248
    keep_text_positions: int = 20

    temporal_layers: int = 1
    temporal_num_heads: int = 8
    temporal_mlp_ratio: float | int = 4.0
    max_frames: int = 256
    frame_chunk_size: int = 64

    region_feature_layer: int = -2
    roi_output_size: int = 1
    roi_sampling_ratio: int = -1

    global_loss_weight: float | int = 1.0
    short_global_loss_weight: float | int = 1.0
    region_loss_weight: float | int = 0.1
    hard_negative_loss_weight: float | int = 0.5
    logit_scale_init_value: float | int | None = None
    max_logit_scale: float | int = 100.0
    gather_across_processes: bool = True

    anomaly_classes: list | tuple = UCF_CRIME_CLASSES
    anomaly_prompts: list | tuple = UCF_CRIME_PROMPTS
    normal_prompt_index: int = 13
    prompt_text_path: str = "short"
    snippet_frames: int = 16
    score_window_frames: int = 32

    image_mean: list | tuple = tuple(OPENAI_CLIP_MEAN)
    image_std: list | tuple = tuple(OPENAI_CLIP_STD)
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        # JSON turns tuples into lists; keep one canonical form so configs compare equal after a round trip.
        self.anomaly_classes = [str(c) for c in self.anomaly_classes]
        self.anomaly_prompts = [str(p) for p in self.anomaly_prompts]
        self.image_mean = [float(v) for v in self.image_mean]
        self.image_std = [float(v) for v in self.image_std]
        super().__post_init__(**kwargs)
        if self.logit_scale_init_value is None:
            self.logit_scale_init_value = float(self.clip_config.logit_scale_init_value)

    @property
    def short_text_positions(self) -> int:
        """CLIP's own text positions (77 for every OpenAI/LAION checkpoint)."""
        return self.clip_config.text_config.max_position_embeddings

    @property
    def text_stretch_factor(self) -> int:
        return (self.max_text_positions - self.keep_text_positions) // (
            self.short_text_positions - self.keep_text_positions
        )

    @property
    def grid_size(self) -> int:
        vision = self.clip_config.vision_config
        image_size = vision.image_size if isinstance(vision.image_size, int) else vision.image_size[0]
        patch_size = vision.patch_size if isinstance(vision.patch_size, int) else vision.patch_size[0]
        return image_size // patch_size

    def validate_architecture(self):
        """Part of `@strict` validation."""
        short, keep, long = self.short_text_positions, self.keep_text_positions, self.max_text_positions
        if not 1 <= keep < short - 1:
            raise ValueError(f"keep_text_positions ({keep}) must be in [1, {short - 2}] for {short} CLIP positions.")
        if long <= short or (long - keep) % (short - keep) != 0:
            raise ValueError(
                f"max_text_positions ({long}) - keep_text_positions ({keep}) must be a whole multiple (> 1) of the "
                f"{short - keep} stretched CLIP positions (FG-CLIP: 248 = 20 + 57 x 4)."
            )
        projection_dim = self.clip_config.projection_dim
        if self.temporal_layers < 0 or (self.temporal_layers and projection_dim % self.temporal_num_heads != 0):
            raise ValueError(
                f"temporal_num_heads ({self.temporal_num_heads}) must divide projection_dim ({projection_dim})."
            )
        num_layers = self.clip_config.vision_config.num_hidden_layers
        if not -num_layers <= self.region_feature_layer <= -2:
            raise ValueError(
                f"region_feature_layer ({self.region_feature_layer}) must be in [-{num_layers}, -2]: the layer after "
                "it runs without attention mixing, so it cannot be the last hidden state."
            )
        if self.roi_output_size < 1 or self.frame_chunk_size < 1 or self.max_frames < 1:
            raise ValueError("roi_output_size, frame_chunk_size and max_frames must be positive.")
        if not 1 <= self.score_window_frames <= self.max_frames:
            raise ValueError(f"score_window_frames must be in [1, max_frames={self.max_frames}].")
        if len(self.anomaly_prompts) != len(self.anomaly_classes) or len(self.anomaly_prompts) < 2:
            raise ValueError("anomaly_prompts and anomaly_classes need the same length (>= 2).")
        if self.prompt_text_path not in ("short", "long"):
            raise ValueError(f"prompt_text_path must be 'short' or 'long', got {self.prompt_text_path!r}.")
        if not 0 <= self.normal_prompt_index < len(self.anomaly_prompts):
            raise ValueError(f"normal_prompt_index ({self.normal_prompt_index}) is not a prompt index.")
        if len(self.image_mean) != 3 or len(self.image_std) != 3:
            raise ValueError("image_mean / image_std need one value per channel.")


__all__ = ["FGCLIPVideoConfig", "UCF_CRIME_CLASSES", "UCF_CRIME_PROMPTS"]
