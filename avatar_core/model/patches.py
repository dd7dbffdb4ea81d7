"""Typed weight patches (what a LoRA file holds, as data), applied by the linear family (model/linear.py).

The arithmetic is ComfyUI's (comfy/lora.py `calculate_weight`, comfy/weight_adapter/lora.py,
`weight_decompose` in comfy/weight_adapter/base.py), so a LoRA changes this model as it changes ComfyUI's:

* LoRA:  W[rows] += (strength * alpha / rank) * (up @ down)              (alpha absent: alpha / rank = 1)
* DoRA (a `dora_scale` magnitude m):  C = W + (alpha / rank) * up @ down;
  n = ||W|| per output row when m has one value per row (ComfyUI takes the norm of the weight before the
  update here), else ||C|| per input column;  C = C * m / (n + eps);
  W = C at strength 1, else W += strength * (C - W)
* bias of lora_B (PEFT `lora_bias`):  b[rows] += (strength * alpha / rank) * lora_B.bias
* full diffs (`.diff`, `.diff_b`):  W[rows] += strength * diff,  b[rows] += strength * diff_b

Every patch changes its argument in place and returns it (the member hands it a float32 copy it owns).
`rows` is the output-row range of a fused layer the patch targets (diffusers' q / k / v of `*_attn_qkv`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def _part(t: torch.Tensor, rows: tuple[int, int] | None) -> torch.Tensor:
    return t if rows is None else t[rows[0]:rows[1]]


@dataclass(frozen=True, eq=False)
class LowRank:
    """A LoRA module: up (rows, rank) @ down (rank, in), with optional DoRA magnitude and lora_B bias."""

    up: torch.Tensor
    down: torch.Tensor
    alpha: float | None = None
    rows: tuple[int, int] | None = None
    dora_scale: torch.Tensor | None = None   # (rows, 1): per output row, or (1, in): per input column
    bias: torch.Tensor | None = None         # (rows,): PEFT's lora_B.bias

    @property
    def scale(self) -> float:
        return 1.0 if self.alpha is None else self.alpha / self.down.shape[0]

    def patch_weight(self, weight: torch.Tensor, strength: float) -> torch.Tensor:
        w = _part(weight, self.rows)
        diff = self.up.to(w) @ self.down.to(w)                        # (rows, in)
        if self.dora_scale is None:
            w += (strength * self.scale) * diff
        else:
            _dora_(w, diff, self.scale, strength, self.dora_scale.to(w))
        return weight

    def patch_bias(self, bias: torch.Tensor | None, strength: float) -> torch.Tensor | None:
        if self.bias is not None:
            _part(bias, self.rows).add_((strength * self.scale) * self.bias.to(bias))
        return bias


def _dora_(w: torch.Tensor, diff: torch.Tensor, scale: float, strength: float, magnitude: torch.Tensor) -> None:
    """Weight-decomposed LoRA, in place on w (rows, in), in ComfyUI's arithmetic (module docstring)."""
    calc = w + diff * scale
    if magnitude.shape[0] == w.shape[0]:  # (rows, 1): one magnitude per output row
        norm = w.norm(dim=1, keepdim=True)                            # (rows, 1), of the weight before the update
    else:
        norm = calc.norm(dim=0, keepdim=True)                         # (1, in)
    calc *= magnitude / (norm + torch.finfo(w.dtype).eps)
    if strength != 1.0:
        w += strength * (calc - w)
    else:
        w.copy_(calc)


@dataclass(frozen=True, eq=False)
class Diff:
    """A full change of the weight and / or the bias (ComfyUI's "diff" patch: `.diff`, `.diff_b` keys)."""

    weight: torch.Tensor | None = None       # (rows, in)
    bias: torch.Tensor | None = None         # (rows,)
    rows: tuple[int, int] | None = None

    def patch_weight(self, weight: torch.Tensor, strength: float) -> torch.Tensor:
        if self.weight is not None:
            _part(weight, self.rows).add_(strength * self.weight.to(weight))
        return weight

    def patch_bias(self, bias: torch.Tensor | None, strength: float) -> torch.Tensor | None:
        if self.bias is not None:
            _part(bias, self.rows).add_(strength * self.bias.to(bias))
        return bias
