"""Sampling pieces against closed forms written out here (never our own output): the shift schedule and the
Euler step for shifts other than the official one, the guidance schedule for a non-default configuration, the
CFG split of one model call, and the step cache's skip decisions replayed by hand."""

from __future__ import annotations

import pytest
import torch

from avatar_core.sampling.calls import ModelCall
from avatar_core.sampling.guidance import GuidanceConfig, combine, step_guidance
from avatar_core.sampling.schedule import euler_step, flow_schedule
from avatar_core.sampling.solvers import get_solver
from avatar_core.sampling.stepcache import ReducedStepCache, StepCache, StepCacheConfig

# --- schedule: sigma_i = shift s_i / (1 + (shift - 1) s_i), s_i = 1 - i / N; t_i = 1000 sigma_i --------------


@pytest.mark.parametrize("steps,shift", [(1, 5.0), (4, 1.0), (7, 3.0), (10, 12.5)])
def test_the_schedule_is_the_shift_formula_written_out(steps, shift):
    s = [1 - i / steps for i in range(steps + 1)]
    want = torch.tensor([shift * x / (1 + (shift - 1) * x) for x in s], dtype=torch.float64)
    sched = flow_schedule(steps, shift)
    assert sched.steps == steps and sched.sigmas.shape == (steps + 1,) and sched.timesteps.shape == (steps,)
    torch.testing.assert_close(sched.sigmas.double(), want, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(sched.timesteps.double(), 1000 * want[:-1], rtol=1e-6, atol=1e-4)
    for i in range(steps):
        torch.testing.assert_close(float(sched.dt(i)), float(want[i + 1] - want[i]), rtol=1e-5, atol=1e-7)


def test_an_euler_step_is_x_plus_v_dt_in_float32():
    g = torch.Generator().manual_seed(0)
    x, v = torch.randn(2, 3, 4, generator=g).bfloat16(), torch.randn(2, 3, 4, generator=g).bfloat16()
    sched = flow_schedule(4, 3.0)
    for step in range(4):
        dt = float(sched.sigmas[step + 1]) - float(sched.sigmas[step])
        want = x.double() + v.double() * dt
        for out in (euler_step(x, v, sched.dt(step)), get_solver("euler").step(x, v, sched, step, None)[0]):
            assert out.dtype == torch.float32
            torch.testing.assert_close(out.double(), want, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="euler"):
        get_solver("no_such_solver")


# --- guidance: scale (1 - i/N)(hi - lo) + lo; uncond text negative before the switch, positive after ----------

def test_guidance_of_a_custom_schedule_written_out():
    cfg = GuidanceConfig(cfg=9.0, switch_step=3, early_floor=1.5, late_start=5.0, late_end=2.5,
                         early_mask_scale=0.25, late_mask_scale=0.75)
    steps = 8
    for i in range(steps):
        g = step_guidance(i, steps, cfg)
        if i < 3:
            assert (g.negative_text, g.mask_scale) == (True, 0.25)
            assert g.scale == pytest.approx((1 - i / steps) * (9.0 - 1.5) + 1.5, abs=1e-12)
        else:
            assert (g.negative_text, g.mask_scale) == (False, 0.75)
            assert g.scale == pytest.approx((1 - i / steps) * (5.0 - 2.5) + 2.5, abs=1e-12)
    for bad in (-1, steps):
        with pytest.raises(ValueError):
            step_guidance(bad, steps, cfg)


def test_cfg_combination_is_uncond_plus_scale_times_the_difference():
    u, c = torch.tensor([[1.0, -2.0]]), torch.tensor([[3.0, 0.5]])
    out = combine(torch.cat([u, c]), 4.0)
    torch.testing.assert_close(out, torch.tensor([[1.0 + 4.0 * 2.0, -2.0 + 4.0 * 2.5]]))


# --- one model call's CFG halves ------------------------------------------------------------------------------

def _call(b: int = 2, **extra) -> ModelCall:
    r = lambda *s: torch.arange(float(torch.Size(s).numel())).reshape(s)  # noqa: E731
    return ModelCall(ref_latents=r(2 * b, 3, 2, 1, 1), text_states=r(2 * b, 5, 4), text_mask=r(2 * b, 5),
                     text_pooled=r(2 * b, 6), motion_exp=r(2 * b, 4), motion_pose=r(2 * b, 4), fps=r(2 * b),
                     audio=r(2 * b, 1, 5, 2), face_mask=r(2 * b, 1, 1, 1, 1), emotion=r(2 * b, 16, 1, 1, 1),
                     cached_tokens=r(2 * b, 7, 4), **extra)


@pytest.mark.parametrize("index", [0, 1])
def test_a_cfg_half_is_rows_index_b_to_index_b_plus_b_of_every_batched_input(index):
    call, b = _call(), 2
    half = call.half(index)
    for name in ("ref_latents", "text_states", "text_mask", "text_pooled", "motion_exp", "motion_pose", "fps",
                 "audio", "face_mask", "emotion", "cached_tokens"):
        assert torch.equal(getattr(half, name), getattr(call, name)[index * b:(index + 1) * b]), name
    own = call.half(index, cache_is_half=True)                # a CFG rank's own deep cache is already its half
    assert own.cached_tokens is call.cached_tokens and torch.equal(own.audio, half.audio)


def test_call_kwargs_name_every_input_and_leave_out_an_off_step_cache():
    call = _call(freqs=(torch.zeros(1), torch.ones(1)), return_cache=True)
    kw = call.kwargs()
    assert "step_cache" not in kw and kw["return_cache"] is True and kw["freqs"] is call.freqs
    assert kw["audio"] is call.audio and kw["cached_tokens"] is call.cached_tokens
    cache = StepCache()
    assert _call(step_cache=cache).kwargs()["step_cache"] is cache
    assert ModelCall.from_kwargs(kw) == call


# --- step cache: change_i = sum|r_i - r_(i-1)| / sum|r_(i-1)| accumulated; skip below the threshold ---------

def _replay(levels: list[float], threshold: float, max_skips: int):
    """Feed first-block residuals `level * ones` (input 0) and deep-cache tokens `10 * level`; return what
    the cache did per call: None (compute) or the tokens it returned."""
    cache = StepCache(StepCacheConfig(threshold=threshold, max_skips_in_row=max_skips))
    out = []
    for level in levels:
        first_out, first_in = torch.full((1, 3, 2), level), torch.zeros(1, 3, 2)
        got = cache.lookup(first_out, first_in)
        if got is None:
            cache.store(first_out, 10 * first_out)
        out.append(got)
    return cache, out


def test_the_step_cache_skips_by_the_accumulated_relative_change_written_out():
    levels = [1.0, 1.01, 1.02, 1.03, 1.5, 1.5, 1.5]
    cache, out = _replay(levels, threshold=0.05, max_skips=2)
    changes = [abs(b - a) / abs(a) for a, b in zip(levels, levels[1:])]
    # by hand: call 0 computes (no history); 1, 2 skip (0.0100, 0.0199 accumulated); 3 computes (two skips in
    # a row already); 4 computes (0.456 > 0.05); 5 and 6 skip (no change) with the residual of call 4
    skipped = [o is not None for o in out]
    assert skipped == [False, True, True, False, False, True, True]
    torch.testing.assert_close(out[1], torch.full((1, 3, 2), 1.01 + 9 * 1.0))     # first_out + residual (9 * 1.0)
    torch.testing.assert_close(out[2], torch.full((1, 3, 2), 1.02 + 9 * 1.0))
    torch.testing.assert_close(out[5], torch.full((1, 3, 2), 1.5 + 9 * 1.5))
    st = cache.stats()
    assert (st.calls, st.skipped, st.histories) == (7, 4, 1)
    assert st.changes == pytest.approx(changes, rel=1e-5)


def test_threshold_zero_never_skips_and_max_skips_zero_never_skips():
    assert all(o is None for o in _replay([1.0] * 5, threshold=0.0, max_skips=3)[1])
    assert all(o is None for o in _replay([1.0] * 5, threshold=1.0, max_skips=0)[1])
    cache, out = _replay([1.0, 1.0, 1.0, 1.0, 1.0], threshold=1.0, max_skips=1)
    assert [o is not None for o in out] == [False, True, False, True, False]
    # two changes of 0.03 each: under 0.05 alone, over it accumulated
    assert [o is not None for o in _replay([1.0, 1.03, 1.03 ** 2], threshold=0.05, max_skips=3)[1]] == \
        [False, True, False]


def test_streams_keep_separate_histories_and_a_reduce_sums_the_parts():
    cache = StepCache(StepCacheConfig(threshold=0.05))
    ones = torch.ones(1, 2, 2)
    for key in ("a", "b"):
        with cache.stream(key):
            assert cache.lookup(ones, 0 * ones) is None
            cache.store(ones, 3 * ones)
    with cache.stream("a"):
        assert cache.lookup(1.01 * ones, 0 * ones) is not None    # a's history: change 0.01
    with cache.stream("b"):
        assert cache.lookup(2 * ones, 0 * ones) is None           # b's history: change 1.0
    assert cache.stats().histories == 2
    # a process holding half of a call's tokens: the other half (changed by 0.5) arrives through `reduce`
    other = torch.tensor([0.5 * 4, 4.0])                          # |diff| sum, |prev| sum of the other part
    split = ReducedStepCache(StepCache(StepCacheConfig(threshold=0.05)), lambda s: s + other)
    assert split.lookup(ones, 0 * ones) is None
    split.store(ones, 3 * ones)
    assert split.lookup(ones, 0 * ones) is None                  # whole call: (0 + 2) / (4 + 4) = 0.25
    assert split.cache.stats().changes == pytest.approx([0.25])


def test_a_lookup_without_a_stored_residual_computes():
    """A computed call not followed by `store` (nothing to reuse yet) must compute again, whatever the change."""
    cache = StepCache(StepCacheConfig(threshold=1.0, max_skips_in_row=3))
    ones = torch.ones(1, 2, 2)
    assert cache.lookup(ones, 0 * ones) is None
    assert cache.lookup(ones, 0 * ones) is None


# --- the sampler's side of window parallelism (the StepParallel protocol), with a stand-in for the other ranks --

class OtherRanks:
    """Owns the windows `mine` picks; at the exchange the other ranks' windows arrive as zeros (counted once) and
    the `share_cache` flag of every step is recorded."""

    def __init__(self, mine) -> None:
        self.mine, self.shared = mine, []

    def owns(self, window: int, windows: int) -> bool:
        return self.mine(window)

    def new_cache(self, ring_frames: int, storage_device):
        from avatar_core.sampling.deepcache import FrameTokenCache
        return FrameTokenCache(ring_frames, storage_device)

    def exchange(self, total: torch.Tensor, count: torch.Tensor, share_cache: bool) -> None:
        self.shared.append(share_cache)
        count.clamp_(min=1)


def _window_run(parallel: OtherRanks, steps: int, cached: tuple[int, ...] | None, seen: list):
    from test_sampling_loop import small_cond, toy_model

    from avatar_core.sampling import DeepCacheConfig, SamplerCallbacks, SamplerConfig, sample_avatar
    from avatar_core.sampling.windows import WindowConfig
    deep = DeepCacheConfig(cached_steps=cached) if cached else DeepCacheConfig(enabled=False)
    cond = small_cond(120)
    cond.ref_latents = cond.ref_latents[:, :, :9]                      # one window of 9 latent frames
    return sample_avatar(toy_model, cond, SamplerConfig(steps=steps, windows=WindowConfig(9, 3), deep_cache=deep),
                         parallel=parallel, callbacks=SamplerCallbacks(on_progress=seen.append))


def test_progress_counts_the_other_ranks_windows_and_the_cache_is_shared_before_each_cached_step():
    seen: list = []
    result = _window_run(OtherRanks(lambda k: k % 2 == 1), 3, None, seen)
    windows = result.plan.windows_per_step
    assert windows >= 3
    # by hand: window k of step s is call s * windows + k + 1, the other rank's calls included
    assert [(p.step, p.window, p.calls_done) for p in seen] == [
        (s, k, s * windows + k + 1) for s in range(3) for k in range(windows) if k % 2 == 1]
    assert all(p.calls_total == 3 * windows for p in seen)
    steps, cached, everything = 5, (2, 4), OtherRanks(lambda k: True)
    seen.clear()
    _window_run(everything, steps, cached, seen)
    assert [p.cached for p in seen] == [s in cached for s in range(steps) for _ in range(windows)]
    # the tokens go round after a full step whose next step is cached: steps 1 and 3
    assert everything.shared == [s + 1 in cached and s not in cached for s in range(steps)]


def test_a_face_mask_of_another_batch_is_refused_before_any_model_call():
    from test_sampling_loop import small_cond

    from avatar_core.sampling import SamplerConfig, sample_avatar
    cond = small_cond(100)
    cond.face_mask = torch.ones(2, 1, 1, 2, 2)                         # batch 2 for a batch-1 clip
    with pytest.raises(ValueError, match="face_mask"):
        sample_avatar(lambda *a, **k: pytest.fail("model called"), cond, SamplerConfig(steps=2))
