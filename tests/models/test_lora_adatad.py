"""LoRA on AdaTAD's VideoMAE backbone (hf_vtrain.models.adatad.lora_adatad): parameter counts against the formula, freezing by the recipe,
start equal to the plain model, save/load, the peft adapter folder and the merged export, refused Mixup/CutMix."""

import os
from types import SimpleNamespace

import pytest
import torch
from transformers import VideoMAEModel

from hf_vtrain.models.adatad import lora_adatad as lora
from hf_vtrain.models.adatad import AdaTADConfig, AdaTADForActionDetection
from hf_vtrain.parser import RecipeError, parse_args
from hf_vtrain.run import RUN_KEYS
from hf_vtrain.tasks import get_task
from hf_vtrain.trainers.optimization import assign_param_groups, format_param_report
from tests.models.test_adatad import random_video, tiny_backbone_config, tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _recipe_args(name, tmp_path, *extra):
    spec = get_task("tad")
    model_args, _, training_args, _ = parse_args(
        [os.path.join(REPO, "recipes", name), "--output_dir", str(tmp_path), "--report_to", "none", "--fp16", "false",
         *extra],
        (spec.model_args, spec.data_args, spec.training_args), extra_keys=RUN_KEYS,
    )
    return model_args, training_args


# VideoMAE-S: hidden 384, MLP 1536, 12 blocks. r * (in + out) per targeted Linear, by hand:
#   query/value: 2 x 16 x (384 + 384) x 12 = 294,912 (r16 recipe); r32: 589,824
#   all six Linear layers at r16: 16 x (4 x 768 + 2 x 1920) x 12 = 1,327,104
@pytest.mark.parametrize("recipe,extra,expected", [
    ("adatad_thumos14_lora.yaml", (), 294_912),
    ("adatad_thumos14_lora_v2.yaml", (), 589_824),
    ("adatad_thumos14_lora.yaml", ("--lora_target_modules", "[all-linear]"), 1_327_104),
], ids=["r16-qv", "r32-qv", "r16-all-linear"])
def test_trainable_counts_match_lora_formula_videomae_small(tmp_path, recipe, extra, expected, caplog):
    """The recipe's LoRA on VideoMAE-S dims (no weights, no forward): the LoRA group's trainable count printed by the
    trainer's parameter report equals r * (in + out) summed over the targeted Linear layers."""
    model_args, training_args = _recipe_args(recipe, tmp_path, *extra)
    config = AdaTADConfig(window_size=64, detector_dim=32, num_attention_heads=2, use_adapters=False,
                          lora_r=model_args.lora_r, lora_alpha=model_args.lora_alpha,
                          lora_dropout=model_args.lora_dropout, lora_target_modules=model_args.lora_target_modules)
    formula = lora.lora_formula(config.backbone_config, config.lora_target_modules, config.lora_r)
    assert formula["total"] == expected
    model = AdaTADForActionDetection(config)
    assert lora.lora_parameter_count(model) == expected

    table = assign_param_groups(model, training_args)
    groups = {entry["name"]: entry for entry in table}
    lora_trainable = sum(p.numel() for _, p in groups["lora"]["params"] if p.requires_grad)
    assert lora_trainable == expected
    assert all(".lora_" in name for name, _ in groups["lora"]["params"])
    assert not any(p.requires_grad for _, p in groups["backbone"]["params"])  # the rest of VideoMAE: frozen
    report = format_param_report(table)
    lora_line = next(line for line in report.splitlines() if line.strip().startswith("lora"))
    assert f"trainable {expected:>12,}" in lora_line and "frozen            0" in lora_line


def test_target_names_and_regex():
    assert lora.expand_target_modules(["all-linear"]) == list(lora.BLOCK_LINEARS)
    with pytest.raises(ValueError, match="names no Linear"):
        lora.expand_target_modules(["proj"])
    model = AdaTADForActionDetection(tiny_config(lora_r=2, lora_target_modules=["query", "value"]))
    adapted = sorted({n.split(".lora_")[0] for n, _ in model.named_parameters() if ".lora_" in n})
    assert adapted == [f"videomae.encoder.layer.{i}.attention.attention.{m}" for i in (0, 1) for m in ("query", "value")]
    # the detector's own attention convolutions named query/value are left alone
    assert not any(".lora_" in n for n, _ in model.named_parameters() if n.startswith("projection."))


