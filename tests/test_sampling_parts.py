"""Unit tests of the sampler's parts against the official fixtures and the official spec (§8, §9)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from avatar_core.sampling import (
    DeepCacheConfig,
    FrameTokenCache,
    GuidanceConfig,
    WindowConfig,
    cached_steps,
    euler_step,
    flow_schedule,
    plan_clip,
    step_guidance,
)
from avatar_core.sampling.windows import (
    accumulate,
    fuse,
    gather_audio,
    new_accumulator,
    next_shift,
    window_audio_rows,
    window_frames,
    window_starts,
)

SHARED = Path(os.environ.get("HYAVATAR_SHARED", Path(__file__).resolve().parents[2] / "shared"))
FIXTURES = SHARED / "fixtures" / "parity"
needs_fixtures = pytest.mark.skipif(not (FIXTURES / "sampler_common.safetensors").is_file(),
                                    reason=f"parity fixtures not found at {FIXTURES} (set HYAVATAR_SHARED)")


def _runs() -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(FIXTURES.glob("*.json")) if "calls" in json.loads(p.read_text())]


@needs_fixtures
def test_schedule_matches_every_recorded_schedule_bitwise() -> None:
    pre = load_file(str(FIXTURES / "preproc.safetensors"))
    found = 0
    for key, ref in pre.items():
        m = re.match(r"sched_shift(\d+)_steps(\d+)\.(sigmas|timesteps)$", key)
        if m:
            got = getattr(flow_schedule(int(m[2]), float(m[1])), m[3])
            assert torch.equal(got, ref), key
            found += 1
    assert found >= 2


def test_schedule_endpoints_and_shift() -> None:
    s = flow_schedule(4, shift=5.0)
    # sigma(s) = 5 s / (1 + 4 s) for s = 1, .75, .5, .25, 0
    assert s.sigmas.tolist() == pytest.approx([1.0, 3.75 / 4.0, 2.5 / 3.0, 1.25 / 2.0, 0.0])
    assert s.timesteps.tolist() == pytest.approx([1000.0, 937.5, 833.333, 625.0], rel=1e-5)
    assert flow_schedule(4, shift=1.0).sigmas.tolist() == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.0])
    with pytest.raises(ValueError):
        flow_schedule(0)


def test_euler_step_moves_along_velocity() -> None:
    x = torch.tensor([1.0, -2.0], dtype=torch.bfloat16)
    out = euler_step(x, torch.tensor([0.5, 4.0]), torch.tensor(-0.25))
    assert out.dtype == torch.float32 and out.tolist() == [0.875, -3.0]


@needs_fixtures
def test_guidance_scales_match_recorded_calls() -> None:
    mask_max = float(load_file(str(FIXTURES / "sampler_common.safetensors"))["model_in.face_masks_pipeline_arg"].max())
    n = 0
    for meta in _runs():
        steps = meta["run"]["steps"]
        for call in meta["calls"]:
            g = step_guidance(call["step"], steps, GuidanceConfig(cfg=7.5))
            assert g.scale == call["guidance_scale"]
            assert g.negative_text == (call["text_states"][0] == "neg")
            assert call["face_mask_max"] == pytest.approx([g.mask_scale * mask_max] * 2)
            n += 1
    assert n > 0


def test_guidance_official_values_for_50_steps() -> None:
    # official_implementation.md §8: early 7.5 -> 6.51 (steps 0-9), late 5.9 -> 3.56 (steps 10-49)
    assert step_guidance(0, 50).scale == 7.5
    assert step_guidance(9, 50).scale == pytest.approx(6.51)
    late = step_guidance(10, 50)
    assert late.scale == pytest.approx(5.9) and not late.negative_text and late.mask_scale == 1.0
    assert step_guidance(49, 50).scale == pytest.approx(3.56)
    early = step_guidance(9, 50)
    assert early.negative_text and early.mask_scale == 0.6
    custom = step_guidance(3, 50, GuidanceConfig(switch_step=3, late_start=8.0, late_end=2.0, late_mask_scale=0.9))
    assert custom.scale == pytest.approx((1 - 3 / 50) * 6.0 + 2.0) and custom.mask_scale == 0.9


def test_deep_cache_official_plan_and_switches() -> None:
    # official_implementation.md §8: cached steps 16-19, 21-24, 26-29, 31-34, 36-39 for 50 steps
    official = {s for a in (16, 21, 26, 31, 36) for s in range(a, a + 4)}
    assert cached_steps(50) == official
    assert cached_steps(50, DeepCacheConfig(plan="official")) == official
    assert cached_steps(50, DeepCacheConfig(enabled=False)) == frozenset()
    assert cached_steps(6) == frozenset()  # too few steps to cache
    assert cached_steps(100, DeepCacheConfig(plan="official")) == official | set(range(50, 100))
    assert cached_steps(8, DeepCacheConfig(cached_steps=(3, 5))) == {3, 5}
    with pytest.raises(ValueError):
        DeepCacheConfig(cached_steps=(0, 3))


@pytest.mark.parametrize("steps", [20, 25, 30, 40, 75, 100])
def test_deep_cache_auto_plan_keeps_official_shape(steps: int) -> None:
    cached = cached_steps(steps)
    full = [i for i in range(steps) if i not in cached]
    # like the official plan: first 30 % and last ~18 % full, about 40 % of all steps cached
    assert all(i not in cached for i in range(int(0.3 * steps)))
    assert all(i not in cached for i in range(steps - int(0.18 * steps), steps))
    assert 0.25 <= len(cached) / steps <= 0.45
    assert max(b - a for a, b in zip(full, full[1:])) <= 5  # never more than 4 cached steps in a row


def test_frame_token_cache_uses_first_frame_ref_and_text() -> None:
    """Official per-frame semantics: video tokens per frame, ref/text tokens of the window's first frame."""
    hw, d, w, ring = 2, 3, 3, 5

    def tokens(marker: float) -> torch.Tensor:  # [2, hw + w*hw + L, d], L = 4
        ref = torch.full((2, hw, d), marker)
        img = torch.arange(w * hw, dtype=torch.float32).view(1, w * hw, 1).expand(2, -1, d) + marker
        txt = torch.full((2, 4, d), -marker)
        return torch.cat([ref, img, txt], dim=1)

    cache = FrameTokenCache(ring)
    cache.store([0, 1, 2], tokens(100.0), hw)
    cache.store([3, 4, 0], tokens(200.0), hw)  # wraps: frame 0 now belongs to the second window
    got = cache.assemble([4, 0, 1], torch.device("cpu"))
    assert got.shape == (2, hw + w * hw + 4, d)
    assert torch.all(got[:, :hw] == 200.0) and torch.all(got[:, -4:] == -200.0)  # owner of frame 4
    img = got[:, hw:-4, 0].view(2, w, hw)[0]
    # frame 4 = slot 1 of window 2 (200 + 2, 3); frame 0 = slot 2 of window 2; frame 1 = slot 1 of window 1
    assert img.tolist() == [[202.0, 203.0], [204.0, 205.0], [102.0, 103.0]]
    got = cache.assemble([1, 2, 3], torch.device("cpu"))
    assert torch.all(got[:, :hw] == 100.0) and torch.all(got[:, -4:] == -100.0)
    with pytest.raises(RuntimeError):
        FrameTokenCache(ring).assemble([0, 1, 2], torch.device("cpu"))


