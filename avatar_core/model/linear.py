"""The linear-layer family of the repeated blocks (ComfyUI's `operations=` idea).

The blocks never name `nn.Linear`: they build `operations.Linear(in, out, bias)`. A family decides how
a weight is stored and multiplied: `Linears` (plain, the official numerics), `fp8.FP8Linears`
(e4m3 weights with a per-tensor scale, dequantised per call) and `fp8.FP8FastLinears` (the same weights,
fp8 tensor-core matmuls). Block swap moves the members' parameters and buffers, whatever they are.

Every member reads its weight through `weight_rows(dtype, start, stop)`, and `rows(x, start, stop)` is
the product with output features [start, stop): that one method is where a weight is materialised, so a
weight patch (a LoRA delta, a different quantisation) plugs in there for every family at once.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn as nn
import torch.nn.functional as F


class Linear(nn.Linear):
    """The plain member: an nn.Linear (same state dict) with explicit weight access."""

    def weight_rows(self, dtype: torch.dtype | None = None, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Rows [start, stop) of the weight (a view when no cast is needed)."""
        w = self.weight[start:stop]
        return w if dtype is None else w.to(dtype)

    def rows(self, x: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """x (..., in) -> output features [start, stop) (..., stop - start), without copying the weight."""
        bias = None if self.bias is None else self.bias[start:stop]
        return F.linear(x, self.weight_rows(None, start, stop), bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rows(x)  # through weight_rows, like every other use of the weight


class Operations(Protocol):
    """A linear-layer family: what the blocks are built from."""

    Linear: type[nn.Module]


class Linears:
    """The plain family (bf16 / fp16 / fp32 weights)."""

    Linear = Linear
