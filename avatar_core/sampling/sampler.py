"""The avatar sampling loop: flow-matching solver + official dynamic CFG + deep cache + ring windows.

The model is reached through ``denoise``, any callable with the AvatarTransformer call signature
(docs/ARCHITECTURE.md): the model bound to its run options (``runner.LocalRunner.denoiser``), a
parallel wrapper, or a replay of recorded outputs in tests. It always runs on ONE window of ``window``
latent frames, so memory does not grow with the clip beyond the ring latents (and, with deep cache, the
per-frame cached tokens). The sampler owns the run's caches: the deep cache and the opt-in step cache.
One step = per window: model call -> CFG -> solver step; then the windows are fused (``windows.fuse``).
A multistep solver's state (one tensor per ring frame, ``solvers.py``) is fused and checkpointed with the ring.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import torch

from ..errors import InputError
from ..specs import conditioning as spec
from ..specs.concepts import FLOW_SHIFT, SEED, STEPS
from ..specs.fields import Choice, Flag, Instance, Items, Maybe, checked, declared
from ..specs.tensors import DEVICE, Tensor
from ..validation import check_step_latents
from .calls import ModelCall
from .deepcache import DeepCacheConfig, FrameTokenCache, cached_steps
from .guidance import GuidanceConfig, StepGuidance, combine, step_guidance
from .resume import ResumeConfig, open_checkpoint
from .schedule import OFFICIAL_SHIFT, FlowSchedule, flow_schedule
from .solvers import SOLVERS, Solver, get_solver
from .stepcache import StepCache, StepCacheConfig, StepCacheStats
from .windows import (
    ClipPlan,
    WindowConfig,
    accumulate,
    fuse,
    gather_audio,
    new_accumulator,
    next_shift,
    plan_clip,
    window_audio_rows,
    window_frames,
    window_starts,
)


class Denoiser(Protocol):
    """AvatarTransformer.forward: ``(x [2B,C,W,H,W], t [2B], **conditioning) -> noise_pred`` (or
    ``(noise_pred, cache_tokens)`` with ``return_cache=True``)."""

    def __call__(self, x: torch.Tensor, t: torch.Tensor, **kwargs: Any) -> Any: ...


class StepParallel(Protocol):
    """Window parallelism (``avatar_core.distributed``): this process denoises some windows of every step,
    then one exchange per step gives every process the whole step's fusion sums (and, before a cached
    step, every window's deep-cache tokens)."""

    def owns(self, window: int, windows: int) -> bool: ...

    def new_cache(self, ring_frames: int, storage_device: torch.device | None) -> FrameTokenCache: ...

    def exchange(self, total: torch.Tensor, count: torch.Tensor, share_cache: bool) -> None: ...


class SamplingCancelled(RuntimeError):
    """Raised when ``should_cancel`` returned True; the partial result is discarded."""


@declared(*spec.TEXT_RULES, states=spec.TEXT_STATES, mask=spec.TEXT_MASK, pooled=spec.TEXT_POOLED)
@dataclass
class TextConditioning:
    """One prompt's text encoder outputs."""

    states: torch.Tensor  # [B, L, Dt] LLaVA states
    mask: torch.Tensor  # [B, L] official positional mask
    pooled: torch.Tensor  # [B, D2] CLIP pooled


_TEXT = Instance(TextConditioning, what="a TextConditioning", fix="Give the text encoder's outputs.")


@declared(*spec.CONDITIONING_RULES, ref_latents=spec.REF_LATENTS, text=_TEXT, negative_text=_TEXT,
          audio=spec.AUDIO_FEATURES, face_mask=spec.FACE_MASK, motion_exp=spec.MOTION_IDS, motion_pose=spec.MOTION_IDS,
          fps=spec.FPS, emotion=Maybe(spec.EMOTION_LATENT),
          freqs=Maybe(Items(Tensor(ndims=(2,)), lo=2, hi=2, fix="Give (cos, sin) RoPE tables, or None.")))
@dataclass
class AvatarConditioning:
    """Everything the model is conditioned on, for the whole clip.

    ``audio`` holds one row of whisper windows per VIDEO frame, as produced by the audio encoder:
    ``[B, N, F, 10, 5, 384]`` for N characters (the official 5-D ``[B, F, 10, 5, 384]`` of one character is
    given the character axis here, as a view, so the core sees one layout); the sampler applies the official
    padding. ``face_mask`` is ``[B, N, Tm, H, W]`` at latent resolution, Tm = 1 or one mask
    per latent frame of the clip. ``emotion`` is passed unchanged to every call (both CFG halves).
    """

    ref_latents: torch.Tensor  # [B, C, W, H, W] reference latents, W = window length
    text: TextConditioning
    negative_text: TextConditioning
    audio: torch.Tensor
    face_mask: torch.Tensor
    motion_exp: torch.Tensor  # [B, 4]
    motion_pose: torch.Tensor  # [B, 4]
    fps: torch.Tensor  # [B]
    emotion: torch.Tensor | None = None
    freqs: tuple[torch.Tensor, torch.Tensor] | None = None  # RoPE (cos, sin); None: the model computes them

    audio_frame_dim = 2  # [B, N, F, 10, 5, 384]


