"""FG-CLIP video model on a tiny random CLIP (hidden 32, 2 layers, 32 px images, 8 px patches, the real CLIP
vocabulary): loading every CLIP weight, parity with CLIPModel, FG-CLIP's long-caption positions and region features,
the losses, gradients, save/load, gradient checkpointing and zero-shot snippet scoring."""

import functools
import shutil
import warnings

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from huggingface_hub.errors import StrictDataclassClassValidationError
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModel, CLIPConfig, CLIPModel

from hf_vtrain.data.clip_tokenizer import build_clip_tokenizer
from hf_vtrain.models.fgclip_video import (
    UCF_CRIME_CLASSES,
    FGCLIPVideoConfig,
    FGCLIPVideoModel,
    stretch_text_position_embeddings,
)
from tests.distributed import spawn_two_ranks

B, T, R, K, L, LR = 2, 4, 3, 2, 100, 8
EOS = 49407


def tiny_clip_config() -> CLIPConfig:
    return CLIPConfig(
        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2),
        vision_config=dict(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32,
            patch_size=8,
        ),
        projection_dim=16,
    )


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    torch.manual_seed(0)
    clip = CLIPModel(tiny_clip_config())
    with torch.no_grad():  # a CLIP-like temperature, so softmaxes are not flat
        clip.logit_scale.fill_(4.6052)
    path = tmp_path_factory.mktemp("tiny_clip")
    clip.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def clip(clip_dir):
    return CLIPModel.from_pretrained(clip_dir).eval()


@pytest.fixture(scope="module")
def model(clip_dir):
    return FGCLIPVideoModel.from_clip_pretrained(clip_dir, temporal_num_heads=2, frame_chunk_size=3).eval()


def captions(*shape, length_range=(3, None)):
    """Random token ids with a start token, an end token at a random length and end-token padding, + mask."""
    ids = torch.randint(1000, 40000, shape)
    ids[..., 0] = 49406
    lengths = torch.randint(length_range[0], length_range[1] or shape[-1], shape[:-1])
    positions = torch.arange(shape[-1])
    ids = torch.where(positions >= lengths[..., None], torch.full_like(ids, EOS), ids)
    mask = (positions <= lengths[..., None]).long()
    return ids, mask


def make_batch(seed=0, negatives=True):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    pixel_mask = torch.ones(B, T, dtype=torch.bool)
    pixel_mask[1, 3] = False
    boxes = torch.rand(B, R, T, 2, generator=g) * 0.5
    boxes = torch.cat([boxes, boxes + 0.2 + 0.3 * torch.rand(B, R, T, 2, generator=g)], dim=-1)
    box_mask = torch.ones(B, R, T, dtype=torch.bool)
    box_mask[0, 0, 2:] = False
    box_mask[1, 1] = False  # region (1, 1) exists but has no box: it must not take part
    region_mask = torch.tensor([[True, True, True], [True, True, False]])
    ids, mask = captions(B, L)
    short_ids, short_mask = captions(B, LR)
    region_ids, region_attention = captions(B, R, LR)
    batch = {
        "pixel_values": torch.randint(0, 256, (B, T, 3, 32, 32), dtype=torch.uint8, generator=g),
        "pixel_mask": pixel_mask,
        "input_ids": ids,
        "attention_mask": mask,
        "short_input_ids": short_ids,
        "short_attention_mask": short_mask,
        "region_boxes": boxes.clamp(max=1.0),
        "region_box_mask": box_mask,
        "region_mask": region_mask,
        "region_input_ids": region_ids,
        "region_attention_mask": region_attention,
        "video_index": torch.arange(B),
    }
    if negatives:
        neg_ids, neg_mask = captions(B, R, K, LR)
        batch.update(negative_input_ids=neg_ids, negative_attention_mask=neg_mask,
                     negative_mask=torch.tensor([[True, False, True], [True, True, True]]))
    return batch


