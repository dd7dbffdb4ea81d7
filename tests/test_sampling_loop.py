"""The sampling loop: bitwise replay of the official runs, callbacks, seeds, multi-character, deep cache."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

import avatar_core.parity.sampling as sp
from avatar_core.sampling import (
    AvatarConditioning,
    DeepCacheConfig,
    GuidanceConfig,
    SamplerCallbacks,
    SamplerConfig,
    SamplingCancelled,
    TextConditioning,
    initial_noise,
    plan_clip,
    sample_avatar,
)
from avatar_core.sampling.windows import next_shift, window_frames, window_starts

SHARED = Path(os.environ.get("HYAVATAR_SHARED", Path(__file__).resolve().parents[2] / "shared"))
FIXTURES = SHARED / "fixtures" / "parity"
needs_fixtures = pytest.mark.skipif(not (FIXTURES / "sampler_common.safetensors").is_file(),
                                    reason=f"parity fixtures not found at {FIXTURES} (set HYAVATAR_SHARED)")


def small_cond(frames: int, chars: int = 0, mask_frames: int = 1, emotion: bool = False) -> AvatarConditioning:
    """Tiny synthetic conditioning: audio row r of character n holds (n + 1) * (r + 1)."""
    rows = torch.arange(1, frames + 1, dtype=torch.float32)
    audio = rows.view(1, frames, 1, 1, 1) if chars == 0 else torch.stack(
        [(n + 1) * rows.view(frames, 1, 1, 1) for n in range(chars)])[None]
    g = torch.Generator().manual_seed(1)
    text = lambda s: TextConditioning(torch.full((1, 3, 2), s), torch.ones(1, 3, dtype=torch.int64), torch.full((1, 2), s))  # noqa: E731
    return AvatarConditioning(
        ref_latents=torch.randn(1, 4, 33, 2, 2, generator=g), text=text(1.0), negative_text=text(-1.0), audio=audio,
        face_mask=torch.rand(1, max(chars, 1), mask_frames, 2, 2, generator=g),
        motion_exp=torch.full((1, 4), 30), motion_pose=torch.full((1, 4), 25), fps=torch.tensor([25.0]),
        emotion=torch.randn(1, 4, 1, 2, 2, generator=g) if emotion else None)


def toy_model(x: torch.Tensor, t: torch.Tensor, **kw: Any) -> Any:
    """Deterministic per-sample stand-in: depends on x, t, the audio and the text of each sample."""
    per = lambda v: v.float().flatten(1).mean(1).view(-1, 1, 1, 1, 1)  # noqa: E731
    out = -0.5 * x + 0.001 * t.view(-1, 1, 1, 1, 1) + 0.01 * per(kw["audio"]) + 0.1 * per(kw["text_states"])
    if kw["return_cache"]:
        return out, torch.zeros(x.shape[0], 4 * (x.shape[2] + 1) + kw["text_states"].shape[1], 1)
    return out


@needs_fixtures
def test_parity_checks_replay_every_run_bitwise() -> None:
    results = sp.checks(FIXTURES)
    bad = [r.line() for r in results if not r.ok]
    assert not bad, "\n".join(bad)
    replayed = {r.name.split(":")[0] for r in results if ":replay:final_latents" in r.name}
    with_calls = {p.stem for p in FIXTURES.glob("*.safetensors") if any(
        k.endswith(".noise_pred") for k in sp.load_fixture(p))}
    assert replayed == with_calls and replayed
    assert sum(":sched_" in r.name for r in results) >= 2


@needs_fixtures
@pytest.mark.parametrize("change", [
    {"window_dtype": None},  # no bf16 rounding of window results
    {"guidance": GuidanceConfig(switch_step=3)},
    {"guidance": GuidanceConfig(early_mask_scale=0.5)},
    {"shift": 4.0},
])
def test_replay_notices_a_deviation_from_the_official_loop(change: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    original = sp._run_config

    def altered(meta: dict, tensors: dict) -> SamplerConfig:
        cfg = original(meta, tensors)
        if "guidance" in change:
            change["guidance"] = replace(change["guidance"], cfg=cfg.guidance.cfg)
        return replace(cfg, **change)

    monkeypatch.setattr(sp, "_run_config", altered)
    results = [r for r in sp.checks(FIXTURES) if ":replay" in r.name]
    assert results and not all(r.ok for r in results)


def test_callbacks_progress_preview_and_cancel() -> None:
    cond = small_cond(300)  # ring 97 -> 3 windows per step
    progress, previews = [], []
    cb = SamplerCallbacks(on_progress=progress.append, on_preview=lambda s, x: previews.append((s, x.shape)))
    res = sample_avatar(toy_model, cond, SamplerConfig(steps=3), callbacks=cb)
    assert [(p.step, p.window) for p in progress] == [(s, w) for s in range(3) for w in range(3)]
    assert progress[-1].calls_done == progress[-1].calls_total == 9
    assert previews == [(s, res.latents.shape) for s in range(3)]
    assert res.latents.shape == (1, 4, plan_clip(300).video_frames, 2, 2)

    calls = []
    counting = lambda x, t, **kw: calls.append(1) or toy_model(x, t, **kw)  # noqa: E731
    stop = SamplerCallbacks(should_cancel=lambda: len(calls) >= 4)
    with pytest.raises(SamplingCancelled):
        sample_avatar(counting, cond, SamplerConfig(steps=3), callbacks=stop)
    assert len(calls) == 4  # stopped before the 5th model call


def test_same_seed_same_latents_and_noise_injection() -> None:
    cond = small_cond(200)
    a = sample_avatar(toy_model, cond, SamplerConfig(steps=3, seed=7)).ring_latents
    b = sample_avatar(toy_model, cond, SamplerConfig(steps=3, seed=7)).ring_latents
    c = sample_avatar(toy_model, cond, SamplerConfig(steps=3, seed=8)).ring_latents
    assert torch.equal(a, b) and not torch.equal(a, c)
    plan = plan_clip(200)
    noise = torch.randn((1, 4, plan.noise_frames, 2, 2), generator=torch.Generator().manual_seed(7))
    assert torch.equal(initial_noise(plan, cond.ref_latents, 7), noise[:, :, : plan.ring_frames])
    d = sample_avatar(toy_model, cond, SamplerConfig(steps=3, seed=123), noise=noise).ring_latents
    assert torch.equal(a, d)


def test_every_window_gets_every_characters_audio_and_mask() -> None:
    cond = small_cond(200, chars=2, emotion=True)
    plan, seen = plan_clip(200), []

    def check(x: torch.Tensor, t: torch.Tensor, **kw: Any) -> Any:
        audio, mask = kw["audio"], kw["face_mask"]
        assert audio.shape == (2, 2, 129, 1, 1, 1) and not audio[0].any()  # [uncond, cond]; uncond = zeros
        rows = audio[1, 0].flatten()
        assert torch.equal(audio[1, 1].flatten(), 2 * rows)  # character 2 sees the same rows
        assert torch.equal(mask, torch.cat([cond.face_mask * 0.6] * 2))  # early steps: official x 0.6
        assert torch.equal(kw["emotion"], torch.cat([cond.emotion, cond.emotion]))
        seen.append(rows)
        return toy_model(x, t, **kw)

    sample_avatar(check, cond, SamplerConfig(steps=1))
    assert len(seen) == plan.windows_per_step == 2
    # ring 65 -> 260 audio rows. Window 2 of step 0 starts at latent 33: rows 132..259 then wraps to row 0;
    # rows >= 200 are padding (zero). Markers are row + 1.
    assert seen[1].tolist() == [float(r + 1) for r in range(132, 200)] + [0.0] * 60 + [1.0]
    assert seen[0].tolist() == [float(r + 1) for r in range(129)]


def test_per_frame_face_masks_follow_the_window() -> None:
    plan = plan_clip(200)
    cond = small_cond(200, mask_frames=plan.ring_frames)
    # Each latent frame's mask carries its index (scaled into 0..1: masks above 1 are refused as 0..255 masks).
    ring = plan.ring_frames
    cond.face_mask = (torch.arange(ring, dtype=torch.float32) / ring).view(1, 1, -1, 1, 1).expand(1, 1, -1, 2, 2)
    frames_seen = []

    def check(x: torch.Tensor, t: torch.Tensor, **kw: Any) -> Any:
        frames_seen.append((kw["face_mask"][1, 0, :, 0, 0] / 0.6 * ring).round().long().tolist())
        return toy_model(x, t, **kw)

    progress = []
    sample_avatar(check, cond, SamplerConfig(steps=2), callbacks=SamplerCallbacks(on_progress=progress.append))
    assert frames_seen == [list(p.frames) for p in progress]


def test_deep_cache_reassembles_tokens_like_the_official_per_frame_store() -> None:
    """Cached calls get: ref/text tokens from the window that last covered the window's first frame,
    video tokens of every frame from the last full step (official pipeline §8)."""
    cond, plan, dim = small_cond(200), plan_clip(200), 2  # latent 2x2 -> 1 token per frame
    order, shift = [], 0  # the windows of every call, from the official recipe (§9)
    for _ in range(6):
        order += [window_frames(s, 33, plan.ring_frames) for s in window_starts(plan.ring_frames, 33, shift)]
        shift = next_shift(shift, plan.offset, 33)
    store: dict[str, dict[int, torch.Tensor]] = {"ref": {}, "img": {}, "txt": {}}  # the official per-frame store
    calls = {"all": 0, "full": 0}

    def model(x: torch.Tensor, t: torch.Tensor, **kw: Any) -> Any:
        frames = order[calls["all"]]
        calls["all"] += 1
        if kw["cached_tokens"] is not None:
            want = torch.cat([store["ref"][frames[0]], *[store["img"][f] for f in frames], store["txt"][frames[0]]], 1)
            assert torch.equal(kw["cached_tokens"], want)
            return toy_model(x, t, **kw)
        calls["full"] += 1
        mark = float(calls["full"])
        ref, txt = torch.full((2, 1, dim), mark), torch.full((2, 3, dim), -mark)
        img = [torch.full((2, 1, dim), mark * 100 + j) for j in range(len(frames))]
        for j, f in enumerate(frames):  # overwritten in window order, as the official loop does
            store["ref"][f], store["img"][f], store["txt"][f] = ref, img[j], txt
        out = toy_model(x, t, **{**kw, "return_cache": False})
        return out, torch.cat([ref, *img, txt], dim=1)

    progress: list = []
    cfg = SamplerConfig(steps=6, deep_cache=DeepCacheConfig(cached_steps=(2, 3, 5)))
    sample_avatar(model, cond, cfg, callbacks=SamplerCallbacks(on_progress=progress.append))
    assert [p.cached for p in progress] == [s in (2, 3, 5) for s in range(6) for _ in range(plan.windows_per_step)]
    assert [list(p.frames) for p in progress] == order
    assert calls["full"] == 3 * plan.windows_per_step


def test_split_cfg_gives_the_batched_result() -> None:
    cond, batches = small_cond(200), []

    def model(x: torch.Tensor, t: torch.Tensor, **kw: Any) -> Any:
        batches.append(x.shape[0])
        return toy_model(x, t, **kw)

    cfg = SamplerConfig(steps=3)
    whole = sample_avatar(model, cond, cfg).ring_latents
    assert set(batches) == {2}
    batches.clear()
    split = sample_avatar(model, cond, replace(cfg, split_cfg=True)).ring_latents
    assert set(batches) == {1} and len(batches) == 2 * 3 * 2
    assert torch.equal(whole, split)


@pytest.mark.parametrize("mutate,message", [
    (lambda c: setattr(c, "ref_latents", c.ref_latents[:, :, :5]), "ref_latents"),
    (lambda c: setattr(c, "face_mask", torch.ones(1, 2, 1, 2, 2)), "face_mask"),
    (lambda c: setattr(c, "negative_text", TextConditioning(torch.ones(1, 4, 2), torch.ones(1, 4), torch.ones(1, 2))),
     "same shape"),
])
def test_bad_inputs_fail_before_any_model_call(mutate: Any, message: str) -> None:
    cond = small_cond(100)
    mutate(cond)
    never = lambda *a, **k: pytest.fail("model called")  # noqa: E731
    with pytest.raises(ValueError, match=message):
        sample_avatar(never, cond, SamplerConfig(steps=2))
    with pytest.raises(ValueError, match="noise"):
        sample_avatar(never, small_cond(100), SamplerConfig(steps=2), noise=torch.zeros(1, 4, 10, 2, 2))
