"""Where a full bf16 step's time goes: chunk-size sweep and a kernel-time table (torch.profiler).

    python bench/profile_step.py --shape 704x704 --chunks 16384 32768 65536 --out bench/results/profile.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from avatar_core.config import AvatarConfig  # noqa: E402
from avatar_core.loading import build_random_transformer  # noqa: E402
from avatar_core.model.options import RunOptions  # noqa: E402
from bench.common import gib, make_inputs, parse_shape, timed  # noqa: E402

GROUPS = (("attention", ("attn", "fmha", "flash", "sdpa", "cudnn")), ("gemm", ("gemm", "sm90_xmma", "cutlass", "nvjet")),
          ("fused triton", ("_ln_mod", "_heads", "_quant", "_gelu")), ("elementwise", ("elementwise", "vectorized", "reduce", "cat", "copy")))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="704x704")
    ap.add_argument("--chunks", nargs="+", type=int, default=[16384, 32768, 65536])
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    cfg = AvatarConfig.avatar_13b()
    model = build_random_transformer(cfg, dtype=torch.bfloat16, device="cuda", seed=0)
    inp = make_inputs(cfg, parse_shape(args.shape), 2, "cuda")
    x, t = inp.pop("x"), inp.pop("t")
    result = {"shape": args.shape, "chunks": {}}
    with torch.no_grad():
        for c in args.chunks:
            torch.cuda.reset_peak_memory_stats()
            med, _ = timed(lambda c=c: model(x, t, **inp, options=RunOptions(chunk_tokens=c)), 1,
                           warmup=1 if c == args.chunks[0] else 0)
            result["chunks"][c] = dict(full_s=med, peak_alloc_gib=gib(torch.cuda.max_memory_allocated()))
            print(c, result["chunks"][c], flush=True)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            model(x, t, **inp)
            torch.cuda.synchronize()
    kernels = defaultdict(float)
    for ev in prof.key_averages():
        if ev.device_type == torch.autograd.DeviceType.CUDA:
            kernels[ev.key] += ev.self_device_time_total / 1e6
    groups = defaultdict(float)
    for name, s in kernels.items():
        g = next((g for g, keys in GROUPS if any(k in name.lower() for k in keys)), "other")
        groups[g] += s
    result["groups_s"] = dict(groups)
    result["top_kernels_s"] = dict(sorted(kernels.items(), key=lambda kv: -kv[1])[:25])
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
