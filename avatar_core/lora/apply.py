"""Apply LoRA files to a loaded Avatar transformer as weight patches, and take them off exactly.

    lora = load_lora("style.safetensors", model)          # keys mapped, shapes checked
    set_loras(model, [(lora, 0.8)])                       # patched (originals backed up on the CPU)
    set_loras(model, [(lora, 0.5)])                       # back to the originals, then patched again
    set_loras(model, [])                                  # the original weights, bit for bit

A file becomes typed patches (model/patches.py: LoRA, DoRA, bias and full diffs, in ComfyUI's arithmetic);
each linear layer keeps its own (model/linear.py `set_patches`): merged into its stored weight from a
backup of the original, as ComfyUI's ModelPatcher does. The backup costs host RAM equal to the stored size
of the patched weights (a LoRA on every block linear of the 13B model: ~24 GB in bf16, ~12 GB in fp8);
nothing extra on the GPU. Several patches on one layer are applied in float32, in order, and written once
(one fp8 rounding).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from ..model.linear import WeightOwner, WeightPatch, members
from ..model.patches import Diff, LowRank
from ..weight_files import read_lora_file
from .format import LoraError, Target, alias_table, parse, resolve

log = logging.getLogger(__name__)
__all__ = ["LoraError", "LoraFile", "LoraPatch", "backup_bytes", "load_lora", "set_lora_files", "set_loras"]


@dataclass(frozen=True)
class LoraPatch:
    target: Target
    patch: WeightPatch   # a model.patches.LowRank or Diff


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
    layers = members(model)
    dotted, underscore = alias_table(list(layers), model.cfg)
    parsed = parse(sd, name)
    patches, unmatched, matched = [], list(parsed.stray), 0
    for base, parts in parsed.modules.items():
        target = resolve(base, dotted, underscore)
        found = [] if target is None else _patches(name, base, parts, target, layers[target.module], unmatched)
        if not found:
            unmatched.append(base)
            continue
        patches += [LoraPatch(target, p) for p in found]
        matched += 1
    if not parsed.modules:
        raise LoraError(f"{name}: holds no LoRA tensors (lora_down/lora_up, lora_A/lora_B, diff or dora_scale keys, "
                        f"e.g. {', '.join(sorted(sd)[:3])}); LoHa, LoKr and full checkpoints are not supported.")
    if not patches:
        example = ", ".join(sorted(sd)[:3])
        raise LoraError(f"{name}: none of its {len(parsed.modules)} LoRA modules matches the HunyuanVideo-Avatar model "
                        f"(keys such as {example}). It is a LoRA for another model family; use a HunyuanVideo "
                        "LoRA (ComfyUI, diffusers or musubi-tuner layout).")
    path = None if isinstance(source, dict) else str(source)
    lora = LoraFile(name, tuple(patches), matched, tuple(sorted(unmatched)), path)
    if unmatched:
        log.warning("%s; not matched (e.g. %s)", lora.summary(), ", ".join(lora.unmatched[:3]))
    return lora


def _patches(name: str, base: str, parts: dict[str, torch.Tensor], target: Target, layer: WeightOwner,
             unmatched: list[str]) -> list[WeightPatch]:
    """One module's tensors -> its patches (shapes checked against the layer); [] when there is nothing to apply."""
    rows = layer.out_features if target.rows is None else target.rows[1] - target.rows[0]
    n_in = layer.in_features

    def check(kind: str, shape: tuple[int, ...], *allowed: tuple[int, ...]) -> None:
        if shape not in allowed:
            raise LoraError(f"{name}: {base} has a {kind} of shape {shape}, but {target.module} needs "
                            f"{' or '.join(str(a) for a in allowed)}. The LoRA was trained for a model of another "
                            "size or family.")
    bias = parts.get("diff_b"), parts.get("up_bias")
    dropped = layer.bias is None and any(b is not None for b in bias)
    if dropped:  # as ComfyUI: a change of a bias the layer does not have is not loaded (reported)
        bias = None, None
    out: list[WeightPatch] = []
    if "down" in parts and "up" in parts:
        if "diff" in parts:
            raise LoraError(f"{name}: {base} holds both LoRA factors and a full diff; keep one of them")
        down, up = parts["down"].flatten(1), parts["up"].flatten(1)
        if down.shape[0] != up.shape[1] or up.shape[0] != rows or down.shape[1] != n_in:
            raise LoraError(f"{name}: {base} has factors {tuple(up.shape)} x {tuple(down.shape)}, but {target.module} "
                            f"needs ({rows}, r) x (r, {n_in}). The LoRA was trained for a model of another size or "
                            "family.")
        magnitude = parts.get("dora_scale")
        if magnitude is not None:
            magnitude = magnitude.reshape(-1, 1) if magnitude.dim() == 1 else magnitude.flatten(1)
            check("dora_scale", tuple(magnitude.shape), (rows, 1), (1, n_in))
        if bias[1] is not None:
            check("lora_B bias", tuple(bias[1].shape), (rows,))
        alpha = parts.get("alpha")
        out.append(LowRank(up, down, None if alpha is None else float(alpha), target.rows, magnitude, bias[1]))
    elif "diff" in parts:
        check("diff", tuple(parts["diff"].shape), (rows, n_in))
    if "diff" in parts or bias[0] is not None:
        if bias[0] is not None:
            check("diff_b", tuple(bias[0].shape), (rows,))
        out.append(Diff(parts.get("diff"), bias[0], target.rows))
    if out and dropped:
        unmatched.append(f"{base} (its bias change: {target.module} has no bias)")
    return out


def set_loras(model: nn.Module, loras: Sequence[tuple[LoraFile, float]],
              compute_device: torch.device | str | None = None) -> None:
    """Make `loras` (file, strength) the model's patches: each layer restores its original, then patches. Idempotent.

    compute_device: where the float32 merge runs (e.g. the GPU for block-swapped weights held on the host).
    Must not run during a forward. An error midway leaves every layer restorable: the next call redoes it.
    """
    device = None if compute_device is None else torch.device(compute_device)
    by_layer = _by_layer([(lf, s) for lf, s in loras if s != 0])
    for name, layer in members(model).items():
        layer.set_patches(by_layer.get(name, ()), device)


def _by_layer(loras) -> dict[str, list[tuple[WeightPatch, float]]]:
    out: dict[str, list[tuple[WeightPatch, float]]] = {}
    for lf, strength in loras:
        for p in lf.patches:
            out.setdefault(p.target.module, []).append((p.patch, float(strength)))
    return out


def backup_bytes(model: nn.Module) -> int:
    """Host memory held by the backups of patched layers."""
    return sum(layer.backup_bytes() for layer in members(model).values())


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
