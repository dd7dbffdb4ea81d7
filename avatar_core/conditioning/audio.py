"""Audio conditioning: Whisper features per video frame, of any length, one track per character.

Layout (official ``encode_audio``): the stacked Whisper hidden states [P, 5, 384] at 50 Hz get 4 zero
positions in front; video frame f takes the 10 positions starting at ``stride * f`` of that padded sequence
(stride 2 at 25 fps, 4 at 12.5 fps), i.e. original positions [stride*f - 4, stride*f + 6): -80 ms to +120 ms
around the frame at 25 fps. Output [F, 10, 5, 384]. The official 400-frame / 30 s caps are not applied: see
whisper.py for how audio longer than 30 s is encoded.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..errors import InputError
from ..specs.audio import WAVEFORM
from ..specs.concepts import CHARACTERS, FRAME_COUNT, SAMPLE_RATE, START_OFFSET, VIDEO_FPS
from ..specs.fields import Instance, Items, Maybe, Text, checked, declared
from .waveform import WHISPER_SAMPLE_RATE, to_mono_16k
from .whisper import whisper_hidden_states

WINDOW = 10  # Whisper positions per video frame
LEAD_ZEROS = 4  # zero positions prepended before windowing
POSITIONS_PER_SECOND = 50
SUPPORTED_FPS = VIDEO_FPS.values()
_ENCODER = Instance(torch.nn.Module, what="a Whisper encoder (torch.nn.Module)",
                    fix="Load whisper-tiny with load_whisper_encoder (in ComfyUI: Load Whisper (Avatar audio)).")


@declared(waveform=WAVEFORM, sample_rate=SAMPLE_RATE, start_s=START_OFFSET,
          name=Text(max_len=200, fix="Give a short name for the clip (e.g. audio_1)."),
          label=lambda a: a.name if isinstance(a.name, str) else "")
@dataclass
class CharacterAudio:
    """One character's speech: a waveform ([T], [C, T] or [1, C, T]) and where it starts in the video."""

    waveform: torch.Tensor
    sample_rate: int
    start_s: float = 0.0
    name: str = ""


def position_stride(fps: float) -> int:
    """Whisper positions between consecutive video frames (2 at 25 fps, 4 at 12.5 fps)."""
    return int(round(POSITIONS_PER_SECOND / VIDEO_FPS.check("fps", fps)))


