"""Opt-in step cache (first-block cache, TeaCache-like): skip most of a full step when it would change little.

After the first double block, the change of that block's residual since the previous call is measured
(relative mean absolute difference, accumulated over skipped calls). Below `threshold`, the call reuses
the residual `tokens - first_block_output` of the last computed call and skips the other 58 blocks; the
last single block and the final layer still run (so the deep cache keeps working). threshold = 0 never
skips. The official deep-cache plan stays the default; this is used only when set on the model:

    model.step_cache = StepCache(threshold=0.05)
    model.step_cache.reset()            # before each sampling run
    with model.step_cache.stream(key):  # for interleaved windows / CFG halves: one history per key
        model(...)
"""

from __future__ import annotations

import contextlib
from collections.abc import Hashable
from dataclasses import dataclass, field

import torch


@dataclass
class _History:
    prev_first_residual: torch.Tensor | None = None
    residual: torch.Tensor | None = None      # tokens - first-block output, from the last computed call
    accumulated: float = 0.0
    skips_in_row: int = 0


@dataclass
class StepCache:
    threshold: float = 0.05
    max_skips_in_row: int = 3          # a computed call at least every max_skips_in_row + 1 calls
    calls: int = 0
    skipped: int = 0
    changes: list = field(default_factory=list)   # measured relative changes (to choose a threshold)
    _key: Hashable = None
    _hist: dict = field(default_factory=dict)

    def reset(self) -> None:
        self._hist.clear()
        self.calls = self.skipped = 0
        self.changes.clear()

    @contextlib.contextmanager
    def stream(self, key: Hashable):
        old, self._key = self._key, key
        try:
            yield self
        finally:
            self._key = old

    def lookup(self, first_out: torch.Tensor, first_in: torch.Tensor) -> torch.Tensor | None:
        """Called after the first block: returns the approximated deep-cache tokens, or None to compute."""
        self.calls += 1
        h = self._hist.setdefault(self._key, _History())
        first_res = first_out - first_in
        prev = h.prev_first_residual
        h.prev_first_residual = first_res
        if prev is None or prev.shape != first_res.shape or h.residual is None or h.residual.shape != first_out.shape:
            h.residual = None
            return None
        change = ((first_res.float() - prev.float()).abs().mean() / prev.float().abs().mean().clamp_min(1e-12)).item()
        self.changes.append(change)
        h.accumulated += change
        if h.accumulated < self.threshold and h.skips_in_row < self.max_skips_in_row:
            h.skips_in_row += 1
            self.skipped += 1
            return first_out + h.residual
        return None

    def store(self, first_out: torch.Tensor, tokens: torch.Tensor) -> None:
        """Called after a computed call with the first-block output and the deep-cache tokens."""
        h = self._hist.setdefault(self._key, _History())
        h.residual = tokens - first_out
        h.accumulated, h.skips_in_row = 0.0, 0