@needs_fixtures
def test_plan_and_window_indices_match_recorded_runs() -> None:
    for meta in _runs():
        info, plan = meta["loop_info"], plan_clip(meta["audio_len"])
        assert (plan.video_frames, plan.ring_frames, plan.offset) == (
            info["video_length"], info["infer_length"], info["shift_offset"])
        assert plan.audio_ring_rows == min(info["audio_prompts_all_shape"][1], 4 * plan.ring_frames)
        calls = iter(meta["calls"])
        shift = 0
        for _ in range(meta["run"]["steps"]):
            for start in window_starts(plan.ring_frames, plan.window, shift):
                call = next(calls)
                assert (start, shift) == (call["index_start"], call["shift"])
                assert window_frames(start, plan.window, plan.ring_frames) == call["idx_list"]
                assert window_audio_rows(start, plan.window, plan.audio_ring_rows) == call["idx_list_audio"]
            shift = next_shift(shift, plan.offset, plan.window)
        assert next(calls, None) is None


@pytest.mark.parametrize("frames,video,ring", [
    (100, 33, 33),  # <= 129 frames: padded to 129, one window
    (129, 33, 33),
    (130, 34, 65),  # 130 + 5 rows: 135 // 4 + 1 = 34; (135 // 128 + 1) * 32 + 1 = 65
    (250, 64, 65),  # 255 rows
    (251, 65, 97),  # 256 rows: ring grows by a window of 32 new frames
    (1510, 379, 385),  # 60.4 s at 25 fps: 1515 rows -> 379 kept, 12 * 32 + 1 = 385 in the ring
    (9000, 2252, 2273),  # 6 minutes: no cap
])
def test_official_length_plan(frames: int, video: int, ring: int) -> None:
    plan = plan_clip(frames)
    assert (plan.video_frames, plan.ring_frames) == (video, ring)
    assert plan.audio_ring_rows == 4 * ring


