"""The waveform spec: a speech clip's layout, sample type and values, checked before any resampling.

Accepted: [T], [C, T] or ComfyUI's AUDIO [1, C, T] (torch or numpy), float samples in [-1, 1] or integer PCM
(int8/16/32, unsigned 8-bit). Refused by name: batches, [time, channels], unknown sample types, empty, NaN/inf,
integer PCM stored as float (peaks far above 1) and silence (nothing to drive a mouth).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .fields import Spec
from .tensors import value_range

MAX_CHANNELS = 16  # more "channels" than this is a [time, channels] array or a batch, not audio channels
SILENCE_PEAK = 1e-4  # peak below this (about -80 dBFS) counts as silence: such a clip cannot drive a mouth
MAX_FLOAT_PEAK = 32.0  # float samples above this (+30 dBFS) are integer PCM stored as float
# Integer PCM -> float as libsndfile (soundfile, what librosa.load uses) does it: divide by 2^(bits-1).
INT_SCALE = {torch.int8: 2.0**7, torch.int16: 2.0**15, torch.int32: 2.0**31}


def as_tensor(waveform: torch.Tensor | np.ndarray) -> torch.Tensor:
    return torch.from_numpy(waveform) if isinstance(waveform, np.ndarray) else waveform


def channels_time(wav: torch.Tensor, name: str = "audio", spec: Spec | None = None) -> torch.Tensor:
    """[T], [C, T] or [1, C, T] -> a [C, T] view; layouts that are not that raise, saying what they look like."""
    fail = (spec or Spec()).fail
    if wav.ndim == 3:
        if wav.shape[0] != 1:
            raise fail(name, f"got a batch of {wav.shape[0]} waveforms {tuple(wav.shape)}; pass one clip per character "
                             "(split the batch first, e.g. one Load Audio per character)")
        wav = wav[0]
        if wav.shape[0] > MAX_CHANNELS and wav.shape[1] <= MAX_CHANNELS:
            raise fail(name, f"waveform (1, {wav.shape[0]}, {wav.shape[1]}) looks like [batch, time, channels]; "
                             "ComfyUI's AUDIO is [batch, channels, time]: transpose the last two dimensions "
                             "(waveform.transpose(1, 2))")
    if wav.ndim == 1:
        return wav[None]
    if wav.ndim != 2:
        raise fail(name, f"waveform must be [time], [channels, time] or ComfyUI's AUDIO [1, channels, time], "
                         f"got shape {tuple(wav.shape)}")
    channels, time = wav.shape
    if channels <= MAX_CHANNELS < time or (channels <= MAX_CHANNELS and time == 0):
        return wav
    if time <= MAX_CHANNELS < channels:
        raise fail(name, f"waveform {tuple(wav.shape)} looks like [time, channels]; audio here is [channels, time] "
                         "(ComfyUI's AUDIO is [batch, channels, time]): transpose it (waveform.T) before passing it")
    raise fail(name, f"cannot tell channels from time in a waveform of shape {tuple(wav.shape)} (at most "
                     f"{MAX_CHANNELS} channels and more samples than that are expected); give [channels, time] with at "
                     "least one video frame (40 ms) of audio")


def sample_scale(dtype: torch.dtype) -> tuple[float, float] | None:
    """(offset, scale) that maps samples of ``dtype`` to float in [-1, 1]; None for an unknown sample type."""
    if dtype in INT_SCALE:
        return 0.0, INT_SCALE[dtype]
    if dtype == torch.uint8:  # 8-bit WAV is unsigned, centred on 128
        return 128.0, 128.0
    if dtype.is_floating_point and not dtype.is_complex:
        return 0.0, 1.0
    return None


@dataclass(frozen=True)
class Waveform(Spec):
    """One speech clip (see the module doc); returned unchanged (waveform.py converts it)."""

    def check(self, name: str, value: Any, hint: str = "") -> Any:
        if not isinstance(value, (torch.Tensor, np.ndarray)):
            raise self.fail(name, f"the waveform must be a torch.Tensor (ComfyUI AUDIO), got {type(value).__name__}",
                            hint)
        wav = as_tensor(value)
        scale = sample_scale(wav.dtype)
        if scale is None:
            raise self.fail(name, f"samples of type {wav.dtype} have no known scale; give float samples in [-1, 1] "
                                  "(or int16/int32 PCM), e.g. from ComfyUI's Load Audio node", hint)
        wav = channels_time(wav, name, self)
        if wav.shape[-1] == 0:
            raise self.fail(name, "the waveform is empty (0 samples); connect an audio clip with sound", hint)
        lo, hi = value_range(wav)
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise self.fail(name, "the waveform contains NaN or inf samples; the file or the node before this one "
                                  "is broken. Re-export the audio (e.g. as 16-bit WAV) or check the audio nodes "
                                  "before this one", hint)
        offset, div = scale
        peak = max(abs(lo - offset), abs(hi - offset)) / div
        if peak > MAX_FLOAT_PEAK:
            raise self.fail(name, f"float samples reach {peak:.0f}, far outside [-1, 1]: this looks like integer PCM "
                                  "stored as float. Divide the waveform by 32768 (16-bit) or load the file with "
                                  "ComfyUI's Load Audio", hint)
        if peak < SILENCE_PEAK:
            raise self.fail(name, f"the audio is silent (peak amplitude {peak:.2e}); a silent clip cannot drive the "
                                  "avatar. Check the audio input (wrong track, muted file) or give this character a "
                                  "clip with speech", hint)
        return value


WAVEFORM = Waveform()  # its messages carry their own fixes
