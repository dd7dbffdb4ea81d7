"""The weight formats a model can be loaded in: one record each (the loader node's `weight_dtype` choices).

A record names the compute dtype and the linear family whose storage holds the block linears
(model/linear.py `Storage`: storage dtype, scale layout, quantise / dequantise, an optional direct
matmul, whether patches are merged). Everything else is generic: loading converts a file's tensors to
the storage, LoRA patches merge into it and restore exactly, block swap streams it, snapshots copy it.
Adding a format is one entry in `WEIGHT_FORMATS` (with its `Storage` record, here or beside its math).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from .fp8 import FP8FastLinears, FP8Linears
from .linear import PLAIN, Family, Linears, Operations, Storage


@dataclass(frozen=True)
class WeightFormat:
    compute: torch.dtype            # activations and every unstored weight
    operations: Operations = Linears  # the family of the block linears (Linears: plain, in `compute`)

    @property
    def storage(self) -> Storage:
        return self.operations.storage

    @property
    def stored(self) -> bool:
        """Whether the block linears are kept in a storage of their own (quantised) rather than in `compute`."""
        return self.storage is not PLAIN


FP8 = WeightFormat(torch.bfloat16, FP8Linears)
FP8_FAST = WeightFormat(torch.bfloat16, FP8FastLinears)
# The fast preset keeps the modulation linears in bf16: on the 13B model (random weights, H100, 704x704, one
# window) they alone made 8.3e-2 of its 1.27e-1 distance to the official forward, and keeping them costs no time
# (9.68 vs 9.67 s per step; a batch of 2 rows) for +3.2 GiB of weights (bench/results/2026-12-07_h100_frontier).
MODULATION = r"(_mod|modulation)\.linear$"
FAST = WeightFormat(torch.bfloat16, replace(FP8FastLinears, plain=MODULATION))

WEIGHT_FORMATS: dict[str, WeightFormat] = {
    "bf16": WeightFormat(torch.bfloat16), "fp16": WeightFormat(torch.float16), "fp32": WeightFormat(torch.float32),
    "fp8_e4m3fn": FP8,                  # official fp8 scheme: e4m3 + per-tensor scale, dequantised per call
    "fp8_e4m3fn_fast": FP8_FAST,        # the same weights, fp8 tensor-core matmuls (Ada / Hopper)
    "fast": FAST,                       # the fast preset: fp8_e4m3fn_fast but modulation in bf16 + fp8 attention
                                        # (runner.FAST_ATTENTION)
}

__all__ = ["WEIGHT_FORMATS", "Family", "Storage", "WeightFormat"]