def normalise(pixel_values, config):
    mean = torch.tensor(config.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(config.image_std).view(1, 3, 1, 1)
    return (pixel_values.float() / 255 - mean) / std


# ---------------------------------------------------------------------------------------------------------------------
# Loading and parity with CLIP


def test_from_clip_pretrained_loads_every_clip_weight(model, clip):
    ours = model.clip.state_dict()
    theirs = clip.state_dict()
    assert set(ours) - set(theirs) == {"text_model.embeddings.long_position_embedding.weight"}
    assert set(theirs) <= set(ours)
    for key, value in theirs.items():
        assert torch.equal(ours[key], value), key


def test_temperatures_start_at_the_checkpoints_logit_scale(model, clip_dir):
    """FG-CLIP's training script sets logit_scale_finegraind and logit_scale_hardneg to the loaded logit_scale (4.6052
    for OpenAI checkpoints, x100), not CLIP's init value log(1/0.07) = 2.6593; an explicit value still wins."""
    assert model.region_logit_scale.item() == pytest.approx(4.6052)
    assert model.hard_negative_logit_scale.item() == pytest.approx(4.6052)
    assert model.config.logit_scale_init_value == pytest.approx(4.6052)
    other = FGCLIPVideoModel.from_clip_pretrained(clip_dir, temporal_num_heads=2, logit_scale_init_value=3.0)
    assert other.region_logit_scale.item() == 3.0 and other.hard_negative_logit_scale.item() == 3.0


def test_an_fgclip_checkpoint_loads_whole(clip_dir, tmp_path, caplog):
    """A checkpoint with FG-CLIP's key names (its CLIPModel subclass): position_embedding_ori/_res (248 rows each),
    text_filip_projection, logit_scale_finegraind/_hardneg. Every tensor arrives where FG-CLIP reads it (rows 0-19 of
    the long table from _ori, 20-247 from _res), none is dropped, no key is warned about."""
    import logging

    from safetensors.torch import load_file, save_file

    from hf_vtrain.models.fgclip_video.modeling_fgclip_video import FGCLIP_CHECKPOINT_KEYS

    folder = tmp_path / "fg-clip-tiny"
    shutil.copytree(clip_dir, folder)
    state = load_file(folder / "model.safetensors")
    g = torch.Generator().manual_seed(3)
    extra = {
        FGCLIP_CHECKPOINT_KEYS["position_ori"]: torch.randn(248, 32, generator=g),
        FGCLIP_CHECKPOINT_KEYS["position_res"]: torch.randn(248, 32, generator=g),
        FGCLIP_CHECKPOINT_KEYS["long_projection"]: torch.randn(16, 32, generator=g),
        FGCLIP_CHECKPOINT_KEYS["region_scale"]: torch.tensor(3.25),
        FGCLIP_CHECKPOINT_KEYS["hard_negative_scale"]: torch.tensor(3.75),
    }
    save_file({**state, **extra}, folder / "model.safetensors", metadata={"format": "pt"})
    with caplog.at_level(logging.WARNING):
        loaded = FGCLIPVideoModel.from_clip_pretrained(folder, temporal_num_heads=2)
    assert not [r for r in caplog.records if "not used" in r.getMessage()], caplog.text
    long_table = loaded.clip.text_model.embeddings.long_position_embedding.weight
    assert torch.equal(long_table[:20], extra[FGCLIP_CHECKPOINT_KEYS["position_ori"]][:20])
    assert torch.equal(long_table[20:], extra[FGCLIP_CHECKPOINT_KEYS["position_res"]][20:])
    assert torch.equal(loaded.long_text_projection.weight, extra[FGCLIP_CHECKPOINT_KEYS["long_projection"]])
    assert loaded.region_logit_scale.item() == 3.25 and loaded.hard_negative_logit_scale.item() == 3.75
    for key, value in state.items():  # CLIP's own tensors, as before
        assert torch.equal(loaded.clip.state_dict()[key], value), key
    # half of the pair is an error, not a silent stretch
    save_file({**state, FGCLIP_CHECKPOINT_KEYS["position_ori"]: extra[FGCLIP_CHECKPOINT_KEYS["position_ori"]]},
              folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match="both position_embedding_ori and _res"):
        FGCLIPVideoModel.from_clip_pretrained(folder, temporal_num_heads=2)


def test_embeddings_equal_clip_for_short_captions_and_frames(model, clip):
    ids, mask = captions(3, 12)
    with torch.no_grad():
        expected = clip.get_text_features(input_ids=ids, attention_mask=mask).pooler_output
        ours = model.get_text_features(ids, mask, long_caption=False)
        auto = model.get_text_features(ids, mask)  # <= 77 tokens: CLIP's path
        pixels = torch.randint(0, 256, (2, 3, 3, 32, 32), dtype=torch.uint8)
        image_expected = clip.get_image_features(pixel_values=normalise(pixels.flatten(0, 1), model.config))
        frames = model.get_frame_features(pixels)
    assert (ours - expected).abs().max() < 1e-5
    assert torch.equal(auto, ours)
    assert (frames.flatten(0, 1) - image_expected.pooler_output).abs().max() < 1e-5


def reference_stretch(pre, keep=20):
    """FG-CLIP's `resize_postion_embeding` loop, written out row by row."""
    length, dim = pre.shape
    new = torch.zeros(4 * length - 3 * keep, dim)
    new[:keep] = pre[:keep]
    for i in range(length - 1 - keep):
        for j in range(4):
            new[4 * i + j + keep] = ((4 - j) * pre[i + keep] + j * pre[i + 1 + keep]) / 4
    for j in range(4):
        new[4 * length - 3 * keep - 4 + j] = pre[length - 1] + j * (pre[length - 1] - pre[length - 2]) / 4
    return new


def test_long_positions_stretched_fgclip_style(model, clip):
    short = clip.text_model.embeddings.position_embedding.weight.detach()
    long = model.clip.text_model.embeddings.long_position_embedding.weight.detach()
    assert short.shape[0] == 77 and long.shape[0] == 248 == model.config.max_text_positions
    assert torch.equal(long[:20], short[:20])
    assert torch.equal(long[20::4][:57], short[20:])  # every 4th row is an original CLIP row
    torch.testing.assert_close(long, reference_stretch(short), atol=1e-6, rtol=0)
    torch.testing.assert_close(stretch_text_position_embeddings(short, 20, 4), long)
    # The long projection starts as a copy of CLIP's, so a caption of <= 20 tokens embeds the same on both paths.
    ids, mask = captions(2, 30, length_range=(3, 18))
    with torch.no_grad():
        long_path = model.get_text_features(ids, mask, long_caption=True)
        short_path = model.get_text_features(ids, mask, long_caption=False)
        long_caption = model.get_text_features(*captions(2, 248, length_range=(150, None)))
    torch.testing.assert_close(long_path, short_path, atol=1e-5, rtol=0)
    assert long_caption.shape == (2, 16) and torch.isfinite(long_caption).all()
    with pytest.raises(ValueError, match="max_text_positions"):
        model.get_text_features(*captions(1, 249))


def test_checkpoint_missing_an_attention_weight_raises(clip_dir, tmp_path):
    state = load_file(str(clip_dir / "model.safetensors"))
    del state["vision_model.encoder.layers.1.self_attn.k_proj.weight"]
    save_file(state, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    (tmp_path / "config.json").write_text((clip_dir / "config.json").read_text())
    with pytest.raises(ValueError, match="self_attn.k_proj.weight"):
        FGCLIPVideoModel.from_clip_pretrained(tmp_path)


def test_auto_classes_and_config_round_trip(tmp_path):
    config = FGCLIPVideoConfig(clip_config=tiny_clip_config(), temporal_num_heads=2)
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, FGCLIPVideoConfig)
    assert {**loaded.to_dict(), "_name_or_path": ""} == config.to_dict()
    assert isinstance(AutoModel.from_config(loaded), FGCLIPVideoModel)
    assert list(loaded.anomaly_classes) == list(UCF_CRIME_CLASSES)
    assert loaded.anomaly_prompts[loaded.normal_prompt_index] == "a video of normal activity"
    with pytest.raises(StrictDataclassClassValidationError, match="whole multiple"):
        FGCLIPVideoConfig(clip_config=tiny_clip_config(), max_text_positions=250)


# ---------------------------------------------------------------------------------------------------------------------
# Forward, losses, gradients


def test_forward_all_parts(model):
    batch = make_batch()
    with torch.no_grad():
        out = model(**batch)
    for name in ("loss", "global_loss", "short_global_loss", "region_loss", "hard_negative_loss"):
        assert out[name].ndim == 0 and torch.isfinite(out[name]) and out[name] > 0, name
    c = model.config
    # FG-CLIP's two global terms: long captions (248 positions, long projection) and short ones (CLIP's path)
    with torch.no_grad():
        short = F.normalize(model.get_text_features(batch["short_input_ids"], batch["short_attention_mask"],
                                                    long_caption=False), dim=-1)
    from hf_vtrain.models.fgclip_video.losses_fgclip_video import clip_contrastive_loss

    assert out.short_global_loss.item() == pytest.approx(
        clip_contrastive_loss(out.video_embeds, short, out.logit_scale).item(), rel=1e-5)
    assert c.short_global_loss_weight == 1.0
    total = c.global_loss_weight * out.global_loss + c.short_global_loss_weight * out.short_global_loss
    total = total + c.region_loss_weight * out.region_loss
    total = total + c.hard_negative_loss_weight * out.hard_negative_loss
    assert out.loss.item() == pytest.approx(total.item(), rel=1e-6)
    assert out.video_embeds.shape == (B, 16) and out.text_embeds.shape == (B, 16)
    assert out.frame_embeds.shape == (B, T, 16) and out.region_embeds.shape == (B, R, 16)
    expected_valid = torch.tensor([[True, True, True], [True, False, False]])
    assert torch.equal(out.region_valid_mask, expected_valid)
    assert torch.all(out.region_embeds[~expected_valid] == 0)
    torch.testing.assert_close(out.region_embeds[expected_valid].norm(dim=-1), torch.ones(4))
    assert out.logit_scale.item() == pytest.approx(100.0, rel=1e-4)  # CLIP's, loaded with the checkpoint
    assert out.region_logit_scale.item() == pytest.approx(100.0, rel=1e-4)  # FG-CLIP: from the loaded logit_scale


def test_regions_without_boxes_contribute_nothing(model):
    batch = make_batch()
    with torch.no_grad():
        reference = model(**batch)
        changed = dict(batch)
        changed["region_input_ids"] = batch["region_input_ids"].clone()
        changed["region_input_ids"][1, 1, 1:5] = 1234  # exists, no box
        changed["region_input_ids"][1, 2, 1:5] = 1234  # has boxes but region_mask is False
        changed["negative_input_ids"] = batch["negative_input_ids"].clone()
        changed["negative_input_ids"][1, 1, :, 1:5] = 777
        changed["region_boxes"] = batch["region_boxes"].clone()
        changed["region_boxes"][1, 1] = torch.tensor([0.0, 0.0, 1.0, 1.0])
        changed["region_boxes"][0, 0, 2:] = torch.tensor([0.0, 0.0, 1.0, 1.0])  # outside its box frames
        out = model(**changed)
        changed["region_input_ids"][0, 0, 1:5] = 1234  # a valid region: the loss must change
        moved = model(**changed)
    for name in ("loss", "region_loss", "hard_negative_loss"):
        assert out[name].item() == pytest.approx(reference[name].item(), abs=1e-6), name
    assert abs(moved.region_loss.item() - reference.region_loss.item()) > 1e-4


def test_absent_negatives_give_zero_hard_negative_loss(model):
    with torch.no_grad():
        without = model(**make_batch(negatives=False))
        batch = make_batch()
        batch["negative_mask"] = torch.zeros(B, R, dtype=torch.bool)
        masked = model(**batch)
        no_regions = model(**{k: v for k, v in make_batch().items() if not k.startswith(("region", "negative"))})
    assert without.hard_negative_loss.item() == 0.0 and masked.hard_negative_loss.item() == 0.0
    assert without.loss.item() == pytest.approx(masked.loss.item(), rel=1e-6)
    assert no_regions.region_loss.item() == 0.0 and no_regions.hard_negative_loss.item() == 0.0
    assert no_regions.loss.item() == pytest.approx(without.global_loss.item() + without.short_global_loss.item(),
                                                    rel=1e-6)


def test_region_features_follow_fgclip(model, clip):
    """A full-frame box on one frame gives the mean of FG-CLIP's dense map: the penultimate tokens through the last
    layer's value path and MLP, post-LayerNorm, visual projection (written out here from FG-CLIP's formula)."""
    batch = make_batch(negatives=False)
    batch["region_box_mask"] = torch.zeros(B, R, T, dtype=torch.bool)
    batch["region_box_mask"][0, 0, 1] = True
    batch["region_boxes"][0, 0, 1] = torch.tensor([0.0, 0.0, 1.0, 1.0])
    with torch.no_grad():
        out = model(**batch)
        frame = normalise(batch["pixel_values"][0, 1:2], model.config)
        hidden = clip.vision_model(pixel_values=frame, output_hidden_states=True).hidden_states[-2]
        last = clip.vision_model.encoder.layers[-1]
        x = hidden + last.self_attn.out_proj(last.self_attn.v_proj(last.layer_norm1(hidden)))
        x = x + last.mlp(last.layer_norm2(x))
        dense = clip.visual_projection(clip.vision_model.post_layernorm(x))[:, 1:]
        expected = F.normalize(dense.mean(dim=1), dim=-1)[0]
    torch.testing.assert_close(out.region_embeds[0, 0], expected, atol=1e-5, rtol=0)
    assert out.region_valid_mask.sum() == 1


def test_frame_chunks_do_not_change_outputs(model):
    batch = make_batch()
    with torch.no_grad():
        chunked = model(**batch)  # frame_chunk_size=3: regions' frames split across chunks
        model.config.frame_chunk_size = 64
        try:
            whole = model(**batch)
        finally:
            model.config.frame_chunk_size = 3
    for name in ("loss", "video_embeds", "region_embeds", "region_text_embeds"):
        torch.testing.assert_close(chunked[name], whole[name], atol=1e-5, rtol=0)


def test_logit_scale_cap_lets_a_capped_temperature_decrease(model):
    for start, grad_sign, open_ in ((4.6052, 1.0, True), (4.6052, -1.0, False), (3.0, -1.0, True)):
        log_scale = torch.nn.Parameter(torch.tensor(start))
        scale = model._logit_scale(log_scale)
        assert scale.item() == pytest.approx(min(100.0, torch.tensor(start).exp().item()), rel=1e-6)
        (grad_sign * scale).backward()  # grad_sign > 0: descent lowers the temperature's log scale
        assert (log_scale.grad.item() != 0) == open_


def test_backward_reaches_every_part(clip_dir):
    model = FGCLIPVideoModel.from_clip_pretrained(clip_dir, temporal_num_heads=2)
    model.train()
    with torch.no_grad():
        model.clip.logit_scale.fill_(3.9)  # below the cap, so its gradient flows either way
    out = model(**make_batch())
    out.loss.backward()
    grads = {name: p.grad for name, p in model.named_parameters()}
    missing = [name for name, grad in grads.items() if grad is None]
    assert not missing, missing
    for name in (
        "clip.vision_model.encoder.layers.0.self_attn.q_proj.weight",
        "clip.vision_model.encoder.layers.1.mlp.fc1.weight",
        "clip.visual_projection.weight",
        "clip.text_model.encoder.layers.0.self_attn.k_proj.weight",
        "clip.text_model.embeddings.position_embedding.weight",  # short captions (regions, negatives)
        "clip.text_model.embeddings.long_position_embedding.weight",  # global captions
        "clip.text_projection.weight",
        "long_text_projection.weight",
        "temporal.blocks.0.out_proj.weight",  # zero-initialised outputs: the first gradients land here
        "temporal.blocks.0.fc2.weight",
        "temporal.position_embedding",
        "clip.logit_scale",
        "region_logit_scale",
        "hard_negative_logit_scale",
    ):
        assert grads[name].abs().sum() > 0, name
    # The region branch alone reaches the vision tower (its dense path reuses the last layer and the projection).
    model.zero_grad()
    model(**make_batch()).region_loss.backward()
    for name in ("clip.vision_model.encoder.layers.1.self_attn.v_proj.weight",
                 "clip.vision_model.encoder.layers.0.self_attn.q_proj.weight", "clip.visual_projection.weight"):
        assert model.get_parameter(name).grad.abs().sum() > 0, name


def _flat_tensors(value):
    if torch.is_tensor(value):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _flat_tensors(v)]
    return []


