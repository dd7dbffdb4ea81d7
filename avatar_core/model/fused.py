"""Fused elementwise steps of the blocks: LayerNorm + modulate, and qk-norm + RoPE + head split.

Each function has one reference implementation in plain PyTorch (the official math; used on the CPU, in
fp32 and when Triton is missing) and, for half-precision CUDA tensors, a Triton kernel that does the same
arithmetic in one pass: fp32 inside, rounding where the reference rounds. The reference path's
autocast behaviour is kept: LayerNorm + modulate yields fp32 there, which the next linear casts to the
autocast dtype; the kernel writes that dtype directly (same values, half the bytes).
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .rope import apply_rope

HAS_TRITON = importlib.util.find_spec("triton") is not None
FP8_MAX = 448.0  # largest finite e4m3 value
_kernels = None
_failed: dict[str, str] = {}   # kernel name -> the error that turned it off for this process
log = logging.getLogger(__name__)


def _load_kernels():
    global _kernels
    if _kernels is None:
        from . import fused_triton
        _kernels = fused_triton
    return _kernels


def _run_kernel(name: str, call) -> bool:
    """Run one Triton launch; False (and the PyTorch path for the caller) once that kernel has failed here.

    A Triton too old for a kernel, or a build problem, must not stop sampling: the first failure is logged
    once and that kernel is off for the rest of the process. A failed build writes nothing."""
    if name in _failed:
        return False
    try:
        call()
        return True
    except Exception as e:  # noqa: BLE001
        _failed[name] = repr(e)
        log.warning("Triton %s kernel failed (%s); using PyTorch's", name, e)
        return False


def use_kernels(x: torch.Tensor, enabled: bool = True) -> bool:
    """The Triton kernels serve inference (no autograd) on CUDA half-precision tensors."""
    return (enabled and HAS_TRITON and x.is_cuda and x.dtype in (torch.float16, torch.bfloat16)
            and not torch.is_grad_enabled())


def _out_dtype(x: torch.Tensor) -> torch.dtype:
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift                                        # the official adaLN modulate


def ln_modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, eps: float = 1e-6,
                kernels: bool = True) -> torch.Tensor:
    """LayerNorm (no affine) of x (..., L, D), then x * (1 + scale) + shift; shift/scale broadcast as (B|1, 1, D)."""
    if use_kernels(x, kernels):
        return _load_kernels().ln_modulate(x, shift, scale, eps, _out_dtype(x))
    return modulate(F.layer_norm(x, x.shape[-1:], eps=eps), shift, scale)


def qkv_to_heads(qkv: torch.Tensor, q_norm: nn.Module, k_norm: nn.Module, rope: tuple[torch.Tensor, torch.Tensor] | None,
                 first: int, n_rope: int, out: tuple[torch.Tensor, torch.Tensor, torch.Tensor], dst: int,
                 kernels: bool = True, inv_scales: torch.Tensor | None = None) -> None:
    """Split qkv rows (R, 3 * H * Dh) of tokens [first, first + R) into heads, RMS-normalise q and k, rotate
    q and k of tokens < n_rope with the RoPE tables (indexed by token), and write the rows into
    out = (q, k, v) buffers (L_all, H, Dh) at rows [dst, dst + R).

    inv_scales: None, or (1 / q scale, 1 / k scale) as a (2,) fp32 tensor when the q and k buffers are e4m3:
    q and k are then written as clamp(x / scale, +-448) (see `qk_fp8_scales`), in the same pass.
    """
    q_out, k_out, v_out = out
    H, Dh = q_out.shape[-2:]
    R = qkv.shape[0]
    if use_kernels(qkv, kernels) and qkv.stride(-1) == 1 and all(o.is_contiguous() for o in out):
        cos, sin = (rope[0].contiguous(), rope[1].contiguous()) if rope is not None else (None, None)
        if _run_kernel("qk-norm + RoPE", lambda: _load_kernels().qkv_to_heads(
                qkv, q_norm.weight, k_norm.weight, q_norm.eps, cos, sin, first, n_rope if rope is not None else 0,
                q_out[dst:dst + R], k_out[dst:dst + R], v_out[dst:dst + R], inv_scales, FP8_MAX)):
            return
    q, k, v = qkv.unflatten(-1, (3, H, Dh)).unbind(1)                       # (R, H, Dh)
    q, k = q_norm(q).to(v), k_norm(k).to(v)
    n = max(0, min(n_rope - first, R)) if rope is not None else 0
    if n:
        cos, sin = rope[0][first:first + n], rope[1][first:first + n]
        q = torch.cat([apply_rope(q[None, :n], cos, sin)[0], q[n:]])
        k = torch.cat([apply_rope(k[None, :n], cos, sin)[0], k[n:]])
    if inv_scales is not None:
        q, k = ((t.float() * s).clamp(-FP8_MAX, FP8_MAX).to(q_out.dtype) for t, s in zip((q, k), inv_scales))
    q_out[dst:dst + R], k_out[dst:dst + R], v_out[dst:dst + R] = q, k, v


def qk_fp8_scales(q_norms: Sequence[nn.Module], k_norms: Sequence[nn.Module]) -> torch.Tensor:
    """(q scale, k scale), (2,) fp32: e4m3 scales for q and k that need no look at the data.

    After RMSNorm every head vector x_hat has |x_hat|_2 = sqrt(D) (less with eps), so with the norm weight w,
    |x_hat * w|_2 <= sqrt(D) max|w|; RoPE rotates pairs, which keeps that norm, so every element of q (k)
    is at most sqrt(D) max|w| over the norms feeding one buffer. That bound / 448 never saturates and, e4m3
    being floating point (3 mantissa bits at every magnitude down to 2^-6), costs no precision for values
    even ~1000x below it. 1/128 headroom covers the roundings to bf16 on the way.
    """
    def bound(norms: Sequence[nn.Module]) -> torch.Tensor:
        w = torch.stack([n.weight.detach().abs().max().float() for n in norms]).max()
        return w * (norms[0].weight.shape[-1] ** 0.5) * (1 + 1 / 128)
    return (torch.stack([bound(q_norms), bound(k_norms)]) / FP8_MAX).clamp_min(1e-12)


def quantize_rows_fp8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row (token) scaled e4m3: x (M, K) -> (q (M, K) fp8, scale (M, 1) fp32) with x ~= q * scale."""
    if HAS_TRITON and x.is_cuda:
        return _load_kernels().quantize_rows_fp8(x)
    scale = (x.float().abs().amax(dim=1, keepdim=True) / 448.0).clamp_min(1e-12)
    return (x.float() / scale).clamp(-448.0, 448.0).to(torch.float8_e4m3fn), scale