def test_every_frame_covered_once_except_the_wrap() -> None:
    plan = plan_clip(1510)  # ring 385 = 12 windows of 33 (396) -> 11 frames covered twice
    for shift in (0, 10, 20, 30, 7):
        counts = torch.zeros(plan.ring_frames, dtype=torch.int64)
        for start in window_starts(plan.ring_frames, plan.window, shift):
            counts[window_frames(start, plan.window, plan.ring_frames)] += 1
        assert counts.min() == 1 and int((counts == 2).sum()) == 11 and counts.max() == 2


def test_custom_window_and_offset() -> None:
    cfg = WindowConfig(window=17, offset=5)
    assert cfg.audio_rows == 65
    plan = plan_clip(300, cfg)  # 305 rows: ring (305 // 64 + 1) * 16 + 1 = 81, video 77
    assert (plan.window, plan.offset, plan.video_frames, plan.ring_frames) == (17, 5, 77, 81)
    assert len(window_starts(plan.ring_frames, 17, 0)) == 5


def test_fusion_averages_overlaps() -> None:
    latents = torch.zeros(1, 1, 4, 1, 1)
    total, count = new_accumulator(latents)
    accumulate(total, count, [0, 1, 2], torch.tensor([1.0, 2.0, 3.0]).view(1, 1, 3, 1, 1).bfloat16())
    accumulate(total, count, [3, 0, 1], torch.tensor([4.0, 6.0, 8.0]).view(1, 1, 3, 1, 1))
    assert fuse(total, count).flatten().tolist() == [3.5, 5.0, 3.0, 4.0]
    total, count = new_accumulator(latents)
    accumulate(total, count, [0, 1], torch.ones(1, 1, 2, 1, 1))
    with pytest.raises(RuntimeError):
        fuse(total, count)


def test_gather_audio_zero_pads_past_the_end() -> None:
    audio = torch.arange(1, 6, dtype=torch.float32).view(1, 5, 1)  # rows 1..5
    assert gather_audio(audio, [3, 4, 5, 6, 0]).flatten().tolist() == [4.0, 5.0, 0.0, 0.0, 1.0]
    multi = torch.stack([audio, -audio], dim=1)  # [1, 2, 5, 1]
    assert gather_audio(multi, [4, 5], frame_dim=2).flatten().tolist() == [5.0, 0.0, -5.0, 0.0]
