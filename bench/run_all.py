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
import subprocess
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

STAGES = ("checks", "ceiling", "bf16", "fast", "lowmem", "stepcache", "compile")
ISOLATED = ("lowmem", "stepcache", "compile")  # run in a fresh process each (own allocator state, own compile cache)


def run_isolated(stage: str, args, timeout: float) -> list[dict]:
    """`stage` in a child process of this script; its rows (none if it failed or ran out of time)."""
    cmd = [sys.executable, __file__, "--stages", stage, "--shapes", args.shapes[0], "--out", str(args.out),
           "--repeats", str(args.repeats), "--lowmem-gib", str(args.lowmem_gib)]
    if args.ref:
        cmd += ["--ref", str(args.ref)]
    try:
        subprocess.run(cmd, timeout=timeout, check=True)
    except (subprocess.TimeoutExpired, subprocess.CalledProcessError) as e:
        print(f"stage {stage} did not finish: {e}", flush=True)
        return []
    path = args.out / f"results_{stage}.json"
    return json.loads(path.read_text()) if path.is_file() else []


def _row(kind: str, r: dict, **extra) -> dict:
    r = {k: v for k, v in r.items() if k != "output"}
    return dict(kind=kind, device=torch.cuda.get_device_name(), torch=torch.__version__, date=time.strftime("%Y-%m-%d"),
                **r, **extra)


def stage_lowmem(model, cfg, shape, args, ref) -> dict:
    from avatar_core.model.offload import BlockSwap
    from avatar_core.model.options import LOW_MEMORY_CHUNK_TOKENS, RunOptions
    swap = BlockSwap(model, "cuda", resident=1)
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(args.lowmem_gib * 2**30 / total)
    try:
        r = bench_shape(model, cfg, shape, 2, args.repeats, 3, keep_output=True,
                        options=RunOptions(chunk_tokens=LOW_MEMORY_CHUNK_TOKENS))
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        swap.remove()
    return _row("lowmem", r, cap_gib=args.lowmem_gib, rel_err_vs_bf16=None if ref is None else checks.rel(r["output"], ref))


def stage_fast(model, cfg, shape, args, ref) -> list[dict]:
    """fp8 _scaled_mm block linears and/or the 8-bit attention backend; each against the bf16 output."""
    from avatar_core.model.attention import resolve_backend
    from avatar_core.model.fp8 import enable_fp8_
    from avatar_core.model.options import RunOptions
    rows, backend = [], resolve_backend(args.fast_attention)
    for variant in args.fast_variants:
        if "fp8" in variant:
            enable_fp8_(model, fast=True)
            torch.cuda.empty_cache()
        options = RunOptions(attention=backend if "attn" in variant else "sdpa")
        r = bench_shape(model, cfg, shape, 2, args.repeats, 3, keep_output=True, options=options)
        name = variant.replace("attn", backend) if "attn" in variant else variant
        rows.append(_row(name if "fp8" in variant else "bf16+" + backend, r,
                         rel_err_vs_bf16=None if ref is None else checks.rel(r["output"], ref)))
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
                rel_err_vs_bf16=None if ref is None else checks.rel(r["output"], ref))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    ap.add_argument("--shapes", nargs="+", default=["704x704", "704x1216"])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--lowmem-gib", type=float, default=10.0)
    ap.add_argument("--fast-attention", default="sage")
    ap.add_argument("--out", type=Path, default=Path("bench/results/latest"))
    ap.add_argument("--ref", type=Path, help="bf16 output to compare with (default: OUT/ref_SHAPE.pt, written by bf16)")
    ap.add_argument("--fast-variants", nargs="+", default=["fp8", "fp8+attn"], choices=["attn", "fp8", "fp8+attn"])
    ap.add_argument("--budget-s", type=float, default=3600, help="wall-clock budget; isolated stages get what is left")
    args = ap.parse_args()
    t_start = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    args.ref = args.ref or args.out / f"ref_{args.shapes[0]}.pt"
    isolate = len(args.stages) > 1
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
        (args.out / f"results_{'_'.join(args.stages)}.json").write_text(json.dumps(rows, indent=1))

    if "checks" in args.stages:
        parts = [guarded(checks.kernel_checks), guarded(checks.fp8_linear_check),
                 guarded(checks.attention_check, args.fast_attention)]          # each on its own
        emit(_row("checks", {k: v for part in parts if part for k, v in part.items()}))
    if "ceiling" in args.stages:
        for s in args.shapes:
            emit(guarded(lambda s=s: _row("ceiling", ceiling(cfg, parse_shape(s), 2))))
        emit(guarded(lambda: _row("ceiling", ceiling(cfg, parse_shape(args.shapes[0]), 2, fp8=True))))
    model_stages = [s for s in args.stages if s in ("bf16", "fast") or (s in ("lowmem", "compile") and not isolate)]
    if model_stages:
        shape0 = parse_shape(args.shapes[0])
        ref_path = args.ref
        model = build_random_transformer(cfg, dtype=torch.bfloat16, device="cuda", seed=0)
        print(f"model ready, weights {gib(torch.cuda.memory_allocated()):.1f} GiB", flush=True)
        if "bf16" in args.stages:
            for i, s in enumerate(args.shapes):
                r = bench_shape(model, cfg, parse_shape(s), 2, args.repeats if i == 0 else 1, 5, keep_output=(i == 0))
                if i == 0:
                    torch.save(r["output"], ref_path)
                emit(_row("bf16", r))
        ref = torch.load(ref_path) if Path(ref_path).is_file() else None
        if "fast" in args.stages:
            for row in guarded(stage_fast, model, cfg, shape0, args, ref) or []:
                emit(row)
        if "lowmem" in model_stages:
            emit(guarded(stage_lowmem, model, cfg, shape0, args, ref))
        if "compile" in model_stages:
            emit(guarded(stage_compile, model, cfg, shape0, args, ref))
        del model
        torch.cuda.empty_cache()
    if "stepcache" in args.stages and not isolate:
        from bench.stepcache_bench import run as stepcache_run
        for row in guarded(stepcache_run, cfg) or []:
            emit(_row("stepcache", row))
    if isolate:
        for stage in [s for s in STAGES if s in ISOLATED and s in args.stages]:
            for row in run_isolated(stage, args, args.budget_s - (time.perf_counter() - t_start)):
                emit(row)
    print(write_report(rows, args.out / f"results_{'_'.join(args.stages)}.md"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
