"""Audio conditioning: Whisper features per video frame, of any length, one track per character.

Layout (official ``encode_audio``): the stacked Whisper hidden states [P, 5, 384] at 50 Hz get 4 zero
positions in front; video frame f takes the 10 positions starting at ``stride * f`` of that padded sequence
(stride 2 at 25 fps, 4 at 12.5 fps), i.e. original positions [stride*f - 4, stride*f + 6): -80 ms to +120 ms
around the frame at 25 fps. Output [F, 10, 5, 384]. The official 400-frame / 30 s caps are not applied: see
whisper.py for how audio longer than 30 s is encoded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .waveform import WHISPER_SAMPLE_RATE, check_not_silent, to_mono_16k
from .whisper import whisper_hidden_states

WINDOW = 10  # Whisper positions per video frame
LEAD_ZEROS = 4  # zero positions prepended before windowing
POSITIONS_PER_SECOND = 50
SUPPORTED_FPS = (25.0, 12.5)


@dataclass
class CharacterAudio:
    """One character's speech: a waveform ([T], [C, T] or [1, C, T]) and where it starts in the video."""

    waveform: torch.Tensor
    sample_rate: int
    start_s: float = 0.0
    name: str = ""


def position_stride(fps: float) -> int:
    """Whisper positions between consecutive video frames (2 at 25 fps, 4 at 12.5 fps)."""
    if float(fps) not in SUPPORTED_FPS:
        raise ValueError(
            f"fps={fps} is not supported: the model was trained on 25 fps (12.5 also works, as in the official "
            f"code); use one of {SUPPORTED_FPS} and resample the video afterwards if needed."
        )
    return int(round(POSITIONS_PER_SECOND / float(fps)))


def samples_per_frame(fps: float) -> int:
    """16 kHz samples per video frame (640 at 25 fps)."""
    return position_stride(fps) * (WHISPER_SAMPLE_RATE // POSITIONS_PER_SECOND)


def positions_needed(num_frames: int, fps: float) -> int:
    """Whisper positions that the windows of ``num_frames`` frames read (without the 4 lead zeros)."""
    return position_stride(fps) * (num_frames - 1) + WINDOW - LEAD_ZEROS


def window_features(hidden: torch.Tensor, fps: float, num_frames: int) -> torch.Tensor:
    """Cut per-frame windows out of stacked hidden states [P, L, D] -> [num_frames, 10, L, D]."""
    if hidden.ndim != 3:
        raise ValueError(f"hidden states must be [positions, layers, dim], got {tuple(hidden.shape)}.")
    stride = position_stride(fps)
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}.")
    need = positions_needed(num_frames, fps)
    if hidden.shape[0] < need:
        raise ValueError(f"{num_frames} frames at {fps} fps need {need} Whisper positions, got {hidden.shape[0]}.")
    padded = torch.cat([hidden.new_zeros(LEAD_ZEROS, *hidden.shape[1:]), hidden], dim=0)  # [P+4, L, D]
    index = stride * torch.arange(num_frames)[:, None] + torch.arange(WINDOW)[None, :]  # [F, 10]
    return padded[index]  # [F, 10, L, D]


def _prepare(track: CharacterAudio, label: str, spf: int) -> tuple[torch.Tensor, int]:
    """Mono 16 kHz samples of one character and its start sample, checked for silence and length."""
    wav = to_mono_16k(track.waveform, track.sample_rate, name=label)
    check_not_silent(wav, name=label)
    if wav.numel() < spf:
        raise ValueError(
            f"{label}: the clip is {wav.numel() / WHISPER_SAMPLE_RATE * 1000:.1f} ms long, shorter than one video "
            f"frame ({spf / WHISPER_SAMPLE_RATE * 1000:.0f} ms); give at least one frame of audio."
        )
    if track.start_s < 0:
        raise ValueError(f"{label}: start_s must be >= 0 seconds, got {track.start_s}.")
    return wav, int(round(track.start_s * WHISPER_SAMPLE_RATE))


@torch.no_grad()
def encode_character_audio(
    encoder: torch.nn.Module,
    characters: Sequence[CharacterAudio],
    fps: float = 25.0,
    num_frames: int | None = None,
) -> torch.Tensor:
    """Whisper frame features for several characters, all as long as the video: [N, F, 10, 5, 384].

    Each character's clip is placed at its ``start_s`` on a silent timeline as long as the video and the
    whole timeline is encoded, so where a character is silent it gets Whisper's features of silence (what
    the model saw for pauses in training), not zeros. ``num_frames`` defaults to the end of the latest
    clip, floor(samples / samples_per_frame) as in the official code; clips running past it are cut.
    """
    if len(characters) == 0:
        raise ValueError("encode_character_audio: no audio given; connect one audio clip per character.")
    spf = samples_per_frame(fps)
    labels = [c.name or f"audio of character {i + 1}" for i, c in enumerate(characters)]
    prepared = [_prepare(c, label, spf) for c, label in zip(characters, labels)]
    if num_frames is None:
        num_frames = max(start + wav.numel() for wav, start in prepared) // spf
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}.")
    total = num_frames * spf
    for (_, start), label in zip(prepared, labels):  # all checks before the first (slow) encoding
        if start >= total:
            raise ValueError(
                f"{label}: starts at {start / WHISPER_SAMPLE_RATE:.2f} s, after the video ends "
                f"({total / WHISPER_SAMPLE_RATE:.2f} s); lower its start or lengthen the video."
            )
    tracks = []
    for wav, start in prepared:
        timeline = torch.zeros(total)
        piece = wav[: total - start]
        timeline[start : start + piece.numel()] = piece
        hidden = whisper_hidden_states(encoder, timeline, positions_needed(num_frames, fps))  # [P, 5, 384]
        tracks.append(window_features(hidden, fps, num_frames))  # [F, 10, 5, 384]
    return torch.stack(tracks)  # [N, F, 10, 5, 384]


def encode_audio(
    encoder: torch.nn.Module,
    waveform: torch.Tensor,
    sample_rate: int,
    fps: float = 25.0,
    num_frames: int | None = None,
) -> torch.Tensor:
    """Whisper frame features of one clip: [F, 10, 5, 384], F = floor(len * fps / sample_rate) by default.

    ``waveform``: [T], [C, T] or ComfyUI's [1, C, T], any sample rate (resampled to 16 kHz mono). Same
    layout as the official ``encode_audio`` but without its 16 s / 30 s caps.
    """
    return encode_character_audio(encoder, [CharacterAudio(waveform, sample_rate, 0.0, "audio")], fps, num_frames)[0]
