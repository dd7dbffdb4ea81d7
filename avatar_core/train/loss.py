"""Flow-matching objective of the HunyuanVideo family, on one cached clip.

Path and target: x_sigma = (1 - sigma) * x0 + sigma * noise, the model predicts v = noise - x0 (the velocity
the sampler integrates: sampling/schedule.euler_step), fed t = 1000 * sigma as in sampling.
Timestep sampling: sigma = shift(sigmoid(n)), n ~ N(0, 1): the logit-normal draw of SD3 (Esser et al. 2024,
"Scaling Rectified Flow Transformers", sec. 3.1) pushed towards high noise by the same SD3 time shift the
sampler uses (sampling.schedule.shift_sigmas). Default shift 7.0: musubi-tuner's recommended HunyuanVideo
LoRA setting (`--timestep_sampling shift --discrete_flow_shift 7.0`, its docs/hunyuan_video.md).
Audio dropout: with probability p the audio is zeros, exactly the sampler's unconditional audio half, so the
audio guidance of the sampler keeps a trained "no audio" branch (the official training recipe is unpublished).
Loss: plain MSE in float32 (no timestep weighting), averaged over the batch.
Batches: the first clip of a step is drawn from all clips, its batch mates from its bucket (same shapes,
data.ClipFolder.buckets), without repeats; each sample gets its own sigma, noise and audio dropout.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..sampling.schedule import NUM_TRAIN_TIMESTEPS, shift_sigmas
from .data import ClipSample


@dataclass(frozen=True)
class StepDraw:
    """The random choices of one training step (drawn from a per-step generator: resumable bit for bit)."""

    clip: int
    sigma: float
    noise_seed: int
    drop_audio: bool


def _draw(g: torch.Generator, clip: int, shift: float, audio_dropout: float) -> StepDraw:
    sigma = float(shift_sigmas(torch.sigmoid(torch.randn(1, generator=g)), shift))
    noise_seed = int(torch.randint(2**62, (1,), generator=g))
    drop = bool(torch.rand(1, generator=g) < audio_dropout)
    return StepDraw(clip, sigma, noise_seed, drop)


def draw_step(seed: int, step: int, n_clips: int, shift: float, audio_dropout: float) -> StepDraw:
    return draw_batch(seed, step, [list(range(n_clips))], [0] * n_clips, 1, shift, audio_dropout)[0]


def draw_batch(seed: int, step: int, buckets: Sequence[Sequence[int]], bucket_of: Sequence[int], batch_size: int,
               shift: float, audio_dropout: float) -> list[StepDraw]:
    """The draws of one micro-step: up to `batch_size` clips of one bucket (fewer when the bucket is smaller)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    first = _draw(g, int(torch.randint(len(bucket_of), (1,), generator=g)), shift, audio_dropout)
    mates = [c for c in buckets[bucket_of[first.clip]] if c != first.clip]
    order = torch.randperm(len(mates), generator=g)[: batch_size - 1] if batch_size > 1 else []
    return [first] + [_draw(g, mates[int(k)], shift, audio_dropout) for k in order]


def model_inputs(clip: ClipSample, device: torch.device, use_emotion: bool) -> dict:
    """Batch-of-one keyword arguments of the model call (the sampler's conventions)."""
    T = clip.frames
    ref = clip.ref_latents if clip.ref_latents.shape[1] == T else clip.ref_latents.expand(-1, T, -1, -1)
    one = lambda t: t.unsqueeze(0).to(device)  # noqa: E731
    return dict(ref_latents=one(ref.float()), text_states=one(clip.text_states.float()), text_mask=one(clip.text_mask),
                text_pooled=one(clip.text_pooled.float()), motion_exp=one(clip.motion_exp.reshape(4)),
                motion_pose=one(clip.motion_pose.reshape(4)), fps=clip.fps.reshape(1).float().to(device),
                audio=one(clip.audio.float()), face_mask=one(clip.face_mask.float()),
                emotion=one(clip.emotion.float()) if use_emotion and clip.emotion is not None else None)


def batch_inputs(clips: Sequence[ClipSample], draws: Sequence[StepDraw], device: torch.device,
                 use_emotion: bool) -> dict:
    """The model's keyword arguments for a batch of clips of one bucket (audio zeroed where dropped)."""
    rows = []
    for clip, draw in zip(clips, draws):
        kw = model_inputs(clip, device, use_emotion)
        if draw.drop_audio:
            kw["audio"] = torch.zeros_like(kw["audio"])
        rows.append(kw)
    return {k: None if rows[0][k] is None else torch.cat([r[k] for r in rows]) for k in rows[0]}


def flow_loss(model, clip: ClipSample | Sequence[ClipSample], draw: StepDraw | Sequence[StepDraw],
              device: torch.device, use_emotion: bool = False) -> torch.Tensor:
    """MSE of the velocity on one clip, or on a batch of clips of one bucket (one draw each)."""
    clips = [clip] if isinstance(clip, ClipSample) else list(clip)
    draws = [draw] if isinstance(draw, StepDraw) else list(draw)
    x0 = torch.stack([c.latents.float() for c in clips]).to(device)                # (B, 16, T, h, w)
    noise = torch.stack([torch.randn(c.latents.shape, generator=torch.Generator().manual_seed(d.noise_seed))
                         for c, d in zip(clips, draws)]).to(device)
    sigma = torch.tensor([d.sigma for d in draws], device=device)                  # (B,)
    s = sigma.reshape(-1, 1, 1, 1, 1)
    x_t = (1 - s) * x0 + s * noise
    pred = model(x_t, sigma * NUM_TRAIN_TIMESTEPS, **batch_inputs(clips, draws, device, use_emotion))
    return F.mse_loss(pred.float(), noise - x0)                                    # (B, 16, T, h, w) averaged
