"""The sampler with the tiny model: official end-to-end runs, and a clip of over 60 s of audio."""

from __future__ import annotations

import json
import math
import os
import weakref
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from fixture_clips import fixture_clip
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

import avatar_core.parity.sampling as sp
from avatar_core.parity.transformer import load_fixture_model
from avatar_core.sampling import (
    AvatarConditioning,
    DeepCacheConfig,
    SamplerCallbacks,
    SamplerConfig,
    plan_clip,
    sample_avatar,
)

SHARED = Path(os.environ.get("HYAVATAR_SHARED", Path(__file__).resolve().parents[2] / "shared"))
FIXTURES = SHARED / "fixtures" / "parity"
pytestmark = pytest.mark.skipif(not (FIXTURES / "tiny_weights.safetensors").is_file(),
                                reason=f"parity fixtures not found at {FIXTURES} (set HYAVATAR_SHARED)")


@pytest.fixture(scope="module")
def tiny_model() -> torch.nn.Module:
    return load_fixture_model(FIXTURES)


@pytest.mark.slow
def test_official_runs_end_to_end_within_tolerance(tiny_model: torch.nn.Module) -> None:
    results = sp.checks(FIXTURES, model=tiny_model)
    model_runs = [r for r in results if ":model:" in r.name]
    runs = {p.stem for p in FIXTURES.glob("*.json")
            if p.with_suffix(".safetensors").is_file() and "calls" in json.loads(p.read_text())}
    assert {r.name.split(":")[0] for r in model_runs} == runs
    bad = [r.line() for r in results if not r.ok]
    assert not bad, "\n".join(bad)


