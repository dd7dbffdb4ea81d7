"""Solvers against an ODE with a known exact solution, their measured order of convergence, and the multistep
state in the sampler: it follows the ring frames across shifted windows, is fused like the latents, works with
CFG, and resumes bitwise.

The test ODE: data x0 ~ N(MU, SD^2) per element, so on the path x = (1 - s) x0 + s * noise the exact velocity
is closed form (E[noise - x0 | x]) and the exact flow maps the starting noise z to x0 = MU + SD * z (the flow
of a Gaussian is the affine map that keeps z: x_s = (1 - s) MU + sqrt((1 - s)^2 SD^2 + s^2) z). The error of
a solver is measured against that, at several step counts N; order = log2(err(N) / err(2N)).
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from test_sampling_loop import small_cond

from avatar_core.errors import InputError
from avatar_core.sampling import DeepCacheConfig, GuidanceConfig, SamplerCallbacks, SamplerConfig, sample_avatar
from avatar_core.sampling.guidance import combine
from avatar_core.sampling.resume import ResumeConfig
from avatar_core.sampling.sampler import SamplingCancelled, initial_noise
from avatar_core.sampling.schedule import FlowSchedule, euler_step, flow_schedule
from avatar_core.sampling.solvers import SOLVERS, Solver, get_solver, register
from avatar_core.sampling.windows import next_shift, plan_clip, window_frames, window_starts

MU, SD = 0.7, 0.5
W_CFG = 4.0  # constant guidance scale of the CFG tests


def exact_velocity(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """E[noise - x0 | x] on the path at sigma, float64: (x - E[x0 | x]) / sigma."""
    a = 1.0 - sigma
    x = x.double()
    x0 = MU + a * SD * SD / (a * a * SD * SD + sigma * sigma) * (x - a * MU)
    return (x - x0) / sigma


def exact_at(z: torch.Tensor, sigma: float) -> torch.Tensor:
    return (1 - sigma) * MU + math.sqrt((1 - sigma) ** 2 * SD * SD + sigma * sigma) * z.double()


def solve(name: str, schedule: FlowSchedule, z: torch.Tensor) -> torch.Tensor:
    """The solver alone on the whole tensor, from the exact state at sigma[0]."""
    solver, x, history = get_solver(name), exact_at(z, float(schedule.sigmas[0])).float(), None
    for i in range(schedule.steps):
        x, history = solver.step(x, exact_velocity(x, float(schedule.sigmas[i])).float(), schedule, i, history)
    return x


def log_snr_uniform(n: int, hi: float = 0.98, lo: float = 0.02) -> FlowSchedule:
    """n steps equally spaced in lambda = log((1 - s) / s), the variable DPM-Solver's analysis uses."""
    l0, l1 = math.log((1 - hi) / hi), math.log((1 - lo) / lo)
    sigmas = torch.tensor([1 / (1 + math.exp(l0 + (l1 - l0) * i / n)) for i in range(n + 1)], dtype=torch.float32)
    return FlowSchedule(sigmas, sigmas[:-1] * 1000)


def orders(errors: list[float]) -> list[float]:
    return [math.log2(a / b) for a, b in zip(errors[:-1], errors[1:])]


