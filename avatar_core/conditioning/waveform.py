"""Waveform preparation: any layout / sample type / rate -> mono 16 kHz float32, with early input checks.

The official code reads audio with ``librosa.load(path, sr=16000)``: samples as float32 in [-1, 1], the channel
mean, then ``librosa.resample(res_type="soxr_hq")``, i.e. ``soxr.resample(y, sr, 16000, quality="soxr_hq")``
fixed to ``ceil(len * 16000 / sr)`` samples. The same steps are taken here, with the same library.
"""

from __future__ import annotations

import math

import numpy as np
import torch

WHISPER_SAMPLE_RATE = 16000
SOXR_QUALITY = "soxr_hq"  # librosa's default res_type (librosa 0.10, 0.11), which the official code leaves as is
MAX_CHANNELS = 16  # more "channels" than this is a [time, channels] array or a batch, not audio channels

# Peak below this (about -80 dBFS) counts as silence: such a clip cannot drive a mouth.
SILENCE_PEAK = 1e-4
# Float samples above this (+30 dBFS) are integer PCM stored as float, not audio with some headroom.
MAX_FLOAT_PEAK = 32.0

# Integer PCM -> float as libsndfile (soundfile, what librosa.load uses) does it: divide by 2^(bits-1).
_INT_SCALE = {torch.int8: 2.0**7, torch.int16: 2.0**15, torch.int32: 2.0**31}


def _as_float(waveform: torch.Tensor | np.ndarray, name: str) -> torch.Tensor:
    """CPU float32 samples in [-1, 1] from float or integer PCM; other sample types get a clear error."""
    if isinstance(waveform, np.ndarray):
        waveform = torch.from_numpy(waveform)
    if not isinstance(waveform, torch.Tensor):
        raise TypeError(f"{name}: the waveform must be a torch.Tensor (ComfyUI AUDIO), got {type(waveform).__name__}.")
    wav = waveform.detach().cpu()
    if wav.dtype in _INT_SCALE:
        return wav.to(torch.float32) / _INT_SCALE[wav.dtype]
    if wav.dtype == torch.uint8:  # 8-bit WAV is unsigned, centred on 128
        return (wav.to(torch.float32) - 128.0) / 128.0
    if not wav.dtype.is_floating_point or wav.dtype.is_complex:
        raise ValueError(
            f"{name}: samples of type {wav.dtype} have no known scale; give float samples in [-1, 1] "
            "(or int16/int32 PCM), e.g. from ComfyUI's Load Audio node."
        )
    return wav.to(torch.float32)


def _to_channels_time(wav: torch.Tensor, name: str) -> torch.Tensor:
    """Accept [T], [C, T] or ComfyUI's AUDIO [1, C, T] and return [C, T]; refuse layouts that are not that."""
    if wav.ndim == 3:
        if wav.shape[0] != 1:
            raise ValueError(
                f"{name}: got a batch of {wav.shape[0]} waveforms {tuple(wav.shape)}; pass one clip per character "
                "(split the batch first, e.g. one Load Audio per character)."
            )
        wav = wav[0]
        if wav.shape[0] > MAX_CHANNELS and wav.shape[1] <= MAX_CHANNELS:
            raise ValueError(
                f"{name}: waveform (1, {wav.shape[0]}, {wav.shape[1]}) looks like [batch, time, channels]; ComfyUI's AUDIO is "
                "[batch, channels, time]: transpose the last two dimensions (waveform.transpose(1, 2))."
            )
    if wav.ndim == 1:
        return wav[None]
    if wav.ndim != 2:
        raise ValueError(f"{name}: waveform must be [time], [channels, time] or ComfyUI's AUDIO [1, channels, time], "
                         f"got shape {tuple(wav.shape)}.")
    channels, time = wav.shape
    if channels <= MAX_CHANNELS < time:
        return wav
    if time <= MAX_CHANNELS < channels:
        raise ValueError(
            f"{name}: waveform {tuple(wav.shape)} looks like [time, channels]; audio here is [channels, time] "
            "(ComfyUI's AUDIO is [batch, channels, time]): transpose it (waveform.T) before passing it."
        )
    raise ValueError(
        f"{name}: cannot tell channels from time in a waveform of shape {tuple(wav.shape)} (at most {MAX_CHANNELS} "
        "channels and more samples than that are expected); give [channels, time] with at least one video frame "
        "(40 ms) of audio."
    )


def _check_samples(wav: torch.Tensor, name: str) -> None:
    """Refuse empty, non-finite and integer-scaled float audio (aminmax: no copy of a long clip)."""
    if wav.shape[-1] == 0:
        raise ValueError(f"{name}: the waveform is empty (0 samples); connect an audio clip with sound.")
    lo, hi = (float(v) for v in torch.aminmax(wav))
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(
            f"{name}: the waveform contains NaN or inf samples; the file or the node before this one is broken. "
            "Re-export the audio (e.g. as 16-bit WAV) or check the audio nodes before this one."
        )
    if max(-lo, hi) > MAX_FLOAT_PEAK:
        raise ValueError(
            f"{name}: float samples reach {max(-lo, hi):.0f}, far outside [-1, 1]: this looks like integer PCM "
            "stored as float. Divide the waveform by 32768 (16-bit) or load the file with ComfyUI's Load Audio."
        )


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


def _check_rate(sample_rate: object, name: str) -> int:
    try:
        rate = float(sample_rate)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        rate = float("nan")
    if not math.isfinite(rate) or rate <= 0 or rate != int(rate):
        raise ValueError(f"{name}: sample_rate must be a positive whole number of Hz (e.g. 16000, 44100, 48000), "
                         f"got {sample_rate!r}.")
    return int(rate)


def to_mono_16k(waveform: torch.Tensor | np.ndarray, sample_rate: int, name: str = "audio") -> torch.Tensor:
    """Convert a waveform ([T], [C, T] or [1, C, T]; float or integer PCM; any rate) to mono 16 kHz float32 [T16].

    16 kHz input is passed through bit for bit (float32 input: no copy for mono). Mono is the channel mean, then
    soxr HQ resampling: the official ``librosa.load(path, sr=16000)``.
    """
    rate = _check_rate(sample_rate, name)
    wav = _to_channels_time(_as_float(waveform, name), name)
    _check_samples(wav, name)
    return resample(_channel_mean(wav), rate, WHISPER_SAMPLE_RATE)


def check_not_silent(wav16k: torch.Tensor, name: str = "audio") -> None:
    """Raise if the clip has no sound at all (peak below about -80 dBFS)."""
    lo, hi = (float(v) for v in torch.aminmax(wav16k)) if wav16k.numel() else (0.0, 0.0)
    peak = max(-lo, hi)
    if peak < SILENCE_PEAK:
        raise ValueError(
            f"{name}: the audio is silent (peak amplitude {peak:.2e}); a silent clip cannot drive the avatar. "
            "Check the audio input (wrong track, muted file) or give this character a clip with speech."
        )
