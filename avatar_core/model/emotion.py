"""Audio Emotion Module (AEM): an emotion-reference latent steers expression through cross-attention.

Not part of the public release (no weights, no code there). Built as the paper describes: the VAE latent
of an emotion reference image -> FC (patch tokens) -> cross-attention from the video tokens inside the
double blocks, behind a learned gate. Gates start at zero, so a freshly initialised AEM changes nothing
and training starts from the released model; with no AEM loaded the forward is the official one.
Its weights live in their own file (prefix-free keys of this module + a JSON config in the metadata).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn

from .attention import attention
from .linear import Linear


@dataclass(frozen=True)
class EmotionConfig:
    hidden_size: int = 3072
    num_heads: int = 24
    latent_channels: int = 16
    patch: int = 2
    after_double: tuple[int, ...] = tuple(range(0, 20, 2))   # double blocks followed by an emotion layer

    def to_dict(self) -> dict:
        return asdict(self)


class EmotionCrossAttention(nn.Module):
    def __init__(self, hidden: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm_q = nn.LayerNorm(hidden, eps=1e-6)
        self.to_q = Linear(hidden, hidden)
        self.to_kv = Linear(hidden, 2 * hidden)
        self.to_out = Linear(hidden, hidden)
        self.gate = nn.Parameter(torch.zeros(1))

    def forward(self, video: torch.Tensor, emo: torch.Tensor, backend: str = "sdpa") -> torch.Tensor:
        """video (B, L, D), emotion tokens (B, Le, D) -> gated update (B, L, D)."""
        q = self.to_q(self.norm_q(video)).unflatten(-1, (self.heads, -1))        # (B, L, H, Dh)
        k, v = self.to_kv(emo).unflatten(-1, (2, self.heads, -1)).unbind(2)     # (B, Le, H, Dh)
        return torch.tanh(self.gate) * self.to_out(attention(q, k, v, backend))


class AudioEmotionModule(nn.Module):
    """emotion latent (B, 16, Te, He, We) -> tokens, and one cross-attention per selected double block."""

    def __init__(self, cfg: EmotionConfig):
        super().__init__()
        self.cfg = cfg
        p = cfg.patch
        self.fc = Linear(cfg.latent_channels * p * p, cfg.hidden_size)
        self.norm = nn.LayerNorm(cfg.hidden_size, eps=1e-6)
        self.layers = nn.ModuleList([EmotionCrossAttention(cfg.hidden_size, cfg.num_heads) for _ in cfg.after_double])
        self._slot = {blk: i for i, blk in enumerate(cfg.after_double)}

    def tokens(self, latent: torch.Tensor) -> torch.Tensor:
        """(B, C, T, H, W) -> (B, T * H/p * W/p, D): FC over non-overlapping p x p patches."""
        p = self.cfg.patch
        B, C, T, H, W = latent.shape
        if H % p or W % p:
            raise ValueError(f"emotion latent {H}x{W} is not divisible by the patch size {p}")
        x = latent.reshape(B, C, T, H // p, p, W // p, p).permute(0, 2, 3, 5, 1, 4, 6)  # (B,T,h,w,C,p,p)
        x = x.reshape(B, T * (H // p) * (W // p), C * p * p)
        return self.norm(self.fc(x.to(self.fc.weight.dtype)))

    def has_layer(self, double_index: int) -> bool:
        return double_index in self._slot

    def apply(self, double_index: int, video: torch.Tensor, emo_tokens: torch.Tensor, backend: str) -> torch.Tensor:
        return self.layers[self._slot[double_index]](video, emo_tokens, backend)
