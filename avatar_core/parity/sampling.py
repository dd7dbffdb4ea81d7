"""Sampler parity against the official fixtures: schedules, bitwise loop replay, end-to-end runs.

``checks(fixture_dir, model=None)`` finds what the folder holds instead of assuming file names:
``sched_shift<S>_steps<N>.*`` keys of any ``*.safetensors`` without a json sidecar, every sampler run
(a ``.safetensors`` with a ``.json`` sidecar that has ``calls``), and the shared sampler inputs (the
``sampler_*`` file without a sidecar that holds ``text_states_pos``).
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from ..conditioning.audio import window_features
from ..sampling import (
    AvatarConditioning,
    DeepCacheConfig,
    GuidanceConfig,
    SamplerConfig,
    TextConditioning,
    cached_steps,
    flow_schedule,
    initial_noise,
    plan_clip,
    sample_avatar,
    step_guidance,
)
from .common import CheckResult, compare, load_fixture

_SCHED_KEY = re.compile(r"^sched_shift(\d+(?:p\d+)?)_steps(\d+)\.(sigmas|timesteps)$")


def _bitwise(name: str, got: torch.Tensor, ref: torch.Tensor) -> CheckResult:
    res = compare(name, got, ref, atol=0.0, rtol=0.0)
    ok = res.ok and got.dtype == ref.dtype and bool(torch.equal(got, ref))
    return replace(res, ok=ok, detail="bitwise" if ok else f"not bitwise (dtype {got.dtype} vs {ref.dtype})")


def latent_check(name: str, got: torch.Tensor, ref: torch.Tensor) -> CheckResult:
    """README sampler tolerance: ``|d| <= 2**-6 * max(1, |ref|)`` per element and ``mean |d| < 1e-3``."""
    res = compare(name, got, ref)
    if got.shape != ref.shape:
        return res
    diff = (got.double() - ref.double()).abs()
    bound = (2.0 ** -6) * ref.double().abs().clamp_min(1.0)
    mean = float(diff.mean())
    ok = bool((diff <= bound).all()) and mean < 1e-3
    return replace(res, ok=ok, detail=f"mean_abs={mean:.2e} (bf16 tolerance)")


def schedule_checks(fixture_dir: Path) -> list[CheckResult]:
    """Every ``sched_shift<S>_steps<N>`` tensor against our schedule, bitwise."""
    out = []
    for path in sorted(fixture_dir.glob("*.safetensors")):
        if path.with_suffix(".json").exists():
            continue
        with safe_open(str(path), "pt") as f:
            keys = [k for k in f.keys() if _SCHED_KEY.match(k)]
            for key in sorted(keys):
                shift_s, steps_s, what = _SCHED_KEY.match(key).groups()  # type: ignore[union-attr]
                sched = flow_schedule(int(steps_s), float(shift_s.replace("p", ".")))
                out.append(_bitwise(f"{path.stem}:{key}", getattr(sched, what), f.get_tensor(key).clone()))
    return out


def _common_inputs(fixture_dir: Path) -> dict[str, torch.Tensor] | None:
    for path in sorted(fixture_dir.glob("sampler_*.safetensors")):
        if not path.with_suffix(".json").exists():
            tensors = load_fixture(path)
            if "text_states_pos" in tensors:
                return tensors
    return None


def conditioning_from_fixture(common: dict[str, torch.Tensor], audio: torch.Tensor) -> AvatarConditioning:
    """The official run's inputs (first-call CFG batch is [neg, pos]) as sampler conditioning."""
    mask = common["model_in.text_mask"]  # [2, L] = [neg, pos]
    freqs = (common["model_in.freqs_cos"], common["model_in.freqs_sin"]) if "model_in.freqs_cos" in common else None
    return AvatarConditioning(
        ref_latents=common["ref_latents_from_vae"],
        text=TextConditioning(common["text_states_pos"], mask[1:], common["text_states_2_pos"]),
        negative_text=TextConditioning(common["text_states_neg"], mask[:1], common["text_states_2_neg"]),
        audio=audio,
        face_mask=common["model_in.face_masks_pipeline_arg"],
        motion_exp=common["model_in.motion_exp"][:1],
        motion_pose=common["model_in.motion_pose"][:1],
        fps=common["model_in.fps"][:1],
        freqs=freqs,
    )


