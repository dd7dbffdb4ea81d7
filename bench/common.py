"""Shared helpers of the GPU benchmarks: inputs at real sizes, timing, memory."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch

from avatar_core.config import AvatarConfig

TEXT_LEN = 831          # official: 256 text + 575 image tokens after the crop
TEXT_VALID = (620, 640)  # valid text tokens of the [negative, positive] halves (prompt + 575 image ones)


@dataclass
class Shape:
    height: int          # pixels
    width: int
    frames: int = 129    # video frames of one window -> 33 latent frames

    @property
    def latent(self) -> tuple[int, int, int]:
        return (self.frames - 1) // 4 + 1, self.height // 8, self.width // 8

    def __str__(self) -> str:
        return f"{self.height}x{self.width}x{self.frames}f"


def parse_shape(text: str) -> Shape:
    h, w = text.lower().split("x")[:2]
    return Shape(int(h), int(w))


def make_inputs(cfg: AvatarConfig, shape: Shape, batch: int, device: str, dtype=torch.bfloat16, seed: int = 0):
    g = torch.Generator(device).manual_seed(seed)
    T, H, W = shape.latent
    r = lambda *s, dt=dtype: torch.randn(*s, generator=g, device=device, dtype=dt)  # noqa: E731
    mask = torch.zeros(batch, TEXT_LEN, dtype=torch.int64, device=device)
    for b in range(batch):
        mask[b, : TEXT_VALID[b % 2]] = 1
    face = torch.zeros(batch, 1, 1, H, W, device=device)
    face[..., H // 4: 3 * H // 4, W // 4: 3 * W // 4] = 1
    return dict(
        x=r(batch, 16, T, H, W), t=torch.full((batch,), 900.0, device=device), ref_latents=r(batch, 16, T, H, W),
        text_states=r(batch, TEXT_LEN, cfg.text_dim), text_mask=mask, text_pooled=r(batch, cfg.text_pooled_dim),
        motion_exp=torch.full((batch, 4), 30, device=device), motion_pose=torch.full((batch, 4), 25, device=device),
        fps=torch.full((batch,), 25.0, device=device),
        audio=r(batch, 1, 4 * T - 3, 10, 5, 384, dt=torch.float32), face_mask=face)


def timed(fn, repeats: int, warmup: int = 1) -> tuple[float, list[float]]:
    """Median wall time (CUDA-synchronised) of `fn` over `repeats` runs after `warmup` runs."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def cuda_time(fn, reps: int = 5) -> float:
    """Median seconds of ``fn`` over ``reps`` runs, timed with CUDA events after one warm-up call."""
    fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(reps):
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return sorted(times)[len(times) // 2]


def gib(n: int) -> float:
    return n / 2**30