def _record_module_calls(model):
    """Every submodule call in order, and the calls whose outputs the backward reached: the two moments at which
    DeepSpeed ZeRO-3 gathers a module's partitioned weights in a collective. Returns (calls, reached, hook handles)."""
    calls, reached = [], set()

    def hook(module, args, output, name):
        index = len(calls)
        calls.append(name)
        for tensor in _flat_tensors(output):
            if tensor.requires_grad:
                tensor.register_hook(lambda grad: reached.add(index))

    handles = [module.register_forward_hook(functools.partial(hook, name=name))
               for name, module in model.named_modules() if name]
    return calls, reached, handles


def _zero3_calls_worker(rank, world, init_file, result_file, clip_dir):
    """Rank 0: 7 real frames (3 chunks), regions with boxes, hard negatives; rank 1: 2 real frames (1 chunk), no
    region with a box, no hard negatives. Each rank runs a training step and a scoring pass as itself ('plain') and
    with its parameters marked as DeepSpeed ZeRO-3 marks them ('zero3')."""
    import datetime

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=60))
    model = FGCLIPVideoModel.from_clip_pretrained(clip_dir, temporal_num_heads=2, frame_chunk_size=3).train()
    batch = make_batch(seed=rank, negatives=rank == 0)
    if rank == 1:
        batch["pixel_mask"][:, 1:] = False
        batch["region_mask"][:] = False
    prompt_embeds = torch.randn(len(model.config.anomaly_prompts), 16, generator=torch.Generator().manual_seed(0))
    seen = {}
    for mode in ("plain", "zero3"):
        for i, param in enumerate(model.parameters()):
            if mode == "zero3":
                param.ds_id = i
            elif hasattr(param, "ds_id"):
                del param.ds_id
        model.zero_grad()
        calls, reached, handles = _record_module_calls(model)
        out = model(**batch)
        out.loss.backward()
        train_calls, train_reached = list(calls), sorted(reached)
        calls.clear()
        with torch.no_grad():
            scores = model.score_snippets(batch["pixel_values"], batch["pixel_mask"], prompt_embeds=prompt_embeds)
        for handle in handles:
            handle.remove()
        seen[mode] = {"train": train_calls, "reached": train_reached, "score": list(calls),
                      "loss": {k: out[k].item() for k in ("loss", "global_loss", "region_loss", "hard_negative_loss")},
                      "grads": {n: p.grad.clone() for n, p in model.named_parameters()}, "scores": scores.scores}
    everyone = [None] * world
    dist.all_gather_object(everyone, {m: {k: seen[m][k] for k in ("train", "reached", "score")} for m in seen})
    problems = []
    for what in ("train", "reached", "score"):
        if everyone[0]["zero3"][what] != everyone[1]["zero3"][what]:
            problems.append(f"zero3: the ranks' {what} calls differ")
        if everyone[0]["plain"][what] == everyone[1]["plain"][what] and what != "reached":
            problems.append(f"plain: the ranks' {what} calls are equal: the inputs do not make them differ")
    if len(seen["zero3"]["reached"]) < 0.5 * len(seen["zero3"]["train"]):
        problems.append("the backward reached fewer than half of the calls: the recording is broken")
    # the stand-in calls change no value and no gradient
    if seen["zero3"]["loss"] != seen["plain"]["loss"]:
        problems.append(f"losses differ: {seen['zero3']['loss']} vs {seen['plain']['loss']}")
    worst = max((seen["zero3"]["grads"][n] - g).abs().max().item() for n, g in seen["plain"]["grads"].items())
    if worst > 1e-6:
        problems.append(f"gradients differ by {worst}")
    if not torch.equal(seen["zero3"]["scores"], seen["plain"]["scores"]):
        problems.append("snippet scores differ")
    # region inputs on one process only: every process stops with the same error (none waits in a collective)
    mixed = dict(batch) if rank == 0 else {k: v for k, v in batch.items() if not k.startswith(("region", "negative"))}
    try:
        model(**mixed)
        problems.append("region inputs on one process only were accepted")
    except ValueError as err:
        if "every process must give region inputs" not in str(err):
            problems.append(f"unexpected error: {err}")
    with open(f"{result_file}.{rank}", "w") as f:
        f.write("; ".join(problems) or "ok")
    dist.destroy_process_group()


