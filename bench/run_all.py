"""Every number of the GPU performance report, in one command (13B random weights, one 129-frame window).

    python bench/run_all.py --out bench/results/DATE_h100         # all stages
    python bench/run_all.py --stages checks ceiling bf16 --shapes 704x704

Stages: checks (kernel/attention/fp8 accuracy), ceiling (attention + GEMMs alone), bf16 (default path),
lowmem (block swap + cond/uncond in turn + small chunks, under a hard memory cap), fast (fp8 _scaled_mm +
8-bit attention; error vs bf16), compile (per-block torch.compile), stepcache (a short sampling loop with
and without the first-block step cache). Writes results.json and results.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from avatar_core.config import AvatarConfig  # noqa: E402
from avatar_core.loading import build_random_transformer  # noqa: E402
from bench import checks  # noqa: E402
from bench.bench_transformer import bench_shape  # noqa: E402
from bench.ceiling import ceiling  # noqa: E402
from bench.common import gib, parse_shape  # noqa: E402
from bench.report import write_report  # noqa: E402

STAGES = ("checks", "ceiling", "bf16", "lowmem", "fast", "compile", "stepcache")


def _row(kind: str, r: dict, **extra) -> dict:
    r = {k: v for k, v in r.items() if k != "output"}
    return dict(kind=kind, device=torch.cuda.get_device_name(), torch=torch.__version__, date=time.strftime("%Y-%m-%d"),
                **r, **extra)


def stage_lowmem(model, cfg, shape, args, ref) -> dict:
    from avatar_core.model.offload import BlockSwap
    swap = BlockSwap(model, "cuda", resident=1)
    model.chunk_tokens = 4096
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(args.lowmem_gib * 2**30 / total)
    try:
        r = bench_shape(model, cfg, shape, 2, args.repeats, 3, keep_output=True)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        model.chunk_tokens = 16384
        swap.remove()
    return _row("lowmem", r, cap_gib=args.lowmem_gib, rel_err_vs_bf16=checks.rel(r["output"], ref))


def stage_fast(model, cfg, shape, args, ref) -> list[dict]:
    from avatar_core.model.attention import resolve_backend
    from avatar_core.model.fp8 import enable_fp8_
    rows = []
    backend = resolve_backend(args.fast_attention)
    model.attention_backend = backend
    r = bench_shape(model, cfg, shape, 2, args.repeats, 3, keep_output=True)
    rows.append(_row("bf16+" + backend, r, rel_err_vs_bf16=checks.rel(r["output"], ref)))
    model.attention_backend = "sdpa"
    enable_fp8_(model, fast=True)
    torch.cuda.empty_cache()
    r = bench_shape(model, cfg, shape, 2, args.repeats, 3, keep_output=True)
    rows.append(_row("fp8", r, rel_err_vs_bf16=checks.rel(r["output"], ref)))
    model.attention_backend = backend
    r = bench_shape(model, cfg, shape, 2, args.repeats, 3, keep_output=True)
    rows.append(_row("fp8+" + backend, r, rel_err_vs_bf16=checks.rel(r["output"], ref)))
    return rows


def stage_compile(model, cfg, shape, args, ref) -> dict:
    from avatar_core.model.compile import compile_blocks, uncompile_blocks
    t0 = time.perf_counter()
    compile_blocks(model)
    try:
        r = bench_shape(model, cfg, shape, 2, args.repeats, 3, keep_output=True)
    finally:
        uncompile_blocks(model)
    return _row("compile", r, compile_and_first_s=time.perf_counter() - t0,
                rel_err_vs_bf16=checks.rel(r["output"], ref))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    ap.add_argument("--shapes", nargs="+", default=["704x704", "704x1216"])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--lowmem-gib", type=float, default=10.0)
    ap.add_argument("--fast-attention", default="sage")
    ap.add_argument("--out", type=Path, default=Path("bench/results/latest"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    cfg, rows = AvatarConfig.avatar_13b(), []

    def guarded(fn, *a):
        try:
            return fn(*a)
        except Exception:  # one failing stage must not lose the others' numbers
            traceback.print_exc()
            torch.cuda.set_per_process_memory_fraction(1.0)
            torch.cuda.empty_cache()
            return None

    def emit(row):
        if row is None:
            return
        rows.append(row)
        print(json.dumps(row), flush=True)
        (args.out / "results.json").write_text(json.dumps(rows, indent=1))

    if "checks" in args.stages:
        emit(guarded(lambda: _row("checks", {**checks.kernel_checks(), **checks.fp8_linear_check(),
                                             **checks.attention_check(args.fast_attention)})))
    if "ceiling" in args.stages:
        for s in args.shapes:
            emit(guarded(lambda: _row("ceiling", ceiling(cfg, parse_shape(s), 2))))
        emit(guarded(lambda: _row("ceiling", ceiling(cfg, parse_shape(args.shapes[0]), 2, fp8=True))))
    model_stages = [s for s in args.stages if s in ("bf16", "lowmem", "fast", "compile")]
    if model_stages:
        model = build_random_transformer(cfg, dtype=torch.bfloat16, device="cuda", seed=0)
        print(f"model ready, weights {gib(torch.cuda.memory_allocated()):.1f} GiB", flush=True)
        shape0, ref = parse_shape(args.shapes[0]), None
        for s in args.shapes if "bf16" in args.stages else args.shapes[:1]:
            r = bench_shape(model, cfg, parse_shape(s), 2, args.repeats, 5, keep_output=(s == args.shapes[0]))
            ref = r["output"] if s == args.shapes[0] else ref
            if "bf16" in args.stages:
                emit(_row("bf16", r))
        if "compile" in args.stages:
            emit(guarded(stage_compile, model, cfg, shape0, args, ref))
        if "lowmem" in args.stages:
            emit(guarded(stage_lowmem, model, cfg, shape0, args, ref))
        if "fast" in args.stages:
            for row in guarded(stage_fast, model, cfg, shape0, args, ref) or []:
                emit(row)
        del model
        torch.cuda.empty_cache()
    if "stepcache" in args.stages:
        from bench.stepcache_bench import run as stepcache_run
        for row in guarded(stepcache_run, cfg) or []:
            emit(_row("stepcache", row))
    print(write_report(rows, args.out / "results.md"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
