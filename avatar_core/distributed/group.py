"""Process groups of a parallel run: the (cfg, window, sequence) mesh over torch.distributed.

Ranks are laid out ``rank = (c * window + w) * sequence + s``: the sequence-parallel ranks of one window
are neighbours (on one host they share the fastest links), then the window ranks, then the two CFG halves.
Every rank creates every group in the same order (a torch.distributed requirement).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from ..errors import InputError
from ..specs.concepts import DEGREE, GPUS
from ..specs.fields import Choice, checked, declared

MODES = ("auto", "cfg", "window", "sequence", "cfg+window", "cfg+sequence")


@declared(cfg=Choice((1, 2), fix="The CFG batch has two halves: 1 (both on one GPU) or 2."), window=DEGREE,
          sequence=DEGREE)
@dataclass(frozen=True)
class ParallelConfig:
    """Degrees of the three parallelisms; their product is the number of processes (GPUs)."""

    cfg: int = 1       # 1 or 2: the uncond / cond halves of the CFG batch on different GPUs
    window: int = 1    # windows of one step spread over this many GPUs (long clips)
    sequence: int = 1  # Ulysses degree: one window's tokens over this many GPUs (divides the heads)

    @property
    def world(self) -> int:
        return self.cfg * self.window * self.sequence

    def coords(self, rank: int) -> tuple[int, int, int]:
        """(cfg half, window slot, sequence rank) of a global rank."""
        c, rest = divmod(rank, self.window * self.sequence)
        w, s = divmod(rest, self.sequence)
        return c, w, s

    def rank_of(self, c: int, w: int, s: int) -> int:
        return (c * self.window + w) * self.sequence + s

    @classmethod
    @checked(gpus=GPUS, mode=Choice(MODES, fix="auto = cfg+sequence; window only helps clips of several windows."))
    def from_gpus(cls, gpus: int, mode: str = "auto") -> ParallelConfig:
        """Degrees for ``gpus`` GPUs. auto = cfg+sequence: CFG halves first (no per-layer traffic), then
        Ulysses, which speeds up every clip; window parallelism only helps clips of several windows."""
        if gpus == 1:
            return cls()
        if mode == "cfg" and gpus != 2:
            raise InputError(f"mode 'cfg' uses exactly 2 GPUs (one per CFG half), got {gpus}; try 'cfg+sequence'")
        half = 2 if gpus % 2 == 0 and mode in ("auto", "cfg", "cfg+window", "cfg+sequence") else 1
        if half == 1 and mode.startswith("cfg"):
            raise InputError(f"mode {mode!r} needs an even number of GPUs, got {gpus}")
        rest = gpus // half
        if mode in ("window", "cfg+window"):
            return cls(cfg=half, window=rest)
        return cls(cfg=half, sequence=rest)

    def describe(self) -> str:
        return f"cfg {self.cfg} x window {self.window} x sequence {self.sequence} = {self.world} processes"


@dataclass
class ParallelGroups:
    """This rank's place in the mesh and its three sub-groups (None where the degree is 1)."""

    config: ParallelConfig
    rank: int
    cfg_group: Any
    window_group: Any
    sequence_group: Any
    world_group: Any

    @property
    def coords(self) -> tuple[int, int, int]:
        return self.config.coords(self.rank)


def build_groups(config: ParallelConfig) -> ParallelGroups:
    """Create the sub-groups of ``config`` on an initialised default process group (every rank calls this)."""
    if not dist.is_initialized():
        raise RuntimeError("torch.distributed is not initialised; call init_process_group first")
    if dist.get_world_size() != config.world:
        raise RuntimeError(f"{config.describe()} but the process group has {dist.get_world_size()} ranks")
    rank = dist.get_rank()
    mine: dict[str, Any] = {}
    axes = {"cfg": config.cfg, "window": config.window, "sequence": config.sequence}
    for axis, degree in axes.items():
        for members in _axis_members(config, axis):
            group = dist.new_group(members) if degree > 1 else None
            if rank in members:
                mine[axis] = group
    return ParallelGroups(config, rank, mine["cfg"], mine["window"], mine["sequence"], dist.group.WORLD)


def _axis_members(config: ParallelConfig, axis: str) -> list[list[int]]:
    """Rank lists of every group along ``axis`` (the other two coordinates fixed), in a fixed order."""
    groups = []
    for c in range(config.cfg):
        for w in range(config.window):
            for s in range(config.sequence):
                key = {"cfg": (w, s), "window": (c, s), "sequence": (c, w)}[axis]
                first = {"cfg": c, "window": w, "sequence": s}[axis]
                if first == 0:
                    groups.append([config.rank_of(*_coords(axis, i, key)) for i in range(getattr(config, axis))])
    return groups


def _coords(axis: str, i: int, key: tuple[int, int]) -> tuple[int, int, int]:
    a, b = key
    return {"cfg": (i, a, b), "window": (a, i, b), "sequence": (a, b, i)}[axis]


def check_devices(world: int, device: str) -> None:
    """Clear error, before any process starts, when fewer GPUs are visible than asked for."""
    if device == "cpu":
        return
    if device != "cuda":
        raise ValueError(f"device must be 'cuda' or 'cpu', got {device!r}")
    have = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if have < world:
        raise RuntimeError(f"{world} GPUs were asked for but only {have} CUDA device(s) are visible"
                           f"{' (CUDA_VISIBLE_DEVICES=' + _visible() + ')' if _visible() else ''}; lower 'gpus' "
                           f"to at most {max(have, 1)} or make more GPUs visible")


def _visible() -> str:
    import os
    return os.environ.get("CUDA_VISIBLE_DEVICES", "")
