"""txt_in: the HunyuanVideo single token refiner (LLaVA states -> model width).

The official text mask is used *positionally* here (masked mean pooling and the refiner's own attention
mask), even though for LLaVA-with-image inputs it does not line up with the image tokens. We keep that
behaviour exactly (the text parity fixtures check it; conditioning/text.py builds that layout).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .attention import masked_attention
from .layers import MLP, TimestepEmbedder
from .linear import Linear


class TextProjection(nn.Module):
    def __init__(self, in_dim: int, hidden: int):
        super().__init__()
        self.linear_1 = Linear(in_dim, hidden)
        self.act_1 = nn.SiLU()
        self.linear_2 = Linear(hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act_1(self.linear_1(x)))


class RefinerBlock(nn.Module):
    def __init__(self, hidden: int, heads: int, mlp_ratio: float, qkv_bias: bool = True):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(hidden, eps=1e-6)
        self.self_attn_qkv = Linear(hidden, 3 * hidden, bias=qkv_bias)
        self.self_attn_proj = Linear(hidden, hidden, bias=qkv_bias)
        self.norm2 = nn.LayerNorm(hidden, eps=1e-6)
        self.mlp = MLP(hidden, int(hidden * mlp_ratio), act="silu")
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), Linear(hidden, 2 * hidden))

    def forward(self, x: torch.Tensor, c: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        gate_msa, gate_mlp = self.adaLN_modulation(c).unsqueeze(1).chunk(2, dim=-1)  # (B, 1, D) each
        q, k, v = self.self_attn_qkv(self.norm1(x)).unflatten(-1, (3, self.heads, -1)).unbind(2)  # (B, L, H, Dh)
        if mask is None:
            mask = torch.ones(x.shape[0], 1, x.shape[1], x.shape[1], dtype=torch.bool, device=x.device)
        x = x + self.self_attn_proj(masked_attention(q, k, v, mask)) * gate_msa
        return x + self.mlp(self.norm2(x)) * gate_mlp


class IndividualTokenRefiner(nn.Module):
    def __init__(self, hidden: int, heads: int, depth: int, mlp_ratio: float):
        super().__init__()
        self.blocks = nn.ModuleList([RefinerBlock(hidden, heads, mlp_ratio) for _ in range(depth)])

    def forward(self, x: torch.Tensor, c: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        attn_mask = None
        if mask is not None:
            m = mask.bool()
            attn_mask = (m[:, None, :, None] & m[:, None, None, :]).clone()  # (B, 1, L, L)
            attn_mask[..., 0] = True  # every query sees token 0, so no row is fully masked
        for block in self.blocks:
            x = block(x, c, attn_mask)
        return x


class SingleTokenRefiner(nn.Module):
    """(B, L, Dt) text states + t + mask -> (B, L, D) text tokens."""

    def __init__(self, in_dim: int, hidden: int, heads: int, depth: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.input_embedder = Linear(in_dim, hidden)
        self.t_embedder = TimestepEmbedder(hidden)
        self.c_embedder = TextProjection(in_dim, hidden)
        self.individual_token_refiner = IndividualTokenRefiner(hidden, heads, depth, mlp_ratio)

    def forward(self, x: torch.Tensor, t: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if mask is None:
            pooled = x.mean(dim=1)
        else:
            w = mask.float().unsqueeze(-1)                      # (B, L, 1)
            pooled = (x * w).sum(dim=1) / w.sum(dim=1)          # (B, Dt)
        c = self.t_embedder(t) + self.c_embedder(pooled)        # (B, D)
        return self.individual_token_refiner(self.input_embedder(x), c, mask)
