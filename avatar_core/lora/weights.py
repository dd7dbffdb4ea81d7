"""Read / write the weight of one named linear layer, whatever its storage. The only place LoRA touches weights.

Storage kinds handled (the layer family the model uses today):
* ``nn.Linear`` (bf16 / fp16 / fp32): the merged weight is rounded once to the stored dtype.
* ``FP8Linear`` (model/fp8.py, e4m3 + per-tensor scale): dequantise, add, requantise with a fresh scale.
  Cost: one extra fp8 rounding of the merged weight (the same relative error as fp8 storage itself);
  no cost per step.
* Block swap / low memory (model/offload.py): between forwards a swapped block's parameters ARE its pinned
  host tensors, so every write is an in-place ``copy_`` into the existing storage (never a new Parameter);
  the next prefetch then streams the patched weight.

A snapshot holds the stored tensors bit for bit (on the CPU), so restoring it is exact.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..model.fp8 import FP8Linear, quantize_weight

LINEAR_TYPES = (nn.Linear, FP8Linear)
Snapshot = dict[str, torch.Tensor]


def linear_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Every patchable linear layer by module name (the names of the official state dict, minus `.weight`)."""
    return {name: m for name, m in model.named_modules() if isinstance(m, LINEAR_TYPES)}


def get_linear(model: nn.Module, name: str) -> nn.Module:
    mod = model.get_submodule(name)
    if not isinstance(mod, LINEAR_TYPES):
        raise TypeError(f"{name} is a {type(mod).__name__}, not a linear layer LoRA can patch")
    return mod


def read_weight(mod: nn.Module, device: torch.device | str | None = None) -> torch.Tensor:
    """The layer's effective weight (out, in) in float32 on `device` (default: where it is stored)."""
    w = mod.weight.detach()
    device = w.device if device is None else torch.device(device)
    if isinstance(mod, FP8Linear):
        return w.to(device).float() * mod.scale_weight.detach().to(device).float()
    return w.to(device=device, dtype=torch.float32)


def write_weight(mod: nn.Module, weight: torch.Tensor) -> None:
    """Store `weight` (out, in; any float dtype/device) into the layer, in place."""
    if tuple(weight.shape) != tuple(mod.weight.shape):
        raise ValueError(f"weight {tuple(weight.shape)} does not fit a layer of {tuple(mod.weight.shape)}")
    with torch.no_grad():
        if isinstance(mod, FP8Linear):
            q, scale = quantize_weight(weight)
            mod.weight.data.copy_(q)
            mod.scale_weight.copy_(scale)
        else:
            mod.weight.data.copy_(weight)


def snapshot(mod: nn.Module) -> Snapshot:
    """The stored tensors of the layer's weight, bit for bit, on the CPU."""
    snap = {"weight": mod.weight.detach().to("cpu", copy=True)}
    if isinstance(mod, FP8Linear):
        snap["scale_weight"] = mod.scale_weight.detach().to("cpu", copy=True)
    return snap


def restore(mod: nn.Module, snap: Snapshot) -> None:
    """Put a snapshot back (exactly the bits that were stored)."""
    with torch.no_grad():
        mod.weight.data.copy_(snap["weight"])
        if "scale_weight" in snap:
            mod.scale_weight.copy_(snap["scale_weight"])


def snapshot_bytes(snap: Snapshot) -> int:
    return sum(t.numel() * t.element_size() for t in snap.values())