@pytest.mark.multiprocess
def test_under_zero3_every_process_makes_the_same_module_calls(tmp_path, clip_dir):
    """ZeRO-3 gathers a module's weights in a collective whenever it runs (forward, and backward where its outputs get
    gradient), so processes whose batches differ in real frames, boxes and hard negatives must still make the same
    calls: under ZeRO-3 the model pads them with stand-in calls (a fake 2-rank ZeRO-3 marking, real gloo). Without the
    marking the calls differ (the inputs are made so); with it they are equal, and loss, gradients and scores are
    unchanged. Region inputs on one process only stop every process with the same error. The whole DeepSpeed run is
    tests/trainers/test_vad_multiprocess.py::test_zero3_trains_the_vad_task."""
    spawn_two_ranks(_zero3_calls_worker, tmp_path, str(clip_dir))


def test_gradient_checkpointing_gives_the_same_loss_and_gradients(clip_dir):
    model = FGCLIPVideoModel.from_clip_pretrained(clip_dir, temporal_num_heads=2)
    model.train()
    batch = make_batch()
    reference = model(**batch)
    reference.loss.backward()
    reference_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # deprecated alias of activation_checkpointing_enable
        model.gradient_checkpointing_enable()
    layers = [*model.clip.vision_model.encoder.layers, *model.clip.text_model.encoder.layers]
    assert all(layer.gradient_checkpointing for layer in layers)
    out = model(**batch)
    out.loss.backward()
    assert out.loss.item() == pytest.approx(reference.loss.item(), abs=1e-6)
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.grad, reference_grads[name], atol=1e-6, rtol=1e-5, msg=name)


