"""LoRA on AdaTAD's VideoMAE backbone through peft: target selection, injection, the parameter formula, and the two
exports written at the end of a LoRA run (a peft adapter folder and a merged plain AdaTAD model).

Freezing is not decided here: a training recipe's `param_groups` do it (a `lora` group on `lora_` before the frozen
backbone group), as for every other parameter.
"""

from __future__ import annotations

import copy
import logging
import os
import re

import torch
from torch import nn

logger = logging.getLogger(__name__)

# The Linear layers of a VideoMAE block, named relative to `videomae.encoder.layer.<i>.`, and their (in, out) sizes.
BLOCK_LINEARS = {
    "attention.attention.query": ("hidden", "hidden"),
    "attention.attention.key": ("hidden", "hidden"),
    "attention.attention.value": ("hidden", "hidden"),
    "attention.output.dense": ("hidden", "hidden"),
    "intermediate.dense": ("hidden", "intermediate"),
    "output.dense": ("intermediate", "hidden"),
}
ALL_LINEAR = "all-linear"
_BLOCK_PREFIX = r"videomae\.encoder\.layer\.\d+\."
ADAPTER_DIR = "lora_adapter"
MERGED_DIR = "merged_model"


def expand_target_modules(names) -> list[str]:
    """Validates `lora_target_modules`; `all-linear` stands for the six Linear layers of a block."""
    names = [names] if isinstance(names, str) else list(names)
    out = []
    for name in names:
        if name == ALL_LINEAR:
            out += [n for n in BLOCK_LINEARS if n not in out]
            continue
        if not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", name):
            raise ValueError(f"lora_target_modules: {name!r} is not a module name (e.g. 'query', 'output.dense')")
        if not any(_suffix_match(path, name) for path in BLOCK_LINEARS):
            raise ValueError(f"lora_target_modules: {name!r} names no Linear of a VideoMAE block; choose from "
                             f"{sorted(BLOCK_LINEARS)} (peft suffix rule) or '{ALL_LINEAR}'")
        out.append(name)
    return out


def _suffix_match(path: str, name: str) -> bool:
    # peft's rule for a list of target names: the module name equals the target or ends with "." + target
    return path == name or path.endswith("." + name)


def target_regex(names) -> str:
    """One regex (peft full-matches it against module names) that limits the targets to the VideoMAE blocks: the
    detector's attention has `query`/`key`/`value` convolutions that LoRA must not touch."""
    names = expand_target_modules(names)
    return _BLOCK_PREFIX + r"(?:.*\.)?(?:" + "|".join(re.escape(n) for n in names) + ")"


def lora_formula(backbone_config, target_modules, r: int) -> dict:
    """LoRA parameter count from the dimensions alone: r * (in + out) per targeted Linear (A is r x in, B is out x r,
    no LoRA bias). Returns {"per_layer": {block-relative name: count}, "num_layers", "total"}."""
    dims = {"hidden": backbone_config.hidden_size, "intermediate": backbone_config.intermediate_size}
    names = expand_target_modules(target_modules)
    per_layer = {}
    for path, (fan_in, fan_out) in BLOCK_LINEARS.items():
        if any(_suffix_match(path, name) for name in names):
            per_layer[path] = r * (dims[fan_in] + dims[fan_out])
    layers = backbone_config.num_hidden_layers
    return {"per_layer": per_layer, "num_layers": layers, "total": layers * sum(per_layer.values())}


def lora_parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for name, p in model.named_parameters() if ".lora_" in name)


def peft_lora_config(config, modules_to_save: list[str] | None = None):
    from peft import LoraConfig

    return LoraConfig(
        r=int(config.lora_r),
        lora_alpha=config.lora_alpha,
        lora_dropout=float(config.lora_dropout),
        target_modules=target_regex(config.lora_target_modules),
        bias="none",
        modules_to_save=modules_to_save,
    )


def inject_lora(model: nn.Module, config) -> None:
    """Adds peft LoRA layers in place (`inject_adapter_in_model`, adapter "default"). peft freezes every other
    parameter while injecting; the previous flags are restored and the LoRA weights made trainable, so the model's
    own `freeze_backbone` and then the recipe decide. The LoRA modules are marked initialised for transformers."""
    from peft import inject_adapter_in_model

    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    inject_adapter_in_model(peft_lora_config(config), model)
    if "peft_config" in model.__dict__:  # the AdaTAD config records LoRA; no second copy on the module
        del model.__dict__["peft_config"]
    for name, param in model.named_parameters():
        original = name.replace(".base_layer.", ".")
        param.requires_grad_(True if ".lora_" in name else flags.get(original, flags.get(name, True)))
    # peft initialised A (kaiming uniform) and B (zeros: the model starts equal to the plain one). Inside VideoMAE,
    # transformers' post_init would re-draw them with VideoMAE's own rule; the flag tells it they are done.
    for name, module in model.named_modules():
        if re.search(r"\.lora_(A|B|dropout)(\.|$)", name):
            module._is_hf_initialized = True


