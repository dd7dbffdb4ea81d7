"""3-axis rotary position embedding with the reference frame at time index -1."""

from __future__ import annotations

import torch


def _axis_freqs(dim: int, pos: torch.Tensor, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    inv = 1.0 / (theta ** (torch.arange(0, dim, 2)[: dim // 2].float() / dim))  # (dim/2,)
    ang = torch.outer(pos.float(), inv)                                                         # (N, dim/2)
    # Adjacent pairs (2i, 2i+1) share one frequency.
    return ang.cos().repeat_interleave(2, dim=1), ang.sin().repeat_interleave(2, dim=1)         # (N, dim)


def avatar_rope(frames: int, height: int, width: int, dims: tuple[int, int, int], theta: float,
                ref_frame: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """RoPE tables for a (frames, height, width) token grid, t-major then h then w.

    With `ref_frame`, one extra time slice at t = -1 (same h, w coordinates as frame 0) comes first:
    the prepended reference-image tokens. Returns (cos, sin), each ((frames + 1) * height * width, sum(dims)).
    """
    t = torch.arange(frames, dtype=torch.float32)
    if ref_frame:
        t = torch.cat([torch.tensor([-1.0]), t])
    grid = torch.meshgrid(t, torch.arange(height, dtype=torch.float32),
                          torch.arange(width, dtype=torch.float32), indexing="ij")
    cos, sin = zip(*(_axis_freqs(d, g.reshape(-1), theta) for d, g in zip(dims, grid)))
    return torch.cat(cos, dim=1), torch.cat(sin, dim=1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent channel pairs of x (B, L, H, D) by the angles in cos/sin (L, D); math in fp32."""
    xf = x.float()
    pairs = xf.unflatten(-1, (-1, 2))                                   # (B, L, H, D/2, 2)
    rotated = torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1).flatten(-2)
    cos, sin = cos[None, :, None, :], sin[None, :, None, :]
    return (xf * cos + rotated * sin).type_as(x)