def _run_config(meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> SamplerConfig:
    steps = int(tensors["scheduler.timesteps"].shape[0])
    cached = tuple(meta.get("cached_steps", ()))
    cfg = meta["calls"][0]["guidance_scale"] if meta.get("calls") else GuidanceConfig().cfg
    return SamplerConfig(steps=steps, seed=int(meta["seed"]), guidance=GuidanceConfig(cfg=float(cfg)),
                         deep_cache=DeepCacheConfig(cached_steps=cached) if cached else DeepCacheConfig(enabled=False))


class _Replay:
    """Stands in for the model: returns the recorded ``callNNN.noise_pred`` and checks that the sampler
    asked for exactly what the official loop fed the model (recorded in ``calls[]``)."""

    def __init__(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any], cond: AvatarConditioning) -> None:
        self.tensors, self.calls, self.cond = tensors, meta["calls"], cond
        self.audio_len = int(meta["audio_len"])
        self.index = 0
        self.problems: list[str] = []
        self.step_start: dict[int, dict[int, torch.Tensor]] = {}  # step -> frame -> [B, C, H, W]

    def _expect(self, ok: bool, what: str) -> None:
        if not ok and len(self.problems) < 8:
            self.problems.append(f"call{self.index:03d}: {what}")

    def __call__(self, x: torch.Tensor, t: torch.Tensor, *, cached_tokens: torch.Tensor | None = None,
                 return_cache: bool = False, **kw: Any) -> Any:
        if self.index >= len(self.calls):
            raise RuntimeError(f"the sampler made more model calls than the {len(self.calls)} recorded")
        call, key = self.calls[self.index], f"call{self.index:03d}"
        if f"{key}.x" in self.tensors:
            self._expect(torch.equal(x, self.tensors[f"{key}.x"]), "x differs from the recorded model input")
        self._expect(float(t[0]) == float(call["t"]), f"t {float(t[0])} != {call['t']}")
        self._expect((cached_tokens is not None) == bool(call["is_cache"]), "deep-cache use differs")
        texts = {"neg": self.cond.negative_text.states, "pos": self.cond.text.states}
        for half, name in enumerate(call["text_states"]):
            self._expect(torch.equal(kw["text_states"][half: half + 1], texts[name]), f"text half {half} != {name}")
        fmax = [float(m.max()) for m in kw["face_mask"]]
        self._expect(all(abs(a - b) < 1e-6 for a, b in zip(fmax, call["face_mask_max"])), f"face mask max {fmax}")
        want = [r + 1 if r < self.audio_len else 0 for r in call["idx_list_audio"]]
        got = kw["audio"][:, 0, :, 0, 0, 0]  # [2B, rows] row markers (row + 1, 0 = padding)
        self._expect(got[1].tolist() == want and not bool(got[0].any()), "audio rows differ")
        b = x.shape[0] // 2
        for j, frame in enumerate(call["idx_list"]):
            self.step_start.setdefault(int(call["step"]), {}).setdefault(frame, x[:b, :, j])
        out = self.tensors[f"{key}.noise_pred"]
        self.index += 1
        if not return_cache:
            return out
        hw = x.shape[-1] // 2 * (x.shape[-2] // 2)
        return out, torch.zeros(x.shape[0], hw * (x.shape[2] + 1) + kw["text_states"].shape[1], 1)

    def ring_at_step(self, step: int) -> torch.Tensor:
        frames = self.step_start[step]
        return torch.stack([frames[f] for f in range(len(frames))], dim=2)  # [B, C, ring, H, W]


def _marker_audio(audio_len: int) -> torch.Tensor:
    """Audio whose row r holds r + 1 (padding rows come out 0): lets the replay check the row indexing."""
    return (torch.arange(audio_len, dtype=torch.float32) + 1).view(1, audio_len, 1, 1, 1)