Z = torch.randn(512, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name,expected", [("euler", 1.0), ("dpmpp_2m", 2.0)])
def test_order_on_a_log_snr_uniform_grid(name: str, expected: float) -> None:
    """Where every step is small in lambda, the measured order is the solver's order (Euler 1, 2M 2)."""
    ns = (16, 32, 64, 128)
    errors = []
    for n in ns:
        sched = log_snr_uniform(n)
        errors.append((solve(name, sched, Z).double() - exact_at(Z, float(sched.sigmas[-1]))).abs().max().item())
    got = orders(errors)
    assert all(abs(p - expected) < 0.15 for p in got[1:]), (name, errors, got)   # 2M: 1.87, 1.97, 1.99


@pytest.mark.parametrize("shift", [1.0, 5.0])
def test_order_on_the_samplers_schedule(shift: float) -> None:
    """The sampler's schedules run from sigma 1 to 0, where lambda is infinite: the 2M steps next to the ends are
    not small in lambda, which costs 2M a log factor (error ~ log N / N^2; the constant grows with the shift).
    Measured over N = 256 -> 1024: Euler 1.0; 2M 1.7 at shift 1, 1.6 at shift 5 (official)."""
    ns, errors = (256, 1024), {}
    for name in ("euler", "dpmpp_2m"):
        errors[name] = [(solve(name, flow_schedule(n, shift), Z).double() - exact_at(Z, 0.0)).abs().max().item()
                        for n in ns]
    euler, two_m = (math.log2(e[0] / e[1]) / 2 for e in errors.values())
    assert 0.95 < euler < 1.05 and two_m > 1.5, (euler, two_m, errors)
    assert errors["dpmpp_2m"][0] < errors["euler"][0] / 5


def guided_field(x2: torch.Tensor, t: torch.Tensor, **kw) -> torch.Tensor:
    """A CFG batch [uncond, cond] whose combination at scale W_CFG is the exact velocity; each half alone is off
    by a term that only a correct combination cancels (uncond = v + d, cond = v + d (1 - 1 / W_CFG))."""
    x = x2[: x2.shape[0] // 2]
    v = exact_velocity(x, t[0].double().item() / 1000)
    d = 0.3 * x.double() + 0.2
    return torch.cat([v + d, v + d * (1 - 1 / W_CFG)]).float()


def ring_config(solver: str, steps: int, shift: float = 5.0) -> SamplerConfig:
    # cfg == early_floor: the official decaying scale is the constant W_CFG on every step
    return SamplerConfig(steps=steps, shift=shift, seed=3, solver=solver, window_dtype=None,
                         deep_cache=DeepCacheConfig(enabled=False),
                         guidance=GuidanceConfig(cfg=W_CFG, early_floor=W_CFG, switch_step=steps))


FRAMES = 300  # ring of 97 latent frames: 3 windows of 33 per step, the grid shifting by 10 each step


def test_multistep_state_follows_the_ring_frames_with_cfg() -> None:
    """Windows that shift every step over a ring, with CFG: the same result, bit for bit, as the solver on the whole
    ring at once (the field is pointwise, so only the per-frame bookkeeping of the state can differ)."""
    cond, config = small_cond(FRAMES), ring_config("dpmpp_2m", 6)
    plan = plan_clip(FRAMES, config.windows)
    assert plan.windows_per_step == 3 and plan.offset == 10
    ring = sample_avatar(guided_field, cond, config).ring_latents
    x, history, sched = initial_noise(plan, cond.ref_latents, config.seed), None, flow_schedule(6, 5.0)
    for i in range(sched.steps):
        t = sched.timesteps[i].repeat(2)
        v = combine(guided_field(torch.cat([x, x]), t), W_CFG)
        x, history = get_solver("dpmpp_2m").step(x, v, sched, i, history)
    assert torch.equal(ring, x)


def test_multistep_state_is_fused_like_the_latents() -> None:
    """Each window adds its own offset (its frames' place in the window), so frames covered by two windows get two
    estimates: the ring's state must be their average, as its latents are (the 2M step is affine in the estimate)."""
    cond, config = small_cond(FRAMES), ring_config("dpmpp_2m", 4)
    plan = plan_clip(FRAMES, config.windows)

    def windowed(x2, t, **kw):
        out = guided_field(x2, t)
        return out + 0.05 * torch.arange(x2.shape[2], dtype=out.dtype).view(1, 1, -1, 1, 1)
    ring = sample_avatar(windowed, cond, config).ring_latents
    x, history, sched, shift = initial_noise(plan, cond.ref_latents, config.seed), None, flow_schedule(4, 5.0), 0
    for i in range(sched.steps):  # independent bookkeeping: average the windows' velocities per frame
        total, count = torch.zeros_like(x), torch.zeros(plan.ring_frames)
        for start in window_starts(plan.ring_frames, plan.window, shift):
            idx = window_frames(start, plan.window, plan.ring_frames)
            xw = x[:, :, idx]
            for j, f in enumerate(idx):
                total[:, :, f] += combine(windowed(torch.cat([xw, xw]), sched.timesteps[i].repeat(2)), W_CFG)[:, :, j]
                count[f] += 1
        x, history = get_solver("dpmpp_2m").step(x, total / count.view(1, 1, -1, 1, 1), sched, i, history)
        shift = next_shift(shift, plan.offset, plan.window)
    assert torch.allclose(ring, x, atol=2e-5), (ring - x).abs().max()


def test_order_through_the_sampler_ring_and_cfg() -> None:
    """The whole sampler (ring windows, CFG) converges to the exact x0 at each solver's rate (shift 1; 2M with the
    log factor of test_order_on_the_samplers_schedule): measured Euler 1.0, 2M 1.6 over N = 32 -> 128."""
    cond = small_cond(FRAMES)
    plan = plan_clip(FRAMES, ring_config("euler", 1).windows)
    exact = exact_at(initial_noise(plan, cond.ref_latents, 3), 0.0)
    got = {}
    for name in ("euler", "dpmpp_2m"):
        errors = [(sample_avatar(guided_field, cond, ring_config(name, n, shift=1.0)).ring_latents.double()
                   - exact).abs().max().item() for n in (32, 128)]
        got[name] = math.log2(errors[0] / errors[1]) / 2
    assert 0.9 < got["euler"] < 1.1 and got["dpmpp_2m"] > 1.45, got


def test_euler_is_the_official_step_and_the_default() -> None:
    sched = flow_schedule(7)
    x, v = torch.randn(2, 3, generator=torch.Generator().manual_seed(1)), torch.randn(2, 3)
    new, history = SOLVERS["euler"].step(x, v, sched, 2, None)
    assert torch.equal(new, euler_step(x, v, sched.dt(2))) and history is None
    assert SamplerConfig().solver == "euler" and SOLVERS["euler"].official and not SOLVERS["dpmpp_2m"].official


def test_unknown_solver_is_refused_naming_the_choices() -> None:
    with pytest.raises(InputError, match="solver: 'heun' is not one of .*euler.*dpmpp_2m.*official"):
        SamplerConfig(solver="heun")


def test_a_solver_registered_later_is_a_choice() -> None:
    calls = []

    def halfway(latents, velocity, schedule, step, history):
        calls.append(step)
        return euler_step(latents, velocity, schedule.dt(step)), None
    register(Solver("test_late", halfway))
    try:
        sample_avatar(guided_field, small_cond(100), replace(ring_config("euler", 3), solver="test_late"))
        assert calls == [0, 1, 2]
    finally:
        del SOLVERS["test_late"]


def test_a_multistep_render_resumes_bitwise_with_its_state(tmp_path: Path) -> None:
    """The state is checkpointed with the ring: a cancelled 2M render resumes to the uninterrupted latents (without
    the state the first resumed step would be first order and differ), and an Euler run never takes its file."""
    cond, config = small_cond(FRAMES), ring_config("dpmpp_2m", 5)
    reference = sample_avatar(guided_field, cond, config).ring_latents
    resume, seen = ResumeConfig(tmp_path, interval_s=0, weights=torch.nn.Identity()), []  # the stand-in has none
    stop = SamplerCallbacks(on_progress=seen.append, should_cancel=lambda: len(seen) >= 8)   # in step 3
    with pytest.raises(SamplingCancelled):
        sample_avatar(guided_field, cond, config, callbacks=stop, resume=resume)
    (saved,) = tmp_path.iterdir()
    with safe_open(str(saved), framework="pt") as f:
        assert "history" in f.keys() and f.metadata()["next_step"] == "2"
    euler_calls = []
    sample_avatar(lambda *a, **k: euler_calls.append(1) or guided_field(*a, **k), cond,
                  replace(config, solver="euler"), resume=resume)
    assert len(euler_calls) == 5 * 3, "an Euler run must not continue the 2M checkpoint"
    calls = []
    resumed = sample_avatar(lambda *a, **k: calls.append(1) or guided_field(*a, **k), cond, config,
                            resume=resume).ring_latents
    assert len(calls) == 3 * 3 and torch.equal(resumed, reference)


def test_a_multistep_checkpoint_without_its_state_is_not_trusted(tmp_path: Path, caplog) -> None:
    """A 2M checkpoint whose history is gone (its content hash recomputed, so only that is wrong) would resume
    first order: it is reported, removed, and the render starts afresh."""
    from safetensors.torch import save_file

    from avatar_core.sampling.resume import content_hash
    cond, config = small_cond(FRAMES), ring_config("dpmpp_2m", 5)
    resume, seen = ResumeConfig(tmp_path, interval_s=0, weights=torch.nn.Identity()), []
    with pytest.raises(SamplingCancelled):
        sample_avatar(guided_field, cond, config, resume=resume,
                      callbacks=SamplerCallbacks(on_progress=seen.append, should_cancel=lambda: len(seen) >= 8))
    (saved,) = tmp_path.iterdir()
    with safe_open(str(saved), framework="pt") as f:
        meta, latents, rng = dict(f.metadata()), f.get_tensor("latents"), f.get_tensor("rng_cpu")
    meta["content_sha256"] = content_hash(latents, rng, meta)
    save_file({"latents": latents, "rng_cpu": rng}, str(saved), metadata=meta)
    calls = []
    sample_avatar(lambda *a, **k: calls.append(1) or guided_field(*a, **k), cond, config, resume=resume)
    assert len(calls) == 5 * 3 and "cannot be trusted" in caplog.text and "history" in caplog.text
