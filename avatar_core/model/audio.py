"""Where the audio enters the model: audio_proj and the face-aware audio adapters (FAA).

Whisper windows (10 positions x 5 hidden states x 384 per video frame) become 4 tokens per video frame;
the 4 video frames of a latent frame give its 16 audio tokens. After selected double blocks, every video
token of latent frame k cross-attends (single head) to those 16 tokens; the result is multiplied by the
character's face mask and added. Several characters: sum over c of mask_c * adapter(audio_c).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .linear import Linear


class AudioProjection(nn.Module):
    """audio_proj: (B, F, 10, 5, 384) whisper windows -> (B, F, tokens, D)."""

    def __init__(self, in_dim: int, inner: int, tokens: int, hidden: int):
        super().__init__()
        self.tokens, self.hidden = tokens, hidden
        self.proj1 = Linear(in_dim, inner)
        self.proj2 = Linear(inner, inner)
        self.proj3 = Linear(inner, tokens * hidden)
        self.norm = nn.LayerNorm(hidden)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        h = feats.flatten(2)                                           # (B, F, 19200)
        h = F.relu(self.proj2(F.relu(self.proj1(h))))
        return self.norm(self.proj3(h).unflatten(-1, (self.tokens, self.hidden)))  # (B, F, tokens, D)


def audio_tokens_per_latent(tokens: torch.Tensor, latent_frames: int, compression: int) -> torch.Tensor:
    """(B, F, k, D) per-video-frame tokens -> (B, T, compression * k, D) per latent frame.

    The causal VAE maps video frame 0 alone to latent 0 and frames 4t-3..4t to latent t, so frame 0 is
    repeated `compression - 1` times in front. Requires F == compression * (T - 1) + 1.
    """
    B, n, k, D = tokens.shape
    expected = compression * (latent_frames - 1) + 1
    if n != expected:
        raise ValueError(f"audio has {n} video frames but {latent_frames} latent frames need {expected}")
    padded = torch.cat([tokens[:, :1].expand(B, compression - 1, k, D), tokens], dim=1)
    return padded.reshape(B, latent_frames, compression * k, D)


class AudioAdapter(nn.Module):
    """One face-aware audio adapter: frame-local single-head cross-attention (video -> audio tokens)."""

    def __init__(self, hidden: int, inner: int):
        super().__init__()
        self.inner = inner
        self.norm1 = nn.LayerNorm(hidden)   # audio tokens
        self.norm2 = nn.LayerNorm(hidden)   # video tokens
        self.to_q = Linear(hidden, inner, bias=False)
        self.to_kv = Linear(hidden, 2 * inner, bias=False)
        self.to_out = Linear(inner, hidden, bias=False)

    def query(self, video: torch.Tensor) -> torch.Tensor:
        """(B, T, hw, D) -> scaled queries (B, T, hw, inner); shared by every character."""
        return self.to_q(self.norm2(video)) * self._scale

    def attend(self, q: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """q (B, T, hw, inner), audio tokens (B, T, 16, D) -> (B, T, hw, D)."""
        k, v = self.to_kv(self.norm1(audio)).chunk(2, dim=-1)           # (B, T, 16, inner)
        w = q @ (k * self._scale).transpose(-2, -1)                     # (B, T, hw, 16)
        w = torch.softmax(w.float(), dim=-1).to(w.dtype)
        return self.to_out(w @ v)

    @property
    def _scale(self) -> float:
        # 1/sqrt(d) split evenly over q and k (keeps fp16 logits small).
        return 1.0 / math.sqrt(math.sqrt(self.inner))


def face_mask_tokens(mask: torch.Tensor, frames: int, h: int, w: int) -> torch.Tensor:
    """(B, N, Tm, H, W) latent-resolution masks -> (B, N, frames * h * w, 1) per-token weights.

    A single mask frame is repeated over time; then a nearest resize to the token grid.
    """
    if mask.dim() != 5:
        raise ValueError(f"face_mask must be (B, N, Tm, H, W), got shape {tuple(mask.shape)}")
    if mask.shape[2] == 1:
        mask = mask.expand(-1, -1, frames, -1, -1)
    mask = F.interpolate(mask.float(), size=[frames, h, w], mode="nearest")
    return mask.flatten(2).unsqueeze(-1)
