"""The single-process shard: this process holds every token of the window, so nothing is exchanged.

It has the interface of `distributed.ulysses.SequenceShard`, so the model has one code path for one
process and for a sequence-parallel group (no `if sp is None` branches).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from .attention import segmented_attention


@dataclass(frozen=True)
class WholeWindow:
    grid: tuple[int, int, int]  # (latent frames T, h, w) of the window, in tokens

    @property
    def n_ref(self) -> int:
        return self.grid[1] * self.grid[2]

    @property
    def n_image(self) -> int:
        return (self.grid[0] + 1) * self.n_ref              # ref + video tokens

    def shard_stream(self, img: torch.Tensor, injection: Any) -> tuple[torch.Tensor, Any]:
        return img, injection

    def shard_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens

    def gather_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens

    def video_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Video tokens (no reference frame, no text) of (B, Lref + Limg + Lt, D)."""
        return tokens[:, self.n_ref:self.n_image]

    def gather_video(self, x: torch.Tensor) -> torch.Tensor:
        return x

    accepts_fp8_heads = True  # attention() takes e4m3 q and k with their scales (qk_scales)

    def attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, valid: Sequence[int],
                  backend: str, qk_scales: torch.Tensor | None = None) -> torch.Tensor:
        return segmented_attention(q, k, v, valid, backend, qk_scales)


@dataclass(frozen=True)
class SingleProcess:
    """RunOptions.sequence of a process that runs whole windows alone."""

    def localize(self, ctx: Any, grid: tuple[int, int, int]) -> Any:
        return replace(ctx, sp=WholeWindow(grid))
