"""Waveform preparation: any layout / sample type / rate -> mono 16 kHz float32 (checked by the WAVEFORM spec).

The official code reads audio with ``librosa.load(path, sr=16000)``: samples as float32 in [-1, 1], the channel
mean, then ``librosa.resample(res_type="soxr_hq")``, i.e. ``soxr.resample(y, sr, 16000, quality="soxr_hq")``
fixed to ``ceil(len * 16000 / sr)`` samples. The same steps are taken here, with the same library.
"""

from __future__ import annotations

import numpy as np
import torch

from ..specs.audio import WAVEFORM, as_tensor, channels_time, sample_scale
from ..specs.concepts import SAMPLE_RATE
from ..specs.fields import checked

WHISPER_SAMPLE_RATE = 16000
SOXR_QUALITY = "soxr_hq"  # librosa's default res_type (librosa 0.10, 0.11), which the official code leaves as is


def _as_float(wav: torch.Tensor) -> torch.Tensor:
    """CPU float32 samples in [-1, 1] of a checked waveform (integer PCM scaled as libsndfile does)."""
    wav = wav.detach().cpu()
    offset, scale = sample_scale(wav.dtype)  # type: ignore[misc]  (checked: a known sample type)
    if offset == 0 and scale == 1:
        return wav.to(torch.float32)
    return (wav.to(torch.float32) - offset) / scale


def _channel_mean(wav: torch.Tensor) -> torch.Tensor:
    """[C, T] -> [T] mean, summed channel after channel like numpy's mean over axis 0 (librosa.to_mono)."""
    if wav.shape[0] == 1:
        return wav[0]
    total = wav[0] + wav[1]
    for c in range(2, wav.shape[0]):
        total += wav[c]
    return total.div_(wav.shape[0])


def resample(mono: torch.Tensor, orig_rate: int, new_rate: int = WHISPER_SAMPLE_RATE) -> torch.Tensor:
    """soxr HQ resampling of a mono float32 clip [T], exactly as ``librosa.resample(res_type="soxr_hq")``."""
    if orig_rate == new_rate:
        return mono
    import soxr

    out = soxr.resample(mono.contiguous().numpy(), orig_rate, new_rate, quality=SOXR_QUALITY)
    n_out = int(np.ceil(mono.shape[0] * (float(new_rate) / orig_rate)))  # librosa's fix_length target
    out = torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32))
    if out.shape[0] >= n_out:
        return out[:n_out]
    return torch.nn.functional.pad(out, (0, n_out - out.shape[0]))


@checked(label="name", waveform=WAVEFORM, sample_rate=SAMPLE_RATE)
def to_mono_16k(waveform: torch.Tensor | np.ndarray, sample_rate: int, name: str = "audio") -> torch.Tensor:
    """Convert a waveform ([T], [C, T] or [1, C, T]; float or integer PCM; any rate) to mono 16 kHz float32 [T16].

    16 kHz input is passed through bit for bit (float32 input: no copy for mono). Mono is the channel mean, then
    soxr HQ resampling: the official ``librosa.load(path, sr=16000)``. Silent, empty, non-finite and
    mis-scaled clips are refused (specs/audio.py).
    """
    wav = _as_float(channels_time(as_tensor(waveform), name))
    return resample(_channel_mean(wav), sample_rate, WHISPER_SAMPLE_RATE)
