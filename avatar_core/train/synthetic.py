"""A tiny synthetic clip dataset for tests and the 13B benchmark (random tensors with the real layouts)."""

from __future__ import annotations

from pathlib import Path

import torch

from .data import ClipSample, write_clip


def synthetic_clip(cfg, frames: int, h: int, w: int, text_len: int = 8, seed: int = 0,
                   emotion: bool = False) -> ClipSample:
    """Latents with structure (a smooth pattern plus a little noise), so a model can learn something."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    grid = torch.linspace(-1, 1, h)[:, None] * torch.linspace(-1, 1, w)[None, :]
    latents = grid.expand(16, frames, h, w) * r(16, 1, 1, 1) + 0.1 * r(16, frames, h, w)
    mask = torch.zeros(1, 1, h, w)
    mask[..., : h // 2 + 1, :] = 1
    n_valid = max(1, text_len * 2 // 3)
    return ClipSample(latents=latents, ref_latents=latents[:, :1].clone(), audio=r(4 * frames - 3, 10, 5, 384),
                      face_mask=mask, text_states=r(text_len, cfg.text_dim),
                      text_mask=torch.tensor([1] * n_valid + [0] * (text_len - n_valid)),
                      text_pooled=r(cfg.text_pooled_dim), motion_exp=torch.full((4,), 30),
                      motion_pose=torch.full((4,), 25), fps=torch.tensor(25.0),
                      emotion=r(16, 1, h, w) if emotion else None, caption=f"synthetic clip {seed}")


def write_synthetic_folder(folder: str | Path, cfg, clips: int = 2, frames: int = 3, h: int = 4, w: int = 6,
                           text_len: int = 8, emotion: bool = False) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(clips):
        write_clip(folder / f"clip{i:03d}.safetensors", synthetic_clip(cfg, frames, h, w, text_len, i, emotion))
    return folder
