"""Checks of what a run produces: a denoising step whose latents are not finite stops the run, saying where.

Input checks are declared specs (avatar_core/specs); this module imports nothing from the sampler.
"""

from __future__ import annotations

import torch


class NonFiniteLatents(FloatingPointError):
    """A denoising step produced NaN or inf latents (numerical overflow, or bad weights)."""


def check_step_latents(latents: torch.Tensor, step: int, steps: int, window: int, windows: int,
                       frames: list[int], cfg: float) -> None:
    """Stop at the first window whose solver result is not finite, saying where and what to try."""
    if bool(torch.isfinite(latents).all()):
        return
    raise NonFiniteLatents(
        f"step {step + 1}/{steps}, window {window + 1}/{windows} (latent frames {frames[0]}..{frames[-1]}) produced "
        f"NaN/inf latents, so the video would be black. Try, in this order: weight_dtype bf16 (fp16 overflows; fp8 "
        f"weights lose range), a lower cfg (now {cfg}), step_cache 0, attention sdpa, and a bf16 VAE; if it "
        "persists the checkpoint itself may hold NaN weights: re-download it.")