# How a seed becomes the initial noise. Both draw randn of the official UN-CUT ring shape [B, C, noise_frames,
# H, W] and cut it to the ring, as the official pipeline does.
NOISE_MODES = {
    # A CPU generator in float32: the same noise (so the same video) on every device, CPU runs and GPU pools.
    "cpu": "CPU generator, float32: the same noise on any device",
    # The official pipeline's draw (diffusers randn_tensor): a CUDA generator seeded with the seed, float16
    # (dtype of the fp16 text embeddings). PyTorch's CUDA randn spreads elements over as many threads as the GPU
    # holds (SM count x threads per SM), so the values depend on the GPU model as well as the seed.
    "official": "CUDA generator, float16, as the official pipeline: equal to its draw on the same GPU model",
}


@declared(steps=STEPS, shift=FLOW_SHIFT, seed=SEED,
          guidance=Instance(GuidanceConfig, fix="Give a GuidanceConfig (official defaults: GuidanceConfig())."),
          deep_cache=Instance(DeepCacheConfig, fix="Give a DeepCacheConfig (DeepCacheConfig(enabled=False): off)."),
          windows=Instance(WindowConfig, fix="Give a WindowConfig (official 33 / 10)."),
          window_dtype=Maybe(Choice((torch.bfloat16, torch.float16, torch.float32),
                                    fix="The official loop rounds to torch.bfloat16; None keeps float32.")),
          cache_device=Maybe(DEVICE),
          split_cfg=Flag(), step_cache=Maybe(Instance(StepCacheConfig, fix="Give a StepCacheConfig or None (off).")),
          solver=Choice(lambda: tuple(SOLVERS), fix="euler is the official solver."),  # read at use: open
          noise=Choice(NOISE_MODES, fix="cpu: the same noise on any device; official: the official pipeline's CUDA "
                                        "draw (needs a CUDA GPU)."))
@dataclass
class SamplerConfig:
    """Sampler settings; defaults reproduce the official run (50 steps, shift 5, cfg 7.5)."""

    steps: int = 50
    shift: float = OFFICIAL_SHIFT
    seed: int = 0
    guidance: GuidanceConfig = field(default_factory=GuidanceConfig)
    deep_cache: DeepCacheConfig = field(default_factory=DeepCacheConfig)
    windows: WindowConfig = field(default_factory=WindowConfig)
    # The official loop rounds every window's Euler result to bfloat16 before fusing; None keeps float32.
    window_dtype: torch.dtype | None = torch.bfloat16
    cache_device: torch.device | None = None  # where deep-cache tokens live (e.g. CPU to save VRAM)
    # Run the uncond and cond halves as two batch-B calls (less activation memory, same result up to
    # batching round-off); the official pipeline does this with CPU offload and large frames.
    split_cfg: bool = False
    # Opt-in first-block step cache (stepcache.py); None: off (the official result).
    step_cache: StepCacheConfig | None = None
    solver: str = "euler"  # a key of solvers.SOLVERS (euler: the official one)
    noise: str = "cpu"  # a key of NOISE_MODES: how the seed becomes the initial noise (see initial_noise)


@dataclass(frozen=True)
class SamplerProgress:
    """Reported after every model call."""

    step: int  # 0-based step
    steps: int
    window: int  # 0-based window within the step
    windows: int  # windows per step
    calls_done: int
    calls_total: int
    cached: bool  # this call ran from the deep cache
    frames: tuple[int, ...]  # latent frames (ring indices) this window denoised


@dataclass
class SamplerCallbacks:
    """Hooks for the UI: progress per window, preview latents per step, cooperative cancellation."""

    on_progress: Callable[[SamplerProgress], None] | None = None
    on_preview: Callable[[int, torch.Tensor], None] | None = None  # (step, latents [B,C,video,H,W])
    should_cancel: Callable[[], bool] | None = None


