"""EPAM-Net: the published model's size, a forward of the full-size model, save/load, single-stream weights loading
into the fused model by name, and the temporal shift by hand."""

import torch

from hf_vtrain.models.epam import EPAMConfig, EPAMForActionRecognition, count_parameters
from hf_vtrain.models.epam.modeling_epam import temporal_shift

TINY = dict(rgb_frames=4, pose_frames=8, rgb_image_size=32, pose_image_size=16, rgb_base_channels=8,
            rgb_stage_blocks=[1, 1], rgb_spatial_strides=[2, 2], pose_base_channels=8, pose_stage_blocks=[1, 1],
            pose_spatial_strides=[2, 2], num_joints=17, id2label={0: "a", 1: "b", 2: "c"})


def test_full_size_model_matches_the_reference_size_and_runs():
    model = EPAMForActionRecognition(EPAMConfig()).eval()
    assert count_parameters(model) == 2_541_117  # the paper: about 2.5 M
    assert count_parameters(model.rgb_backbone) == 1_980_030 and count_parameters(model.pose_backbone) == 519_580
    with torch.no_grad():
        out = model(pixel_values=torch.randint(0, 256, (1, 16, 3, 224, 224), dtype=torch.uint8),
                    heatmaps=torch.rand(1, 17, 48, 56, 56), labels=torch.tensor([7]))
    assert out.logits.shape == (1, 60) and torch.allclose(out.logits, out.rgb_logits + out.pose_logits)
    assert abs(out.loss.item() - 2 * torch.log(torch.tensor(60.0)).item()) < 0.5  # two near-uniform streams


def test_save_load_and_single_stream_weights_load_into_the_fused_model(tmp_path):
    torch.manual_seed(0)
    pose = EPAMForActionRecognition(EPAMConfig(streams="pose", **TINY))
    pose.save_pretrained(tmp_path / "pose")
    again = EPAMForActionRecognition.from_pretrained(tmp_path / "pose")
    heatmaps = torch.rand(2, 17, 8, 16, 16)
    pose.eval(), again.eval()
    assert torch.equal(pose(heatmaps=heatmaps).logits, again(heatmaps=heatmaps).logits)
    fused = EPAMForActionRecognition(EPAMConfig(**TINY))
    fused.save_pretrained(tmp_path / "fused")
    pixels = torch.randint(0, 256, (2, 4, 3, 32, 32), dtype=torch.uint8)
    loaded = EPAMForActionRecognition.from_pretrained(tmp_path / "fused").eval()
    for name, tensor in fused.state_dict().items():  # every weight back bit for bit
        assert torch.equal(loaded.state_dict()[name], tensor), name
    # the same weights in two models: single-threaded (pytest -n, OMP_NUM_THREADS=1) their pose logits were seen to
    # differ by 2e-9, the kernels' float order depending on where the tensors lie in memory
    torch.testing.assert_close(loaded(pixel_values=pixels, heatmaps=heatmaps).logits,
                               fused.eval()(pixel_values=pixels, heatmaps=heatmaps).logits, rtol=0, atol=1e-7)
    fused.train()
    result = fused.load_state_dict(pose.state_dict(), strict=False)
    assert not result.unexpected_keys
    assert all(k.startswith(("rgb_", "attention_module")) for k in result.missing_keys)
    for name, tensor in pose.state_dict().items():
        assert torch.equal(fused.state_dict()[name], tensor), name
    out = fused(pixel_values=torch.randint(0, 256, (2, 4, 3, 32, 32), dtype=torch.uint8), heatmaps=heatmaps,
                labels=torch.tensor([0, 2]))
    out.loss.backward()
    assert fused.attention_module.conv_ch_compress.weight.grad is not None


def test_temporal_shift_by_hand():
    x = torch.arange(8 * 3, dtype=torch.float32).view(1, 8, 3, 1, 1)  # 8 channels, 3 frames
    out = temporal_shift(x, 4)[0, :, :, 0, 0]
    assert out[0].tolist() == [1.0, 2.0, 0.0]          # channels 0-1: the next frame's value (back in time)
    assert out[2].tolist() == [0.0, 6.0, 7.0]          # channels 2-3: the previous frame's
    assert out[4].tolist() == x[0, 4, :, 0, 0].tolist()  # the rest unchanged
