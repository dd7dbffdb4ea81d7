"""Weight-only fp8 (e4m3) storage with a per-tensor scale, as in the official fp8 checkpoint.

`FP8_E4M3` is the storage record (model/linear.py `Storage`): quantise / dequantise (weight.to(dtype) *
scale, the official arithmetic) and `fp8_matmul`, the product on the stored weight: `torch._scaled_mm`
on CUDA with the activations quantised per token (or per tensor where this device's build has no
row-wise fp8 GEMM), fp32 accumulation on the fp8 tensor cores. `FP8Linears` dequantises per call like
the official code; `FP8FastLinears` takes `fp8_matmul` where it applies. Keys: `weight` (fp8),
`scale_weight`, `bias`. What a device can do is asked once per device, never remembered as a class-wide flag.
"""

from __future__ import annotations

import functools
import logging

import torch
import torch.nn as nn

from .linear import Family, Storage, StoredLinear, block_linear_names, store_blocks_

log = logging.getLogger(__name__)
FP8 = torch.float8_e4m3fn
FP8_MAX = 448.0


@functools.cache
def fp8_matmul_supported(device: torch.device) -> bool:
    """fp8 tensor-core matmuls need compute capability 8.9+ (Ada, Hopper, Blackwell); older GPUs dequantise."""
    ok = torch.cuda.get_device_capability(device) >= (8, 9)
    if not ok:
        log.warning("fp8 fast matmuls need an Ada/Hopper GPU (compute capability 8.9+); %s dequantises instead",
                    torch.cuda.get_device_name(device))
    return ok


@functools.cache
def rowwise_fp8_supported(device: torch.device) -> bool:
    """Whether this device's PyTorch build has the row-wise scaled fp8 GEMM (asked once per device)."""
    from .fused import quantize_rows_fp8
    try:
        xq, xs = quantize_rows_fp8(torch.ones(16, 16, device=device, dtype=torch.bfloat16))
        w = torch.ones(16, 16, device=device).to(FP8).t()
        torch._scaled_mm(xq, w, scale_a=xs, scale_b=torch.ones(1, 16, device=device), out_dtype=torch.bfloat16)
        return True
    except RuntimeError:
        log.info("no row-wise fp8 GEMM on %s in this PyTorch build: per-tensor activation scales", device)
        return False


def fp8_matmul(x: torch.Tensor, w: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None,
               dtype: torch.dtype) -> torch.Tensor | None:
    """x (..., K) @ w (N, K) e4m3 with its scale (per tensor, or per row: (N, 1)) on the fp8 tensor cores ->
    (..., N) in `dtype`; None where that does not apply (not CUDA, sizes not multiples of 16, fp32, a GPU
    before Ada, per-row weight scales without the row-wise GEMM)."""
    n_out = w.shape[0]
    if not (x.is_cuda and x.shape[-1] % 16 == 0 and n_out % 16 == 0 and dtype != torch.float32
            and fp8_matmul_supported(x.device)):
        return None
    rowwise = rowwise_fp8_supported(x.device)
    if scale.numel() > 1 and not rowwise:
        return None
    shape = x.shape
    x2 = x.reshape(-1, shape[-1])
    wt = w.t()                                                           # (K, N) column-major
    if rowwise:  # per-token activation scales: one fused pass, better accuracy
        from .fused import quantize_rows_fp8
        xq, xs = quantize_rows_fp8(x2)                                   # (M, K) fp8, (M, 1)
        ws = scale.float().reshape(1, -1).expand(1, n_out).contiguous()  # (1, N)
        out = torch._scaled_mm(xq, wt, scale_a=xs, scale_b=ws, bias=bias, out_dtype=dtype)
        return out.reshape(*shape[:-1], n_out)
    lo, hi = torch.aminmax(x2)
    x_scale = (torch.maximum(-lo, hi).float() / FP8_MAX).clamp_min(1e-12)
    xq = (x2.to(dtype) * (1.0 / x_scale)).clamp_(-FP8_MAX, FP8_MAX).to(FP8)   # one bf16 temporary
    out = torch._scaled_mm(xq, wt, scale_a=x_scale, scale_b=scale.float(), bias=bias, out_dtype=dtype)
    return out.reshape(*shape[:-1], n_out)


def quantize_weight(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-tensor scaled e4m3: returns (fp8 weight, fp32 scalar scale) with w ~= q * scale."""
    scale = (w.float().abs().amax() / FP8_MAX).clamp_min(1e-12)
    return (w.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8), scale.to(torch.float32)


def quantize_weight_rows(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """e4m3 with one fp32 scale per output row: (fp8 weight, scale (out, 1)) with w ~= q * scale."""
    scale = (w.float().abs().amax(dim=1, keepdim=True) / FP8_MAX).clamp_min(1e-12)
    return (w.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8), scale


def dequantize_weight(w: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    """e4m3 rows and their scale (per tensor, or (rows, 1)) -> `dtype` (float32 when None), as the official
    forward: w.to(dtype) * scale."""
    dtype = dtype or torch.float32
    return w.to(dtype) * scale.to(dtype)


# The official fp8 checkpoint's storage (keys `weight` e4m3, `scale_weight` fp32 scalar, `bias`).
FP8_E4M3 = Storage("fp8_e4m3fn", FP8, scale="tensor", quantise=quantize_weight, dequantise=dequantize_weight,
                   matmul=fp8_matmul)
# One scale per output row (bench/fp8_frontier.py measures it; a loader choice would be one WEIGHT_FORMATS entry).
FP8_E4M3_ROWS = Storage("fp8_e4m3fn_rows", FP8, scale="row", quantise=quantize_weight_rows,
                        dequantise=dequantize_weight, matmul=fp8_matmul)


class FP8Linear(StoredLinear):
    """The fp8 member (FP8_E4M3 storage); `fast` uses `fp8_matmul` on CUDA, else dequantises per call."""

    fast = False

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None, *,
                 storage: Storage = FP8_E4M3, fast: bool | None = None):
        super().__init__(in_features, out_features, bias, device, storage=storage,
                         fast=type(self).fast if fast is None else fast)


class FP8FastLinear(FP8Linear):
    fast = True


FP8Linears = Family(FP8_E4M3, False, FP8Linear)          # official numerics (dequantised per call)
FP8FastLinears = Family(FP8_E4M3, True, FP8FastLinear)   # fp8 tensor-core matmuls (Ada / Hopper)


def fp8_linear_names(model: nn.Module) -> list[str]:
    """Linear layers stored in fp8 by the official fp8 checkpoint: those inside double/single blocks."""
    return block_linear_names(model)


def enable_fp8_(model: nn.Module, fast: bool = False) -> nn.Module:
    """Store the block linears of a loaded model in fp8 (per-tensor scale), in place, one layer at a time.

    A load-time conversion (benchmarks, random weights); `loading.load_transformer` builds the family directly."""
    return store_blocks_(model, FP8FastLinears if fast else FP8Linears)