def test_lora_starts_equal_to_plain_and_round_trips(tmp_path):
    torch.manual_seed(0)
    plain = AdaTADForActionDetection(tiny_config()).eval()
    model = AdaTADForActionDetection(tiny_config(lora_r=4, lora_alpha=8, lora_target_modules=["all-linear"])).eval()
    model.load_videomae_state_dict(plain.videomae.state_dict())  # plain names map to `<name>.base_layer.`
    model.load_state_dict({k: v for k, v in plain.state_dict().items() if not k.startswith("videomae.")}, strict=False)
    lora_b = [p for n, p in model.named_parameters() if ".lora_B." in n]
    lora_a = [p for n, p in model.named_parameters() if ".lora_A." in n]
    assert lora_b and all(torch.count_nonzero(p) == 0 for p in lora_b)  # B = 0: LoRA starts as a no-op
    assert all(torch.count_nonzero(p) > 0 for p in lora_a)
    video = random_video()
    with torch.no_grad():
        assert torch.equal(plain(video).class_logits, model(video).class_logits)
    # model-side default flags: the LoRA weights trainable, the rest of VideoMAE frozen
    for name, param in model.videomae.named_parameters():
        assert param.requires_grad == (".lora_" in name), name

    with torch.no_grad():
        for p in lora_b:
            p.normal_(0, 0.1)
        expected = model(video).class_logits
    model.save_pretrained(tmp_path / "lora")
    loaded, info = AdaTADForActionDetection.from_pretrained(tmp_path / "lora", output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    with torch.no_grad():
        assert torch.equal(loaded.eval()(video).class_logits, expected)

    # a plain checkpoint with LoRA asked for in the config: refused with the way out
    plain.save_pretrained(tmp_path / "plain")
    with pytest.raises(ValueError, match="enable_lora"):
        AdaTADForActionDetection.from_pretrained(tmp_path / "plain", lora_r=4)
    added = AdaTADForActionDetection.from_pretrained(tmp_path / "plain").eval()
    added.enable_lora(4, 8, 0.0, ["query"])
    assert added.config.lora_r == 4 and lora.lora_parameter_count(added) == 2 * 4 * (32 + 32)
    with torch.no_grad():
        assert torch.equal(added(video).class_logits, plain(video).class_logits)


def test_merged_and_adapter_exports_give_the_same_outputs(tmp_path):
    """merge_and_unload export vs the LoRA model: max abs diff < 1e-5; the peft adapter folder (LoRA + detector as
    modules_to_save) reloaded onto the VideoMAE checkpoint alone gives the same outputs."""
    torch.manual_seed(0)
    backbone_dir = tmp_path / "videomae"
    VideoMAEModel(tiny_backbone_config()).save_pretrained(backbone_dir)
    model = AdaTADForActionDetection.from_videomae_pretrained(
        str(backbone_dir), image_size=None, pretrained_image_size=None, lora_r=4, lora_alpha=8, lora_dropout=0.1,
        lora_target_modules=["all-linear"], **{k: v for k, v in tiny_config().to_dict().items() if k in (
            "window_size", "chunk_size", "adapter_dim", "detector_dim", "num_attention_heads", "num_pyramid_levels",
            "regression_ranges")}, num_labels=3,
    )
    with torch.no_grad():  # "trained": LoRA B, adapters' up-projections and the detector away from their init
        for name, param in model.named_parameters():
            if ".lora_" in name or not name.startswith("videomae."):
                param.add_(0.05 * torch.randn_like(param))
    model.eval()
    video = random_video()
    with torch.no_grad():
        expected = model(video).class_logits
    paths = lora.export_lora(model, str(tmp_path / "out"), str(backbone_dir))
    assert {"adapter_config.json", "adapter_model.safetensors", "config.json"} <= set(os.listdir(paths["adapter"]))

    merged = AdaTADForActionDetection.from_pretrained(paths["merged"]).eval()
    assert merged.config.lora_r == 0 and not any(".lora_" in n for n, _ in merged.named_parameters())
    with torch.no_grad():
        merged_diff = (merged(video).class_logits - expected).abs().max().item()
    assert merged_diff < 1e-5

    reloaded = AdaTADForActionDetection.from_lora_adapter(paths["adapter"])
    with torch.no_grad():
        adapter_diff = (reloaded(video).class_logits - expected).abs().max().item()
    assert adapter_diff < 1e-5  # same weights; float32 rounding (different memory layout) at most
    print(f"merged vs unmerged max abs diff {merged_diff:.3g}; adapter reload {adapter_diff:.3g}")


def test_mixup_and_cutmix_are_refused_with_the_reason(tmp_path):
    for key in ("mixup_alpha", "cutmix_alpha"):
        with pytest.raises(RecipeError, match="segment targets ambiguous for a detector"):
            _recipe_args("adatad_thumos14_lora_demo.yaml", tmp_path, f"--{key}", "0.2")
    model_args, _ = _recipe_args("adatad_thumos14_lora_demo.yaml", tmp_path)
    assert model_args.mixup_alpha == 0 and model_args.lora_r == 8


def test_lora_keys_are_not_taken_from_model_config_overrides(tmp_path):
    from hf_vtrain.tasks.tad import build_model

    model_args, _ = _recipe_args("adatad_thumos14_lora_demo.yaml", tmp_path,
                                 "--model_config_overrides", "{lora_r: 4}")
    with pytest.raises(ValueError, match="own recipe keys"):
        build_model(model_args, SimpleNamespace(crop_size=64, window_size=128), SimpleNamespace(class_names=["a"]))