def strip_lora_state_dict(state_dict: dict) -> dict:
    """The plain model's state dict: LoRA weights dropped, `.base_layer.` names back to the original ones."""
    return {key.replace(".base_layer.", "."): value for key, value in state_dict.items() if ".lora_" not in key}


def modules_to_save_for(model: nn.Module) -> list[str]:
    """The trained modules outside the backbone, as peft `modules_to_save` names: the largest modules that peft can
    wrap (not a ModuleList/ModuleDict, which the model indexes and iterates) and whose name is not a suffix of another
    module's name (peft matches `modules_to_save` by suffix: `head` would also wrap `head.cls_head`)."""
    names = [name for name, _ in model.named_modules() if name]
    chosen = []

    def visit(prefix: str, module: nn.Module) -> None:
        for child_name, child in module.named_children():
            full = prefix + child_name
            if full == "videomae" or not any(True for _ in child.parameters()):
                continue
            collides = any(other != full and other.endswith(full) for other in names)
            if isinstance(child, (nn.ModuleList, nn.ModuleDict)) or collides:
                if any(True for _ in child.parameters(recurse=False)):
                    raise ValueError(f"cannot save {full}: it holds parameters but cannot be wrapped by peft")
                visit(full + ".", child)
            else:
                chosen.append(full)

    visit("", model)
    return chosen


def build_peft_model(model, base_model_name_or_path: str | None = None):
    """A `peft.PeftModel` equal to `model` (an AdaTAD model with LoRA): the plain model (LoRA off) holding every
    non-LoRA weight, LoRA injected by peft with the same targets, the trained modules outside the backbone as
    `modules_to_save`. Its `save_pretrained` writes the adapter folder, its `merge_and_unload` the merged model."""
    from peft import get_peft_model

    if model.config.lora_r <= 0:
        raise ValueError("the model has no LoRA (lora_r = 0)")
    plain_config = copy.deepcopy(model.config)
    plain_config.lora_r = 0
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    plain = type(model)(plain_config)
    plain.load_state_dict(strip_lora_state_dict(state), strict=True)
    plain.eval()
    peft_config = peft_lora_config(model.config, modules_to_save=modules_to_save_for(model))
    peft_model = get_peft_model(plain, peft_config)
    # peft takes the name from the model (none here); the base is the VideoMAE checkpoint the backbone came from
    peft_model.peft_config["default"].base_model_name_or_path = base_model_name_or_path
    lora_state = {k: v for k, v in state.items() if ".lora_" in k}
    result = peft_model.base_model.model.load_state_dict(lora_state, strict=False)
    expected = {k for k in peft_model.base_model.model.state_dict() if ".lora_" in k}
    if result.unexpected_keys or expected != set(lora_state):
        raise ValueError(f"peft injected other LoRA layers than the model has: "
                         f"{sorted(expected ^ set(lora_state))[:5]}")
    peft_model.eval()
    return peft_model


def export_lora(model, output_dir: str, base_model_name_or_path: str | None = None) -> dict[str, str]:
    """Writes `<output_dir>/lora_adapter/` (peft format: adapter_model.safetensors + adapter_config.json, plus the
    base model's AdaTAD config.json) and `<output_dir>/merged_model/` (a plain AdaTAD model, LoRA merged into the
    VideoMAE weights with `merge_and_unload`, loadable with `AdaTADForActionDetection.from_pretrained`).

    The adapter folder holds the LoRA weights and, as `modules_to_save`, every trained module outside the frozen
    backbone (temporal adapters, detector): it reloads onto the pretrained VideoMAE alone
    (`AdaTADForActionDetection.from_lora_adapter`).
    """
    if base_model_name_or_path and os.path.isdir(base_model_name_or_path):
        base_model_name_or_path = os.path.abspath(base_model_name_or_path)
    with torch.no_grad():
        peft_model = build_peft_model(model, base_model_name_or_path)
        adapter_dir = os.path.join(output_dir, ADAPTER_DIR)
        peft_model.save_pretrained(adapter_dir)
        peft_model.get_base_model().config.save_pretrained(adapter_dir)
        merged = peft_model.merge_and_unload()
        merged_dir = os.path.join(output_dir, MERGED_DIR)
        merged.save_pretrained(merged_dir)
    logger.info("LoRA exports: adapter %s, merged model %s", adapter_dir, merged_dir)
    return {"adapter": adapter_dir, "merged": merged_dir}
