"""Exponential moving average of a model's weights: updated every optimizer step, swapped in for evaluation, saved
and restored with every checkpoint; sharded like the optimizer state under DeepSpeed ZeRO-3."""

from __future__ import annotations

import contextlib
import math

import torch
from torch import nn

from .distributed import gather_partitions, is_zero3_partitioned, partition_of, refresh_gathered


def ema_half_life_steps(decay: float) -> float:
    """Optimizer steps after which an EMA of decay `decay` per step weighs a value half: log 0.5 / log decay."""
    return math.log(0.5) / math.log(decay)


def ema_decay_for_half_life(half_life_epochs: float, steps_per_epoch: int) -> float:
    """The decay per optimizer step whose half-life is `half_life_epochs` epochs of `steps_per_epoch` steps."""
    return 0.5 ** (1.0 / (half_life_epochs * steps_per_epoch))


def ema_report(decay: float, steps_per_epoch: int) -> str:
    steps = ema_half_life_steps(decay)
    return (f"EMA: decay {decay:.6g} per optimizer step = half-life {steps:.1f} steps = {steps / steps_per_epoch:.2f} "
            f"epochs ({steps_per_epoch} optimizer steps per epoch)")


class ModelEMA:
    """Exponential moving average of the trainable parameters and floating-point buffers.

    Frozen parameters are not copied: their average is themselves. `swapped()` puts the EMA values into the model
    for evaluation and restores the raw ones afterwards.

    Under DeepSpeed ZeRO-3 every parameter is a flat partition per rank (`param.ds_tensor`; `param.data` is empty
    outside the forward). The EMA of such a parameter is kept the same way: each rank averages its own partition, as
    the optimizer updates it, so the EMA is sharded like the optimizer state and a step costs no communication.
    `state_dict_for` gathers the partitions into whole tensors (for saving) and `load_from` slices whole tensors into
    this rank's partition (for resuming); both are collectives every rank calls. The shadow of a parameter is made
    whole at creation (the engine partitions the model later) and sliced the first time it is seen partitioned.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.num_updates = 0
        persistent = set(model.state_dict(keep_vars=True))
        # Which tensors are tracked is fixed at creation; looking them up by name each step is a dict access.
        self.names = [n for n, p in model.named_parameters() if p.requires_grad] + [
            n for n, b in model.named_buffers() if b.is_floating_point() and n in persistent
        ]
        if any(is_zero3_partitioned(t) for _, t in self._tracked(model)):
            raise ValueError("the EMA must be created from whole parameters, before DeepSpeed ZeRO-3 partitions them")
        self.shadow = {name: t.detach().clone().float() for name, t in self._tracked(model)}
        self.partitioned: set[str] = set()  # names whose shadow is this rank's ZeRO-3 partition

    def _tracked(self, model: nn.Module):
        tensors = {**dict(model.named_parameters()), **dict(model.named_buffers())}
        for name in self.names:
            yield name, tensors[name]

    def _live(self, model: nn.Module):
        """(name, the tensor the EMA averages: the ZeRO-3 partition or the tensor itself). A shadow still whole of a
        parameter partitioned since the last call is sliced first."""
        for name, tensor in self._tracked(model):
            if is_zero3_partitioned(tensor):
                if name not in self.partitioned:
                    self.shadow[name] = partition_of(self.shadow[name], tensor)
                    self.partitioned.add(name)
                yield name, tensor.ds_tensor
            else:
                if name in self.partitioned:
                    raise RuntimeError(f"EMA of {name} is a ZeRO-3 partition but the parameter is whole")
                yield name, tensor

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.num_updates += 1
        shadows, values = [], []
        for name, tensor in self._live(model):
            shadow = self.shadow[name]
            if shadow.device != tensor.device:
                shadow = self.shadow[name] = shadow.to(tensor.device)
            shadows.append(shadow)
            values.append(tensor.detach().float())
        # shadow = shadow * decay + value * (1 - decay), the same two elementwise operations per tensor as
        # `shadow.mul_(decay).add_(value, alpha=1 - decay)`, in one call over all tensors (one kernel launch per
        # operation on a GPU; on the CPU it saves the per-tensor Python overhead)
        torch._foreach_mul_(shadows, self.decay)
        torch._foreach_add_(shadows, values, alpha=1.0 - self.decay)

    @contextlib.contextmanager
    def swapped(self, model: nn.Module):
        saved = {}
        with torch.no_grad():
            for name, tensor in self._live(model):
                saved[name] = tensor.detach().clone()
                tensor.copy_(self.shadow[name].to(tensor.dtype))
            refresh_gathered(model, self.partitioned)
        try:
            yield
        finally:
            with torch.no_grad():
                for name, tensor in self._live(model):
                    tensor.copy_(saved[name])
                refresh_gathered(model, self.partitioned)

    def state_dict_for(self, model: nn.Module, whole: dict[str, torch.Tensor] | None = None):
        """The model's full state dict with EMA values in place of the tracked entries. Under ZeRO-3, `whole` is the
        engine's gathered state dict (None on ranks other than 0, which return None), and every rank must call."""
        for _ in self._live(model):  # only for its slicing of shadows still whole
            pass
        shadow = {name: value for name, value in self.shadow.items() if name not in self.partitioned}
        if self.partitioned:
            params = dict(model.named_parameters())
            shadow.update(gather_partitions({n: (self.shadow[n], params[n]) for n in self.partitioned}))
            if whole is None:
                return None
            state = dict(whole)
            expected = set(model.state_dict())
            if set(state) != expected:
                raise RuntimeError(f"the gathered ZeRO-3 state dict differs from the model's: missing "
                                   f"{sorted(expected - set(state))[:5]}, unexpected {sorted(set(state) - expected)[:5]}")
        else:
            state = {k: v.detach() for k, v in model.state_dict().items()}
        for name, value in shadow.items():
            state[name] = value.to(device=state[name].device, dtype=state[name].dtype)
        return state

    def load_from(self, state: dict[str, torch.Tensor], num_updates: int, model: nn.Module | None = None) -> None:
        """Whole tensors in; a ZeRO-3 partitioned parameter of `model` keeps this rank's slice."""
        missing = [name for name in self.shadow if name not in state]
        if missing:
            raise ValueError(f"EMA checkpoint lacks {len(missing)} tracked tensors, e.g. {missing[:3]}")
        tensors = dict(self._tracked(model)) if model is not None else {}
        for name in self.shadow:
            value = state[name].detach().clone().float()
            if name in tensors and is_zero3_partitioned(tensors[name]):
                self.shadow[name] = partition_of(value, tensors[name])
                self.partitioned.add(name)
            else:
                if name in self.partitioned:
                    raise RuntimeError(f"EMA of {name} is a ZeRO-3 partition: pass the model to load_from")
                self.shadow[name] = value.to(self.shadow[name].device)
        self.num_updates = num_updates
