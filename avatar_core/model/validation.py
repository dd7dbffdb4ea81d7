"""Early, named input checks for AvatarTransformer.forward (before any expensive work)."""

from __future__ import annotations

import torch

from ..config import AvatarConfig


def _fail(name: str, msg: str) -> None:
    raise ValueError(f"AvatarTransformer input {name!r}: {msg}")


def check_inputs(cfg: AvatarConfig, x: torch.Tensor, ref: torch.Tensor, text: torch.Tensor,
                 text_mask: torch.Tensor | None, audio: torch.Tensor, face_mask: torch.Tensor,
                 cached: torch.Tensor | None) -> None:
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
