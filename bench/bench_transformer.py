"""GPU benchmark of one transformer forward (13B, random weights): full, deep-cache, memory, TFLOP/s.

    python bench/bench_transformer.py --shapes 704x704 704x1216 --batch 2 --out results.json

Not a test: it reports what it measured. Random weights only (the real ones cannot be downloaded here).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from avatar_core.config import AvatarConfig  # noqa: E402
from avatar_core.loading import build_random_transformer  # noqa: E402
from avatar_core.model.flops import cached_forward_flops, forward_flops  # noqa: E402
from avatar_core.model.options import RunOptions  # noqa: E402
from bench.common import TEXT_LEN, TEXT_VALID, gib, make_inputs, parse_shape, timed  # noqa: E402


def bench_shape(model, cfg, shape, batch: int, repeats: int, cached_repeats: int, keep_output: bool = False,
                options: RunOptions | None = None) -> dict:
    """Full and deep-cache forward times, peak memory. keep_output: row["output"] = the full output on the CPU."""
    inp = dict(make_inputs(cfg, shape, batch, "cuda"), options=options)
    x, t = inp.pop("x"), inp.pop("t")
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    with torch.no_grad():
        holder = {}

        def full():
            holder["out"], holder["cache"] = model(x, t, **inp, return_cache=True)
        med, times = timed(full, repeats)
        peak_alloc, peak_res = torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved()
        cache = holder.pop("cache")
        cmed, ctimes = timed(lambda cache=cache: model(x, t, **inp, cached_tokens=cache), cached_repeats)
    T, H, W = shape.latent
    fl = forward_flops(cfg, batch, T, H, W, TEXT_LEN, TEXT_VALID[1])
    cfl = cached_forward_flops(cfg, batch, T, H, W, TEXT_LEN, TEXT_VALID[1])
    output = holder["out"].cpu() if keep_output else None
    del cache
    holder.clear()
    return dict(output=output, shape=str(shape), batch=batch, full_s=med, full_runs=times, tflops=fl / med / 1e12, pflop=fl / 1e15,
                cached_s=cmed, cached_runs=ctimes, cached_tflops=cfl / cmed / 1e12,
                peak_alloc_gib=gib(peak_alloc), peak_reserved_gib=gib(peak_res))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", nargs="+", default=["704x704", "704x1216"])
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cached-repeats", type=int, default=5)
    ap.add_argument("--attention", default="sdpa")
    ap.add_argument("--fp8", action="store_true", help="fp8 weights (block linears) with scaled matmuls")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    cfg = AvatarConfig.avatar_13b()
    t0 = time.perf_counter()
    model = build_random_transformer(cfg, dtype=torch.bfloat16, device="cuda", seed=0)
    options = RunOptions(attention=args.attention)
    if args.fp8:
        from avatar_core.model.fp8 import enable_fp8_
        enable_fp8_(model, fast=True)
    print(f"model ready in {time.perf_counter() - t0:.1f} s, weights {gib(torch.cuda.memory_allocated()):.1f} GiB", flush=True)
    rows = []
    for s in args.shapes:
        row = bench_shape(model, cfg, parse_shape(s), args.batch, args.repeats, args.cached_repeats, options=options)
        row.update(device=torch.cuda.get_device_name(), torch=torch.__version__, attention=args.attention, fp8=args.fp8,
                   date=time.strftime("%Y-%m-%d"))
        rows.append(row)
        row.pop("output")
        print(json.dumps(row), flush=True)
    print("| shape | batch | full forward s | TFLOP/s | deep-cache s | peak alloc / reserved GiB |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['shape']} | {r['batch']} | {r['full_s']:.2f} | {r['tflops']:.0f} | {r['cached_s']:.3f} | "
              f"{r['peak_alloc_gib']:.1f} / {r['peak_reserved_gib']:.1f} |")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