def quantize_segments_fp8(x: torch.Tensor, cu: list[int], smooth: bool = False,
                          means: list[torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """e4m3 copy of packed heads x (T, H, D) with one scale per (segment, head); segments [cu[i], cu[i + 1]).

    Returns (x8 (T, H, D), scale (S, H) fp32) with x ~= x8 * scale (row-wise per segment and head). smooth:
    each segment's per-channel mean (H, D) is subtracted first (keys: softmax does not change, see
    attention_fa3); `means` (a list) then receives each segment's (H, D) fp32 mean. The Triton path (CUDA) reads x twice (statistics, then quantise); this reference is
    the same arithmetic in PyTorch.
    """
    if HAS_TRITON and x.is_cuda:
        return _load_kernels().quantize_segments_fp8(x, cu, smooth, FP8_MAX, means)
    out = torch.empty(x.shape, dtype=torch.float8_e4m3fn, device=x.device)
    scales = []
    for a, b in zip(cu[:-1], cu[1:]):
        seg = x[a:b].float()                                                   # (n, H, D)
        if smooth:
            mean = seg.mean(dim=0)
            seg = seg - mean
            if means is not None:
                means.append(mean)
        scale = (seg.abs().amax(dim=(0, 2)) / FP8_MAX).clamp_min(1e-12)        # (H,)
        out[a:b] = (seg / scale[:, None]).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
        scales.append(scale)
    return out, torch.stack(scales)


def gelu_tanh_(x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """tanh-GELU written into `out` (default: in place); no extra full-size temporary."""
    if torch.is_grad_enabled():  # out= variants have no autograd: plain ops when training
        y = F.gelu(x, approximate="tanh")
        return y if out is None else out.copy_(y)
    out = x if out is None else out
    # PyTorch's GELU into a row-strided output takes its slow non-vectorised path
    if (use_kernels(x) and x.dim() == 2 and x.stride(1) == 1 and out.stride(1) == 1
            and _run_kernel("GELU", lambda: _load_kernels().gelu_tanh(x, out))):
        return out
    return torch.ops.aten.gelu.out(x, approximate="tanh", out=out)


def add_gated(x: torch.Tensor, delta: torch.Tensor, gate: torch.Tensor,
              out: torch.Tensor | None = None) -> torch.Tensor:
    """x + delta * gate in one pass, into `out` when given (out may be x itself when not training)."""
    if torch.is_grad_enabled():
        y = x + delta * gate
        return y if out is None else out.copy_(y)
    return torch.addcmul(x, delta, gate) if out is None else torch.addcmul(x, delta, gate, out=out)
