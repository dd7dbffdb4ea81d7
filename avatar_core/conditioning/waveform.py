"""Waveform preparation: any layout / sample rate -> mono 16 kHz float32, with early input checks."""

from __future__ import annotations

import math

import torch

WHISPER_SAMPLE_RATE = 16000

# Peak below this (about -80 dBFS) counts as silence: such a clip cannot drive a mouth.
SILENCE_PEAK = 1e-4


def _to_channels_time(waveform: torch.Tensor, name: str) -> torch.Tensor:
    """Accept [T], [C, T] or [1, C, T] (ComfyUI AUDIO) and return [C, T]."""
    if waveform.ndim == 1:
        return waveform[None]
    if waveform.ndim == 2:
        return waveform
    if waveform.ndim == 3:
        if waveform.shape[0] != 1:
            raise ValueError(
                f"{name}: got a batch of {waveform.shape[0]} waveforms {tuple(waveform.shape)}; "
                "pass one clip per character (split the batch first)."
            )
        return waveform[0]
    raise ValueError(f"{name}: waveform must be [T], [C, T] or [1, C, T], got shape {tuple(waveform.shape)}.")


def _sinc_kernels(orig: int, new: int, zeros: int = 24, rolloff: float = 0.945) -> tuple[torch.Tensor, int]:
    """Kaiser-windowed sinc filters, one per output phase, for rational resampling orig -> new.

    Returns ([new, width] float64 kernels, half width in input samples).
    """
    cutoff = rolloff * min(orig, new) / 2.0  # below both Nyquist frequencies (in rates reduced by their gcd)
    half = int(math.ceil(zeros * orig / min(orig, new)))  # input samples either side of an output instant
    # Block b of `orig` input samples yields `new` outputs; output p of the block sits at input position
    # b*orig + p*orig/new, so taps cover [-half, orig + half) relative to the block start.
    taps = torch.arange(-half, orig + half + 1, dtype=torch.float64)  # [W]
    phase = torch.arange(new, dtype=torch.float64)[:, None] * orig / new  # [new, 1]
    dist = taps[None, :] - phase  # input samples from the output instant, [new, W]
    x = 2.0 * cutoff * dist / orig
    sinc = torch.where(x == 0, torch.ones_like(x), torch.sin(math.pi * x) / (math.pi * x))
    beta = torch.tensor(14.769656459379492, dtype=torch.float64)  # Kaiser beta for ~-140 dB side lobes
    window = torch.special.i0(beta * (1 - (dist / (half + 1)).pow(2)).clamp_min(0).sqrt()) / torch.special.i0(beta)
    return 2.0 * cutoff / orig * sinc * window, half


def resample(waveform: torch.Tensor, orig_rate: int, new_rate: int) -> torch.Tensor:
    """Band-limited resampling of [C, T] audio (polyphase windowed sinc, computed in float64)."""
    if orig_rate == new_rate:
        return waveform
    g = math.gcd(int(orig_rate), int(new_rate))
    orig, new = int(orig_rate) // g, int(new_rate) // g
    kernels, half = _sinc_kernels(orig, new)  # [new, W]
    n_in = waveform.shape[-1]
    n_out = int(math.ceil(n_in * new / orig))
    x = torch.nn.functional.pad(waveform.to(torch.float64)[:, None], (half, half + 2 * orig))  # [C, 1, T']
    # conv1d with stride `orig` evaluates all `new` phases at each block of `orig` input samples.
    y = torch.nn.functional.conv1d(x, kernels[:, None], stride=orig)  # [C, new, blocks]
    y = y.transpose(1, 2).reshape(waveform.shape[0], -1)[:, :n_out]  # interleave phases in time order
    return y.to(torch.float32)


def to_mono_16k(waveform: torch.Tensor, sample_rate: int, name: str = "audio") -> torch.Tensor:
    """Convert a waveform ([T], [C, T] or [1, C, T], any rate) to mono 16 kHz float32 [T16].

    Mono is the channel mean (what librosa.load(mono=True) does for the official code).
    """
    if not isinstance(waveform, torch.Tensor):
        raise TypeError(f"{name}: waveform must be a torch.Tensor, got {type(waveform).__name__}.")
    if int(sample_rate) <= 0:
        raise ValueError(f"{name}: sample_rate must be a positive integer, got {sample_rate}.")
    wav = _to_channels_time(waveform.detach().to("cpu", torch.float32), name)
    if wav.shape[-1] == 0:
        raise ValueError(f"{name}: the waveform is empty (0 samples); connect an audio clip with sound.")
    if not torch.isfinite(wav).all():
        raise ValueError(f"{name}: the waveform contains NaN or inf samples.")
    mono = wav.mean(dim=0, keepdim=True)  # [1, T]
    return resample(mono, int(sample_rate), WHISPER_SAMPLE_RATE)[0]


def check_not_silent(wav16k: torch.Tensor, name: str = "audio") -> None:
    """Raise if the clip has no sound at all (peak below about -80 dBFS)."""
    peak = float(wav16k.abs().max()) if wav16k.numel() else 0.0
    if peak < SILENCE_PEAK:
        raise ValueError(
            f"{name}: the audio is silent (peak amplitude {peak:.2e}); a silent clip cannot drive the avatar. "
            "Check the audio input (wrong track, muted file) or give this character a clip with speech."
        )
