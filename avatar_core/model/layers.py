"""Small building blocks of the HunyuanVideo MM-DiT (embedders, modulation, norms, MLP, final layer)."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .fused import ln_modulate, modulate  # noqa: F401  (modulate re-exported)
from .linear import Linear, Linears, Operations


def timestep_embedding(t: torch.Tensor, dim: int = 256, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding, [cos, sin] order. t: (N,) any numeric dtype -> (N, dim) fp32."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimestepEmbedder(nn.Module):
    """Scalar -> sinusoid(256) -> Linear -> SiLU -> Linear. Used for t, motion ids and fps."""

    def __init__(self, out_dim: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(Linear(freq_dim, out_dim), nn.SiLU(), Linear(out_dim, out_dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        emb = timestep_embedding(t, self.freq_dim).to(self.mlp[0].weight.dtype)
        return self.mlp(emb)


class MLPEmbedder(nn.Module):
    """vector_in: CLIP pooled (B, D2) -> (B, D)."""

    def __init__(self, in_dim: int, hidden: int):
        super().__init__()
        self.in_layer = Linear(in_dim, hidden)
        self.silu = nn.SiLU()
        self.out_layer = Linear(hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_layer(self.silu(self.in_layer(x)))


class PatchEmbed(nn.Module):
    """(B, C, T, H, W) -> (B, T/pt * H/ph * W/pw, D) with a kernel = stride Conv3d."""

    def __init__(self, patch: tuple[int, int, int], in_ch: int, hidden: int):
        super().__init__()
        self.proj = nn.Conv3d(in_ch, hidden, kernel_size=patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class Modulation(nn.Module):
    """SiLU(vec) -> Linear -> `factor` chunks of (B, 1, D) (shift/scale/gate vectors)."""

    def __init__(self, hidden: int, factor: int, operations: Operations = Linears):
        super().__init__()
        self.factor = factor
        self.linear = operations.Linear(hidden, factor * hidden)

    def forward(self, vec: torch.Tensor) -> list[torch.Tensor]:
        return [c.unsqueeze(1) for c in self.linear(F.silu(vec)).chunk(self.factor, dim=-1)]


class RMSNorm(nn.Module):
    """RMSNorm computed in fp32, weight applied in the input dtype (as the official qk-norm)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        out = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x)
        return out * self.weight


class MLP(nn.Module):
    """fc1 -> activation -> fc2."""

    def __init__(self, dim: int, hidden: int, act: str, operations: Operations = Linears):
        super().__init__()
        self.fc1 = operations.Linear(dim, hidden)
        self.fc2 = operations.Linear(hidden, dim)
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x)
        h = F.gelu(h, approximate="tanh") if self.act == "gelu_tanh" else F.silu(h)
        return self.fc2(h)


class FinalLayer(nn.Module):
    """LayerNorm -> modulate(shift, scale) -> Linear to patch pixels."""

    def __init__(self, hidden: int, out_per_token: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.linear = Linear(hidden, out_per_token)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), Linear(hidden, 2 * hidden))

    def forward(self, x: torch.Tensor, vec: torch.Tensor, kernels: bool = True) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(vec).unsqueeze(1).chunk(2, dim=-1)
        return self.linear(ln_modulate(x, shift, scale, self.norm_final.eps, kernels))  # norm_final has no weights
