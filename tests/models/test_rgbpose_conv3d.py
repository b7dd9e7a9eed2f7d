"""RGBPoseConv3D: the published model's size and MMAction2's parameter names and shapes, a forward of the full-size
model, save/load, the laterals, and single-stream weights widened into the fused model (phases' init_from): a fused
model started from the pose-only and RGB-only models predicts what they predict, stream by stream."""

import pytest
import torch
from huggingface_hub.errors import StrictDataclassClassValidationError

from hf_vtrain.models.rgbpose_conv3d import RGBPoseConv3DConfig, RGBPoseConv3DForActionRecognition
from hf_vtrain.parser import RecipeError
from hf_vtrain.phases import init_weights_from

TINY = dict(rgb_frames=2, pose_frames=8, rgb_image_size=32, pose_image_size=8, rgb_base_channels=8,
            rgb_stage_blocks=[1, 1, 1, 1], pose_base_channels=4, pose_stage_blocks=[1, 1, 1], fusion_kernel=3,
            id2label={0: "a", 1: "b", 2: "c"})


def count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def inputs(batch=2, tiny=True):
    torch.manual_seed(1)
    if tiny:
        return torch.randint(0, 256, (batch, 2, 3, 32, 32), dtype=torch.uint8), torch.rand(batch, 17, 8, 8, 8)
    return torch.randint(0, 256, (batch, 8, 3, 224, 224), dtype=torch.uint8), torch.rand(batch, 17, 32, 56, 56)


def test_full_size_model_matches_the_reference_size_names_and_runs():
    model = RGBPoseConv3DForActionRecognition(RGBPoseConv3DConfig()).eval()
    assert count(model) == 36_147_928  # MMAction2's RGBPoseConv3D: about 36 M
    assert count(model.backbone.rgb_path) == 33_354_816 and count(model.backbone.pose_path) == 2_639_392
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    # the widened first convolutions MMAction2's merge_pretrain pads, by its names and shapes
    assert shapes["backbone.rgb_path.layer3.0.conv1.conv.weight"] == (256, 640, 3, 1, 1)
    assert shapes["backbone.rgb_path.layer4.0.downsample.conv.weight"] == (2048, 1280, 1, 1, 1)
    assert shapes["backbone.pose_path.layer2.0.conv1.conv.weight"] == (64, 160, 3, 1, 1)
    assert shapes["backbone.pose_path.layer3.0.downsample.conv.weight"] == (512, 320, 1, 1, 1)
    assert shapes["backbone.rgb_path.layer2_lateral.conv.weight"] == (128, 128, 7, 1, 1)
    assert shapes["backbone.pose_path.layer1_lateral.conv.weight"] == (512, 32, 7, 1, 1)  # transposed: (in, out)
    assert shapes["cls_head.fc_rgb.weight"] == (60, 2048) and shapes["cls_head.fc_pose.weight"] == (60, 512)
    assert sorted(k for k in shapes if "lateral" in k and k.endswith("weight")) == [
        "backbone.pose_path.layer1_lateral.bn.weight", "backbone.pose_path.layer1_lateral.conv.weight",
        "backbone.pose_path.layer2_lateral.bn.weight", "backbone.pose_path.layer2_lateral.conv.weight",
        "backbone.rgb_path.layer2_lateral.conv.weight", "backbone.rgb_path.layer3_lateral.conv.weight"]
    pixels, heatmaps = inputs(1, tiny=False)
    with torch.no_grad():
        out = model(pixel_values=pixels, heatmaps=heatmaps, labels=torch.tensor([7]))
    assert out.logits.shape == (1, 60) and torch.allclose(out.logits, out.rgb_logits + out.pose_logits)
    with torch.no_grad():  # normalised by the batch's statistics, a fresh model predicts near-uniformly per stream
        out = model.train()(pixel_values=pixels, heatmaps=heatmaps, labels=torch.tensor([7]))
    assert abs(out.loss.item() - 2 * torch.log(torch.tensor(60.0)).item()) < 1.0
    # single-stream models: MMAction2's ResNet3dSlowOnly pose_only (PoseC3D, about 2.0 M) and rgb_only
    assert count(RGBPoseConv3DForActionRecognition(RGBPoseConv3DConfig(streams="pose"))) == 2_024_860
    assert count(RGBPoseConv3DForActionRecognition(RGBPoseConv3DConfig(streams="rgb"))) == 31_757_436