def _meta_checks(run: str, meta: dict[str, Any], tensors: dict[str, torch.Tensor],
                 common: dict[str, torch.Tensor]) -> list[CheckResult]:
    """Length plan, noise draw, schedule, deep-cache plan and CFG scales against the recorded run."""
    cfg = _run_config(meta, tensors)
    plan, info = plan_clip(int(meta["audio_len"])), meta["loop_info"]
    got_plan = (plan.video_frames, plan.ring_frames, plan.offset)
    want_plan = (info["video_length"], info["infer_length"], info["shift_offset"])
    out = [CheckResult(f"{run}:plan", 0.0, 0.0, got_plan == want_plan, f"(video, ring, offset) {got_plan} vs {want_plan}")]
    noise = tensors["noise_initial"]
    out.append(_bitwise(f"{run}:noise_initial", initial_noise(plan, common["ref_latents_from_vae"], cfg.seed),
                        noise[:, :, : plan.ring_frames]))
    sched = flow_schedule(cfg.steps)
    out += [_bitwise(f"{run}:scheduler.{k}", getattr(sched, k), tensors[f"scheduler.{k}"]) for k in ("sigmas", "timesteps")]
    official = sorted(cached_steps(cfg.steps, DeepCacheConfig(plan="official")))
    out.append(CheckResult(f"{run}:deep_cache_plan", 0.0, 0.0, official == sorted(meta.get("cached_steps", [])),
                           f"official-list plan {official}"))
    if cfg.steps == 50:
        auto = sorted(cached_steps(50))
        out.append(CheckResult(f"{run}:deep_cache_auto_plan_50", 0.0, 0.0, auto == official))
    worst = max((abs(step_guidance(c["step"], cfg.steps, cfg.guidance).scale - c["guidance_scale"])
                 for c in meta.get("calls", [])), default=0.0)
    out.append(CheckResult(f"{run}:guidance_scales", worst, 0.0, worst == 0.0))
    return out


def replay_checks(run: str, meta: dict[str, Any], tensors: dict[str, torch.Tensor],
                  common: dict[str, torch.Tensor]) -> list[CheckResult]:
    """Run the sampler with the recorded model outputs: every recorded latent state must match bitwise."""
    cond = conditioning_from_fixture(common, _marker_audio(int(meta["audio_len"])))
    fake = _Replay(tensors, meta, cond)
    result = sample_avatar(fake, cond, _run_config(meta, tensors), noise=tensors["noise_initial"])
    out = [CheckResult(f"{run}:replay_calls", 0.0, 0.0, not fake.problems and fake.index == len(fake.calls),
                       "; ".join(fake.problems) or f"{fake.index} calls as recorded")]
    for key in sorted(k for k in tensors if k.startswith("latents_all_at_step_start.")):
        step = int(key.rsplit(".", 1)[1])
        out.append(_bitwise(f"{run}:replay:{key}", fake.ring_at_step(step), tensors[key]))
    out.append(_bitwise(f"{run}:replay:final_latents_all", result.ring_latents, tensors["final_latents_all"]))
    out.append(_bitwise(f"{run}:replay:final_latents", result.latents, tensors["final_latents"]))
    return out


def end_to_end_checks(run: str, meta: dict[str, Any], tensors: dict[str, torch.Tensor],
                      common: dict[str, torch.Tensor], model: Any) -> list[CheckResult]:
    """Run the sampler with the tiny model from the recorded inputs; compare with the bf16 tolerance."""
    fps = float(common["model_in.fps"][0])
    hidden = common["whisper_hidden_states_fp16"].float()[0]  # [P, 5, 384]
    audio = window_features(hidden, fps, int(meta["audio_len"]))[None]  # [1, F, 10, 5, 384]
    cond = conditioning_from_fixture(common, audio)
    result = sample_avatar(model, cond, _run_config(meta, tensors), noise=tensors["noise_initial"])
    return [latent_check(f"{run}:model:final_latents", result.latents, tensors["final_latents"]),
            latent_check(f"{run}:model:final_latents_all", result.ring_latents, tensors["final_latents_all"])]


def checks(fixture_dir: Path, model: Any = None) -> list[CheckResult]:
    """All sampler parity checks for one fixture folder (``model``: a loaded tiny AvatarTransformer)."""
    fixture_dir = Path(fixture_dir)
    out = schedule_checks(fixture_dir)
    common = _common_inputs(fixture_dir)
    for path in sorted(fixture_dir.glob("*.safetensors")):
        meta_path = path.with_suffix(".json")
        if not meta_path.exists():
            continue
        meta = json.loads(meta_path.read_text())
        if "calls" not in meta and "cached_steps" not in meta:
            continue
        if common is None:
            out.append(CheckResult(f"{path.stem}:inputs", 0.0, 0.0, False, "no shared sampler inputs found"))
            break
        tensors = load_fixture(path)
        out += _meta_checks(path.stem, meta, tensors, common)
        if any(k.endswith(".noise_pred") for k in tensors):
            out += replay_checks(path.stem, meta, tensors, common)
        if model is not None:
            out += end_to_end_checks(path.stem, meta, tensors, common, model)
    return out

