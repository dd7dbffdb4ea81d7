"""Specs of the model's conditioning tensors: AvatarConditioning fields, the forward's inputs, training clips.

Per-tensor specs (rank, float, finite, value range) are declared on the dataclasses that hold the tensors
(sampling/sampler.py, train/data.py) with the specs below; the rules here check the shapes against each
other. The forward's checks against the model's sizes (``check_model_inputs``) run on every call.
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import InputError
from .concepts import MOTION
from .fields import Rule
from .tensors import Mask, Tensor

TEXT_FIX = "Re-encode the prompt with Avatar Text Encode (bf16/fp32 text encoders) or re-save the conditioning."
AUDIO_FIX = "Re-encode the audio with Avatar Audio Encode from a clean (finite) waveform and whisper-tiny in fp32."
LATENT_CHANNELS = 16  # HunyuanVideo VAE


class Features(Tensor):
    """Whisper windows [B, N, F, 10, 5, 384]; the official one-character [B, F, 10, 5, 384] gets the N axis."""

    def check(self, name: str, value: Any, hint: str = "") -> torch.Tensor:
        value = super().check(name, value, hint)
        return value.unsqueeze(1) if value.dim() == 5 else value


REF_LATENTS = Tensor(ndims=(5,), layout="[B, C, T, H, W] reference latents",
                     fix="The reference image's VAE encoding overflowed: load the bf16 HunyuanVideo VAE (an fp16 VAE "
                         "can overflow) or check the reference image.")
TEXT_STATES = Tensor(ndims=(3,), layout="[B, L, D] text states", fix=TEXT_FIX)
TEXT_MASK = Tensor(ndims=(2,), kind="any", layout="[B, L] text mask", fix=TEXT_FIX)
TEXT_POOLED = Tensor(ndims=(2,), layout="[B, D] pooled text", fix=TEXT_FIX)
AUDIO_FEATURES = Features(ndims=(5, 6), layout="[B, (N,) F, 10, 5, 384] audio features", fix=AUDIO_FIX)
FACE_MASK = Mask(ndims=(5,), layout="[B, N, Tm, h, w] latent face masks",
                 fix="Give masks with values in 0..1 (Avatar Character Masks).")
MOTION_IDS = Tensor(ndims=(2,), kind="number", lo=MOTION.lo, hi=MOTION.hi, layout="[B, 4] motion ids",
                    fix="Give finite motion values (official: motion 30 / 25).")
FPS = Tensor(ndims=(1,), kind="number", lo=0.0, above=True, hi=240.0, layout="[B] frames per second",
             fix="Give the audio features' frame rate (official 25).")
EMOTION_LATENT = Tensor(ndims=(5,), layout="[B, 16, Te, He, We] emotion latent",
                        fix="Re-encode the emotion reference image with Avatar Emotion Encode.")


def _batch_problem(cond: Any) -> str:
    b = cond.ref_latents.shape[0]
    bad = [f"{n} {tuple(t.shape)}" for n, t in (("audio", cond.audio), ("face_mask", cond.face_mask),
                                                  ("motion_exp", cond.motion_exp), ("motion_pose", cond.motion_pose),
                                                  ("fps", cond.fps), ("text states", cond.text.states))
           if t.shape[0] != b]
    return f"batch {b} of ref_latents does not match {', '.join(bad)}" if bad else ""


def _mask_problem(cond: Any) -> str:
    ref, fm, chars = cond.ref_latents, cond.face_mask, cond.audio.shape[1]
    if fm.shape[1] != chars or fm.shape[-2:] != ref.shape[-2:]:
        return (f"face_mask must be [B, N={chars}, Tm, {ref.shape[-2]}, {ref.shape[-1]}] (one mask per character at "
                f"latent size), got {tuple(fm.shape)}")
    return ""


def _text_problem(cond: Any) -> str:
    pos, neg = cond.text.states, cond.negative_text.states
    if pos.shape != neg.shape:
        return (f"positive and negative text states must have the same shape (pad both to the same length), got "
                f"{tuple(pos.shape)} and {tuple(neg.shape)}")
    return ""


CONDITIONING_RULES = (
    Rule(("ref_latents", "audio", "face_mask"), _batch_problem, "Give every input for the same batch."),
    Rule(("face_mask", "audio"), _mask_problem, "Give one mask per audio track (Avatar Character Masks)."),
    Rule(("text", "negative_text"), _text_problem, TEXT_FIX),
)


def _text_mask_problem(text: Any) -> str:
    if tuple(text.mask.shape) != tuple(text.states.shape[:2]) or text.pooled.shape[0] != text.states.shape[0]:
        return (f"states {tuple(text.states.shape)}, mask {tuple(text.mask.shape)} and pooled "
                f"{tuple(text.pooled.shape)} do not belong together ([B, L, D], [B, L], [B, D2])")
    return ""


TEXT_RULES = (Rule(("states", "mask", "pooled"), _text_mask_problem, TEXT_FIX),)


def check_window(cond: Any, window: int) -> None:
    """The reference latents hold one window of frames (the sampler repeats nothing itself)."""
    ref = cond.ref_latents
    if ref.shape[2] != window:
        raise InputError(f"ref_latents must be [B, C, {window}, H, W] (one window of reference latents), got "
                         f"{tuple(ref.shape)}; encode the reference image repeated to {4 * window - 3} frames")


def _fail(name: str, msg: str) -> None:
    raise InputError(f"AvatarTransformer input {name!r}: {msg}")


def check_model_inputs(cfg: Any, x: torch.Tensor, ref: torch.Tensor, text: torch.Tensor,
                       text_mask: torch.Tensor | None, audio: torch.Tensor, face_mask: torch.Tensor,
                       cached: torch.Tensor | None) -> None:
    """The forward's inputs against the model's sizes (``cfg``: AvatarConfig), before any expensive work."""
    if x.dim() != 5 or x.shape[1] != cfg.in_channels:
        _fail("x", f"expected (B, {cfg.in_channels}, T, H, W) latents, got {tuple(x.shape)}")
    B, _, T, H, W = x.shape
    pt, ph, pw = cfg.patch_size
    if T % pt or H % ph or W % pw:
        _fail("x", f"latent size {T}x{H}x{W} must be divisible by the patch size {cfg.patch_size}")
    if ref.shape != x.shape:
        _fail("ref_latents", f"must match x {tuple(x.shape)} (the reference is repeated over the window), "
                             f"got {tuple(ref.shape)}")
    if text.dim() != 3 or text.shape[0] != B or text.shape[2] != cfg.text_dim:
        _fail("text_states", f"expected ({B}, L, {cfg.text_dim}), got {tuple(text.shape)}")
    if text_mask is not None and text_mask.shape != text.shape[:2]:
        _fail("text_mask", f"expected {tuple(text.shape[:2])}, got {tuple(text_mask.shape)}")
    frames = cfg.temporal_compression * (T // pt - 1) + 1
    want = (B, audio.shape[1], frames, cfg.audio_window, cfg.audio_layers, cfg.audio_channels)
    if audio.dim() != 6 or tuple(audio.shape) != want:
        _fail("audio", f"expected {want} (batch, characters, video frames = 4T-3, window, layers, channels), "
                       f"got {tuple(audio.shape)}")
    if face_mask.dim() != 5 or face_mask.shape[0] != B or face_mask.shape[1] != audio.shape[1]:
        _fail("face_mask", f"expected ({B}, {audio.shape[1]}, Tm, H, W): one mask per character with audio, "
                           f"got {tuple(face_mask.shape)}")
    if cached is not None:
        n = (T // pt + 1) * (H // ph) * (W // pw) + text.shape[1]
        if cached.shape != (B, n, cfg.hidden_size):
            _fail("cached_tokens", f"expected ({B}, {n}, {cfg.hidden_size}) from a full call of the same window "
                                   f"shape, got {tuple(cached.shape)}")
    if cfg.depth_single < 1:
        _fail("config", "the model needs at least one single-stream block (the deep cache runs the last one)")
