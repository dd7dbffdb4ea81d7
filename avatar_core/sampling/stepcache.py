"""Opt-in step cache (first-block cache, TeaCache-like): skip most of a full step when it would change little.

After the first double block, the change of that block's residual since the previous call is measured
(relative mean absolute difference, accumulated over skipped calls). Below `threshold`, the call reuses
the residual `tokens - first_block_output` of the last computed call and skips the other 58 blocks; the
last single block and the final layer still run (so the deep cache keeps working). threshold = 0 never
skips. The official deep-cache plan stays the default. The sampler owns one StepCache per run (from
`SamplerConfig.step_cache`) and hands it to every model call:

    cache = StepCache(StepCacheConfig(threshold=0.05))
    with cache.stream(key):             # interleaved windows / CFG halves: one history per key
        model(..., step_cache=cache)
    cache.stats()                       # calls, skipped, measured changes

Several processes that each hold part of one call's tokens (CFG halves on two GPUs) measure the
change of the whole call by summing their parts (`lookup(..., reduce=all_reduce)`), so they all make the
decision a single process would.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Hashable
from dataclasses import dataclass

import torch

from ..specs.concepts import STEP_CACHE_SKIPS, STEP_CACHE_THRESHOLD
from ..specs.fields import declared


@dataclass
class _History:
    prev_first_residual: torch.Tensor | None = None
    residual: torch.Tensor | None = None      # tokens - first-block output, from the last computed call
    accumulated: float = 0.0
    skips_in_row: int = 0


@declared(threshold=STEP_CACHE_THRESHOLD, max_skips_in_row=STEP_CACHE_SKIPS, prefix="step_cache.")
@dataclass(frozen=True)
class StepCacheConfig:
    threshold: float = 0.05
    max_skips_in_row: int = 3          # a computed call at least every max_skips_in_row + 1 calls


@dataclass(frozen=True)
class StepCacheStats:
    calls: int
    skipped: int
    histories: int                      # separate histories (windows x CFG halves) of the run
    changes: tuple[float, ...]          # measured relative changes (to choose a threshold)


class StepCache:
    """The state of one sampling run's step cache."""

    def __init__(self, config: StepCacheConfig | None = None):
        self.config = config or StepCacheConfig()
        self.calls = self.skipped = 0
        self.changes: list[float] = []
        self._key: Hashable = None
        self._hist: dict[Hashable, _History] = {}

    def stats(self) -> StepCacheStats:
        return StepCacheStats(self.calls, self.skipped, len(self._hist), tuple(self.changes))

    @contextlib.contextmanager
    def stream(self, key: Hashable):
        old, self._key = self._key, key
        try:
            yield self
        finally:
            self._key = old

    def lookup(self, first_out: torch.Tensor, first_in: torch.Tensor,
               reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor | None:
        """Called after the first block: returns the approximated deep-cache tokens, or None to compute.
        reduce: sums a tensor over the processes that hold the other parts of this call's tokens."""
        self.calls += 1
        h = self._hist.setdefault(self._key, _History())
        first_res = first_out - first_in
        prev = h.prev_first_residual
        h.prev_first_residual = first_res
        if prev is None or prev.shape != first_res.shape or h.residual is None or h.residual.shape != first_out.shape:
            h.residual = None
            return None
        # Sums (not means): parts of equal size add up to the whole call's ratio.
        sums = torch.stack([(first_res.float() - prev.float()).abs().sum(), prev.float().abs().sum()])
        if reduce is not None:
            sums = reduce(sums)
        change = (sums[0] / sums[1].clamp_min(1e-12)).item()
        self.changes.append(change)
        h.accumulated += change
        if h.accumulated < self.config.threshold and h.skips_in_row < self.config.max_skips_in_row:
            h.skips_in_row += 1
            self.skipped += 1
            return first_out + h.residual
        return None

    def store(self, first_out: torch.Tensor, tokens: torch.Tensor) -> None:
        """Called after a computed call with the first-block output and the deep-cache tokens."""
        h = self._hist.setdefault(self._key, _History())
        h.residual = tokens - first_out
        h.accumulated, h.skips_in_row = 0.0, 0


@dataclass
class ReducedStepCache:
    """A StepCache as seen by one of several processes that split each call (see the module doc)."""

    cache: StepCache
    reduce: Callable[[torch.Tensor], torch.Tensor]

    def lookup(self, first_out: torch.Tensor, first_in: torch.Tensor) -> torch.Tensor | None:
        return self.cache.lookup(first_out, first_in, self.reduce)

    def store(self, first_out: torch.Tensor, tokens: torch.Tensor) -> None:
        self.cache.store(first_out, tokens)