class LiveTensorBytes(TorchDispatchMode):
    """Peak bytes of tensor storages allocated by ops while active (a CPU stand-in for max_memory_allocated)."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, list[int]] = {}  # storage ptr -> [bytes, live tensors on it]
        self.now = self.peak = 0

    def _release(self, ptr: int) -> None:
        entry = self.live.get(ptr)
        if entry is not None:
            entry[1] -= 1
            if entry[1] == 0:
                self.now -= entry[0]
                del self.live[ptr]

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr():
                ptr = t.untyped_storage().data_ptr()
                if ptr not in self.live:
                    self.live[ptr] = [t.untyped_storage().nbytes(), 0]
                    self.now += self.live[ptr][0]
                    self.peak = max(self.peak, self.now)
                self.live[ptr][1] += 1
                weakref.finalize(t, self._release, ptr)
        return out


def _clip_conditioning(frames: int) -> AvatarConditioning:
    return fixture_clip(FIXTURES, frames)


def _measured_run(model: torch.nn.Module, frames: int) -> tuple[int, list, Any]:
    windows_seen: list = []

    def denoise(x: torch.Tensor, t: torch.Tensor, **kw: Any) -> Any:
        assert x.shape[2] == 33 and kw["audio"].shape[2] == 129  # the model only ever sees one window ([B, N, F, ...])
        return model(x, t, **kw)

    cfg = SamplerConfig(steps=3, seed=5, deep_cache=DeepCacheConfig(cached_steps=(2,)))
    cond = _clip_conditioning(frames)
    with LiveTensorBytes() as mem:
        res = sample_avatar(denoise, cond, cfg, callbacks=SamplerCallbacks(on_progress=windows_seen.append))
    return mem.peak, windows_seen, res


@pytest.mark.slow
def test_clip_over_60_seconds_bounded_memory_and_full_coverage(tiny_model: torch.nn.Module) -> None:
    long_frames, short_frames = 1510, 250  # 60.4 s and 10 s at 25 fps
    peak_long, progress, res = _measured_run(tiny_model, long_frames)
    peak_short, _, short = _measured_run(tiny_model, short_frames)

    ring = 12 * 32 + 1  # official ring for 1515 padded rows: (1515 // 128 + 1) * 32 + 1
    windows = math.ceil(ring / 33)  # 12 windows of 33 = 396 frames: 11 frames are covered twice per step
    assert res.ring_latents.shape == (1, 16, ring, 4, 4) and res.latents.shape[2] == 1515 // 4 + 1
    assert bool(torch.isfinite(res.ring_latents).all())
    for step in range(3):
        counts = torch.zeros(ring, dtype=torch.int64)
        for p in (p for p in progress if p.step == step):
            counts[list(p.frames)] += 1
        assert counts.min() == 1 and counts.max() == 2 and int((counts == 2).sum()) == windows * 33 - ring
    assert [p.cached for p in progress].count(True) == windows  # step 2 ran from the deep cache

    # What may grow with the clip: a few ring-sized latent buffers (state, fusion sums, the fused result)
    # and the deep cache (video tokens per frame, ref+text tokens per window). Not the audio, not the model.
    latent_frame = 16 * 4 * 4 * 4  # bytes of one latent frame (C x H x W float32)
    token_frame = 2 * 4 * 64 * 4  # CFG batch x (2x2 tokens) x hidden 64 float32
    per_window = 2 * (4 + 24) * 64 * 4  # ref + text tokens of one window
    d_ring, d_windows = ring - short.plan.ring_frames, windows - short.plan.windows_per_step
    allowed = 5 * latent_frame * d_ring + token_frame * d_ring + per_window * d_windows
    audio_bytes = long_frames * 10 * 5 * 384 * 4
    assert allowed < audio_bytes / 20  # a clip-sized copy of the audio would not fit
    assert peak_long - peak_short <= allowed, (peak_long, peak_short, allowed)
    assert plan_clip(long_frames).ring_frames == ring


def test_split_cfg_and_cpu_cache_match_the_batched_run(tiny_model: torch.nn.Module) -> None:
    cond = _clip_conditioning(250)  # 2 windows per step
    cfg = SamplerConfig(steps=3, seed=2, deep_cache=DeepCacheConfig(cached_steps=(2,)))
    batched = sample_avatar(tiny_model, cond, cfg).ring_latents
    split = sample_avatar(tiny_model, cond, replace(cfg, split_cfg=True, cache_device=torch.device("cpu"))).ring_latents
    # batch-1 vs batch-2 forwards differ by ~1e-6, which may flip a bf16 rounding of the window results
    assert sp.latent_check("split_cfg", split, batched).ok
    no_cache = sample_avatar(tiny_model, cond, replace(cfg, deep_cache=DeepCacheConfig(enabled=False))).ring_latents
    assert not torch.equal(no_cache, batched)  # step 2 really ran from the cache


def test_step_cache_in_the_sampler(tiny_model: torch.nn.Module) -> None:
    """The sampler's opt-in step cache: threshold 0 changes nothing; one history per window; fresh per run."""
    from avatar_core.sampling.stepcache import StepCacheConfig
    cond = _clip_conditioning(200)                       # 2 windows per step
    cfg = SamplerConfig(steps=6, seed=1, deep_cache=DeepCacheConfig(enabled=False))
    plain = sample_avatar(tiny_model, cond, cfg)
    assert plain.step_cache is None
    zero = sample_avatar(tiny_model, cond, replace(cfg, step_cache=StepCacheConfig(threshold=0.0)))
    assert torch.equal(zero.latents, plain.latents) and zero.step_cache.skipped == 0
    assert zero.step_cache.histories == 2                # window 0 and window 1 never share a history
    skipping_cfg = replace(cfg, step_cache=StepCacheConfig(threshold=1e9, max_skips_in_row=1))
    skipping = sample_avatar(tiny_model, cond, skipping_cfg)
    skipped = skipping.step_cache.skipped
    assert skipped > 0 and not torch.equal(skipping.latents, plain.latents)
    assert sample_avatar(tiny_model, cond, skipping_cfg).step_cache.skipped == skipped  # counters restart every run
