"""Early checks of numbers and tensors that enter the pack: every failure names the input and the fix.

ComfyUI's own min/max check is ``value < min`` / ``value > max``, which is False for NaN, so an API prompt
can send ``cfg: NaN`` to a node whose widget range looks safe. Every number and tensor is therefore checked
here, before any expensive work, and a denoising step that produces non-finite latents stops the run with a
message that says where it happened and what to try.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # the sampler imports this module: avoid a cycle at import time
    from .sampling.sampler import AvatarConditioning, SamplerConfig

SEED_MAX = 2**64 - 1
_CHECK_CHUNK = 1 << 20  # elements per isfinite pass (4 MB of float32 temporaries)  # torch.Generator.manual_seed accepts 0 .. 2**64 - 1


class NonFiniteLatents(FloatingPointError):
    """A denoising step produced NaN or inf latents (numerical overflow, or bad weights)."""


def check_number(name: str, value: object, *, lo: float | None = None, hi: float | None = None,
                 fix: str = "") -> float:
    """``value`` as a float, or a ValueError when it is not a finite number inside [lo, hi]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name}: expected a number, got {type(value).__name__} {value!r}. {fix}".rstrip())
    if not math.isfinite(value):
        raise ValueError(f"{name}: got {value}, which is not a finite number. {fix}".rstrip())
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        span = f"between {lo} and {hi}" if lo is not None and hi is not None else (
            f">= {lo}" if lo is not None else f"<= {hi}")
        raise ValueError(f"{name}: {value} is out of range; it must be {span}. {fix}".rstrip())
    return float(value)


def check_int(name: str, value: object, *, lo: int, hi: int, fix: str = "") -> int:
    """``value`` as an int inside [lo, hi] (a float with a fraction or NaN is refused)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name}: expected a whole number, got {value!r}. {fix}".rstrip())
    if not lo <= value <= hi:
        raise ValueError(f"{name}: {value} is out of range; it must be between {lo} and {hi}. {fix}".rstrip())
    return value


def check_finite(name: str, tensor: torch.Tensor | None, fix: str) -> None:
    """A ValueError naming ``name`` when ``tensor`` holds NaN or inf (one reduction, one sync)."""
    if tensor is None or not tensor.is_floating_point():
        return
    # One reduction, no temporaries: a NaN or inf anywhere makes the sum non-finite (finite conditioning values
    # are far too small to overflow float32). Only then count, in chunks (isfinite allocates its input's size).
    if bool(torch.isfinite(tensor.sum())):
        return
    flat = tensor.reshape(-1)
    bad = sum(int((~torch.isfinite(flat[i : i + _CHECK_CHUNK])).sum()) for i in range(0, flat.numel(), _CHECK_CHUNK))
    if bad:  # else the finite values only overflowed the sum
        raise ValueError(f"{name}: {bad} of {tensor.numel()} values are NaN or inf. {fix}")


def check_sampler_config(config: SamplerConfig) -> None:
    """Numbers of a SamplerConfig (all of them can come from an API prompt)."""
    check_int("steps", config.steps, lo=1, hi=10_000, fix="Use 50 (official) or fewer for drafts.")
    check_number("shift", config.shift, lo=1e-6, hi=1e4, fix="Use the official flow shift 5.0.")
    check_int("seed", config.seed, lo=0, hi=SEED_MAX, fix="Use a seed between 0 and 2**64 - 1.")
    g = config.guidance
    check_number("cfg", g.cfg, lo=0.0, hi=100.0,
                 fix="Use the official 7.5 (1 = no guidance; a negative scale pushes the video away from the prompt).")
    for field in ("early_floor", "late_start", "late_end", "early_mask_scale", "late_mask_scale"):
        check_number(f"guidance.{field}", getattr(g, field), lo=0.0, hi=100.0,
                     fix="Keep the official GuidanceConfig defaults.")


def check_conditioning_values(cond: AvatarConditioning) -> None:
    """Every conditioning tensor must be finite: NaN anywhere gives a black or noise video after hours."""
    check_finite("ref_latents", cond.ref_latents,
                 "The reference image's VAE encoding overflowed: load the bf16 HunyuanVideo VAE (an fp16 VAE can "
                 "overflow) or check the reference image.")
    text_fix = "Re-encode the prompt with Avatar Text Encode (bf16/fp32 text encoders) or re-save the conditioning."
    for label, text in (("positive", cond.text), ("negative", cond.negative_text)):
        check_finite(f"{label} text states", text.states, text_fix)
        check_finite(f"{label} pooled text", text.pooled, text_fix)
    check_finite("audio_features", cond.audio,
                 "Re-encode the audio with Avatar Audio Encode from a clean (finite) waveform and whisper-tiny in fp32.")
    check_finite("face_mask", cond.face_mask, "Give masks with values in 0..1 (Avatar Character Masks).")
    for label in ("motion_exp", "motion_pose", "fps"):
        check_finite(label, getattr(cond, label), f"Give a finite {label} (official: motion 30 / 25, fps 25).")
    check_finite("emotion", cond.emotion, "Re-encode the emotion reference image with Avatar Emotion Encode.")
    if not bool((cond.fps > 0).all()):
        raise ValueError(f"fps: {cond.fps.tolist()} must be > 0; use the audio features' frame rate (official 25).")


def check_step_latents(latents: torch.Tensor, step: int, steps: int, window: int, windows: int,
                       frames: list[int], cfg: float) -> None:
    """Stop at the first window whose Euler result is not finite, saying where and what to try."""
    if bool(torch.isfinite(latents).all()):
        return
    raise NonFiniteLatents(
        f"step {step + 1}/{steps}, window {window + 1}/{windows} (latent frames {frames[0]}..{frames[-1]}) produced "
        f"NaN/inf latents, so the video would be black. Try, in this order: weight_dtype bf16 (fp16 overflows; fp8 "
        f"weights lose range), a lower cfg (now {cfg}), step_cache 0, attention sdpa, and a bf16 VAE; if it "
        "persists the checkpoint itself may hold NaN weights: re-download it.")
