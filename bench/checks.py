"""GPU accuracy checks of the fast paths at the model's real sizes (fused kernels, fp8 GEMM, attention)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from avatar_core.model import fused
from avatar_core.model.layers import RMSNorm


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def kernel_checks(L: int = 66655, D: int = 3072, heads: int = 24, seed: int = 0) -> dict:
    """Triton kernels vs the PyTorch reference ops (bf16 in, under autocast as in the model)."""
    g = torch.Generator("cuda").manual_seed(seed)
    r = lambda *s, dt=torch.bfloat16: torch.randn(*s, generator=g, device="cuda", dtype=dt)  # noqa: E731
    out = {}
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        x, shift, scale = r(L, D) * 3 + 1, r(D) * 0.5, r(D) * 0.5
        fast = fused.ln_modulate(x, shift, scale, kernels=True)
        ref = fused.ln_modulate(x, shift, scale, kernels=False).to(torch.bfloat16)
        out["ln_modulate_max_abs"] = (fast.float() - ref.float()).abs().max().item()
        out["ln_modulate_rel"] = rel(fast, ref)
        qn, kn = RMSNorm(D // heads).cuda().bfloat16(), RMSNorm(D // heads).cuda().bfloat16()
        qn.weight.copy_(1 + 0.1 * r(D // heads)), kn.weight.copy_(1 + 0.1 * r(D // heads))
        qkv = r(L, 3 * D) * 2
        cos, sin = r(L - 831, D // heads, dt=torch.float32).cos(), r(L - 831, D // heads, dt=torch.float32).sin()
        bufs = [[torch.full((L + 7, heads, D // heads), float("nan"), device="cuda", dtype=torch.bfloat16)
                 for _ in range(3)] for _ in range(2)]
        for use, b in zip((True, False), bufs):
            fused.qkv_to_heads(qkv[5:], qn, kn, (cos, sin), 5, L - 831, b, 12, kernels=use)
        out["qkv_to_heads_max_abs"] = max((a[12:].float() - b[12:].float()).abs().max().item()
                                          for a, b in zip(*bufs))
        out["qkv_to_heads_written"] = bool(all(torch.isfinite(a[12:L + 7]).all() for a in bufs[0]))
        h = r(4096, 4 * D) * 2
        cat = torch.full((4096, 5 * D), float("nan"), device="cuda", dtype=torch.bfloat16)
        fused.gelu_tanh_(h, out=cat[:, D:])
        out["gelu_max_abs"] = (cat[:, D:].float() - F.gelu(h.float(), approximate="tanh")).abs().max().item()
        out["gelu_rel"] = rel(cat[:, D:], F.gelu(h, approximate="tanh"))
        out["gelu_triton_failed"] = "GELU" in fused._failed
    return out


def attention_check(backend: str, L: int = 66655, heads: int = 24, head_dim: int = 128, seed: int = 0) -> dict:
    """One attention call vs SDPA in float32 math (q, k RMS-normalised like the model's)."""
    from avatar_core.model.attention import attention
    g = torch.Generator("cuda").manual_seed(seed)
    q, k, v = (torch.randn(1, L, heads, head_dim, generator=g, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    with torch.no_grad():
        k = k + 0.5 * torch.randn(1, 1, heads, head_dim, generator=g, device="cuda", dtype=torch.bfloat16)  # a key bias
        ref = F.scaled_dot_product_attention(*(t[:, :8192].transpose(1, 2).float() for t in (q, k, v))).transpose(1, 2)
        bf16 = attention(q[:, :8192].clone(), k[:, :8192].clone(), v[:, :8192].clone(), "sdpa")
        fast = attention(q[:, :8192].clone(), k[:, :8192].clone(), v[:, :8192].clone(), backend)
    ref = ref.flatten(2)
    return {f"{backend}_rel_err_vs_fp32": rel(fast, ref), "sdpa_bf16_rel_err_vs_fp32": rel(bf16, ref)}


def fp8_linear_check(rows: int = 16384, K: int = 3072, N: int = 9216, seed: int = 0) -> dict:
    from avatar_core.model.fp8 import enable_fp8_
    g = torch.Generator("cuda").manual_seed(seed)
    lin = torch.nn.Linear(K, N).cuda().bfloat16()
    with torch.no_grad():
        lin.weight.copy_(torch.randn(N, K, generator=g, device="cuda") / K ** 0.5)
        x = torch.randn(rows, K, generator=g, device="cuda", dtype=torch.bfloat16)
        ref = lin(x)
        holder = torch.nn.Module()
        holder.double_blocks = torch.nn.ModuleList([torch.nn.Module()])
        holder.double_blocks[0].lin = lin
        enable_fp8_(holder, fast=True)
        fast = holder.double_blocks[0].lin(x)
        holder.double_blocks[0].lin.fast = False
        slow = holder.double_blocks[0].lin(x)
    return {"fp8_scaled_mm_rel_err": rel(fast, ref), "fp8_dequant_rel_err": rel(slow, ref)}
