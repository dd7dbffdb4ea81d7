"""Apply LoRA files to a loaded Avatar transformer as weight patches, and take them off exactly.

    lora = load_lora("style.safetensors", model)          # keys mapped, counts checked
    set_loras(model, [(lora, 0.8)])                       # patched (originals backed up on the CPU)
    set_loras(model, [(lora, 0.5)])                       # back to the originals, then patched again
    set_loras(model, [])                                  # the original weights, bit for bit

Model of behaviour: ComfyUI's ModelPatcher (patches declared, applied at load, a backup of every touched
weight, unpatch = restore the backup). The backup costs host RAM equal to the stored size of the patched
weights (a LoRA on every block linear of the 13B model: ~24 GB in bf16, ~12 GB in fp8); nothing extra on
the GPU. Several LoRAs on one layer are summed in float32 and written once (one fp8 rounding).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from ..weight_files import read_lora_file
from .keys import Target, alias_table, group_factors, resolve
from .weights import Snapshot, get_linear, linear_layers, read_weight, restore, snapshot, write_weight

log = logging.getLogger(__name__)


class LoraError(ValueError):
    """A LoRA file that does not fit the Avatar model."""


@dataclass(frozen=True)
class LoraPatch:
    target: Target
    down: torch.Tensor   # (rank, in)
    up: torch.Tensor     # (rows, rank)
    scale: float         # alpha / rank (1 without alpha, as PEFT)

    def delta(self, device: torch.device) -> torch.Tensor:
        return (self.up.to(device, torch.float32) @ self.down.to(device, torch.float32)) * self.scale


@dataclass(frozen=True)
class LoraFile:
    name: str
    patches: tuple[LoraPatch, ...]
    matched: int                      # LoRA modules mapped to a layer
    unmatched: tuple[str, ...]        # LoRA modules (or stray keys) with no layer in this model
    path: str | None = None           # the file it was read from (None: a state dict)

    def summary(self) -> str:
        return f"{self.name}: {self.matched} LoRA modules applied, {len(self.unmatched)} not matched"


def _read(source: str | Path | dict[str, torch.Tensor]) -> tuple[str, dict[str, torch.Tensor]]:
    if isinstance(source, dict):
        return "<state dict>", source
    return Path(source).name, read_lora_file(source)  # the file-level checks (weight_files.LORA)


def load_lora(source: str | Path | dict[str, torch.Tensor], model: nn.Module) -> LoraFile:
    """Read a LoRA (file or state dict) and map every key to the model's layers, checking shapes.

    No key matches -> LoraError (a LoRA for another model family). Some keys unmatched -> a warning with counts.
    """
    name, sd = _read(source)
    layers = linear_layers(model)
    dotted, underscore = alias_table(list(layers), model.cfg)
    groups, stray = group_factors(sd)
    patches, unmatched = [], list(stray)
    for base, parts in groups.items():
        target = resolve(base, dotted, underscore)
        if target is None or "down" not in parts or "up" not in parts:
            unmatched.append(base)
            continue
        patches.append(_patch(name, base, parts, target, layers[target.module]))
    if not groups:
        raise LoraError(f"{name}: holds no LoRA factors (lora_down/lora_up or lora_A/lora_B keys, e.g. "
                        f"{', '.join(sorted(sd)[:3])}); LoHa, LoKr and full-weight diffs are not supported.")
    if not patches:
        example = ", ".join(sorted(sd)[:3])
        raise LoraError(f"{name}: none of its {len(groups)} LoRA modules matches the HunyuanVideo-Avatar model "
                        f"(keys such as {example}). It is a LoRA for another model family; use a HunyuanVideo "
                        "LoRA (ComfyUI, diffusers or musubi-tuner layout).")
    path = None if isinstance(source, dict) else str(source)
    lora = LoraFile(name, tuple(patches), len(patches), tuple(sorted(unmatched)), path)
    if unmatched:
        log.warning("%s; not matched (e.g. %s)", lora.summary(), ", ".join(lora.unmatched[:3]))
    return lora


def _patch(name: str, base: str, parts: dict[str, torch.Tensor], target: Target, layer: nn.Module) -> LoraPatch:
    down, up = parts["down"].flatten(1), parts["up"].flatten(1)
    rows = layer.weight.shape[0] if target.rows is None else target.rows[1] - target.rows[0]
    if down.shape[0] != up.shape[1] or up.shape[0] != rows or down.shape[1] != layer.weight.shape[1]:
        raise LoraError(f"{name}: {base} has factors {tuple(up.shape)} x {tuple(down.shape)}, but {target.module} "
                        f"needs ({rows}, r) x (r, {layer.weight.shape[1]}). The LoRA was trained for a model of "
                        "another size or family.")
    rank = down.shape[0]
    alpha = parts.get("alpha")
    scale = 1.0 if alpha is None else float(alpha) / rank
    return LoraPatch(target, down, up, scale)


@dataclass
class LoraState:
    """What is applied to one model: the request that produced it and the originals of touched layers."""

    applied: tuple = ()               # ((LoraFile, strength), ...) kept alive while applied
    backups: dict[str, Snapshot] = field(default_factory=dict)


STATE_ATTR = "_avatar_lora_state"


def set_loras(model: nn.Module, loras: Sequence[tuple[LoraFile, float]],
              compute_device: torch.device | str | None = None) -> None:
    """Make `loras` (file, strength) the model's patches: restore the originals, then patch. Idempotent.

    compute_device: where the float32 merge runs (e.g. the GPU for block-swapped weights held on the host).
    Must not run during a forward (block swap streams the stored weights).
    """
    state: LoraState = getattr(model, STATE_ATTR, None) or LoraState()
    request = tuple((lf, float(s)) for lf, s in loras if s != 0)
    if _same(request, state.applied):
        return
    for name, snap in state.backups.items():
        restore(get_linear(model, name), snap)
    state = LoraState()
    setattr(model, STATE_ATTR, state)  # backups recorded as taken: an error midway still restores next time
    for name, parts in _by_layer([(lf, s) for lf, s in loras if s != 0]).items():
        layer = get_linear(model, name)
        state.backups[name] = snapshot(layer)
        device = torch.device(compute_device) if compute_device is not None else layer.weight.device
        w = read_weight(layer, device)                       # (out, in) float32, one layer at a time
        for patch, strength in parts:
            rows = patch.target.rows or (0, w.shape[0])
            w[rows[0]:rows[1]] += patch.delta(device) * strength
        write_weight(layer, w)
        del w
    state.applied = request


def _same(a: tuple, b: tuple) -> bool:
    """Same files (the objects, not equal contents) at the same strengths, in order."""
    return len(a) == len(b) and all(x is y and sx == sy for (x, sx), (y, sy) in zip(a, b))


def _by_layer(loras) -> dict[str, list[tuple[LoraPatch, float]]]:
    out: dict[str, list[tuple[LoraPatch, float]]] = {}
    for lf, strength in loras:
        for p in lf.patches:
            out.setdefault(p.target.module, []).append((p, strength))
    return out


def backup_bytes(model: nn.Module) -> int:
    state = getattr(model, STATE_ATTR, None)
    return 0 if state is None else sum(t.numel() * t.element_size() for s in state.backups.values() for t in s.values())


def set_lora_files(model: nn.Module, files: Sequence[tuple[str, float]],
                   compute_device: torch.device | str | None = None) -> None:
    """`set_loras` from (path, strength) pairs, each file read once per model (plain data: what a worker
    process of the multi-GPU pool can receive in a request)."""
    cache: dict[tuple[str, float], LoraFile] = model.__dict__.setdefault("_avatar_lora_files", {})
    loras = []
    for path, strength in files:
        key = (str(Path(path).resolve()), Path(path).stat().st_mtime)
        if key not in cache:
            cache[key] = load_lora(path, model)
        loras.append((cache[key], strength))
    set_loras(model, loras, compute_device)
