"""Kernel ceiling of one full forward: the model's attention calls + its block GEMMs alone, at its shapes.

Times one double block's and one single block's matrix products and segment attentions (same layouts the
model passes: (1, L, H, Dh) buffers viewed heads-first, one sample at a time) and scales by the depths.
Elementwise work, audio adapters, embedders and the final layer are left out on purpose: this is the
floor that `bench_transformer` is compared with.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from avatar_core.config import AvatarConfig
from bench.common import TEXT_LEN, TEXT_VALID, Shape, cuda_time


def _gemms(rows: int, shapes: list[tuple[int, int]], fp8: bool = False) -> float:
    """Seconds of rows x K @ K x N products for each (K, N), bf16 or fp8 (_scaled_mm, per-tensor scales)."""
    total = 0.0
    for K, N in shapes:
        a = torch.randn(rows, K, device="cuda", dtype=torch.bfloat16)
        w = torch.randn(N, K, device="cuda", dtype=torch.bfloat16) / K ** 0.5
        if fp8:
            aq, wq = a.to(torch.float8_e4m3fn), w.to(torch.float8_e4m3fn)
            sa, sb = torch.ones(rows, 1, device="cuda"), torch.ones(1, N, device="cuda")  # row-wise, as FP8Linear
            total += cuda_time(lambda aq=aq, wq=wq, sa=sa, sb=sb: torch._scaled_mm(aq, wq.t(), scale_a=sa, scale_b=sb,
                                                                         out_dtype=torch.bfloat16))
        else:
            total += cuda_time(lambda a=a, w=w: F.linear(a, w))
        del a, w
    return total


def _attention(L: int, valid: int, heads: int, head_dim: int, backend) -> float:
    q, k, v = (torch.randn(1, L, heads, head_dim, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    out = torch.empty_like(q)

    def run():
        for seg in (slice(0, valid), slice(valid, L)):
            out[:, seg] = backend(q[:, seg], k[:, seg], v[:, seg])
    return cuda_time(run, 3)


def sdpa_nhd(q, k, v):
    return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)


def ceiling(cfg: AvatarConfig, shape: Shape, batch: int, fp8: bool = False, attention=sdpa_nhd) -> dict:
    T, H, W = shape.latent
    hw = (H // 2) * (W // 2)
    n_vid = (T + 1) * hw                              # reference frame + video tokens
    D, M = cfg.hidden_size, cfg.mlp_hidden
    double = _gemms(n_vid, [(D, 3 * D), (D, D), (D, M), (M, D)], fp8) + _gemms(TEXT_LEN, [(D, 3 * D), (D, D), (D, M), (M, D)], fp8)
    single = _gemms(n_vid + TEXT_LEN, [(D, 3 * D + M), (D + M, D)], fp8)
    gemm = batch * (cfg.depth_double * double + cfg.depth_single * single)
    attn = sum(_attention(n_vid + TEXT_LEN, n_vid + TEXT_VALID[b % 2], cfg.num_heads, cfg.head_dim, attention)
               for b in range(batch)) * (cfg.depth_double + cfg.depth_single)
    return dict(shape=str(shape), batch=batch, fp8=fp8, gemm_s=gemm, attention_s=attn, ceiling_s=gemm + attn)
