"""Audio conditioning without real weights: resampling, windowing parity, chunk joins, early errors."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from avatar_core.conditioning.audio import CharacterAudio, encode_audio, encode_character_audio, window_features
from avatar_core.conditioning.waveform import resample, to_mono_16k
from avatar_core.parity.common import load_fixture

FIXTURES = Path("/work/shared/fixtures/parity")


@pytest.mark.parametrize("rate", [44100, 48000, 22050, 8000])
def test_resample_sine_matches_the_analytic_16k_sine(rate):
    t = torch.arange(2 * rate, dtype=torch.float64) / rate
    y = resample(torch.sin(2 * math.pi * 440 * t)[None].float(), rate, 16000)[0]
    assert y.shape[0] == 32000
    ref = torch.sin(2 * math.pi * 440 * torch.arange(32000, dtype=torch.float64) / 16000)
    assert (y.double() - ref)[400:-400].abs().max() < 2e-3  # edges see the zero padding


def test_resample_removes_tones_above_the_new_nyquist():
    t = torch.arange(48000, dtype=torch.float64) / 48000
    y = resample(torch.sin(2 * math.pi * 11000 * t)[None].float(), 48000, 16000)[0]  # 11 kHz > 8 kHz Nyquist
    assert y[400:-400].pow(2).mean().sqrt() < 0.01  # a plain decimation would alias it to 5 kHz at full level


def test_comfy_stereo_audio_becomes_the_channel_mean():
    left, right = torch.rand(16000) - 0.5, torch.rand(16000) - 0.5
    mono = to_mono_16k(torch.stack([left, right])[None], 16000)  # ComfyUI AUDIO waveform [1, C, T]
    assert torch.allclose(mono, (left + right) / 2)


@pytest.mark.parametrize("key, fps", [("audio_prompts_fps25p0_nf5", 25.0), ("audio_prompts_fps12p5_nf5", 12.5)])
def test_windowing_matches_official_encode_audio(key, fps):
    fx = load_fixture(FIXTURES / "preproc.safetensors")
    got = window_features(fx["whisper_hidden_states"][0], fps, 5)[None]  # [1, 5, 10, 5, 384]
    assert torch.equal(got, fx[key])


class _PositionStub(torch.nn.Module):
    """Stands in for the Whisper encoder: position p of the k-th chunk call holds k*10000 + p + 1 (layer l adds l/10)."""

    def __init__(self) -> None:
        super().__init__()
        self.config = SimpleNamespace(num_mel_bins=80)
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.calls = 0

    def forward(self, mel: torch.Tensor, output_hidden_states: bool = True):
        assert mel.shape == (1, 80, 3000)  # every chunk is one full 30 s Whisper window
        base = self.calls * 10000 + torch.arange(1500, dtype=torch.float32) + 1
        self.calls += 1
        states = tuple((base + layer / 10)[None, :, None].expand(1, 1500, 384) for layer in range(5))
        return SimpleNamespace(hidden_states=states)


def test_audio_longer_than_60s_joins_overlapping_windows_on_the_time_axis():
    wav = torch.randn(65 * 16000) * 0.1
    stub = _PositionStub()
    feats = encode_audio(stub, wav, 16000)
    assert feats.shape == (65 * 25, 10, 5, 384)  # no 400-frame cap
    # 3254 positions (65 s + the last window's look-ahead) in 30 s windows overlapping by 10 s: windows start at
    # 0, 1000, 2000 and keep [0, 1250), [1250, 2250), [2250, 3254) (the last one reaches the clip's end).
    assert stub.calls == 3
    f = torch.arange(feats.shape[0])[:, None]
    g = 2 * f - 4 + torch.arange(10)[None]                      # global 50 Hz position of frame f, slot j
    k = (g >= 1250).long() + (g >= 2250).long()
    local = g - 1000 * k                                         # window k starts at position 1000 k
    expected = torch.where(g < 0, torch.zeros(()), k * 10000 + local + 1.0)
    assert torch.equal(feats[:, :, 0, 0], expected)
    assert torch.equal(feats[:, :, 3, 0], torch.where(g < 0, torch.zeros(()), expected + 0.3))
    kept = local[(g >= 1250) & (g < 2250)]                       # positions kept from the middle window
    assert kept.min() >= 250 and kept.max() < 1500 - 250           # 5 s of context on both sides


def test_audio_that_fits_one_window_is_encoded_once_like_the_official_code():
    stub = _PositionStub()
    feats = encode_audio(stub, torch.randn(20 * 16000) * 0.1, 16000)
    assert stub.calls == 1
    g = 2 * torch.arange(feats.shape[0])[:, None] - 4 + torch.arange(10)[None]
    assert torch.equal(feats[:, :, 0, 0], torch.where(g < 0, torch.zeros(()), g + 1.0))


def test_characters_share_the_video_length_and_start_offsets_shift_time():
    stub = _PositionStub()
    loud = torch.full((16000,), 0.5)
    feats = encode_character_audio(stub, [CharacterAudio(loud, 16000, 0.0), CharacterAudio(loud, 16000, 2.0)])
    assert feats.shape == (2, 75, 10, 5, 384)  # video = end of the latest clip: 3 s at 25 fps


@pytest.mark.parametrize(
    "waveform, rate, message",
    [
        (torch.zeros(0), 16000, "empty"),
        (torch.zeros(32000), 16000, "silent"),
        (torch.full((300,), 0.5), 16000, "shorter than one video frame"),
        (torch.full((2, 1, 32000), 0.5), 16000, "batch of 2"),
        (torch.full((32000,), float("nan")), 16000, "NaN"),
        (torch.full((32000,), 0.5), 0, "sample_rate"),
    ],
)
def test_bad_audio_fails_before_any_encoding(waveform, rate, message):
    with pytest.raises(ValueError, match=message):
        encode_audio(None, waveform, rate)  # type: ignore[arg-type]  # never reaches the encoder


def test_unsupported_fps_and_late_start_are_refused():
    loud = torch.full((16000,), 0.5)
    with pytest.raises(ValueError, match="fps=30"):
        encode_audio(None, loud, 16000, fps=30)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="after the video ends"):
        encode_character_audio(None, [CharacterAudio(loud, 16000, 0.0), CharacterAudio(loud, 16000, 5.0)], num_frames=50)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no audio"):
        encode_character_audio(None, [])  # type: ignore[arg-type]