def samples_per_frame(fps: float) -> int:
    """16 kHz samples per video frame (640 at 25 fps)."""
    return position_stride(fps) * (WHISPER_SAMPLE_RATE // POSITIONS_PER_SECOND)


def positions_needed(num_frames: int, fps: float) -> int:
    """Whisper positions that the windows of ``num_frames`` frames read (without the 4 lead zeros)."""
    return position_stride(fps) * (num_frames - 1) + WINDOW - LEAD_ZEROS


def frame_windows(padded: torch.Tensor, fps: float, num_frames: int) -> torch.Tensor:
    """Per-frame windows of zero-led hidden states [..., 4 + P, L, D] -> [..., num_frames, 10, L, D] as a VIEW.

    Consecutive windows overlap by 8 of their 10 positions (stride 2), so as a copy the windows of an hour of
    audio would take 5x the memory of the hidden states; the view shares the hidden states' memory instead.
    """
    stride = position_stride(fps)
    need = LEAD_ZEROS + positions_needed(num_frames, fps)
    if padded.shape[-3] < need:
        raise ValueError(f"{num_frames} frames at {fps} fps need {need - LEAD_ZEROS} Whisper positions, "
                         f"got {padded.shape[-3] - LEAD_ZEROS}.")
    *lead, _, layers, dim = padded.shape
    s_pos = padded.stride(-3)
    return padded.as_strided((*lead, num_frames, WINDOW, layers, dim),
                             (*padded.stride()[:-3], stride * s_pos, s_pos, padded.stride(-2), padded.stride(-1)),
                             padded.storage_offset())


@checked(fps=VIDEO_FPS, num_frames=FRAME_COUNT)
def window_features(hidden: torch.Tensor, fps: float, num_frames: int) -> torch.Tensor:
    """Cut per-frame windows out of stacked hidden states [P, L, D] -> [num_frames, 10, L, D] (official layout)."""
    if hidden.ndim != 3:
        raise InputError(f"hidden states must be [positions, layers, dim], got {tuple(hidden.shape)}.")
    padded = torch.cat([hidden.new_zeros(LEAD_ZEROS, *hidden.shape[1:]), hidden], dim=0)  # [P+4, L, D]
    return frame_windows(padded, fps, num_frames)


def _prepare(track: CharacterAudio, label: str, spf: int) -> tuple[torch.Tensor, int]:
    """Mono 16 kHz samples of one character and its start sample (the clip is checked by its specs)."""
    wav = to_mono_16k(track.waveform, track.sample_rate, name=label)
    if wav.numel() < spf:
        raise InputError(
            f"{label}: the clip is {wav.numel() / WHISPER_SAMPLE_RATE * 1000:.1f} ms long, shorter than one video "
            f"frame ({spf / WHISPER_SAMPLE_RATE * 1000:.0f} ms); give at least one frame of audio."
        )
    return wav, int(round(track.start_s * WHISPER_SAMPLE_RATE))


def _video_frames(prepared: list[tuple[torch.Tensor, int]], labels: list[str], spf: int,
                  num_frames: int | None) -> int:
    """The video length in frames (default: the end of the latest clip), checked against every start."""
    if num_frames is None:  # the end of the latest clip: checked like a given length before anything is allocated
        num_frames = FRAME_COUNT.check("video length in frames (the latest clip's start + length)",
                                       max(start + wav.numel() for wav, start in prepared) // spf)
    total = num_frames * spf
    for (_, start), label in zip(prepared, labels):  # all checks before the first (slow) encoding
        if start >= total:
            raise InputError(
                f"{label}: starts at {start / WHISPER_SAMPLE_RATE:.2f} s, after the video ends "
                f"({total / WHISPER_SAMPLE_RATE:.2f} s); lower its start or lengthen the video."
            )
    return num_frames


@torch.no_grad()
@checked(characters=Items(Instance(CharacterAudio, what="a CharacterAudio",
                                   fix="Give CharacterAudio(waveform, sample_rate, start_s)."),
                          lo=1, hi=CHARACTERS.hi, fix="Connect one audio clip per character."),
         fps=VIDEO_FPS, num_frames=Maybe(FRAME_COUNT), encoder=_ENCODER)
def encode_character_audio(
    encoder: torch.nn.Module,
    characters: Sequence[CharacterAudio],
    fps: float = 25.0,
    num_frames: int | None = None,
    official_fp16: bool = True,
) -> torch.Tensor:
    """Whisper frame features for several characters, all as long as the video: [N, F, 10, 5, 384].

    Each character's clip is placed at its ``start_s`` on a silent timeline and the WHOLE clip is encoded, as
    the official code does: the samples after the last whole frame (and after ``num_frames`` when the video is
    cut shorter) still reach Whisper. Where a character is silent it gets Whisper's features of silence (what
    the model saw for pauses in training), not zeros. ``num_frames`` defaults to the end of the latest clip,
    floor(samples / samples_per_frame) as in the official code.

    The result is a VIEW of one [N, 4 + P, 5, 384] buffer of hidden states (P = 2F + 6 at 25 fps): an hour of
    one character's audio keeps 1.4 GB, not the 6.9 GB its overlapping windows would take as a copy.
    ``official_fp16`` (default): the official float16 roundings of the mel features and of the features
    (whisper.py); False keeps float32 throughout.
    """
    spf = samples_per_frame(fps)
    labels = [c.name or f"audio of character {i + 1}" for i, c in enumerate(characters)]
    prepared = [_prepare(c, label, spf) for c, label in zip(characters, labels)]
    num_frames = _video_frames(prepared, labels, spf, num_frames)
    positions = positions_needed(num_frames, fps)
    buffer: list[torch.Tensor] = []  # allocated once the first window tells the sizes

    def rows_of(n: int) -> Callable[[int, int], torch.Tensor]:
        def alloc(layers: int, dim: int) -> torch.Tensor:
            if not buffer:
                buffer.append(torch.zeros(len(prepared), LEAD_ZEROS + positions, layers, dim))
            return buffer[0][n, LEAD_ZEROS:]
        return alloc

    for n, (wav, start) in enumerate(prepared):
        whisper_hidden_states(encoder, wav, positions, out=rows_of(n), offset=start, official_fp16=official_fp16)
    return frame_windows(buffer[0], fps, num_frames)  # [N, F, 10, 5, 384]


@checked(waveform=WAVEFORM, sample_rate=SAMPLE_RATE, fps=VIDEO_FPS, num_frames=Maybe(FRAME_COUNT), encoder=_ENCODER)
def encode_audio(
    encoder: torch.nn.Module,
    waveform: torch.Tensor,
    sample_rate: int,
    fps: float = 25.0,
    num_frames: int | None = None,
    official_fp16: bool = True,
) -> torch.Tensor:
    """Whisper frame features of one clip: [F, 10, 5, 384], F = floor(len * fps / sample_rate) by default.

    ``waveform``: [T], [C, T] or ComfyUI's [1, C, T], any sample rate (resampled to 16 kHz mono). Same
    layout as the official ``encode_audio`` but without its 16 s / 30 s caps.
    """
    return encode_character_audio(encoder, [CharacterAudio(waveform, sample_rate, 0.0, "audio")], fps, num_frames,
                                  official_fp16)[0]
