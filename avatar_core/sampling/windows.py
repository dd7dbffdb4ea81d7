"""Long-video windows: the official "time-aware position shift fusion", as pure functions.

The clip's latents form a ring of ``ring_frames`` frames. Every step tiles the ring with windows of
``window`` frames starting at ``k * window - shift``; the last window wraps onto the first, and frames
covered twice are averaged. After every step the shift grows by ``offset`` (mod ``window``), so window
seams move. Audio rows follow the latent index (``rows_per_latent`` rows per latent frame); a window of W
latent frames takes ``rows_per_latent * W - 3`` rows because the model pads frame 0 three times.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import InputError
from ..specs.concepts import WINDOW, WINDOW_STRIDE
from ..specs.fields import Rule, declared

OFFICIAL_WINDOW = 33  # latent frames per model call (129 video frames)
OFFICIAL_OFFSET = 10  # shift added per step, latent frames
ROWS_PER_LATENT = 4  # audio (video) frames per latent frame: the causal VAE's 4x time compression
_LEAD_ROWS = 3  # the model repeats audio row 0 three times, so a window needs 4W - 3 rows
_OFFICIAL_TAIL_ROWS = 5  # zero rows the official predict() appends to audio longer than one window


def _stride_problem(config: WindowConfig) -> str:
    if config.offset >= config.window:
        return (f"the stride {config.offset} is not less than the window {config.window}: the grid moves by "
                f"{config.offset} mod {config.window} = {config.offset % config.window} frames per step")
    return ""


@declared(Rule(("offset", "window"), _stride_problem, "Give a stride below the window (official 10 with 33)."),
          window=WINDOW, offset=WINDOW_STRIDE)
@dataclass(frozen=True)
class WindowConfig:
    """Window length and per-step shift in latent frames (defaults = official)."""

    window: int = OFFICIAL_WINDOW
    offset: int = OFFICIAL_OFFSET  # the stride: latent frames the window grid moves per step

    @property
    def audio_rows(self) -> int:
        """Audio rows fed with one window (129 for 33 latent frames)."""
        return ROWS_PER_LATENT * self.window - _LEAD_ROWS


@dataclass(frozen=True)
class ClipPlan:
    """Length bookkeeping of one clip (all counts in latent frames unless named rows)."""

    window: int  # latent frames per model call
    offset: int  # shift per step (0: a single window, no shifting)
    audio_frames: int  # audio rows after the official padding (F)
    video_frames: int  # latent frames kept at the end (decoded)
    ring_frames: int  # latent frames denoised (the ring), >= video_frames
    noise_frames: int  # latent frames of the initial noise draw (official: before the short-clip cut)

    @property
    def audio_ring_rows(self) -> int:
        """Rows of the zero-padded audio ring the windows index into."""
        return ROWS_PER_LATENT * self.ring_frames

    @property
    def windows_per_step(self) -> int:
        return -(-self.ring_frames // self.window)


def official_audio_rows(num_frames: int, config: WindowConfig = WindowConfig()) -> int:
    """Audio rows after the official predict() padding: up to one window, else 5 zero rows appended."""
    if num_frames < 1:
        raise InputError(f"the audio has no frames (got {num_frames}); give at least one audio frame")
    rows = config.audio_rows
    return rows if num_frames <= rows else num_frames + _OFFICIAL_TAIL_ROWS


def plan_clip(num_frames: int, config: WindowConfig = WindowConfig()) -> ClipPlan:
    """The official length bookkeeping for ``num_frames`` audio (= video) frames, with no length cap.

    ``video = F // 4 + 1`` latent frames are kept; the ring holds whole windows of ``W - 1`` new frames
    plus one (``(F // (4(W-1)) + 1) * (W-1) + 1``, i.e. 65, 97, ... for W = 33). A clip that fits one
    window is denoised as exactly one window without shifting; the official noise is still drawn for
    the longer ring and cut.
    """
    f = official_audio_rows(num_frames, config)
    w = config.window
    video = f // ROWS_PER_LATENT + 1
    ring = (f // (ROWS_PER_LATENT * (w - 1)) + 1) * (w - 1) + 1
    if video == w or ring == w:
        return ClipPlan(w, 0, f, video, w, ring)
    return ClipPlan(w, config.offset, f, video, ring, ring)


def gather_audio(audio: torch.Tensor, rows: list[int], frame_dim: int = 1) -> torch.Tensor:
    """Rows ``rows`` of the zero-padded audio ring, taken straight from the unpadded audio.

    Rows past the end of ``audio`` read as zeros, which is what the official two-stage padding
    (predict(), then the pipeline, ending at ``4 * ring`` rows) produces; no clip-sized copy is made.
    """
    have = audio.shape[frame_dim]
    idx = torch.tensor(rows, device=audio.device)
    picked = audio.index_select(frame_dim, idx.clamp(max=have - 1))  # [..., len(rows), ...]
    shape = [1] * audio.dim()
    shape[frame_dim] = len(rows)
    return torch.where((idx < have).view(shape), picked, torch.zeros((), dtype=audio.dtype, device=audio.device))


def window_starts(ring_frames: int, window: int, shift: int) -> list[int]:
    """First (possibly negative, i.e. wrapped) latent index of every window of one step."""
    return [start - shift for start in range(0, ring_frames, window)]


def window_frames(start: int, window: int, ring_frames: int) -> list[int]:
    """Latent frame indices of the window starting at ``start`` (mod the ring)."""
    return [(start + j) % ring_frames for j in range(window)]


def window_audio_rows(start: int, window: int, ring_rows: int) -> list[int]:
    """Audio rows of the window starting at latent ``start``: 4 * start onwards, 4W - 3 rows, mod the ring."""
    first = ROWS_PER_LATENT * start
    return [(first + k) % ring_rows for k in range(ROWS_PER_LATENT * window - _LEAD_ROWS)]


def next_shift(shift: int, offset: int, window: int) -> int:
    """Shift of the next step."""
    return (shift + offset) % window


def new_accumulator(latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Zeroed fusion sums ``[B, C, ring, H, W]`` and per-frame window counts ``[ring]``."""
    return torch.zeros_like(latents), torch.zeros(latents.shape[2], dtype=latents.dtype, device=latents.device)


def accumulate(total: torch.Tensor, count: torch.Tensor, frames: list[int], window_latents: torch.Tensor) -> None:
    """Add a window's result ``[B, C, W, H, W]`` into the ring sums at ``frames`` (in place)."""
    idx = torch.tensor(frames, device=total.device)
    total.index_add_(2, idx, window_latents.to(total.dtype))
    count.index_add_(0, idx, torch.ones(len(frames), dtype=count.dtype, device=count.device))


def fuse(total: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """Average of the windows that covered each frame ``[B, C, ring, H, W]``."""
    if bool((count == 0).any()):
        raise RuntimeError("some latent frames were not covered by any window")
    return total / count.view(1, 1, -1, 1, 1)