@dataclass
class SampleResult:
    latents: torch.Tensor  # [B, C, video_frames, H, W] what goes to the VAE decoder
    ring_latents: torch.Tensor  # [B, C, ring_frames, H, W] the whole denoised ring
    plan: ClipPlan
    step_cache: StepCacheStats | None = None  # what the step cache did (None: it was off)


def initial_noise(plan: ClipPlan, like: torch.Tensor, seed: int, dtype: torch.dtype = torch.float32,
                  mode: str = "cpu") -> torch.Tensor:
    """Initial noise ``[B, C, ring_frames, H, W]`` for ``seed``: randn of the official un-cut ring shape
    ``[B, C, noise_frames, H, W]``, then cut to the ring (see NOISE_MODES). ``like`` is the reference latents
    ``[B, C, T, H, W]`` (batch, channels, size; ``mode="official"`` draws on its CUDA device). ``dtype`` applies
    to the "cpu" mode; the official draw is float16 by definition."""
    b, c, _, h, w = like.shape
    shape = (b, c, plan.noise_frames, h, w)
    if mode == "cpu":
        noise = torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed), dtype=dtype)
    elif mode == "official":
        if like.device.type != "cuda":
            raise InputError(f"noise='official' draws with a CUDA generator, as the official pipeline does, but "
                             f"this run is on {like.device.type}: use noise='cpu' (the same noise on any device) "
                             "or run on a CUDA GPU.")
        gen = torch.Generator(like.device).manual_seed(seed)
        noise = torch.randn(shape, generator=gen, device=like.device, dtype=torch.float16)
    else:
        raise InputError(f"noise={mode!r} is not a noise mode; choose one of {list(NOISE_MODES)}")
    return noise[:, :, : plan.ring_frames]


def _face_mask_for(cond: AvatarConditioning, frames: list[int]) -> torch.Tensor:
    """Face masks of one window ``[B, N, Tm', H, W]``: static masks pass through, per-frame masks follow
    the window (a mask track shorter than the ring repeats its last frame)."""
    fm = cond.face_mask
    if fm.shape[2] == 1:
        return fm
    idx = torch.tensor([min(f, fm.shape[2] - 1) for f in frames], device=fm.device)
    return fm.index_select(2, idx)


def _step_inputs(cond: AvatarConditioning, guide: StepGuidance) -> ModelCall:
    """CFG-batch inputs ``[uncond, cond]`` that are the same for every window of a step."""
    uncond_text = cond.negative_text if guide.negative_text else cond.text
    twice = lambda x: None if x is None else torch.cat([x, x])  # noqa: E731
    return ModelCall(
        ref_latents=twice(cond.ref_latents),
        text_states=torch.cat([uncond_text.states, cond.text.states]),
        text_mask=torch.cat([uncond_text.mask, cond.text.mask]),
        text_pooled=torch.cat([uncond_text.pooled, cond.text.pooled]),
        motion_exp=twice(cond.motion_exp),
        motion_pose=twice(cond.motion_pose),
        fps=twice(cond.fps),
        emotion=twice(cond.emotion),
        freqs=cond.freqs,
    )


@dataclass
class _Run:
    """State shared by the steps of one sampling run."""

    denoise: Denoiser
    cond: AvatarConditioning
    config: SamplerConfig
    plan: ClipPlan
    schedule: FlowSchedule
    cached: frozenset[int]
    cache: FrameTokenCache | None
    callbacks: SamplerCallbacks
    solver: Solver
    calls_done: int = 0
    parallel: StepParallel | None = None
    step_cache: StepCache | None = None
    history: torch.Tensor | None = None  # a multistep solver's state per ring frame [B, C * history, ring, H, W]

    @property
    def calls_total(self) -> int:
        return self.schedule.steps * self.plan.windows_per_step


def _call_model(run: _Run, x: torch.Tensor, step: int, step_in: ModelCall, guide: StepGuidance,
                frames: list[int], start: int, window: int) -> torch.Tensor:
    """One CFG-batched model call on window ``frames`` -> noise_pred ``[2B, C, W, H, W]``."""
    cond, plan = run.cond, run.plan
    rows = window_audio_rows(start, plan.window, plan.audio_ring_rows)
    # The clip's features may stay in RAM (an hour is a 1.4 GB view): only this window's rows move.
    audio = gather_audio(cond.audio, rows, cond.audio_frame_dim).to(x.device)  # [B, N, 4W-3, 10, 5, 384]
    mask = _face_mask_for(cond, frames) * guide.mask_scale  # [B, N, Tm, H, W]
    call = replace(step_in, audio=torch.cat([torch.zeros_like(audio), audio]), face_mask=torch.cat([mask, mask]),
                   step_cache=run.step_cache)
    x2 = torch.cat([x, x])  # [2B, C, W, H, W]  (uncond, cond)
    t = run.schedule.timesteps[step].to(x.device).repeat(x2.shape[0])  # [2B]
    if step in run.cached:
        tokens = run.cache.assemble(frames, x.device)  # type: ignore[union-attr]
        return _invoke(run, x2, t, replace(call, cached_tokens=tokens), window)
    if run.cache is None:
        return _invoke(run, x2, t, call, window)
    out, tokens = _invoke(run, x2, t, replace(call, return_cache=True), window)
    text_len = step_in.text_states.shape[1]
    per_frame, rest = divmod(tokens.shape[1] - text_len, plan.window + 1)  # tokens = ref + W frames + text
    if rest:
        raise RuntimeError(f"cache tokens {tuple(tokens.shape)} do not split into ref + {plan.window} frames + text")
    run.cache.store(frames, tokens, per_frame)
    return out


