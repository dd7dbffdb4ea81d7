"""Trainable adapters on the frozen base: LoRA on chosen block linears, the Audio Emotion Module (AEM).

A LoRA adapter is a weight patch (the same interface as a LoRA file's patches, model/linear.py): the layer
applies it where its weight is used, `W + (up @ down) * alpha / rank`, so gradients reach the factors and
every path that reads the weight (`weight_rows` / `rows`) sees it, with no change to the model code. Cost
per use: one rank-r product of the weight's size (cheaper than a per-token low-rank path for the 13B model's
~20k tokens per window: r * out * in vs. tokens * r * (out + in)), and one transient weight-sized tensor;
gradient checkpointing recomputes it in backward. `up` starts at zero, so training starts from exactly the
base model. The forward sees the merged weight rounded to the base dtype, as the LoRA loader produces it
at inference; the file is written through the one LoRA format (avatar_core/lora/format.py).

A base stored in fp8 (model/fp8.py) trains the same way: the member dequantises its frozen fp8 weight to
the compute dtype where it is used and the adapter adds to that, so the gradients are those of a bf16 base
holding the fp8-rounded weights (the fp8 tensor-core product is skipped while an adapter is attached).
"""

from __future__ import annotations

import contextlib
import functools
import math
import re

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint, noop_context_fn

from ..lora.format import write_state_dict
from ..model.emotion import AudioEmotionModule, EmotionConfig
from ..model.linear import WeightOwner
from ..model.offload import BlockSwap


class LoraDelta(nn.Module):
    """A trainable LoRA patch: W -> W + (up @ down) * alpha / rank; factors kept in float32 for the optimiser."""

    def __init__(self, out_features: int, in_features: int, rank: int, alpha: float, device=None):
        super().__init__()
        down = torch.empty(rank, in_features)
        nn.init.kaiming_uniform_(down, a=math.sqrt(5))  # as nn.Linear's default init; drawn on the CPU (seeded)
        self.down = nn.Parameter(down.to(device))
        self.up = nn.Parameter(torch.zeros(out_features, rank, device=device))
        self.rank, self.alpha = rank, float(alpha)

    def patch_weight(self, weight: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
        delta = (self.up.to(weight.dtype) @ self.down.to(weight.dtype)) * (self.alpha / self.rank)
        return weight.add_(delta if strength == 1.0 else strength * delta)

    def patch_bias(self, bias: torch.Tensor | None, strength: float = 1.0) -> torch.Tensor | None:
        return bias


def parse_blocks(spec: str, cfg) -> list[str]:
    """'all' | 'double' | 'single' | 'double:0-9,single:30-39' -> block module names."""
    ranges = {"double": cfg.depth_double, "single": cfg.depth_single}
    out: list[str] = []
    for part in [p.strip() for p in spec.split(",") if p.strip()]:
        kind, _, idx = part.partition(":")
        kinds = ["double", "single"] if kind == "all" else [kind]
        for k in kinds:
            if k not in ranges:
                raise ValueError(f"lora_blocks: unknown block kind {k!r} in {spec!r} (use all, double, single, "
                                 "double:0-9, single:0-39)")
            n = ranges[k]
            if idx:
                a, _, b = idx.partition("-")
                picked = range(int(a), int(b or a) + 1)
                if picked.stop > n:
                    raise ValueError(f"lora_blocks: {part!r} goes past the model's {n} {k} blocks")
            else:
                picked = range(n)
            out += [f"{k}_blocks.{i}" for i in picked]
    if not out:
        raise ValueError(f"lora_blocks {spec!r} selects no block")
    return list(dict.fromkeys(out))


def add_lora(model: nn.Module, blocks: str = "all", rank: int = 32, alpha: float = 32.0,
             layers: str = ".*", device: torch.device | str | None = None) -> dict[str, LoraDelta]:
    """A trainable adapter on every linear of the chosen blocks whose name (inside the block) matches `layers`;
    on `device` (default: where the layer's weight is; a block-swapped layer's weight is in CPU memory)."""
    pattern = re.compile(layers)
    adapters: dict[str, LoraDelta] = {}
    for block_name in parse_blocks(blocks, model.cfg):
        for sub, mod in model.get_submodule(block_name).named_modules():
            if not isinstance(mod, WeightOwner) or not pattern.fullmatch(sub):
                continue
            delta = LoraDelta(mod.out_features, mod.in_features, rank, alpha,
                              device=mod.weight.device if device is None else device)
            mod.add_adapter(delta)
            adapters[f"{block_name}.{sub}"] = delta
    if not adapters:
        raise ValueError(f"lora_layers {layers!r} matches no linear layer in blocks {blocks!r}")
    return adapters


def remove_lora(model: nn.Module) -> None:
    """Drop the trainable adapters (the base weights were never changed)."""
    for mod in model.modules():
        if isinstance(mod, WeightOwner):
            mod.clear_adapters()


def lora_state_dict(adapters: dict[str, LoraDelta], dtype: torch.dtype = torch.bfloat16) -> dict[str, torch.Tensor]:
    """The trained adapters as a LoRA file's state dict (lora/format.py's written layout: ComfyUI's, which
    ComfyUI's own loader for HunyuanVideo and our Avatar LoRA node read)."""
    return write_state_dict({name: (d.down, d.up, d.alpha) for name, d in adapters.items()}, dtype)


def attach_new_aem(model: nn.Module, every: int = 2) -> AudioEmotionModule:
    """A fresh AEM (zero gates: the model's output is unchanged at step 0) after every `every`-th double block."""
    cfg = model.cfg
    ecfg = EmotionConfig(hidden_size=cfg.hidden_size, num_heads=cfg.num_heads, latent_channels=cfg.in_channels,
                         after_double=tuple(range(0, cfg.depth_double, every)))
    aem = AudioEmotionModule(ecfg).to(model.img_in.proj.weight.device)
    model.aem = aem
    return aem


def enable_gradient_checkpointing(model: nn.Module, swap: BlockSwap | None = None) -> None:
    """Recompute every block (and the audio/emotion injection after double blocks) in backward. With a block
    swap, a swapped block's recomputation stages its weights again (the hooks that stage them in forward do
    not run when checkpointing calls the block's forward in backward)."""
    for block in [*model.double_blocks, *model.single_blocks]:
        context = noop_context_fn
        if swap is not None and swap.is_swapped(block):
            context = functools.partial(_recompute_staged, swap, block)
        block.forward = functools.partial(_checkpointed, block.forward, context)
    model._after_double = functools.partial(_checkpointed, model._after_double, noop_context_fn)


def _recompute_staged(swap: BlockSwap, block: nn.Module):
    return contextlib.nullcontext(), swap.recomputing(block)  # (forward: the hooks stage; recomputation: we do)


def _checkpointed(fn, context, *args, **kwargs):
    if not torch.is_grad_enabled():
        return fn(*args, **kwargs)
    return checkpoint(fn, *args, use_reentrant=False, context_fn=context, **kwargs)
