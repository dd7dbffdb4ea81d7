"""Flow-matching objective of the HunyuanVideo family, on one cached clip.

Path and target: x_sigma = (1 - sigma) * x0 + sigma * noise, the model predicts v = noise - x0 (the velocity
the sampler integrates: sampling/schedule.euler_step), fed t = 1000 * sigma as in sampling.
Timestep sampling: sigma = shift(sigmoid(n)), n ~ N(0, 1): the logit-normal draw of SD3 (Esser et al. 2024,
"Scaling Rectified Flow Transformers", sec. 3.1) pushed towards high noise by the same SD3 time shift the
sampler uses (sampling.schedule.shift_sigmas). Default shift 7.0: musubi-tuner's recommended HunyuanVideo
LoRA setting (`--timestep_sampling shift --discrete_flow_shift 7.0`, its docs/hunyuan_video.md).
Audio dropout: with probability p the audio is zeros, exactly the sampler's unconditional audio half, so the
audio guidance of the sampler keeps a trained "no audio" branch (the official training recipe is unpublished).
Loss: plain MSE in float32 (no timestep weighting).
"""

from __future__ import annotations

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


def draw_step(seed: int, step: int, n_clips: int, shift: float, audio_dropout: float) -> StepDraw:
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    clip = int(torch.randint(n_clips, (1,), generator=g))
    sigma = float(shift_sigmas(torch.sigmoid(torch.randn(1, generator=g)), shift))
    noise_seed = int(torch.randint(2**62, (1,), generator=g))
    drop = bool(torch.rand(1, generator=g) < audio_dropout)
    return StepDraw(clip, sigma, noise_seed, drop)


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


def flow_loss(model, clip: ClipSample, draw: StepDraw, device: torch.device, use_emotion: bool = False) -> torch.Tensor:
    x0 = clip.latents.unsqueeze(0).float().to(device)                              # (1, 16, T, h, w)
    g = torch.Generator().manual_seed(draw.noise_seed)
    noise = torch.randn(x0.shape, generator=g).to(device)
    sigma = torch.tensor(draw.sigma, device=device)
    x_t = (1 - sigma) * x0 + sigma * noise
    kwargs = model_inputs(clip, device, use_emotion)
    if draw.drop_audio:
        kwargs["audio"] = torch.zeros_like(kwargs["audio"])
    t = (sigma * NUM_TRAIN_TIMESTEPS).reshape(1)
    pred = model(x_t, t, **kwargs)                                                 # (1, 16, T, h, w) float32
    return F.mse_loss(pred.float(), noise - x0)