def test_save_and_from_pretrained_round_trip(tmp_path, clip_dir):
    model = FGCLIPVideoModel.from_clip_pretrained(clip_dir, temporal_num_heads=2)
    with torch.no_grad():  # make every custom tensor non-trivial
        for param in model.temporal.parameters():
            param.normal_(std=0.05)
        model.region_logit_scale.fill_(3.0)
        model.clip.text_model.embeddings.long_position_embedding.weight.add_(0.01)
    model.eval()
    model.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, FGCLIPVideoModel)
    theirs = loaded.state_dict()
    for key, value in model.state_dict().items():
        assert torch.equal(theirs[key], value), key
    batch = make_batch()
    with torch.no_grad():
        a, b = model(**batch), loaded(**batch)
    for name in ("loss", "global_loss", "region_loss", "hard_negative_loss", "video_embeds", "region_embeds"):
        assert torch.equal(a[name], b[name]), name


# ---------------------------------------------------------------------------------------------------------------------
# Anomaly scoring


@pytest.fixture(scope="module")
def prompts(model, tmp_path_factory):
    tokenizer = build_clip_tokenizer(tmp_path_factory.mktemp("tokenizer"), model_max_length=248)
    return model.encode_prompts(tokenizer)


def test_encode_prompts_tokenises_the_config_prompts(model, prompts):
    ids = prompts["input_ids"]
    assert ids.shape[0] == 14 and ids[0, 0].item() == 49406
    assert ids[model.config.normal_prompt_index].tolist()[:4] == [49406, 320, 1455, 539]  # "a video of"


