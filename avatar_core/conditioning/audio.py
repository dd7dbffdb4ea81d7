"""Audio conditioning: Whisper features per video frame, of any length, one track per character.

Layout (official ``encode_audio``): the stacked Whisper hidden states [P, 5, 384] at 50 Hz get 4 zero
positions in front; video frame f takes the 10 positions starting at ``stride * f`` of that padded sequence
(stride 2 at 25 fps, 4 at 12.5 fps), i.e. original positions [stride*f - 4, stride*f + 6): -80 ms to +120 ms
around the frame at 25 fps. Output [F, 10, 5, 384]. The official 400-frame / 30 s caps are not applied: see
whisper.py for how audio longer than 30 s is encoded.

Roles (several characters on one timeline): a SPEAKER has a clip placed at its start offset; its track is
that clip with digital silence (zero samples) everywhere else, encoded as ONE waveform through the official
path, i.e. exactly what the official code computes for a WAV file holding the clip at its place. A LISTENER
(a visible character without speech) has no clip: its track is digital silence for the whole video, so its
features are Whisper's encoding of silence (``listener_features``), never zero features. Why, from the
official code (Tencent-Hunyuan/HunyuanVideo-Avatar @ fd59436):
* zero FEATURES are the unconditional input of classifier-free guidance (sample_inference_audio.py:105,
  ``uncond_audio_prompts = zeros_like(audio_prompts)``): "no audio information", not "a closed mouth";
* silence inside a clip (a pause, the start of a clip) reaches the model as Whisper's features of those
  samples (audio_dataset.py get_audio_feature: the whole clip, each 30 s chunk zero-padded by the feature
  extractor; audio_preprocessor.py encode_audio), so that is what the model saw for quiet stretches;
* zero features appear only past the clip's end (sample_inference_audio.py:97-100 and the pipeline's ring
  padding, pipeline_hunyuan_video_audio.py:1079-1080), on frames cut from the output.
Peers feed silence the same way: MeiGen-AI MultiTalk and InfiniteTalk give an absent speaker ``np.zeros``
samples and place each speaker's speech on a zero waveform ("add" mode) before their audio encoder
(generate_multitalk.py / generate_infinitetalk.py, ``audio_prepare_multi``).
Whisper of silence depends on what else is in the same 30 s Whisper window: the log-mel floor is 80 dB under
the window's loudest value (WhisperFeatureExtractor: ``max(log_spec, log_spec.max() - 8)``) and self-attention
spans the window. So a speaker's silent stretches inside a window that also holds its speech are Whisper's
features of that silence IN CONTEXT (what the official code gives a pause), and equal the listener's features
only in windows without any of its speech (measured on whisper-tiny.en: 0.26-0.44 relative distance 2 to 20 s
after the speech, more right next to it; 0 in a speech-free window). A speaker's track never contains another speaker's samples.
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
from .whisper import POSITIONS_PER_CHUNK, chunk_plan, whisper_hidden_states

WINDOW = 10  # Whisper positions per video frame
LEAD_ZEROS = 4  # zero positions prepended before windowing
POSITIONS_PER_SECOND = 50
SUPPORTED_FPS = VIDEO_FPS.values()
_ENCODER = Instance(torch.nn.Module, what="a Whisper encoder (torch.nn.Module)",
                    fix="Load whisper-tiny with load_whisper_encoder (in ComfyUI: Load Whisper (Avatar audio)).")


@declared(waveform=Maybe(WAVEFORM), sample_rate=SAMPLE_RATE, start_s=START_OFFSET,
          name=Text(max_len=200, fix="Give a short name for the clip (e.g. audio_1)."),
          label=lambda a: a.name if isinstance(a.name, str) else "")
@dataclass
class CharacterAudio:
    """One character's track: a SPEAKER's clip (waveform [T], [C, T] or [1, C, T]) and where it starts in the
    video, or a LISTENER (waveform None: no speech, digital silence for the whole video; module docstring)."""

    waveform: torch.Tensor | None
    sample_rate: int = WHISPER_SAMPLE_RATE
    start_s: float = 0.0
    name: str = ""

    @classmethod
    def listener(cls, name: str = "") -> CharacterAudio:
        return cls(None, WHISPER_SAMPLE_RATE, 0.0, name)

    @property
    def role(self) -> str:
        return "listener" if self.waveform is None else "speaker"


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
        if not prepared:
            raise InputError("encode_character_audio: every character is a listener, so no clip sets the video's "
                             "length; give num_frames (Avatar Audio Encode: set duration) or connect a speaker's audio.")
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
def silence_hidden_states(encoder: torch.nn.Module, num_positions: int,
                          out: torch.Tensor | None = None, official_fp16: bool = True) -> torch.Tensor:
    """Whisper hidden states [num_positions, L + 1, D] of a timeline of digital silence (a listener's track).

    The same as ``whisper_hidden_states`` of that many zero samples: every window of the chunk plan holds only
    zeros, so every window's states are the same, and the one silent 30 s window is encoded once and its
    positions copied where each window keeps them (an hour of a listener costs one Whisper call, not 180).
    """
    window = whisper_hidden_states(encoder, torch.zeros(0), min(num_positions, POSITIONS_PER_CHUNK),  # [<=1500, L, D]
                                   official_fp16=official_fp16)
    if out is None:
        out = window.new_empty(num_positions, *window.shape[1:])
    for start, keep_from, keep_to in chunk_plan(num_positions):
        out[keep_from:keep_to] = window[keep_from - start : keep_to - start]
    return out


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

    A speaker's clip is placed at its ``start_s`` on a silent timeline and the WHOLE clip is encoded, as the
    official code does: the samples after the last whole frame (and after ``num_frames`` when the video is cut
    shorter) still reach Whisper. Where a speaker is silent it gets Whisper's features of that silence (what
    the model saw for pauses), not zeros; a listener (``CharacterAudio.listener()``) gets Whisper's features
    of silence for the whole video (``silence_hidden_states``; module docstring: why not zeros).
    ``num_frames`` defaults to the end of the latest clip, floor(samples / samples_per_frame) as in the
    official code; with listeners only it must be given.

    The result is a VIEW of one [N, 4 + P, 5, 384] buffer of hidden states (P = 2F + 6 at 25 fps): an hour of
    one character's audio keeps 1.4 GB, not the 6.9 GB its overlapping windows would take as a copy.
    ``official_fp16`` (default): the official float16 roundings of the mel features and of the features
    (whisper.py); False keeps float32 throughout.
    """
    spf = samples_per_frame(fps)
    labels = [c.name or f"audio of character {i + 1}" for i, c in enumerate(characters)]
    speakers = [i for i, c in enumerate(characters) if c.role == "speaker"]
    prepared = {i: _prepare(characters[i], labels[i], spf) for i in speakers}
    num_frames = _video_frames(list(prepared.values()), [labels[i] for i in speakers], spf, num_frames)
    positions = positions_needed(num_frames, fps)
    buffer: list[torch.Tensor] = []  # allocated once the first window tells the sizes

    def rows_of(n: int) -> Callable[[int, int], torch.Tensor]:
        def alloc(layers: int, dim: int) -> torch.Tensor:
            if not buffer:
                buffer.append(torch.zeros(len(characters), LEAD_ZEROS + positions, layers, dim))
            return buffer[0][n, LEAD_ZEROS:]
        return alloc

    for n, (wav, start) in prepared.items():
        whisper_hidden_states(encoder, wav, positions, out=rows_of(n), offset=start, official_fp16=official_fp16)
    listeners = [i for i, c in enumerate(characters) if c.role == "listener"]
    if listeners:
        silence = silence_hidden_states(encoder, positions, official_fp16=official_fp16)  # [P, 5, 384]
        for n in listeners:
            rows_of(n)(*silence.shape[1:]).copy_(silence)
    return frame_windows(buffer[0], fps, num_frames)  # [N, F, 10, 5, 384]


def listener_features(encoder: torch.nn.Module, fps: float, num_frames: int,
                      official_fp16: bool = True) -> torch.Tensor:
    """A listener's Whisper frame features [F, 10, 5, 384]: digital silence for the whole video."""
    return encode_character_audio(encoder, [CharacterAudio.listener("listener")], fps, num_frames, official_fp16)[0]


def hidden_of_windows(features: torch.Tensor, fps: float) -> torch.Tensor:
    """The zero-led hidden states [..., 4 + P, L, D] that per-frame windows [..., F, 10, L, D] were cut from
    (the inverse of ``frame_windows``): frame f's first ``stride`` positions, then the last frame's rest."""
    stride = position_stride(fps)
    head = features[..., :, :stride, :, :].flatten(-4, -3)                   # [..., F * stride, L, D]
    return torch.cat([head, features[..., -1, stride:, :, :]], dim=-3)     # [..., stride * (F - 1) + 10, L, D]


def with_listeners(features: torch.Tensor, listener: torch.Tensor, count: int, fps: float) -> torch.Tensor:
    """Tracks [N, F, 10, L, D] followed by listener tracks up to ``count`` characters: [count, F, 10, L, D].

    The characters after the last track are listeners (no speech): each gets ``listener`` ([F, 10, L, D],
    ``listener_features``). A view of one new buffer of hidden states, not 5x its size in copied windows.
    """
    n, frames = features.shape[0], features.shape[1]
    if count < n:
        raise InputError(f"{n} audio tracks but only {count} characters: give at most one track per character.")
    if listener.shape != features.shape[1:]:
        raise InputError(f"the listener track {tuple(listener.shape)} does not match the audio tracks "
                         f"{tuple(features.shape[1:])}; encode both for the same video (same fps and length).")
    if count == n:
        return features
    hidden = hidden_of_windows(features, fps)                                            # [N, 4 + P, L, D]
    quiet = hidden_of_windows(listener, fps).expand(count - n, *hidden.shape[1:])      # [count - N, 4 + P, L, D]
    return frame_windows(torch.cat([hidden, quiet]), fps, frames)                       # [count, F, 10, L, D]


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
