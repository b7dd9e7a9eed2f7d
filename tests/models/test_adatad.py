"""AdaTAD: backbone parity with VideoMAE, adapter size and reach, loss/gradients, checkpointing, save/load, targets."""

import logging
import math
import warnings

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModel, VideoMAEConfig, VideoMAEForVideoClassification, VideoMAEModel
from transformers.models.videomae.modeling_videomae import get_sinusoid_encoding_table

from hf_vtrain.models.adatad import (
    AdaTADConfig,
    AdaTADDetectionOutput,
    AdaTADForActionDetection,
    assign_action_targets,
    build_point_table,
)
from hf_vtrain.models.adatad.modeling_adatad import interpolated_position_embeddings


WINDOW = 32
LEVELS = 3
NUM_POINTS = WINDOW + WINDOW // 2 + WINDOW // 4


def tiny_backbone_config(**kwargs):
    values = dict(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        patch_size=16, tubelet_size=2, image_size=32, num_frames=4,
    )
    values.update(kwargs)
    return VideoMAEConfig(**values)


def tiny_config(**kwargs):
    values = dict(
        backbone_config=tiny_backbone_config(), window_size=WINDOW, chunk_size=4, adapter_dim=8,
        detector_dim=32, num_attention_heads=4, num_pyramid_levels=LEVELS,
        regression_ranges=[(0, 4), (4, 8), (8, 10000)], num_labels=3, pretrained_image_size=None,
    )
    values.update(kwargs)
    return AdaTADConfig(**values)


DETECTOR_KWARGS = dict(
    window_size=WINDOW, chunk_size=4, adapter_dim=8, detector_dim=32, num_attention_heads=4,
    num_pyramid_levels=LEVELS, regression_ranges=[(0, 4), (4, 8), (8, 10000)], num_labels=3,
)


def random_video(batch=2, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, WINDOW, 3, 32, 32), dtype=torch.uint8, generator=generator)


def labels():
    class_labels = torch.tensor([[1, 0, -1], [2, -1, -1]])
    segment_labels = torch.tensor(
        [[[10.0, 14.0], [0.0, 24.0], [0.0, 0.0]], [[3.5, 9.0], [0.0, 0.0], [0.0, 0.0]]]
    )
    return class_labels, segment_labels


def randomise_adapters(model, seed=1):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for adapter in model.adapters:
            adapter.up_proj.weight.copy_(torch.randn(adapter.up_proj.weight.shape, generator=generator) * 0.2)


# ---------------------------------------------------------------------------------------------------------------------
# (1) Backbone parity and loading