def test_score_snippets_shape_and_range(model, prompts):
    pixels = torch.randint(0, 256, (2, 5, 3, 32, 32), dtype=torch.uint8)
    mask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    model.config.score_window_frames = 2  # windows of 2 snippets, the last one padded
    try:
        with torch.no_grad():
            out = model.score_snippets(pixels, mask, prompts["input_ids"], prompts["attention_mask"])
            split = model.score_snippets(pixels[:, :4], mask[:, :4], prompts["input_ids"], prompts["attention_mask"])
    finally:
        model.config.score_window_frames = 32
    assert out.scores.shape == (2, 5) and out.class_probs.shape == (2, 5, 14)
    assert torch.all((out.scores >= 0) & (out.scores <= 1))
    assert torch.all(out.scores[1, 3:] == 0) and torch.equal(out.snippet_mask, mask)
    torch.testing.assert_close(out.class_probs.sum(-1), torch.ones(2, 5))
    torch.testing.assert_close(split.scores, out.scores[:, :4])  # a split at a window border changes nothing


def test_score_snippets_hand_made_case(model, prompts, monkeypatch):
    with torch.no_grad():
        text = model.get_prompt_embeddings(prompts["input_ids"], prompts["attention_mask"])  # (14, 16)
    labels = torch.tensor([[2, 13, 6], [13, 0, 13]])  # Arson, Normal, Fighting / Normal, Abuse, Normal
    # Frame embeddings equal to a prompt's text embedding (scaled: cosine ignores the norm).
    monkeypatch.setattr(model, "get_frame_features", lambda pixels, mask=None: 3.0 * text[labels])
    pixels = torch.zeros(2, 3, 3, 32, 32, dtype=torch.uint8)
    with torch.no_grad():
        out = model.score_snippets(pixels, prompt_embeds=text)
    # A fresh temporal module is the identity, so by hand: softmax over prompts of 100 x cosine.
    probs = (100.0 * text[labels] @ text.t()).softmax(dim=-1)
    assert torch.equal(out.class_probs.argmax(-1), labels)
    torch.testing.assert_close(out.scores, 1 - probs[..., 13], atol=1e-5, rtol=0)
    assert torch.all(out.scores[labels == 13] < 0.5) and torch.all(out.scores[labels != 13] > 0.5)
