"""The linear-layer family: every linear layer of the model, and the one place that owns a weight.

The blocks never name `nn.Linear`: they build `operations.Linear(in, out, bias)` (ComfyUI's `operations=`
idea). A member of the family stores its weight as its format's `Storage` record says (plain, or quantised
with a scale; `model/formats.py` lists the formats) and is the only code that touches it:

* use: `weight_rows(dtype, start, stop)` (rows of the weight as the matmul sees it) and `rows(x, start,
  stop)` (the product with output features [start, stop)); blocks, fused kernels and Ulysses call these;
* read / write: `read_weight()` (float32), `write_weight(w, bias)` (quantised into the stored tensors, in place);
* snapshot / restore: the stored tensors bit for bit;
* patches (ComfyUI's model patcher, per layer, typed: `model/patches.py`): `set_patches([(patch, strength)])`
  merges them into storage from a backup of the original (no cost per step; [] restores it exactly), or,
  for a format with `merge=False`, keeps them beside the weight and applies them where it is used;
  trainable adapters (`add_adapter`) always apply where the weight is used, so gradients reach them;
* offload: `stage(copies)` / `unstage()` let a block swap compute from device copies while the stored
  tensors stay the home that every write goes to; `weight_version` counts writes, so a copy taken before a
  write is never used after it (model/offload.py).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn as nn
import torch.nn.functional as F

STORED = ("weight", "scale_weight", "bias")  # the tensors a member owns, in this order
Snapshot = dict[str, torch.Tensor]


def _keep(w: torch.Tensor) -> tuple[torch.Tensor, None]:
    return w, None  # plain storage: `copy_` into the stored weight rounds once to its dtype


def _cast(w: torch.Tensor, scale: torch.Tensor | None, dtype: torch.dtype | None) -> torch.Tensor:
    return w if dtype is None else w.to(dtype)


@dataclass(frozen=True)
class Storage:
    """How a member stores its weight: one record per storage (see model/formats.py for the formats)."""

    name: str
    dtype: torch.dtype | None = None     # stored dtype; None: the model's dtype (bf16 / fp16 / fp32)
    scale: str = "none"                  # "none" | "tensor" (one fp32 scale) | "row" (one per output row)
    quantise: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]] = _keep   # fp32 -> stored, scale
    dequantise: Callable[[torch.Tensor, torch.Tensor | None, torch.dtype | None], torch.Tensor] = _cast
    # A product on the stored weight (e.g. fp8 tensor cores), used by members built with fast=True; it
    # returns None where it does not apply (device, shapes) and the member dequantises instead.
    matmul: Callable[..., torch.Tensor | None] | None = None
    merge: bool = True                   # patches written into storage (free per step) or applied at each use

    def scale_shape(self, out_features: int) -> tuple[int, ...] | None:
        return {"none": None, "tensor": (), "row": (out_features, 1)}[self.scale]


PLAIN = Storage("plain")


class WeightPatch(Protocol):
    """A typed change of a weight (model/patches.py): LoRA / DoRA, full diffs, trainable adapters.
    Both methods may change their argument in place (the caller owns it) and return the result."""

    def patch_weight(self, weight: torch.Tensor, strength: float) -> torch.Tensor: ...

    def patch_bias(self, bias: torch.Tensor | None, strength: float) -> torch.Tensor | None: ...


Patches = tuple[tuple[WeightPatch, float], ...]


class WeightOwner:
    """What every member does with its weight (the one interface; see the module docstring)."""

    storage: Storage = PLAIN
    fast: bool = False

    def _init_owner(self) -> None:
        self.weight_version = 0            # +1 per write: offload copies know which version they hold
        self._home: Snapshot | None = None  # the stored tensors while device copies are staged
        self._backup: Snapshot | None = None  # the original, while patches are merged
        self._merged: Patches | None = ()  # patches in the weight (None: unknown, a write failed midway)
        self._adapters: Patches = ()       # trainable adapters, applied where the weight is used

    # ---------------------------------------------------------------- the stored tensors
    def stored(self) -> Snapshot:
        """The stored tensors (the home: never a staged device copy), detached, by name."""
        if self._home is not None:
            return dict(self._home)
        return {n: t.detach() for n in STORED if (t := getattr(self, n, None)) is not None}

    def _scale_rows(self, start: int, stop: int | None) -> torch.Tensor | None:
        s = getattr(self, "scale_weight", None)
        return s if s is None or s.dim() == 0 else s[start:stop]

    def _runtime(self) -> Patches:
        return self._adapters + (self._merged or () if not self.storage.merge else ())

    def weight_rows(self, dtype: torch.dtype | None = None, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Rows [start, stop) of the weight as the matmul sees it (a view when nothing changes it)."""
        runtime = self._runtime()
        if not runtime:
            return self.storage.dequantise(self.weight[start:stop], self._scale_rows(start, stop), dtype)
        w = _owned(self.storage.dequantise(self.weight, self._scale_rows(0, None), dtype), self.weight)
        for patch, strength in runtime:  # on the whole weight: DoRA norms and row targets need it
            w = patch.patch_weight(w, strength)
        return w[start:stop]

    def bias_rows(self, dtype: torch.dtype | None = None, start: int = 0,
                  stop: int | None = None) -> torch.Tensor | None:
        """Rows [start, stop) of the bias as the product adds it (None: the layer has no bias)."""
        b, runtime = self.bias, self._runtime()
        if b is not None and runtime:
            b = _owned(b.to(dtype or b.dtype), b)
            for patch, strength in runtime:
                b = patch.patch_bias(b, strength)
        return None if b is None else (b[start:stop] if dtype is None else b[start:stop].to(dtype))

    # ---------------------------------------------------------------- read / write / snapshot
    def read_weight(self, device: torch.device | str | None = None) -> torch.Tensor:
        """The stored weight, dequantised to a new float32 (out, in) tensor on `device` (default: where stored)."""
        home = self.stored()
        w, s = home["weight"], home.get("scale_weight")
        device = w.device if device is None else torch.device(device)
        out = self.storage.dequantise(w.to(device), None if s is None else s.to(device), torch.float32)
        return _owned(out, w)

    def read_bias(self, device: torch.device | str | None = None) -> torch.Tensor | None:
        b = self.stored().get("bias")
        return None if b is None else b.to(device or b.device, torch.float32, copy=True)

    def write_weight(self, weight: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        """Store `weight` (out, in; any float dtype / device) quantised by the format, and `bias` if given."""
        home = self.stored()
        if tuple(weight.shape) != tuple(home["weight"].shape):
            raise ValueError(f"weight {tuple(weight.shape)} does not fit a layer of {tuple(home['weight'].shape)}")
        q, scale = self.storage.quantise(weight)
        self._write({"weight": q, "scale_weight": scale, "bias": bias})

    def snapshot(self) -> Snapshot:
        """The stored tensors, bit for bit, on the CPU."""
        return {n: t.to("cpu", copy=True) for n, t in self.stored().items()}

    def restore(self, snap: Snapshot) -> None:
        self._write(snap)

    def _write(self, tensors: dict[str, torch.Tensor | None]) -> None:
        self.unstage()  # a staged copy is stale from here on (only after a failed forward can one be left)
        home = self.stored()
        with torch.no_grad():
            for name, t in tensors.items():
                if t is not None:
                    home[name].copy_(t.reshape(home[name].shape))
        self.weight_version += 1

    # ---------------------------------------------------------------- patches
    def set_patches(self, patches: Sequence[tuple[WeightPatch, float]],
                    device: torch.device | str | None = None) -> None:
        """Make `patches` ((patch, strength), applied in order) this layer's patches; idempotent.

        Merged (the format's `merge`): restore the backup, apply in float32 on `device` (default: where
        the weight is stored), write once; [] puts the original back bit for bit. Otherwise kept beside
        the weight and applied at each use."""
        request = tuple((p, float(s)) for p, s in patches if s != 0)
        if self._merged is not None and _same(request, self._merged):
            return
        if not self.storage.merge:
            self._merged = request
            return
        self._merged = None  # unknown until the write below has finished: a failure is redone next time
        if self._backup is not None:
            self.restore(self._backup)
        if not request:
            self._backup, self._merged = None, ()
            return
        if self._backup is None:
            self._backup = self.snapshot()
        w, b = self.read_weight(device), self.read_bias(device)
        for patch, strength in request:
            w, b = patch.patch_weight(w, strength), patch.patch_bias(b, strength)
        self.write_weight(w, b)
        self._merged = request

    def backup_bytes(self) -> int:
        return 0 if self._backup is None else sum(t.numel() * t.element_size() for t in self._backup.values())

    def add_adapter(self, adapter: WeightPatch) -> None:
        """A trainable adapter (train/adapters.py): applied where the weight is used, gradients reach it."""
        self._adapters = self._adapters + ((adapter, 1.0),)

    def clear_adapters(self) -> None:
        self._adapters = ()

    # ---------------------------------------------------------------- offload
    def relocate(self, move: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Replace the stored tensors by `move(t)` (block swap: pinned host copies, and back)."""
        self.unstage()
        for name, t in self.stored().items():
            getattr(self, name).data = move(t)

    def stage(self, copies: Snapshot) -> None:
        """Compute from `copies` (same names as `stored()`, e.g. on the GPU) until `unstage()`."""
        if self._home is None:
            self._home = self.stored()
        for name, t in copies.items():
            getattr(self, name).data = t

    def unstage(self) -> None:
        if self._home is None:
            return
        for name, t in self._home.items():
            getattr(self, name).data = t
        self._home = None


def _owned(t: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """`t`, copied if it shares memory with `source` (patches change their argument in place)."""
    return t.clone() if t.data_ptr() == source.data_ptr() else t


def _same(a: Patches, b: Patches) -> bool:
    """The same patch objects (not equal contents) at the same strengths, in order."""
    return len(a) == len(b) and all(x is y and sx == sy for (x, sx), (y, sy) in zip(a, b))


class Linear(WeightOwner, nn.Linear):
    """The plain member: an nn.Linear (same state dict) whose weight is owned as above."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None, dtype=None):
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        self._init_owner()

    def rows(self, x: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """x (..., in) -> output features [start, stop) (..., stop - start), without copying the weight."""
        return F.linear(x, self.weight_rows(None, start, stop), self.bias_rows(None, start, stop))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rows(x)  # through weight_rows, like every other use of the weight


class StoredLinear(WeightOwner, nn.Module):
    """A member with a quantised storage (`storage`): weight in the storage dtype, an fp32 `scale_weight`
    buffer when the storage has one, `bias` in the model dtype. Keys: `weight`, `scale_weight`, `bias`."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None, *,
                 storage: Storage, fast: bool = False):
        super().__init__()
        self.storage, self.fast = storage, fast
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features, dtype=storage.dtype, device=device),
                                   requires_grad=False)
        shape = storage.scale_shape(out_features)
        if shape is not None:
            self.register_buffer("scale_weight", torch.ones(shape, dtype=torch.float32, device=device))
        self.bias = nn.Parameter(torch.empty(out_features, device=device)) if bias else None
        self._init_owner()

    def rows(self, x: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        return self(x, start, stop)

    def forward(self, x: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """x (..., in) -> (..., out); only output features [start, stop) when given."""
        dtype = torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else x.dtype
        bias = self.bias_rows(dtype, start, stop)
        if self.fast and self.storage.matmul is not None and not self._runtime():
            out = self.storage.matmul(x, self.weight[start:stop], self._scale_rows(start, stop), bias, dtype)
            if out is not None:
                return out
        return F.linear(x.to(dtype), self.weight_rows(dtype, start, stop), bias)


class Operations(Protocol):
    """A linear-layer family: what the blocks are built from (`operations.Linear(in, out, bias=...)`)."""

    storage: Storage

    def Linear(self, in_features: int, out_features: int, bias: bool = True) -> nn.Module: ...  # noqa: N802

    def keeps_plain(self, name: str) -> bool: ...


class Linears:
    """The plain family (bf16 / fp16 / fp32 weights)."""

    storage = PLAIN
    Linear = Linear

    @staticmethod
    def keeps_plain(name: str) -> bool:
        return False  # every member is plain already


@dataclass(frozen=True)
class Family:
    """The family of a stored format: `Family(storage, fast)` builds `member(in, out, bias, storage=, fast=)`."""

    storage: Storage
    fast: bool = False
    member: type[StoredLinear] = StoredLinear   # a named subclass reads better in a model print (fp8.FP8Linear)
    # Block linears kept in the compute dtype (plain), by name (re.search), e.g. the modulation layers: their
    # few rows cost no time in any storage, and their error scales every token (bench/fp8_frontier.py).
    plain: str = ""

    def Linear(self, in_features: int, out_features: int, bias: bool = True, device=None) -> StoredLinear:  # noqa: N802
        return self.member(in_features, out_features, bias, device, storage=self.storage, fast=self.fast)

    def keeps_plain(self, name: str) -> bool:
        return bool(self.plain) and re.search(self.plain, name) is not None


def members(model: nn.Module) -> dict[str, WeightOwner]:
    """Every linear layer of the model by module name (the official state-dict names minus `.weight`)."""
    return {name: m for name, m in model.named_modules() if isinstance(m, WeightOwner)}


def block_linear_names(model: nn.Module) -> list[str]:
    """The linears inside the repeated blocks: those a stored format stores (the official fp8 checkpoint's choice)."""
    return [n for n, m in model.named_modules()
            if isinstance(m, WeightOwner) and ("double_blocks" in n or "single_blocks" in n)]


def stored_linear_names(model: nn.Module) -> list[str]:
    """The members whose weight is in a storage of its own (quantised), as the model was built."""
    return [n for n, m in members(model).items() if m.storage.dtype is not None]


def keep_plain_(model: nn.Module, operations: Operations) -> nn.Module:
    """Rebuild the block linears `operations` keeps plain as plain members (same device, no data: at build time)."""
    for name in block_linear_names(model):
        old = model.get_submodule(name)
        if operations.keeps_plain(name) and old.storage is not PLAIN:
            parent_name, _, child = name.rpartition(".")
            device = old.weight.device
            setattr(model.get_submodule(parent_name), child,
                    Linear(old.in_features, old.out_features, bias=old.bias is not None, device=device))
    return model


def store_blocks_(model: nn.Module, operations: Family, names: list[str] | None = None) -> nn.Module:
    """Rebuild the block linears (or the linears `names`) of a loaded model in `operations`' storage, in place,
    one layer at a time (a load-time conversion; `loading.load_transformer` builds the family directly); the
    linears the family keeps plain stay as they are."""
    chosen = block_linear_names(model) if names is None else names
    for name in [n for n in chosen if not operations.keeps_plain(n)]:
        parent_name, _, child = name.rpartition(".")
        parent, old = model.get_submodule(parent_name), model.get_submodule(name)
        new = operations.Linear(old.in_features, old.out_features, bias=False, device="meta")
        if old.storage is new.storage:
            weight, scale = old.weight.detach(), getattr(old, "scale_weight", None)
        else:
            weight, scale = new.storage.quantise(old.read_weight())
        new.weight = nn.Parameter(weight, requires_grad=False)
        if scale is not None:
            new.scale_weight = scale.reshape(new.scale_weight.shape)
        new.bias = old.bias
        setattr(parent, child, new)
    return model
