"""Triton kernels behind avatar_core.model.fused (CUDA, half precision). Import only through fused.py."""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _ln_mod_kernel(x_ptr, sxb, sxl, shift_ptr, scale_ptr, smb, out_ptr, sob, sol, D, eps, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    b = tl.program_id(1).to(tl.int64)
    d = tl.arange(0, BLOCK)
    m = d < D
    x = tl.load(x_ptr + b * sxb + row * sxl + d, mask=m, other=0.0).to(tl.float32)
    mean = tl.sum(x, axis=0) / D
    xc = tl.where(m, x - mean, 0.0)
    var = tl.sum(xc * xc, axis=0) / D
    y = xc * tl.rsqrt(var + eps)
    sc = tl.load(scale_ptr + b * smb + d, mask=m, other=0.0)
    sh = tl.load(shift_ptr + b * smb + d, mask=m, other=0.0).to(tl.float32)
    one_plus = (sc.to(tl.float32) + 1.0).to(sc.dtype).to(tl.float32)  # (1 + scale) is rounded in the reference
    tl.store(out_ptr + b * sob + row * sol + d, (y * one_plus + sh).to(out_ptr.dtype.element_ty), mask=m)


def ln_modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, eps: float, out_dtype) -> torch.Tensor:
    D = x.shape[-1]
    x3 = x if x.dim() == 3 else x.reshape(1, -1, D) if x.dim() == 2 else x.reshape(-1, x.shape[-2], D)
    B, L = x3.shape[:2]
    shift, scale = shift.reshape(-1, D), scale.reshape(-1, D)
    if shift.shape[0] not in (1, B) or shift.stride(-1) != 1 or scale.stride() != shift.stride():
        shift, scale = shift.expand(B, D).contiguous(), scale.expand(B, D).contiguous()
    smb = 0 if shift.shape[0] == 1 else shift.stride(0)
    if x3.stride(-1) != 1:
        x3 = x3.contiguous()
    out = torch.empty(B, L, D, dtype=out_dtype, device=x.device)
    _ln_mod_kernel[(L, B)](x3, x3.stride(0), x3.stride(1), shift, scale, smb, out, out.stride(0), out.stride(1),
                           D, eps, BLOCK=triton.next_power_of_2(D), num_warps=8)
    return out.reshape(*x.shape[:-1], D)