def _stream(run: _Run, key: Any):
    """The opt-in step cache keeps one history per window (and CFG half): they must not mix."""
    return run.step_cache.stream(key) if run.step_cache is not None else contextlib.nullcontext()


def _invoke(run: _Run, x2: torch.Tensor, t: torch.Tensor, call: ModelCall, window: int) -> Any:
    """Call the model on the CFG batch, at once or (``split_cfg``) one half at a time."""
    if not run.config.split_cfg:
        with _stream(run, window):
            return run.denoise(x2, t, **call.kwargs())
    b = x2.shape[0] // 2
    halves = []
    for half, part in enumerate((slice(0, b), slice(b, None))):
        with _stream(run, (window, half)):
            halves.append(run.denoise(x2[part], t[part], **call.half(half).kwargs()))
    if call.return_cache:
        return torch.cat([h[0] for h in halves]), torch.cat([h[1] for h in halves])
    return torch.cat(halves)


def _denoise_step(run: _Run, step: int, latents: torch.Tensor, shift: int) -> torch.Tensor:
    """One denoising step over the whole ring: every window is denoised and the results are fused."""
    plan, cb = run.plan, run.callbacks
    guide = step_guidance(step, run.schedule.steps, run.config.guidance)
    step_in = _step_inputs(run.cond, guide)
    # A multistep solver's state rides with the latents, [latents | state] along the channels: fused by the
    # same sums and counts (and exchanged by the same all-reduce between window-parallel ranks).
    b, c, *rest = latents.shape
    total, count = new_accumulator(latents.new_empty(b, c * (1 + run.solver.history), *rest)
                                   if run.solver.history else latents)
    starts = window_starts(plan.ring_frames, plan.window, shift)
    for k, start in enumerate(starts):
        if cb.should_cancel is not None and cb.should_cancel():
            raise SamplingCancelled(f"sampling cancelled at step {step}, window {k}")
        if run.parallel is not None and not run.parallel.owns(k, len(starts)):
            run.calls_done += 1  # another process denoises this window
            continue
        frames = window_frames(start, plan.window, plan.ring_frames)
        accumulate(total, count, frames, _window_step(run, step, latents, step_in, guide, frames, start, k))
        run.calls_done += 1
        if cb.on_progress is not None:
            cb.on_progress(SamplerProgress(step, run.schedule.steps, k, len(starts), run.calls_done,
                                           run.calls_total, step in run.cached, tuple(frames)))
    if run.parallel is not None:
        written = run.cache is not None and step not in run.cached  # this step wrote the deep cache
        run.parallel.exchange(total, count, share_cache=written and step + 1 in run.cached)
    fused = fuse(total, count)
    if not run.solver.history:
        return fused
    run.history = fused[:, c:]
    return fused[:, :c]


def _window_step(run: _Run, step: int, latents: torch.Tensor, step_in: ModelCall, guide: StepGuidance,
                 frames: list[int], start: int, k: int) -> torch.Tensor:
    """Model call, CFG and the solver on window ``k`` -> its new latents (with a multistep solver: followed by its
    new state along the channels) ``[B, C(+C'), W, H, W]``."""
    x = latents[:, :, frames]  # [B, C, W, H, W] (a copy)
    noise_pred = _call_model(run, x, step, step_in, guide, frames, start, k)
    previous = None if run.history is None else run.history[:, :, frames]
    new, state = run.solver.step(x, combine(noise_pred, guide.scale), run.schedule, step, previous)
    check_step_latents(new, step, run.schedule.steps, k, run.plan.windows_per_step, frames, run.config.guidance.cfg)
    if run.config.window_dtype is not None:
        new = new.to(run.config.window_dtype)
    if not run.solver.history:
        return new
    return torch.cat([new.to(latents.dtype), state.to(latents.dtype)], 1)


