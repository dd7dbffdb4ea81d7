"""Deep cache: which steps reuse cached tokens, and the per-latent-frame token store.

On a cached step the model skips everything but its last single-stream block and starts from the
tokens that block saw on the last full step. The official pipeline keeps those tokens PER LATENT FRAME
so that they can be re-assembled for windows that have shifted since: video tokens come from each
frame of the window, while the reference-frame and text tokens come from the window's FIRST frame
(i.e. from whichever full-step window last covered that frame).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from ..errors import InputError
from ..specs.concepts import DEEP_CACHE_INTERVAL, FRACTION, STEPS
from ..specs.fields import Choice, Flag, Int, Items, Maybe, declared

# Steps on which the official 50-step loop runs the full model; every other step is cached.
OFFICIAL_FULL_STEPS: tuple[int, ...] = tuple(range(15)) + tuple(range(15, 42, 5)) + tuple(range(41, 50))
OFFICIAL_STEPS = 50


@declared(enabled=Flag(), plan=Choice(("auto", "official"), fix="auto scales the official plan to any step count."),
          warmup_fraction=FRACTION, tail_fraction=FRACTION, interval=DEEP_CACHE_INTERVAL,
          min_steps=Int(0, STEPS.hi, unit="steps", fix="Runs shorter than this are not cached (default 20)."),
          cached_steps=Maybe(Items(Int(1, STEPS.hi - 1, fix="Step 0 cannot be cached: there is nothing to reuse yet."),
                                   fix="Give 0-based step numbers, e.g. (15, 16, 17).")),
          prefix="deep_cache.")
@dataclass(frozen=True)
class DeepCacheConfig:
    """Deep-cache plan.

    ``plan="auto"`` scales the official pattern to any step count: the first ``warmup_fraction`` and the
    last ``tail_fraction`` of the steps run fully, in between one step in ``interval`` runs fully; for
    50 steps this is exactly the official list. ``plan="official"`` applies the official literal list to
    any step count (steps >= 50 would all be cached: only sensible for 50). ``cached_steps`` overrides
    both. Runs shorter than ``min_steps`` are not cached at all (too few steps to amortise the error).
    """

    enabled: bool = True
    plan: Literal["auto", "official"] = "auto"
    warmup_fraction: float = 0.3
    tail_fraction: float = 0.18
    interval: int = 5
    min_steps: int = 20
    cached_steps: tuple[int, ...] | None = None


def cached_steps(steps: int, config: DeepCacheConfig = DeepCacheConfig()) -> frozenset[int]:
    """The set of step indices (0-based) that run from the cache."""
    if not config.enabled:
        return frozenset()
    if config.cached_steps is not None:
        bad = [s for s in config.cached_steps if not 0 < s < steps]
        if bad:
            raise InputError(f"deep_cache.cached_steps: {bad} outside 1..{steps - 1}; give steps of this {steps}-step "
                             "run (0-based; step 0 always runs fully).")
        return frozenset(config.cached_steps)
    if config.plan == "official":
        return frozenset(i for i in range(steps) if i not in OFFICIAL_FULL_STEPS)
    if steps < config.min_steps:
        return frozenset()
    warmup = max(1, round(config.warmup_fraction * steps))
    tail_start = steps - round(config.tail_fraction * steps)
    return frozenset(
        i for i in range(warmup, tail_start) if (i - warmup) % config.interval != 0
    )


class FrameTokenCache:
    """Tokens of the last single block's input, kept per latent frame of the ring.

    Video tokens are stored per frame (``[2B, ring, h*w, D]``). The reference-frame and text tokens are
    the same for all frames of one window, so they are stored once per window and each frame remembers
    which window wrote it last; this gives the official per-frame semantics without holding
    ``ring x L_txt x D`` text tokens.
    """

    def __init__(self, ring_frames: int, storage_device: torch.device | None = None) -> None:
        self.ring_frames = ring_frames
        self.storage_device = storage_device
        self._img: torch.Tensor | None = None  # [2B, ring, hw, D]
        self._owner: list[int | None] = [None] * ring_frames
        self._shared: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # id -> (ref [2B,hw,D], txt [2B,L,D])
        self._next_id = 0

    def store(self, frames: list[int], tokens: torch.Tensor, tokens_per_frame: int) -> None:
        """Record the cache tokens ``[2B, hw + W*hw + L_txt, D]`` of a full call on window ``frames``."""
        hw, window = tokens_per_frame, len(frames)
        dev = self.storage_device or tokens.device
        ref = tokens[:, :hw].to(dev)  # [2B, hw, D]
        img = tokens[:, hw : hw + window * hw].unflatten(1, (window, hw))  # [2B, W, hw, D]
        txt = tokens[:, hw + window * hw :].to(dev)  # [2B, L, D]
        if self._img is None or self._img.shape[0] != img.shape[0] or self._img.shape[2:] != img.shape[2:]:
            shape = (img.shape[0], self.ring_frames, hw, img.shape[-1])
            self._img = torch.zeros(shape, dtype=tokens.dtype, device=dev)
        self._img[:, frames] = img.to(dev)
        writer = self._next_id
        self._next_id += 1
        self._shared[writer] = (ref, txt)
        for f in frames:
            self._owner[f] = writer
        live = set(self._owner)
        self._shared = {k: v for k, v in self._shared.items() if k in live}

    def assemble(self, frames: list[int], device: torch.device) -> torch.Tensor:
        """Cache tokens for window ``frames``: ref/txt of its first frame, video tokens of every frame."""
        owner = self._owner[frames[0]]
        if self._img is None or owner is None or any(self._owner[f] is None for f in frames):
            raise RuntimeError("deep cache read before a full step covered the window; step 0 must be full")
        ref, txt = self._shared[owner]
        img = self._img[:, frames].flatten(1, 2)  # [2B, W*hw, D]
        return torch.cat([ref, img, txt], dim=1).to(device)  # [2B, hw + W*hw + L, D]
