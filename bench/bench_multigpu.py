"""Multi-GPU sampling benchmark (13B, random weights): step time, speed-up and peak memory per GPU per mode.

    python bench/bench_multigpu.py --size 704x704 --gpus 1 2 4 --out bench/results/multigpu.json

For every GPU count and mode (cfg, window, sequence, cfg+window, cfg+sequence) a worker pool is started
(one process per GPU, NCCL), a short clip is sampled and the wall time of every step is taken in the parent
(after the step's exchange, when rank 0 reports the step's preview). The first step is warm-up; the table
shows the median of the others, the speed-up over 1 GPU and the largest per-GPU peak allocation.
The clip has 4 windows per step by default (400 audio frames -> ring 129), so window parallelism over 2 and
4 GPUs is balanced. ``--tiny`` runs the same code on the CPU (gloo, tiny model): it checks the script only.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from avatar_core.config import AvatarConfig  # noqa: E402
from avatar_core.distributed import ParallelConfig, WorkerPool  # noqa: E402
from avatar_core.parity.sampling import latent_check  # noqa: E402
from avatar_core.runner import RandomSpec  # noqa: E402
from avatar_core.sampling import DeepCacheConfig, SamplerCallbacks, SamplerConfig  # noqa: E402
from bench.bench_sampler import conditioning  # noqa: E402
from bench.common import gib, parse_shape  # noqa: E402

MODES = ("cfg", "window", "sequence", "cfg+window", "cfg+sequence")


def configs(gpus: list[int], modes: list[str]) -> list[tuple[int, str, ParallelConfig]]:
    """(gpus, mode, degrees) to run: 1 GPU once as the baseline, then every valid mode per count."""
    out = [(1, "single", ParallelConfig())] if 1 in gpus else []
    seen = set()
    for g in (g for g in gpus if g > 1):
        for mode in modes:
            try:
                cfg = ParallelConfig.from_gpus(g, mode)
            except ValueError:
                continue
            if cfg not in seen:
                seen.add(cfg)
                out.append((g, mode, cfg))
    return out


def run_one(spec: RandomSpec, config: ParallelConfig, cond, sampler: SamplerConfig, device: str, threads: int) -> dict:
    t0 = time.perf_counter()
    with WorkerPool(spec, config, device=device, threads=threads) as pool:
        load_s = time.perf_counter() - t0
        marks = [time.perf_counter()]
        res = pool.sample_avatar(cond, sampler, callbacks=SamplerCallbacks(
            on_preview=lambda step, _x: marks.append(time.perf_counter())))
        steps = [b - a for a, b in zip(marks, marks[1:])]
        return dict(load_s=load_s, step_s=steps, median_step_s=statistics.median(steps[1:] or steps),
                    peak_gib=[gib(p) for p in pool.last_peaks], windows=res.plan.windows_per_step,
                    finite=bool(torch.isfinite(res.latents).all()), latents=res.ring_latents.float().cpu())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="704x704")
    ap.add_argument("--audio-frames", type=int, default=400, help="400 -> 4 windows per step; 130 -> 2")
    ap.add_argument("--gpus", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    ap.add_argument("--steps", type=int, default=3, help="timed steps + 1 warm-up step")
    ap.add_argument("--deep-cache", action="store_true", help="default off: every step is a full step")
    ap.add_argument("--attention", default="sdpa")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--tiny", action="store_true", help="tiny model on the CPU with gloo: checks the script only")
    args = ap.parse_args()
    shape = parse_shape(args.size)
    if args.tiny:
        cfg, device, dtype, threads = AvatarConfig(hidden_size=64, num_heads=4, depth_double=2, depth_single=2,
                                                   rope_dims=(4, 6, 6), text_dim=32, text_pooled_dim=16,
                                                   audio_proj_dim=16, adapter_dim=32, adapter_after_double=(0,)), \
            "cpu", torch.float32, 1
    else:
        cfg, device, dtype, threads = AvatarConfig.avatar_13b(), "cuda", torch.bfloat16, 0
        have = torch.cuda.device_count()
        if max(args.gpus) > have:
            print(f"only {have} GPU(s) visible: skipping counts above {have}", flush=True)
            args.gpus = [g for g in args.gpus if g <= have]
    cond = conditioning(cfg, shape.height, shape.width, args.audio_frames, "cpu")
    if args.tiny:
        cond = _tiny_dtypes(cond)
    sampler = SamplerConfig(steps=args.steps + 1, seed=0, deep_cache=DeepCacheConfig(enabled=args.deep_cache))
    formats = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}
    spec = RandomSpec(config=cfg, weight_format=formats[dtype], seed=0, attention=args.attention)
    rows, base, ref = [], None, None
    for gpus, mode, par in configs(args.gpus, args.modes):
        print(f"== {gpus} GPU(s), {mode}: {par.describe()}", flush=True)
        try:
            row = run_one(spec, par, cond, sampler, device, threads)
        except Exception as e:  # one failing mode (e.g. OOM) should not hide the others
            row = dict(error=f"{type(e).__name__}: {str(e)[-400:]}")
        row.update(gpus=gpus, mode=mode, cfg=par.cfg, window=par.window, sequence=par.sequence, size=str(shape),
                   audio_frames=args.audio_frames, device=_device_name(args.tiny), date=time.strftime("%Y-%m-%d"))
        latents = row.pop("latents", None)
        if mode == "single" and "median_step_s" in row:
            base, ref = row["median_step_s"], latents
        if ref is not None and latents is not None:  # same result as 1 GPU, within bf16 noise?
            check = latent_check(mode, latents, ref)
            row.update(matches_single=check.ok, vs_single=check.line())
        if base and "median_step_s" in row:
            row["speedup"] = base / row["median_step_s"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    _table(rows)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))
    return 0


def _tiny_dtypes(cond):
    from dataclasses import replace
    f = lambda t: t.float() if t.is_floating_point() else t  # noqa: E731
    text = lambda t: replace(t, states=f(t.states), pooled=f(t.pooled))  # noqa: E731
    return replace(cond, ref_latents=f(cond.ref_latents), text=text(cond.text), negative_text=text(cond.negative_text))


def _device_name(tiny: bool) -> str:
    return "cpu (tiny)" if tiny else torch.cuda.get_device_name()


def _table(rows: list[dict]) -> None:
    print("| GPUs | mode | cfg x window x seq | step s (median) | speed-up | peak GiB / GPU (max) | == 1 GPU (bf16 tol.) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['gpus']} | {r['mode']} | {r['cfg']}x{r['window']}x{r['sequence']} | failed: {r['error'][:80]} | | |")
            continue
        print(f"| {r['gpus']} | {r['mode']} | {r['cfg']}x{r['window']}x{r['sequence']} | {r['median_step_s']:.2f} | "
              f"{r.get('speedup', float('nan')):.2f} | {max(r['peak_gib']):.1f} | {r.get('matches_single', '-')} |")


if __name__ == "__main__":
    raise SystemExit(main())