def _prepare_noise(noise: torch.Tensor | None, plan: ClipPlan, cond: AvatarConditioning,
                   config: SamplerConfig) -> torch.Tensor:
    """Initial ring latents (float32 on the conditioning's device; the official fp16 draw widens exactly);
    injected noise may be un-cut."""
    ref = cond.ref_latents
    if noise is None:
        noise = initial_noise(plan, ref, config.seed, mode=config.noise)
    want = (ref.shape[0], ref.shape[1], plan.ring_frames, ref.shape[3], ref.shape[4])
    if noise.dim() != 5 or noise.shape[2] < plan.ring_frames or noise.shape[:2] + noise.shape[3:] != want[:2] + want[3:]:
        raise InputError(f"noise must be {list(want)} (or longer in time), got {tuple(noise.shape)}; leave noise "
                         "None for the seeded draw.")
    return noise[:, :, : plan.ring_frames].to(device=ref.device, dtype=torch.float32)


@checked(denoise=Instance(Callable, what="a model call (the denoiser)", fix="Give runner.denoiser() or a model."),
         cond=Instance(AvatarConditioning, fix="Give an AvatarConditioning."),
         config=Maybe(Instance(SamplerConfig, fix="Give a SamplerConfig (None: the official settings).")),
         noise=Maybe(Tensor(ndims=(5,), fix="Give finite noise (e.g. torch.randn), or None for the seeded draw.")),
         callbacks=Maybe(Instance(SamplerCallbacks, fix="Give SamplerCallbacks or None.")),
         resume=Maybe(Instance(ResumeConfig, fix="Give a ResumeConfig or None (off).")))
def sample_avatar(denoise: Denoiser, cond: AvatarConditioning, config: SamplerConfig | None = None, *,
                  noise: torch.Tensor | None = None, callbacks: SamplerCallbacks | None = None,
                  parallel: StepParallel | None = None, resume: ResumeConfig | None = None) -> SampleResult:
    """Generate the latents of a talking-avatar clip as long as ``cond.audio``.

    ``noise`` overrides the seeded draw (same layout as :func:`initial_noise`). Raises
    :class:`SamplingCancelled` when ``callbacks.should_cancel`` returns True (checked before every call).
    ``parallel``: see :class:`StepParallel`. A whole clip on a pool of workers: ``runner.Runner.sample``.
    ``resume``: checkpoint the ring between steps and continue a matching earlier run (sampling/resume.py).
    """
    config = config or SamplerConfig()
    plan = plan_clip(cond.audio.shape[cond.audio_frame_dim], config.windows)
    spec.check_window(cond, plan.window)
    schedule = flow_schedule(config.steps, config.shift)
    cached = cached_steps(config.steps, config.deep_cache)
    run = _Run(
        denoise=denoise, cond=cond, config=config, plan=plan, schedule=schedule, cached=cached,
        cache=(parallel.new_cache if parallel else FrameTokenCache)(plan.ring_frames, config.cache_device)
        if cached else None,
        callbacks=callbacks or SamplerCallbacks(), parallel=parallel,
        step_cache=None if config.step_cache is None else StepCache(config.step_cache),
        solver=get_solver(config.solver),
    )
    latents = _prepare_noise(noise, plan, cond, config)  # [B, C, ring, H, W]
    # Before step 1: the folder is usable and the key holds the weights behind `denoise` (on a pool: every rank
    # reads, rank 0 writes).
    ring = open_checkpoint(resume, cond, config, plan, latents, denoise, cached)
    latents, first, shift = ring.restore(latents) if ring is not None else (latents, 0, 0)
    if ring is not None:
        run.history = ring.history  # a multistep solver's state at the checkpoint (None from a fresh start)
    run.calls_done = first * plan.windows_per_step
    with torch.no_grad():
        for step in range(first, schedule.steps):
            latents = _denoise_step(run, step, latents, shift)
            shift = next_shift(shift, plan.offset, plan.window)
            if run.callbacks.on_preview is not None:
                run.callbacks.on_preview(step, latents[:, :, : plan.video_frames])
            if ring is not None:  # deep-cache tokens are not saved: only before a step that recomputes them
                ring.after_step(step, latents, shift, allowed=run.cache is None or step + 1 not in run.cached,
                                history=run.history)
    if ring is not None:
        ring.finish()
    return SampleResult(latents=latents[:, :, : plan.video_frames], ring_latents=latents, plan=plan,
                        step_cache=None if run.step_cache is None else run.step_cache.stats())
