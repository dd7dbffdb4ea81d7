"""Step cache on a short sampling loop (random 13B weights, smaller frames so it fits the device budget).

Flow-matching Euler with CFG batch 2 and the official deep-cache plan; once without and once with the
first-block step cache. Reports wall time, model calls skipped and the final latents' relative deviation.
Random weights: the deviation measures the approximation, not visual quality.
"""

from __future__ import annotations

import time

import torch

from avatar_core.config import AvatarConfig
from avatar_core.loading import build_random_transformer
from avatar_core.sampling.deepcache import cached_steps
from avatar_core.sampling.guidance import combine
from avatar_core.sampling.schedule import euler_step, flow_schedule
from avatar_core.sampling.stepcache import StepCache, StepCacheConfig
from bench.common import make_inputs, parse_shape


def sample(model, inp: dict, steps: int, scale: float = 7.5, step_cache: StepCache | None = None) -> torch.Tensor:
    sched, plan = flow_schedule(steps), cached_steps(steps)
    x = inp["x"][:1].float()
    tokens = None
    for i in range(steps):
        t = sched.timesteps[i].to(x.device).repeat(2)
        args = dict({k: v for k, v in inp.items() if k != "x"}, step_cache=step_cache)
        if i in plan and tokens is not None:
            v = model(torch.cat([x, x]), t, **args, cached_tokens=tokens)
        else:
            v, tokens = model(torch.cat([x, x]), t, **args, return_cache=True)
        x = euler_step(x, combine(v, scale), sched.dt(i))
    return x


def run(cfg: AvatarConfig, shape: str = "256x256", steps: int = 50, multiples=(1.5, 3.0)) -> list[dict]:
    """Uncached, then the step cache at thresholds = multiples x the median per-call change (measured with
    threshold 0, which computes every call), so the numbers mean something on random weights too."""
    model = build_random_transformer(cfg, dtype=torch.bfloat16, device="cuda", seed=0)
    inp = make_inputs(cfg, parse_shape(shape), 2, "cuda")
    inp.pop("t")
    rows, ref, thresholds = [], None, [None, 0.0]
    with torch.no_grad():
        while thresholds:
            th = thresholds.pop(0)
            sample(model, inp, 2, step_cache=None if th is None else StepCache(StepCacheConfig(th)))  # warm-up
            sc = None if th is None else StepCache(StepCacheConfig(th))
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            out = sample(model, inp, steps, step_cache=sc)
            torch.cuda.synchronize()
            dt = time.perf_counter() - t0
            ref = out if th is None else ref
            if th == 0.0:
                median = sorted(sc.changes)[len(sc.changes) // 2]
                thresholds += [m * median for m in multiples]
            rows.append(dict(shape=shape, steps=steps, threshold=th, total_s=dt,
                             full_calls=None if sc is None else sc.calls, skipped=None if sc is None else sc.skipped,
                             changes=None if sc is None else [round(c, 4) for c in sc.changes],
                             rel_dev=((out - ref).norm() / ref.norm()).item()))
    return rows