@triton.jit
def _pairs(x, BR: tl.constexpr, D: tl.constexpr):
    """(BR, D) -> the even and the odd channels, (BR, D / 2) each (RoPE rotates adjacent pairs)."""
    return tl.split(tl.reshape(x, (BR, D // 2, 2)))


@triton.jit
def _norm_rope(src, w_ptr, cos_e, cos_o, sin_e, sin_o, m, eps, dtype, BR: tl.constexpr, D: tl.constexpr):
    """RMSNorm (fp32, rounded to dtype), * weight (rounded), RoPE in fp32 of a (BR, D) tile of head rows."""
    d = tl.arange(0, D)[None, :]
    xe, xo = _pairs(tl.load(src + d, mask=m, other=0.0).to(tl.float32), BR, D)
    we, wo = _pairs(tl.load(w_ptr + d).to(tl.float32), 1, D)
    r = tl.rsqrt((tl.sum(xe * xe, axis=1) + tl.sum(xo * xo, axis=1)) / D + eps)[:, None]
    ne = ((xe * r).to(dtype).to(tl.float32) * we).to(dtype).to(tl.float32)
    no = ((xo * r).to(dtype).to(tl.float32) * wo).to(dtype).to(tl.float32)
    return ne * cos_e - no * sin_e, no * cos_o + ne * sin_o           # (even, odd) outputs, fp32


@triton.jit
def _heads_kernel(src_ptr, s_row, R, qw_ptr, kw_ptr, eps, cos_ptr, sin_ptr, first, n_rope,
                  q_ptr, k_ptr, v_ptr, inv_ptr, fmax, H: tl.constexpr, D: tl.constexpr, BR: tl.constexpr,
                  QUANT: tl.constexpr):
    """One program: BR consecutive (token, head) rows of the R x H rows; row j = token j // H, head j % H."""
    j = tl.program_id(0).to(tl.int64) * BR + tl.arange(0, BR)[:, None]       # (BR, 1)
    tok = j // H
    m = j < R * H
    d = tl.arange(0, D)[None, :]
    rope = m & (first + tok < n_rope)
    trig = (first + tok) * D + d
    cos_e, cos_o = _pairs(tl.load(cos_ptr + trig, mask=rope, other=1.0), BR, D)
    sin_e, sin_o = _pairs(tl.load(sin_ptr + trig, mask=rope, other=0.0), BR, D)
    src = src_ptr + tok * s_row + (j % H) * D
    dtype = v_ptr.dtype.element_ty                      # the compute dtype (bf16 / fp16); q, k may be e4m3
    qe, qo = _norm_rope(src, qw_ptr, cos_e, cos_o, sin_e, sin_o, m, eps, dtype, BR, D)
    ke, ko = _norm_rope(src + H * D, kw_ptr, cos_e, cos_o, sin_e, sin_o, m, eps, dtype, BR, D)
    q = tl.reshape(tl.join(qe.to(dtype), qo.to(dtype)), (BR, D)).to(tl.float32)
    k = tl.reshape(tl.join(ke.to(dtype), ko.to(dtype)), (BR, D)).to(tl.float32)
    if QUANT:                                           # e4m3 with one scale each: x / scale, saturated
        q = tl.minimum(tl.maximum(q * tl.load(inv_ptr), -fmax), fmax)
        k = tl.minimum(tl.maximum(k * tl.load(inv_ptr + 1), -fmax), fmax)
    dst = j * D + d
    tl.store(q_ptr + dst, q.to(q_ptr.dtype.element_ty), mask=m)
    tl.store(k_ptr + dst, k.to(k_ptr.dtype.element_ty), mask=m)
    tl.store(v_ptr + dst, tl.load(src + 2 * H * D + d, mask=m, other=0.0).to(dtype), mask=m)


HEADS_ROWS, HEADS_WARPS = 32, 8     # (token, head) rows per program, warps: fastest in bench/bench_heads.py (H200)


def qkv_to_heads(qkv, q_weight, k_weight, eps, cos, sin, first, n_rope, q_out, k_out, v_out, inv_scales=None,
                 fmax: float = 448.0, rows: int | None = None, warps: int | None = None) -> None:
    """inv_scales: None, or a (2,) fp32 tensor (1 / q scale, 1 / k scale) for e4m3 q_out and k_out.
    rows / warps: launch shape (default HEADS_ROWS / HEADS_WARPS); it can change only the order of the fp32 sum of
    squares inside a head row."""
    R = qkv.shape[0]
    H, D = q_out.shape[-2:]
    if R == 0:
        return
    if cos is None:
        cos = sin = v_out  # never read: n_rope = 0
    quant = inv_scales is not None
    br = rows or HEADS_ROWS
    _heads_kernel[(triton.cdiv(R * H, br),)](qkv, qkv.stride(0), R, q_weight, k_weight, eps, cos, sin, first, n_rope,
                                            q_out, k_out, v_out, inv_scales if quant else v_out, fmax, H=H, D=D,
                                            BR=br, QUANT=quant, num_warps=warps or HEADS_WARPS)


@triton.jit
def _quant_rows_kernel(x_ptr, sx, q_ptr, s_ptr, K, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    amax = tl.zeros([BLOCK], dtype=tl.float32)
    for k in range(0, K, BLOCK):
        d = k + tl.arange(0, BLOCK)
        amax = tl.maximum(amax, tl.abs(tl.load(x_ptr + row * sx + d, mask=d < K, other=0.0).to(tl.float32)))
    scale = tl.maximum(tl.max(amax, axis=0) / 448.0, 1e-12)
    tl.store(s_ptr + row, scale)
    for k in range(0, K, BLOCK):
        d = k + tl.arange(0, BLOCK)
        x = tl.load(x_ptr + row * sx + d, mask=d < K, other=0.0).to(tl.float32)
        q = tl.minimum(tl.maximum(x / scale, -448.0), 448.0)
        tl.store(q_ptr + row * K + d, q.to(q_ptr.dtype.element_ty), mask=d < K)


def quantize_rows_fp8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    M, K = x.shape
    if x.stride(-1) != 1:
        x = x.contiguous()
    q = torch.empty(M, K, dtype=torch.float8_e4m3fn, device=x.device)
    s = torch.empty(M, 1, dtype=torch.float32, device=x.device)
    if M:
        _quant_rows_kernel[(M,)](x, x.stride(0), q, s, K, BLOCK=min(4096, triton.next_power_of_2(K)), num_warps=8)
    return q, s


@triton.jit
def _gelu_tanh_kernel(x_ptr, sx, y_ptr, sy, N, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    d = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    m = d < N
    x = tl.load(x_ptr + row * sx + d, mask=m, other=0.0).to(tl.float32)
    u = 0.7978845608028654 * (x + 0.044715 * x * x * x)
    t = 2.0 / (1.0 + tl.exp(-2.0 * u)) - 1.0                             # tanh(u)
    tl.store(y_ptr + row * sy + d, (0.5 * x * (1.0 + t)).to(y_ptr.dtype.element_ty), mask=m)


def gelu_tanh(x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """out = gelu_tanh(x) for 2-D x, out with unit column stride (any row stride): one vectorised pass."""
    M, N = x.shape
    if M:
        BLOCK = 2048
        _gelu_tanh_kernel[(M, triton.cdiv(N, BLOCK))](x, x.stride(0), out, out.stride(0), N, BLOCK=BLOCK, num_warps=4)
    return out


@triton.jit
def _seg_stats_kernel(x_ptr, start, n, H, sum_ptr, min_ptr, max_ptr, D: tl.constexpr, DP: tl.constexpr,
                      BR: tl.constexpr):
    """Per-channel sum, min and max of rows [start + blk * BR, ...) of head h: one (BR, D) tile per program."""
    blk = tl.program_id(0)
    h = tl.program_id(1)
    r = blk * BR + tl.arange(0, BR)[:, None]
    d = tl.arange(0, DP)[None, :]
    m = (r < n) & (d < D)
    x = tl.load(x_ptr + (start + r).to(tl.int64) * (H * D) + h * D + d, mask=m, other=0.0).to(tl.float32)
    o = (blk * H + h) * D + tl.arange(0, DP)
    dm = tl.arange(0, DP) < D
    tl.store(sum_ptr + o, tl.sum(x, axis=0), mask=dm)
    tl.store(min_ptr + o, tl.min(tl.where(m, x, float("inf")), axis=0), mask=dm)
    tl.store(max_ptr + o, tl.max(tl.where(m, x, -float("inf")), axis=0), mask=dm)


@triton.jit
def _seg_quant_kernel(x_ptr, start, n, H, mean_ptr, inv_ptr, out_ptr, fmax, D: tl.constexpr, DP: tl.constexpr,
                      BR: tl.constexpr, SMOOTH: tl.constexpr):
    blk = tl.program_id(0)
    h = tl.program_id(1)
    r = blk * BR + tl.arange(0, BR)[:, None]
    d = tl.arange(0, DP)[None, :]
    m = (r < n) & (d < D)
    off = (start + r).to(tl.int64) * (H * D) + h * D + d
    x = tl.load(x_ptr + off, mask=m, other=0.0).to(tl.float32)
    if SMOOTH:
        x = x - tl.load(mean_ptr + h * D + d, mask=d < D, other=0.0)
    y = tl.minimum(tl.maximum(x * tl.load(inv_ptr + h), -fmax), fmax)
    tl.store(out_ptr + off, y.to(out_ptr.dtype.element_ty), mask=m)


def quantize_segments_fp8(x: torch.Tensor, cu: list[int], smooth: bool, fmax: float, means: list | None = None):
    """See fused.quantize_segments_fp8. Two launches per segment plus a few (H, D)-sized reductions."""
    T, H, D = x.shape
    x = x.contiguous()
    out = torch.empty(T, H, D, dtype=torch.float8_e4m3fn, device=x.device)
    BR, DP = 64, triton.next_power_of_2(D)
    scales = []
    for a, b in zip(cu[:-1], cu[1:]):
        n = b - a
        nb = triton.cdiv(n, BR)
        part = torch.empty(3, nb, H, D, dtype=torch.float32, device=x.device)
        _seg_stats_kernel[(nb, H)](x, a, n, H, part[0], part[1], part[2], D=D, DP=DP, BR=BR, num_warps=4)
        lo, hi = part[1].amin(0), part[2].amax(0)                              # (H, D)
        mean = part[0].sum(0) / n if smooth else lo
        amax = torch.maximum(hi - mean, mean - lo) if smooth else torch.maximum(hi, -lo)
        scale = (amax.amax(-1) / fmax).clamp_min(1e-12)                        # (H,)
        _seg_quant_kernel[(nb, H)](x, a, n, H, mean.contiguous(), (1.0 / scale).contiguous(), out, fmax, D=D, DP=DP,
                                   BR=BR, SMOOTH=smooth, num_warps=4)
        scales.append(scale)
        if smooth and means is not None:
            means.append(mean)
    return out, torch.stack(scales)
