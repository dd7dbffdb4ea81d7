"""Weight-only fp8 (e4m3) linear layers with a per-tensor scale, as in the official fp8 checkpoint.

Two members of the linear family (model/linear.py): `FP8Linears` dequantises (weight.to(dtype) * scale)
like the official code; `FP8FastLinears` uses `torch._scaled_mm` on CUDA instead: the activations are
quantised per token (or per tensor where this device's build has no row-wise fp8 GEMM) and the product
runs on the fp8 tensor cores with fp32 accumulation. Keys: `weight` (fp8), `scale_weight`, `bias`.
What a device can do is asked once per device, never remembered as a class-wide flag.
"""

from __future__ import annotations

import functools
import logging

import torch
import torch.nn as nn
import torch.nn.functional as F

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


class FP8Linear(nn.Module):
    fast = False  # the member's matmul: False dequantises per call (official), True uses _scaled_mm on CUDA

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features, dtype=FP8, device=device), requires_grad=False)
        self.register_buffer("scale_weight", torch.ones((), dtype=torch.float32, device=device))
        self.bias = nn.Parameter(torch.empty(out_features, device=device)) if bias else None

    def weight_rows(self, dtype: torch.dtype, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Rows [start, stop) of the dequantised weight (the family's one weight access; model/linear.py)."""
        return self.weight[start:stop].to(dtype) * self.scale_weight.to(dtype)

    def rows(self, x: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        return self(x, start, stop)

    def forward(self, x: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """x (..., in) -> (..., out); only output features [start, stop) when given."""
        dtype = torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else x.dtype
        bias = None if self.bias is None else self.bias[start:stop].to(dtype)
        n_out = len(range(self.out_features)[start:stop])
        if (self.fast and x.is_cuda and x.shape[-1] % 16 == 0 and n_out % 16 == 0 and dtype != torch.float32
                and fp8_matmul_supported(x.device)):
            return self._scaled_mm(x, dtype, bias, start, stop, n_out)
        return F.linear(x.to(dtype), self.weight_rows(dtype, start, stop), bias)

    def _scaled_mm(self, x, dtype, bias, start, stop, n_out) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        w = self.weight[start:stop].t()                                      # (K, N) column-major
        if rowwise_fp8_supported(x.device):  # per-token activation scales: one fused pass, better accuracy
            from .fused import quantize_rows_fp8
            xq, xs = quantize_rows_fp8(x2)                                   # (M, K) fp8, (M, 1)
            ws = self.scale_weight.float().reshape(1, 1).expand(1, n_out).contiguous()
            out = torch._scaled_mm(xq, w, scale_a=xs, scale_b=ws, bias=bias, out_dtype=dtype)
            return out.reshape(*shape[:-1], n_out)
        lo, hi = torch.aminmax(x2)
        x_scale = (torch.maximum(-lo, hi).float() / FP8_MAX).clamp_min(1e-12)
        xq = (x2.to(dtype) * (1.0 / x_scale)).clamp_(-FP8_MAX, FP8_MAX).to(FP8)   # one bf16 temporary
        out = torch._scaled_mm(xq, w, scale_a=x_scale, scale_b=self.scale_weight.float(), bias=bias, out_dtype=dtype)
        return out.reshape(*shape[:-1], n_out)


class FP8FastLinear(FP8Linear):
    fast = True


class FP8Linears:
    """The fp8 family, official numerics (weights dequantised per call)."""

    Linear = FP8Linear


class FP8FastLinears:
    """The fp8 family with fp8 tensor-core matmuls (Ada / Hopper; elsewhere it dequantises)."""

    Linear = FP8FastLinear


def quantize_weight(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-tensor scaled e4m3: returns (fp8 weight, fp32 scalar scale) with w ~= q * scale."""
    scale = (w.float().abs().amax() / FP8_MAX).clamp_min(1e-12)
    return (w.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8), scale.to(torch.float32)


def fp8_linear_names(model: nn.Module) -> list[str]:
    """Linear layers stored in fp8 by the official fp8 checkpoint: those inside double/single blocks."""
    return [n for n, m in model.named_modules()
            if isinstance(m, (nn.Linear, FP8Linear)) and ("double_blocks" in n or "single_blocks" in n)]


def enable_fp8_(model: nn.Module, fast: bool = False) -> nn.Module:
    """Store the block linears of a loaded model in fp8 (per-tensor scale), in place, one layer at a time.

    A load-time conversion (benchmarks); `loading.load_transformer` builds the fp8 family directly."""
    member = FP8FastLinear if fast else FP8Linear
    for name in fp8_linear_names(model):
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        old = getattr(parent, child)
        new = member(old.in_features, old.out_features, bias=False, device="meta")
        if isinstance(old, FP8Linear):
            new.weight, new.scale_weight = old.weight, old.scale_weight
        else:
            q, s = quantize_weight(old.weight.detach())
            new.weight, new.scale_weight = nn.Parameter(q, requires_grad=False), s
        new.bias = old.bias
        setattr(parent, child, new)
    return model
