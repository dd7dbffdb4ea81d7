"""The qk-norm + RoPE + head-split pass (`fused.qkv_to_heads`) alone on a CUDA GPU: time, bandwidth, launch shapes.

    python bench/bench_heads.py [--baseline FILE] [--out DIR]

One 16,384-token chunk of the 13B model (24 heads x 128; the blocks' chunk size), q/k written in bf16 and in e4m3
(the fast preset), for each launch shape (rows per program x warps): seconds per call (CUDA events, median of
20), effective bandwidth (bytes read + written / time) and the projected time per 704x704 CFG-batch-2 forward
(2 samples x 60 blocks x 66,655 tokens). Every launch shape's output is checked against the PyTorch reference
(`kernels=False`). --baseline: a fused_triton.py of an earlier commit, timed the same way (same-run baseline).
Not a test: it reports what it measured.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from avatar_core.model import fused, fused_triton  # noqa: E402
from avatar_core.model.layers import RMSNorm  # noqa: E402
from bench.common import cuda_time  # noqa: E402

H, D, R = 24, 128, 16384
ROWS_PER_FORWARD = 2 * 60 * 66_655
SHAPES = ((8, 2), (16, 2), (16, 4), (32, 4), (32, 8), (64, 4), (64, 8))


def _inputs():
    g = torch.Generator("cuda").manual_seed(0)
    qkv = torch.randn(R, 3 * H * D, generator=g, device="cuda", dtype=torch.bfloat16)
    norms = [RMSNorm(D).cuda().to(torch.bfloat16) for _ in range(2)]
    with torch.no_grad():
        for n in norms:
            n.weight.copy_(1 + 0.3 * torch.randn(D, generator=g, device="cuda"))
    theta = torch.rand(R, D // 2, generator=g, device="cuda") * 6.3
    rope = (theta.cos().repeat_interleave(2, -1).contiguous(), theta.sin().repeat_interleave(2, -1).contiguous())
    return qkv, norms, rope


def _bufs(fp8: bool):
    dt = torch.float8_e4m3fn if fp8 else torch.bfloat16
    return tuple(torch.empty(R, H, D, dtype=t, device="cuda") for t in (dt, dt, torch.bfloat16))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", type=Path, help="fused_triton.py of an earlier commit (its qkv_to_heads)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    qkv, (qn, kn), rope = _inputs()
    rows = []
    for fp8 in (False, True):
        inv = (1.0 / fused.qk_fp8_scales([qn], [kn])).contiguous() if fp8 else None
        extra = (inv, fused.FP8_MAX) if fp8 else ()
        ref = _bufs(fp8)
        with torch.no_grad():
            fused.qkv_to_heads(qkv, qn, kn, rope, 0, R, ref, 0, False, inv)             # PyTorch reference
        nbytes = qkv.numel() * 2 + sum(t.numel() * t.element_size() for t in ref)
        runs = [(f"rows{r}_warps{w}", fused_triton, dict(rows=r, warps=w)) for r, w in SHAPES]
        if args.baseline:
            spec = importlib.util.spec_from_file_location("baseline_fused_triton", args.baseline)
            base = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(base)
            runs.insert(0, ("baseline", base, {}))
        for name, mod, kw in runs:
            out = _bufs(fp8)

            def call(mod=mod, out=out, kw=kw, extra=extra):
                mod.qkv_to_heads(qkv, qn.weight, kn.weight, qn.eps, *rope, 0, R, *out, *extra, **kw)
            s = cuda_time(call, reps=20)
            diff = [(a.float() - b.float()).abs() for a, b in zip(out, ref)]
            rows.append(dict(kernel=name, qk="e4m3" if fp8 else "bf16", s_per_call=s, gb_per_s=nbytes / s / 1e9,
                             projected_s_per_forward=s / R * ROWS_PER_FORWARD,
                             max_abs_diff_vs_reference=[d.max().item() for d in diff],
                             frac_differing=[(d > 0).float().mean().item() for d in diff]))
            print(json.dumps(rows[-1]), flush=True)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "heads.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