def test_lateral_shapes_and_both_pathways_learn_through_them():
    model = RGBPoseConv3DForActionRecognition(RGBPoseConv3DConfig(**TINY))
    pixels, heatmaps = inputs()
    seen = {}
    for name in ("layer2_lateral", "layer3_lateral"):
        getattr(model.backbone.rgb_path, name).register_forward_hook(
            lambda m, i, o, name=name: seen.update({"rgb." + name: tuple(o.shape)}))
    for name in ("layer1_lateral", "layer2_lateral"):
        getattr(model.backbone.pose_path, name).register_forward_hook(
            lambda m, i, o, name=name: seen.update({"pose." + name: tuple(o.shape)}))
    out = model(pixel_values=pixels, heatmaps=heatmaps, labels=torch.tensor([0, 2]))
    # pose -> RGB: the pose frames strided by speed_ratio to the RGB frames; RGB -> pose: up by it
    assert seen == {"rgb.layer2_lateral": (2, 16, 2, 4, 4), "rgb.layer3_lateral": (2, 32, 2, 2, 2),
                    "pose.layer1_lateral": (2, 4, 8, 4, 4), "pose.layer2_lateral": (2, 8, 8, 2, 2)}
    out.loss.backward()
    assert model.backbone.rgb_path.layer2_lateral.conv.weight.grad.abs().sum() > 0
    assert model.backbone.pose_path.layer1_lateral.conv.weight.grad.abs().sum() > 0


def test_save_load_round_trip(tmp_path):
    model = RGBPoseConv3DForActionRecognition(RGBPoseConv3DConfig(**TINY)).eval()
    model.save_pretrained(tmp_path / "m")
    again = RGBPoseConv3DForActionRecognition.from_pretrained(tmp_path / "m").eval()
    pixels, heatmaps = inputs()
    with torch.no_grad():
        assert torch.equal(model(pixel_values=pixels, heatmaps=heatmaps).logits,
                           again(pixel_values=pixels, heatmaps=heatmaps).logits)


def _trained_single_stream(stream, folder, seed):
    """A single-stream model with non-trivial weights (random BN statistics too), saved."""
    torch.manual_seed(seed)
    model = RGBPoseConv3DForActionRecognition(RGBPoseConv3DConfig(streams=stream, **TINY))
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                tensor.copy_(torch.rand_like(tensor) * 0.5 + (0.5 if "running_var" in name else -0.25))
    model.save_pretrained(folder)
    return model.eval()


def test_fused_model_from_both_single_streams_predicts_what_they_predict(tmp_path):
    pose = _trained_single_stream("pose", tmp_path / "pose", 0)
    rgb = _trained_single_stream("rgb", tmp_path / "rgb", 1)
    fused = RGBPoseConv3DForActionRecognition(RGBPoseConv3DConfig(**TINY))
    result = init_weights_from(fused, f"{tmp_path / 'pose'}, {tmp_path / 'rgb'}", use_ema=False,
                               allow_unexpected=False)
    assert all("lateral" in k for k in result["missing"]) and not result["unexpected"]
    widened = fused.backbone.pose_path.layer2[0].conv1.conv.weight
    assert widened.shape[1] == 16 + 4 and torch.equal(widened[:, 16:], torch.zeros_like(widened[:, 16:]))
    assert torch.equal(widened[:, :16], pose.backbone.pose_path.layer2[0].conv1.conv.weight)
    fused.eval()
    pixels, heatmaps = inputs()
    with torch.no_grad():
        out = fused(pixel_values=pixels, heatmaps=heatmaps)
        # the laterals' channels meet zero weights: each stream computes what it computed alone
        assert torch.allclose(out.pose_logits, pose(heatmaps=heatmaps).logits, atol=1e-5)
        assert torch.allclose(out.rgb_logits, rgb(pixel_values=pixels).logits, atol=1e-5)


def test_init_from_refuses_a_weight_from_two_folders(tmp_path):
    _trained_single_stream("pose", tmp_path / "pose", 0)
    fused = RGBPoseConv3DForActionRecognition(RGBPoseConv3DConfig(**TINY))
    with pytest.raises(RecipeError, match=r"weights are in both .*pose.* and .*pose"):
        init_weights_from(fused, f"{tmp_path / 'pose'},{tmp_path / 'pose'}", use_ema=False, allow_unexpected=False)


@pytest.mark.parametrize("change, message", [
    ({"pose_frames": 6}, r"pose_frames \(6\) must be speed_ratio \(4\) x rgb_frames"),
    ({"pose_image_size": 16}, r"meet at other sizes"),
    ({"pose_base_channels": 8}, r"must differ by channel_ratio"),
    ({"rgb_inflate": [0, 1]}, r"rgb_inflate needs one value per stage \(4\)"),
])
def test_config_refuses_pathways_that_cannot_meet(change, message):
    with pytest.raises(StrictDataclassClassValidationError, match=message):
        RGBPoseConv3DConfig(**{**TINY, **change})