def test_fresh_adapters_give_plain_videomae_features(tmp_path, caplog):
    torch.manual_seed(0)
    plain = VideoMAEModel(tiny_backbone_config()).eval()
    plain.save_pretrained(tmp_path)
    with caplog.at_level(logging.INFO, logger="hf_vtrain"):
        model = AdaTADForActionDetection.from_videomae_pretrained(tmp_path, image_size=32, **DETECTOR_KWARGS).eval()
    assert "Loaded all" in caplog.text
    assert model.config.pretrained_image_size == 32  # taken from the checkpoint
    for key, value in plain.state_dict().items():
        assert torch.equal(model.videomae.state_dict()[key], value), key

    video = random_video()
    with torch.no_grad():
        pixels = model._normalize(video)
        tokens = model.backbone_tokens(pixels)
        reference = plain(pixels.reshape(2 * WINDOW // 4, 4, 3, 32, 32)).last_hidden_state
        assert (tokens - reference).abs().max() < 1e-5
        # Pooled features: mean over space, tubelet steps interpolated back to frames.
        steps = reference.reshape(2, WINDOW // 2, 4, 32).mean(2).transpose(1, 2)
        expected = torch.nn.functional.interpolate(steps, size=WINDOW, mode="linear", align_corners=False)
        assert (model.extract_features(video) - expected).abs().max() < 1e-5
    # Normalisation: ImageNet mean/std on frames / 255.
    assert pixels[0, 0, 0, 0, 0].item() == pytest.approx((video[0, 0, 0, 0, 0].item() / 255 - 0.485) / 0.229, rel=1e-5)


def test_loading_from_classification_checkpoint_and_missing_weight_raises(tmp_path, caplog):
    torch.manual_seed(0)
    classifier = VideoMAEForVideoClassification(tiny_backbone_config(num_labels=5))
    classifier.save_pretrained(tmp_path / "cls")
    with caplog.at_level(logging.INFO, logger="hf_vtrain"):
        model = AdaTADForActionDetection.from_videomae_pretrained(
            tmp_path / "cls", backbone_config_overrides={"image_size": 32, "drop_path_rate": 0.3}, **DETECTOR_KWARGS
        )
    assert "classifier.weight" in caplog.text  # unexpected keys are reported
    assert model.config.drop_path_rate == 0.3 and model.drop_path_rates[-1] == pytest.approx(0.3)
    assert model.config.backbone_config.num_frames == 4 and model.config.backbone_config.image_size == 32
    for key, value in classifier.videomae.state_dict().items():
        assert torch.equal(model.videomae.state_dict()[key], value), key
    assert len(model.config.backbone_config.id2label or {}) != 5  # Kinetics-style classifier labels dropped

    VideoMAEModel(tiny_backbone_config()).save_pretrained(tmp_path / "broken")
    weights = load_file(tmp_path / "broken" / "model.safetensors")
    del weights["encoder.layer.1.intermediate.dense.weight"]
    save_file(weights, tmp_path / "broken" / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match="intermediate.dense.weight"):
        AdaTADForActionDetection.from_videomae_pretrained(tmp_path / "broken", image_size=32, **DETECTOR_KWARGS)


def test_position_embeddings_resized_like_opentad():
    backbone = tiny_backbone_config()
    # Same grid: the bicubic resize is the identity and gives transformers' table.
    same = interpolated_position_embeddings(backbone, 32)
    torch.testing.assert_close(same, get_sinusoid_encoding_table(8, 32), rtol=0, atol=1e-6)
    # Pretrained at 64 px (4x4 grid), cropped at 32 px (2x2 grid): 2 steps x 4 patches.
    model = AdaTADForActionDetection(tiny_config(pretrained_image_size=64))
    table = model.videomae.embeddings.position_embeddings
    assert table.shape == (1, 8, 32)
    assert not torch.allclose(table, get_sinusoid_encoding_table(8, 32))
    torch.testing.assert_close(table, interpolated_position_embeddings(backbone, 64))


# ---------------------------------------------------------------------------------------------------------------------
# (2) Adapter size with VideoMAE-S dimensions


def test_adapter_parameter_count_videomae_small():
    backbone = VideoMAEConfig(
        hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536,
        image_size=160, num_frames=16, tubelet_size=2, patch_size=16,
    )
    with torch.device("meta"):  # shapes only, no allocation or init
        model = AdaTADForActionDetection(AdaTADConfig(backbone_config=backbone))
    hidden, dim, kernel, layers = 384, 96, 3, 12
    per_adapter = (hidden * dim + dim) + (dim * kernel + dim) + (dim * dim + dim) + (dim * hidden + hidden) + 1
    assert per_adapter == 83_905
    adapter_params = sum(p.numel() for p in model.adapters.parameters())
    assert adapter_params == layers * per_adapter == 1_006_860
    vit_params = sum(p.numel() for p in model.videomae.parameters())
    assert vit_params == 21_879_168
    assert 0.04 < adapter_params / vit_params < 0.05  # 4.60%; the AdaTAD paper (Liu et al., CVPR 2024): 4.6%


# ---------------------------------------------------------------------------------------------------------------------
# (3) Loss, gradients, activation checkpointing


def test_forward_loss_shapes_and_gradients():
    torch.manual_seed(0)
    model = AdaTADForActionDetection(tiny_config()).train()
    class_labels, segment_labels = labels()
    mask = torch.ones(2, WINDOW, dtype=torch.bool)
    mask[1, 24:] = False
    output = model(
        pixel_values=random_video(), pixel_mask=mask, class_labels=class_labels, segment_labels=segment_labels,
        video_index=torch.tensor([0, 1]), window_start=torch.tensor([0, 0]),
    )
    assert isinstance(output, AdaTADDetectionOutput)
    assert output.class_logits.shape == (2, NUM_POINTS, 3)
    assert output.segment_offsets.shape == (2, NUM_POINTS, 2)
    assert output.point_mask.shape == (2, NUM_POINTS) and output.point_mask.dtype == torch.bool
    # Point mask follows the frame mask on every level (points at frames >= 24 are padding).
    positions = model.get_point_table()["positions"]
    assert torch.equal(output.point_mask[1], positions < 24)
    for name in ("loss", "cls_loss", "reg_loss"):
        assert torch.isfinite(output[name]) and output[name].item() > 0
    torch.testing.assert_close(output.loss, output.cls_loss + output.reg_loss)
    assert (output.segment_offsets >= 0).all()

    output.loss.backward()
    assert all(p.grad is None for p in model.videomae.parameters())  # frozen backbone
    for adapter in model.adapters:
        assert adapter.up_proj.weight.grad.abs().sum() > 0
    for name in ("projection.embed.0.conv.weight", "head.cls_head.weight", "head.reg_head.weight"):
        assert model.get_parameter(name).grad.abs().sum() > 0, name

    without_labels = model.eval()(random_video())
    assert without_labels.loss is None and without_labels.class_logits.shape == (2, NUM_POINTS, 3)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_weights_take_uint8_frames(dtype):
    """DeepSpeed fp16/bf16 cast the model's weights (not its inputs): the uint8 frames must be normalised into the
    weights' dtype, and the losses come out in fp32, close to the fp32 model's."""
    torch.manual_seed(0)
    reference = AdaTADForActionDetection(tiny_config(drop_path_rate=0.0, detector_drop_path_rate=0.0)).eval()
    half = AdaTADForActionDetection(tiny_config(drop_path_rate=0.0, detector_drop_path_rate=0.0)).eval()
    half.load_state_dict(reference.state_dict())
    half.to(dtype)
    class_labels, segment_labels = labels()
    inputs = dict(pixel_values=random_video(), class_labels=class_labels, segment_labels=segment_labels)
    expected, output = reference(**inputs), half(**inputs)
    assert output.class_logits.dtype == dtype
    for name in ("loss", "cls_loss", "reg_loss"):
        assert output[name].dtype == torch.float32
        assert output[name].item() == pytest.approx(expected[name].item(), rel=0.02), name
    half.train()
    half(**inputs).loss.backward()
    assert all(torch.isfinite(adapter.up_proj.weight.grad).all() for adapter in half.adapters)


def test_loss_normalizer_is_a_running_buffer():
    model = AdaTADForActionDetection(tiny_config(drop_path_rate=0.0, detector_drop_path_rate=0.0))
    assert "loss_normalizer" in model.state_dict() and model.loss_normalizer.item() == 100.0
    class_labels, segment_labels = labels()
    video = random_video()
    with torch.no_grad():
        model.eval()(video, class_labels=class_labels, segment_labels=segment_labels)
        assert model.loss_normalizer.item() == 100.0  # not updated in eval
        model.train()(video, class_labels=class_labels, segment_labels=segment_labels)
    table = model.get_point_table()
    cls_targets, _ = assign_action_targets(table, segment_labels, class_labels, 3)
    num_positive = (cls_targets.sum(-1) > 0).sum().item()
    assert num_positive > 0
    assert model.loss_normalizer.item() == pytest.approx(0.9 * 100 + 0.1 * num_positive)


def _loss_and_grads(model, video, class_labels, segment_labels):
    model.zero_grad()
    model.loss_normalizer.fill_(100.0)
    torch.manual_seed(123)  # same drop-path draws in both runs
    output = model(video, class_labels=class_labels, segment_labels=segment_labels)
    output.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return output.loss.detach(), grads


def test_gradient_checkpointing_matches():
    torch.manual_seed(0)
    model = AdaTADForActionDetection(tiny_config(drop_path_rate=0.2)).train()
    randomise_adapters(model)
    video = random_video()
    class_labels, segment_labels = labels()
    loss_off, grads_off = _loss_and_grads(model, video, class_labels, segment_labels)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # deprecated alias of activation_checkpointing_enable in 5.23
        model.gradient_checkpointing_enable()
    assert model.gradient_checkpointing
    calls = []
    checkpoint_fn = model._gradient_checkpointing_func
    model._gradient_checkpointing_func = lambda *args, **kwargs: calls.append(1) or checkpoint_fn(*args, **kwargs)
    loss_on, grads_on = _loss_and_grads(model, video, class_labels, segment_labels)
    assert len(calls) == model.config.backbone_config.num_hidden_layers  # one checkpoint per block
    assert abs(loss_on - loss_off) < 1e-5
    assert grads_on.keys() == grads_off.keys() and any(n.startswith("adapters.") for n in grads_on)
    for name in grads_off:
        torch.testing.assert_close(grads_on[name], grads_off[name], rtol=1e-5, atol=1e-5, msg=name)


# ---------------------------------------------------------------------------------------------------------------------
# (4) Save / load


def test_save_pretrained_round_trip(tmp_path):
    torch.manual_seed(0)
    model = AdaTADForActionDetection(tiny_config(pretrained_image_size=64)).eval()
    randomise_adapters(model)
    with torch.no_grad():
        model.videomae.encoder.layer[0].attention.attention.query.bias.normal_()
        model.videomae.encoder.layer[1].attention.attention.value.bias.normal_()
    model.loss_normalizer.fill_(42.0)
    model.save_pretrained(tmp_path / "new")

    # The file holds the in-memory names, so loaders that do not rename (Trainer resume) restore every tensor.
    with safe_open(tmp_path / "new" / "model.safetensors", "pt") as handle:
        keys = set(handle.keys())
    assert keys == set(model.state_dict())
    assert "videomae.encoder.layer.0.attention.attention.query.bias" in keys

    model.save_pretrained(tmp_path / "legacy", save_original_format=True)  # transformers' default: q_bias / v_bias
    with safe_open(tmp_path / "legacy" / "model.safetensors", "pt") as handle:
        assert "videomae.encoder.layer.0.attention.attention.q_bias" in set(handle.keys())

    video = random_video()
    expected = model(video)
    for folder in ("new", "legacy"):
        loaded = AutoModel.from_pretrained(tmp_path / folder).eval()
        assert isinstance(loaded, AdaTADForActionDetection)
        assert loaded.state_dict().keys() == model.state_dict().keys()
        for key, value in model.state_dict().items():
            assert torch.equal(loaded.state_dict()[key], value), (folder, key)
        assert not any(p.requires_grad for p in loaded.videomae.parameters())  # freeze survives loading
        assert all(p.requires_grad for p in loaded.adapters.parameters())
        output = loaded(video)
        for name in ("class_logits", "segment_offsets", "point_mask"):
            assert torch.equal(output[name], expected[name]), (folder, name)

    # The Trainer's resume path: load_state_dict on the raw file, legacy names included.
    fresh = AdaTADForActionDetection(tiny_config(pretrained_image_size=64))
    result = fresh.load_state_dict(load_file(tmp_path / "legacy" / "model.safetensors"), strict=False)
    assert not result.missing_keys and not result.unexpected_keys
    assert torch.equal(fresh.loss_normalizer, torch.tensor(42.0))
    loaded_config = AutoConfig.from_pretrained(tmp_path / "new").to_dict()
    loaded_config.pop("_name_or_path")
    assert loaded_config == {k: v for k, v in model.config.to_dict().items() if k != "_name_or_path"}


# ---------------------------------------------------------------------------------------------------------------------
# (5) Adapter reach across chunk borders


def test_adapter_temporal_conv_crosses_chunk_borders():
    torch.manual_seed(0)
    model = AdaTADForActionDetection(tiny_config()).eval()
    video = random_video()
    perturbed = video.clone()
    perturbed[0, 4:8] = 255 - perturbed[0, 4:8]  # chunk 1 of video 0

    def chunk_tokens(m, v):
        with torch.no_grad():
            return m.backbone_tokens(m._normalize(v)).reshape(2, WINDOW // 4, -1, 32)

    # Fresh (zero) adapters: chunks are independent, as in plain VideoMAE.
    before, after = chunk_tokens(model, video), chunk_tokens(model, perturbed)
    assert torch.equal(before[0, 2], after[0, 2]) and not torch.equal(before[0, 1], after[0, 1])

    randomise_adapters(model)
    before, after = chunk_tokens(model, video), chunk_tokens(model, perturbed)
    assert (before[0, 2] - after[0, 2]).abs().max() > 1e-4  # next chunk sees the change
    assert (before[0, 0] - after[0, 0]).abs().max() > 1e-4  # and the previous one
    # Each block: attention spreads within a chunk, the k=3 adapter conv moves one tubelet step further, so two
    # blocks reach two chunks on either side: chunk 4 and the other video are untouched.
    assert not torch.equal(before[0, 3], after[0, 3])  # second-order, small but real
    assert torch.equal(before[0, 4], after[0, 4])
    assert torch.equal(before[1], after[1])


# ---------------------------------------------------------------------------------------------------------------------
# (6) Target assignment


def test_target_assignment_hand_worked():
    config = tiny_config()  # strides 1, 2, 4 -> 32 + 16 + 8 points; ranges (0,4) (4,8) (8,inf)
    table = build_point_table(config)
    assert table["positions"][:3].tolist() == [0, 1, 2] and table["positions"][32:35].tolist() == [0, 2, 4]
    assert table["positions"][48:51].tolist() == [0, 4, 8]
    segment_labels = torch.tensor(
        [
            [[10.0, 14.0], [0.0, 24.0], [11.0, 13.0], [0.0, 0.0]],
            [[4.0, 8.0], [4.0, 8.0], [0.0, 0.0], [0.0, 0.0]],
        ]
    )
    class_labels = torch.tensor([[1, 0, 2, -1], [0, 1, -1, -1]])
    cls_targets, reg_targets = assign_action_targets(table, segment_labels, class_labels, num_classes=3)
    assert cls_targets.shape == (2, NUM_POINTS, 3) and reg_targets.shape == (2, NUM_POINTS, 2)

    # Video 0. [10,14]: centre region at stride 1 is (10.5, 13.5) -> frames 11, 12, 13 (max distance <= 4).
    # [11,13] is shorter and also covers frame 12, so frame 12 takes class 2. [0,24] only fits the stride-4
    # level (max distance >= 8): its centre region (6, 18) holds points at frames 8, 12, 16 (indices 50-52).
    positive = torch.nonzero(cls_targets[0].sum(-1)).flatten().tolist()
    assert positive == [11, 12, 13, 50, 51, 52]
    assert cls_targets[0, positive].argmax(-1).tolist() == [1, 2, 1, 0, 0, 0]
    assert (cls_targets[0, positive].sum(-1) == 1).all()
    assert reg_targets[0, positive].tolist() == [[1, 3], [1, 1], [3, 1], [8, 16], [12, 12], [16, 8]]
    assert reg_targets[0, [0, 10, 14, 49]].abs().sum() == 0

    # Video 1: two actions with the same boundaries and different classes give multi-hot targets (OpenTAD's
    # filter_similar_gt); centre region (4.5, 7.5) -> frames 5, 6, 7.
    positive = torch.nonzero(cls_targets[1].sum(-1)).flatten().tolist()
    assert positive == [5, 6, 7]
    assert cls_targets[1, positive].tolist() == [[1, 1, 0]] * 3
    assert reg_targets[1, positive].tolist() == [[1, 3], [2, 2], [3, 1]]


def test_cls_prior_and_no_weight_decay_names():
    model = AdaTADForActionDetection(tiny_config())
    prior_bias = -math.log((1 - 0.01) / 0.01)
    torch.testing.assert_close(model.head.cls_head.bias, torch.full((3,), prior_bias))
    for adapter in model.adapters:
        assert adapter.up_proj.weight.abs().sum() == 0 and adapter.gamma.item() == 1.0
    names = model.no_weight_decay_parameter_names()
    assert "head.cls_head.bias" in names and "head.scales.0.scale" in names
    assert "neck.norms.0.weight" in names and "projection.stem.0.drop_path_attn.scale" in names
    assert "head.cls_head.weight" not in names and "adapters.0.down_proj.weight" not in names
    # OpenTAD decays every adapter parameter (its backbone group custom=[dict(name="adapter", weight_decay=0.05)])
    assert not any(n.startswith("adapters.") for n in names)
    assert "videomae.encoder.layer.0.attention.output.dense.bias" in names


def test_decay_groups_follow_opentad_on_videomae_s():
    """The optimizer groups of the THUMOS recipe on a VideoMAE-S AdaTAD: the adapter group decays all its tensors;
    the detector (default group) splits as OpenTAD's ActionFormer get_optim_groups does, re-derived here from module
    types: Linear/Conv1d weights decayed; biases, LayerNorm weights and Scale/AffineDropPath scales not."""
    from torch import nn

    from hf_vtrain.models.adatad.modeling_adatad import AdaTADAffineDropPath, AdaTADScale
    from hf_vtrain.trainers.arguments import VTrainingArguments
    from hf_vtrain.trainers.optimization import assign_param_groups, build_optimizer_groups, format_param_report

    config = AdaTADConfig(backbone_config=VideoMAEConfig(hidden_size=384, num_hidden_layers=12,
                                                         num_attention_heads=6, intermediate_size=1536,
                                                         num_frames=16, image_size=160),
                          adapter_dim=96, detector_dim=512, num_pyramid_levels=6)
    model = AdaTADForActionDetection(config)
    args = VTrainingArguments(output_dir="/tmp/unused", use_cpu=True, weight_decay=0.05, learning_rate=1e-4,
                              param_groups=[{"name": "backbone", "patterns": ["^videomae\\."], "lr": 0},
                                            {"name": "adapters", "patterns": ["^adapters\\."], "lr": 2e-4}])
    table = assign_param_groups(model, args)
    groups = {g["name"]: g for g in build_optimizer_groups(table, args)}
    adapters = [p for n, p in model.named_parameters() if n.startswith("adapters.")]
    assert set(groups) == {"adapters", "default", "default/no_decay"}
    assert len(groups["adapters"]["params"]) == len(adapters) == 12 * 9 and groups["adapters"]["weight_decay"] == 0.05
    decay, no_decay = 0, 0
    for module_name, module in model.named_modules():
        if module_name.startswith(("videomae", "adapters")):
            continue
        for name, param in module.named_parameters(recurse=False):
            if name == "bias" or isinstance(module, (nn.LayerNorm, nn.GroupNorm)) or (
                    name == "scale" and isinstance(module, (AdaTADScale, AdaTADAffineDropPath))):
                no_decay += 1
            elif name == "weight" and isinstance(module, (nn.Linear, nn.Conv1d)):
                decay += 1
            else:
                raise AssertionError(f"{module_name}.{name} falls under no OpenTAD rule")
    assert len(groups["default"]["params"]) == decay and len(groups["default/no_decay"]["params"]) == no_decay
    assert groups["default/no_decay"]["weight_decay"] == 0.0
    report = format_param_report(table)
    assert f"wd 0.05 on {decay} tensors, no decay on {no_decay}" in report and "on 108 tensors, no decay on 0" in report
    print(report)
