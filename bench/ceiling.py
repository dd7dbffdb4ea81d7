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
    dtype = getattr(backend, "input_dtype", torch.bfloat16)
    q, k, v = (torch.randn(1, L, heads, head_dim, device="cuda").to(dtype) for _ in range(3))
    out = torch.empty(1, L, heads, head_dim, device="cuda", dtype=torch.bfloat16)

    def run():
        for seg in (slice(0, valid), slice(valid, L)):
            out[:, seg] = backend(q[:, seg], k[:, seg], v[:, seg])
    return cuda_time(run, 3)


def sdpa_nhd(q, k, v):
    return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)


def fa3_nhd(q, k, v):
    from avatar_core.model import attention_fa3
    return attention_fa3.dense(q, k, v)


def fa3_fp8_nhd(q, k, v):
    """The FA3 fp8 kernel alone on e4m3 inputs (unit descales): no quantisation pass, no value smoothing."""
    from avatar_core.model import attention_fa3
    one = torch.ones(1, q.shape[2], device=q.device)
    return attention_fa3._first(attention_fa3._interface().flash_attn_func(q, k, v, q_descale=one, k_descale=one,
                                                                          v_descale=one))


fa3_fp8_nhd.input_dtype = torch.float8_e4m3fn
KERNELS = {"bf16_sdpa": (False, sdpa_nhd), "bf16_fa3": (False, fa3_nhd), "fast": (True, fa3_fp8_nhd)}


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


def main() -> int:
    """python bench/ceiling.py --shapes 704x704 704x1216 [--configs bf16_sdpa bf16_fa3 fast]: one JSON row each."""
    import argparse
    import json
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bench.common import parse_shape
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", nargs="+", default=["704x704"])
    ap.add_argument("--configs", nargs="+", default=list(KERNELS), choices=list(KERNELS))
    args = ap.parse_args()
    for s in args.shapes:
        for name in args.configs:
            fp8, kernel = KERNELS[name]
            print(json.dumps(dict(config=name, **ceiling(AvatarConfig.avatar_13b(), parse_shape(s), 2, fp8, kernel))),
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
