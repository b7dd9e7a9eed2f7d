"""What multi-process training needs beyond accelerate: reading the DeepSpeed config (ZeRO stage), building models
outside `zero.Init`, DeepSpeed's 0-dim parameter bug, and ZeRO-3 partitions (slicing whole tensors into this rank's
partition and gathering partitions back), which the EMA and the LoRA export use."""

from __future__ import annotations

import contextlib

import torch
from torch import nn
from transformers import TrainingArguments


def _deepspeed_config(args: TrainingArguments) -> dict | None:
    """The DeepSpeed config of a `deepspeed` recipe key or of an `accelerate launch` DeepSpeed config; None without."""
    if getattr(args, "hf_deepspeed_config", None) is not None:
        return args.hf_deepspeed_config.config
    plugin = getattr(args, "deepspeed_plugin", None)
    return plugin.deepspeed_config if plugin is not None else None


def zero3_gathers_on_save(args: TrainingArguments) -> bool:
    zero = (_deepspeed_config(args) or {}).get("zero_optimization", {})
    value = zero.get("stage3_gather_16bit_weights_on_model_save", zero.get("gather_16bit_weights_on_model_save"))
    return value is True or (isinstance(value, str) and value.lower() == "true")


@contextlib.contextmanager
def outside_zero_init():
    """Builds models whole even when a ZeRO-3 config is active. transformers' `from_pretrained` otherwise builds every
    model inside `deepspeed.zero.Init`, which partitions each parameter as it is created, so code that copies
    weights between models (AdaTAD's VideoMAE loading, FG-CLIP's CLIP loading, the EMA's reference) sees empty
    tensors. The DeepSpeed engine partitions the whole model when it starts. The cost: each process holds the whole
    model once while it is built, which for these models (<= ViT-L) is far below the activations."""
    from transformers.integrations import deepspeed as hf_deepspeed

    ref = hf_deepspeed._hf_deepspeed_config_weak_ref
    config = ref() if ref is not None else None
    if config is None:
        yield
        return
    hf_deepspeed.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        hf_deepspeed.set_hf_deepspeed_config(config)


def deepspeed_zero_stage(args: TrainingArguments) -> int | None:
    """The ZeRO stage of a `deepspeed` recipe key or of an `accelerate launch` DeepSpeed config; None without one."""
    config = _deepspeed_config(args)
    return int(config.get("zero_optimization", {}).get("stage", 0)) if config is not None else None


def patch_deepspeed_scalar_broadcast() -> None:
    """DeepSpeed 0.19.8 broadcasts weights as `p.data.view(torch.uint8)`, which raises "self.dim() cannot be 0 to view
    Float as Byte" for 0-dim parameters (AdaTAD's per-level regression scales, CLIP's logit_scale). It does so in
    three places: the engine's initial broadcast of rank 0's weights (ZeRO-0/1/2), the ZeRO-3 conversion of a
    whole parameter (`Init._zero_init_param`) and the exit of `GatheredParameters(modifier_rank=...)` (ZeRO-3 saving).
    In each, a 0-dim parameter is presented as a 1-element view of the same storage while DeepSpeed's own code runs;
    ZeRO-3 keeps its true shape (`ds_shape`), which every later gather uses."""
    from deepspeed.runtime.engine import DeepSpeedEngine
    from deepspeed.runtime.zero import partition_parameters as zero

    if getattr(DeepSpeedEngine._broadcast_model, "_hf_vtrain_scalar_safe", False):
        return

    @contextlib.contextmanager
    def as_1d(params):
        scalars = [p for p in params if p.data.dim() == 0]
        for param in scalars:
            param.data = param.data.view(1)
        try:
            yield
        finally:
            for param in scalars:
                if param.data.dim() == 1 and param.data.numel() == 1:
                    param.data = param.data.view(())

    broadcast_model = DeepSpeedEngine._broadcast_model

    def _broadcast_model(engine):
        with as_1d(list(engine.module.parameters())):
            broadcast_model(engine)

    zero_init_param = zero.Init._zero_init_param

    def _zero_init_param(self, param):
        scalar = param.data.dim() == 0
        with as_1d([param]):
            zero_init_param(self, param)
        if scalar:
            param.ds_shape = torch.Size([])

    gathered_exit = zero.GatheredParameters.__exit__

    def __exit__(self, *exc):
        with as_1d(getattr(self, "params", None) or []):
            return gathered_exit(self, *exc)

    _broadcast_model._hf_vtrain_scalar_safe = True
    DeepSpeedEngine._broadcast_model = _broadcast_model
    zero.Init._zero_init_param = _zero_init_param
    zero.GatheredParameters.__exit__ = __exit__


def is_zero3_partitioned(tensor: torch.Tensor) -> bool:
    """A parameter DeepSpeed ZeRO-3 has partitioned (its data lives in `ds_tensor`)."""
    return getattr(tensor, "ds_tensor", None) is not None


def partition_of(whole: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """This rank's ZeRO-3 partition of a whole tensor of `param`'s shape, laid out as DeepSpeed does: the flattened
    tensor padded with zeros to world_size x partition_size, rank r holding elements [r * size, (r + 1) * size)."""
    import torch.distributed as dist

    if tuple(whole.shape) != tuple(param.ds_shape):
        raise ValueError(f"shape {tuple(whole.shape)} does not match the ZeRO-3 parameter's {tuple(param.ds_shape)}")
    size, rank = param.ds_tensor.numel(), dist.get_rank(group=param.ds_process_group)
    flat = whole.detach().reshape(-1).to(device=param.ds_tensor.device, dtype=torch.float32)
    part = torch.zeros(size, dtype=torch.float32, device=flat.device)
    begin, end = min(rank * size, flat.numel()), min((rank + 1) * size, flat.numel())
    part[: end - begin] = flat[begin:end]
    return part


def gather_partitions(parts: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """{name: (this rank's partition, its ZeRO-3 parameter)} -> {name: whole fp32 tensor}, in one all_gather of every
    partition laid end to end (a collective: every rank calls with the same names)."""
    import torch.distributed as dist

    if not parts:
        return {}
    from deepspeed.accelerator import get_accelerator

    names = sorted(parts)
    group = parts[names[0]][1].ds_process_group
    # On the accelerator: with offload_param the partitions live in CPU memory, which NCCL cannot send.
    device = torch.device(get_accelerator().current_device_name())
    flat = torch.cat([parts[n][0].float().reshape(-1) for n in names]).to(device)
    pieces = [torch.empty_like(flat) for _ in range(dist.get_world_size(group=group))]
    dist.all_gather(pieces, flat, group=group)
    out, offset = {}, 0
    for name in names:
        part, param = parts[name]
        size = part.numel()
        whole = torch.cat([piece[offset: offset + size] for piece in pieces])[: param.ds_numel]
        out[name] = whole.reshape(param.ds_shape)
        offset += size
    return out


def refresh_gathered(model: nn.Module, names: set[str]) -> None:
    """After partitions changed in place: ZeRO-3 parameters that are held whole between forwards (those under the
    persistence threshold) get their whole value again from the partitions, as DeepSpeed does after each step."""
    if not names:
        return
    from deepspeed.runtime.zero.partition_parameters import ZeroParamStatus

    held = {n: p for n, p in model.named_parameters() if n in names and p.ds_status == ZeroParamStatus.AVAILABLE}
    for name, whole in gather_partitions({n: (p.ds_tensor, p) for n, p in held.items()}).items():
        held[name].data.copy_(whole.to(held[name].dtype))
