"""Audio conditioning without real weights: resampling, windowing parity, chunk joins, early errors."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soxr
import torch

from avatar_core.conditioning.audio import CharacterAudio, encode_audio, encode_character_audio, window_features
from avatar_core.conditioning.waveform import to_mono_16k
from avatar_core.errors import InputError
from avatar_core.parity.common import load_fixture

FIXTURES = Path("/work/shared/fixtures/parity")


def _soxr_like_librosa(mono: np.ndarray, rate: int) -> np.ndarray:
    """librosa 0.11 ``resample(y, orig_sr=rate, target_sr=16000)`` with its default res_type="soxr_hq"
    (core/audio.py: soxr.resample(y, orig, target, quality=res_type), then fix_length to ceil(n * ratio))."""
    out = soxr.resample(mono, rate, 16000, quality="soxr_hq")
    n = int(np.ceil(mono.shape[-1] * (float(16000) / rate)))
    return out[:n] if out.shape[-1] >= n else np.pad(out, (0, n - out.shape[-1]))


def _speechy(seconds: float, rate: int, channels: int = 1, seed: int = 0) -> torch.Tensor:
    """Band-limited noise with a syllable-rate envelope and tones up to 7.5 kHz: [channels, T] float32."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * rate), dtype=torch.float64) / rate
    tones = sum(torch.sin(2 * math.pi * f * t + k) for k, f in enumerate((180.0, 950.0, 2600.0, 7400.0)))
    env = 0.5 + 0.5 * torch.sin(2 * math.pi * 4.0 * t)
    wav = 0.1 * env * tones + 0.05 * torch.randn(channels, t.numel(), generator=g, dtype=torch.float64)
    return wav.float()


@pytest.mark.parametrize("rate", [44100, 48000, 22050, 8000])
def test_resampling_is_soxr_hq_called_as_librosa_calls_it(rate):
    stereo = _speechy(2.3, rate, channels=2)
    ours = to_mono_16k(stereo[None], rate)  # ComfyUI AUDIO [1, C, T]
    ref = torch.from_numpy(_soxr_like_librosa(stereo.numpy().mean(axis=0), rate))
    assert ours.shape == ref.shape == (math.ceil(stereo.shape[1] * 16000 / rate),)
    rel = (ours - ref).abs().max() / ref.abs().max()
    assert rel <= 1e-5, rel  # measured: bitwise equal (0.0)


def test_resampling_matches_librosa_load_path():
    """The real library, where installed (not a test requirement: it pulls numba/llvmlite/scikit-learn)."""
    librosa = pytest.importorskip("librosa")
    for rate in (44100, 48000):
        stereo = _speechy(1.7, rate, channels=2, seed=rate)
        ref = librosa.resample(librosa.to_mono(stereo.numpy()), orig_sr=rate, target_sr=16000)  # = librosa.load(sr=16000)
        ours = to_mono_16k(stereo, rate).numpy()
        assert ours.shape == ref.shape and np.abs(ours - ref).max() <= 1e-5 * np.abs(ref).max()


def test_16khz_input_passes_through_bit_for_bit():
    stereo = _speechy(1.0, 16000, channels=2)
    assert torch.equal(to_mono_16k(stereo[None], 16000), torch.from_numpy(stereo.numpy().mean(axis=0)))
    mono = stereo[:1]
    out = to_mono_16k(mono, 16000)
    assert torch.equal(out, mono[0]) and out.data_ptr() == mono.data_ptr()  # no copy either


@pytest.mark.parametrize("rate", [44100, 48000])
def test_resampled_sine_keeps_its_level_and_tones_above_8khz_are_removed(rate):
    t = torch.arange(2 * rate, dtype=torch.float64) / rate
    y = to_mono_16k(torch.sin(2 * math.pi * 7000 * t).float(), rate)  # 7 kHz: the old resampler gave gain ~0.75
    ref = torch.sin(2 * math.pi * 7000 * torch.arange(32000, dtype=torch.float64) / 16000)
    assert (y.double() - ref)[800:-800].abs().max() < 2e-3
    alias = to_mono_16k(torch.sin(2 * math.pi * 11000 * t).float(), rate)  # above the 8 kHz Nyquist
    assert alias[800:-800].pow(2).mean().sqrt() < 1e-3


def test_comfy_stereo_audio_becomes_the_channel_mean():
    left, right = torch.rand(16000) - 0.5, torch.rand(16000) - 0.5
    mono = to_mono_16k(torch.stack([left, right])[None], 16000)  # ComfyUI AUDIO waveform [1, C, T]
    assert torch.equal(mono, (left + right) / 2)


def test_integer_pcm_is_scaled_like_soundfile_reads_it():
    wav = _speechy(0.5, 16000)[0]
    pcm16 = (wav * 32767).round().to(torch.int16)
    assert torch.equal(to_mono_16k(pcm16, 16000), pcm16.float() / 32768)  # not 32767x too loud
    pcm32 = pcm16.to(torch.int32) * 65536
    assert torch.equal(to_mono_16k(pcm32, 16000), pcm16.float() / 32768)
    pcm8 = (wav * 127).round().to(torch.int8)
    assert torch.equal(to_mono_16k(pcm8.to(torch.int16).add(128).to(torch.uint8), 16000), pcm8.float() / 128)


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
    feats = encode_audio(stub, wav, 16000, official_fp16=False)  # positions > 2048: not fp16 values
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
    feats = encode_audio(stub, torch.randn(20 * 16000) * 0.1, 16000, official_fp16=False)
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
        (torch.full((32000,), float("nan")), 16000, "NaN or inf samples"),
        (torch.cat([torch.full((32000,), 0.5), torch.tensor([float("inf")])]), 16000, "NaN or inf samples"),
        (torch.full((32000,), 0.5), 0, "sample_rate"),
        (torch.full((32000,), 0.5), float("nan"), "sample_rate"),
        (torch.full((32000, 2), 0.5), 16000, r"looks like \[time, channels\].*transpose"),
        (torch.full((1, 32000, 2), 0.5), 16000, r"looks like \[batch, time, channels\].*transpose"),
        (torch.full((8, 8), 0.5), 16000, "cannot tell channels from time"),
        (torch.full((32000,), 12000.0), 16000, "integer PCM stored as float.*32768"),
        (torch.full((32000,), 5, dtype=torch.int64), 16000, "no known scale"),
        (torch.ones(32000, dtype=torch.bool), 16000, "no known scale"),
        ([0.5] * 32000, 16000, "torch.Tensor"),
    ],
)
def test_bad_audio_fails_before_any_encoding(waveform, rate, message):
    stub = _PositionStub()
    with pytest.raises((ValueError, TypeError), match=message):
        encode_audio(stub, waveform, rate)
    assert stub.calls == 0  # never reached the encoder


def test_unsupported_fps_and_late_start_are_refused():
    loud = torch.full((16000,), 0.5)
    with pytest.raises(InputError, match=r"fps: 30 is not one of \[25\.0, 12\.5\].*trained on 25 fps"):
        encode_audio(None, loud, 16000, fps=30)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="after the video ends"):  # refused before the encoder runs
        encode_character_audio(_PositionStub(), [CharacterAudio(loud, 16000, 0.0), CharacterAudio(loud, 16000, 5.0)],
                               num_frames=50)
    with pytest.raises(InputError, match="characters: has 0 items.*one audio clip per character"):
        encode_character_audio(None, [])  # type: ignore[arg-type]


def _tiny_whisper(layers: int = 2, width: int = 64) -> torch.nn.Module:
    """A random transformers WhisperEncoder (80 mel bins, 1500 positions: the real input/output layout)."""
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    torch.manual_seed(0)
    cfg = WhisperConfig(d_model=width, encoder_layers=layers, encoder_attention_heads=2, encoder_ffn_dim=2 * width,
                        num_mel_bins=80, max_source_positions=1500)
    return WhisperEncoder(cfg).eval()


@torch.no_grad()
def _official_features(encoder: torch.nn.Module, wav16k: np.ndarray, mel_fp16: bool = True,
                       out_fp16: bool = True) -> torch.Tensor:
    """The official computation, transcribed from its code (Tencent-Hunyuan/HunyuanVideo-Avatar @ fd59436;
    fact sheet §3): data_kits/audio_dataset.py get_audio_feature (the WHOLE clip in 750*640-sample chunks
    through the Whisper feature extractor, audio_len = len // 640), stored in the batch as float16
    (``audio_prompts.to(dtype=torch.float16)``); sample_inference_audio.py predict widens it to the encoder's
    float32 (``audio_feat.to(dtype=wav2vec.dtype)``) for data_kits/audio_preprocessor.py encode_audio at fps 25
    (first 3000 mel frames, hidden states stacked, 4 zero positions in front, frame f takes positions 2f .. 2f+9)
    and casts the result back to the batch dtype, float16 (``.to(dtype=weight_dtype)``). Returns float32 holding
    those float16 values; ``mel_fp16`` / ``out_fp16`` False leave out one rounding (to show each one matters)."""
    from transformers import WhisperFeatureExtractor

    fe = WhisperFeatureExtractor(feature_size=80, sampling_rate=16000)
    mel = torch.cat([fe(wav16k[i:i + 750 * 640], sampling_rate=16000, return_tensors="pt").input_features
                     for i in range(0, len(wav16k), 750 * 640)], dim=-1)
    mel = mel.to(torch.float16) if mel_fp16 else mel
    num_frames = min(len(wav16k) // 640, 400)
    states = encoder(mel.to(torch.float32)[:, :, :3000], output_hidden_states=True).hidden_states
    hidden = torch.stack(states, dim=2)
    hidden = torch.cat([torch.zeros_like(hidden[:, :4]), hidden], 1)
    feats = torch.stack([hidden[0, 2 * f:2 * f + 10] for f in range(num_frames)])  # [F, 10, L, D]
    return (feats.to(torch.float16) if out_fp16 else feats).float()


def test_clip_ending_mid_frame_gives_the_official_features_for_every_frame():
    encoder = _tiny_whisper()
    wav = _speechy(3.2, 16000)[0]  # 80 whole frames
    wav = torch.cat([wav, 0.6 * torch.sin(torch.arange(620.0))])  # 620 loud samples after the last whole frame
    assert wav.numel() % 640 == 620
    ref = _official_features(encoder, wav.numpy())
    ours = encode_audio(encoder, wav, 16000)
    assert ours.shape == ref.shape == (wav.numel() // 640, 10, 3, 64)
    assert ours.dtype == torch.float32 and torch.equal(ours, ref)  # every frame, the last ones included
    # What the old code encoded (the clip cut at F * 640 samples) differs in the last frames: the test can fail.
    cut = encode_audio(encoder, wav[: ours.shape[0] * 640], 16000)
    rel = (cut - ref).flatten(1).norm(dim=1) / ref.flatten(1).norm(dim=1)
    print(f"cutting the tail moves the last frames by {rel[-3:].tolist()}")
    assert rel[-1] > 1e-2 and rel[-1] > 5 * rel[:-4].median()  # (attention is global: the rest moves a little)


def test_both_official_fp16_roundings_are_applied_by_default_and_can_be_left_out():
    """The mel features and the output are each rounded to float16 as officially: leaving out either one gives
    other features (measured per frame on this random encoder and printed), and official_fp16=False is the
    plain float32 computation."""
    encoder = _tiny_whisper()
    wav = _speechy(2.4, 16000, seed=3)[0]
    ours = encode_audio(encoder, wav, 16000)
    assert torch.equal(ours, _official_features(encoder, wav.numpy()))
    rel = lambda a, b: ((a - b).flatten(1).norm(dim=1) / b.flatten(1).norm(dim=1))  # noqa: E731
    for mel, out in ((False, True), (True, False), (False, False)):
        other = _official_features(encoder, wav.numpy(), mel_fp16=mel, out_fp16=out)
        r = rel(other, ours)
        print(f"mel fp16 {mel}, output fp16 {out}: per-frame relative difference {r.min():.1e} .. {r.max():.1e}")
        assert r.min() > 0
    assert torch.equal(encode_audio(encoder, wav, 16000, official_fp16=False),
                       _official_features(encoder, wav.numpy(), mel_fp16=False, out_fp16=False))


def test_duration_cuts_the_frames_but_whisper_still_hears_the_whole_clip():
    encoder = _tiny_whisper()
    wav = _speechy(2.0, 16000)[0]
    full = encode_audio(encoder, wav, 16000)
    short = encode_audio(encoder, wav, 16000, num_frames=20)
    assert short.shape[0] == 20 and torch.equal(short, full[:20])  # the official 400-frame cap works the same way


def test_44k_clip_features_match_the_official_features_of_the_soxr_resampled_clip():
    encoder = _tiny_whisper()
    wav = _speechy(2.1, 44100, channels=2)
    ref = _official_features(encoder, _soxr_like_librosa(wav.numpy().mean(axis=0), 44100))
    assert torch.equal(encode_audio(encoder, wav[None], 44100), ref)


def test_features_are_a_view_of_the_hidden_states_not_a_fivefold_copy():
    stub = _PositionStub()
    feats = encode_character_audio(stub, [CharacterAudio(torch.full((16000 * 4,), 0.5), 16000, 0.0)] * 2)
    assert feats.shape == (2, 100, 10, 5, 384)
    positions = 4 + 2 * 99 + 6
    assert feats.untyped_storage().nbytes() == 2 * positions * 5 * 384 * 4  # not 2 * 100 * 10 * 5 * 384 * 4
    gathered = torch.stack([feats[:, f] for f in range(100)], 1)
    assert torch.equal(feats.contiguous(), gathered)
    rows = feats.index_select(1, torch.tensor([0, 50, 99]))  # what the sampler does per window: a small copy
    assert rows.is_contiguous() and torch.equal(rows[:, 1], feats[:, 50])


@pytest.mark.parametrize("start", [float("nan"), float("inf"), -1.0, "soon", None])
def test_bad_start_offsets_are_refused_with_the_clip_named(start):
    loud = torch.full((16000,), 0.5)
    with pytest.raises(InputError, match=r"audio_1: start_s: .*Give where this clip starts in the video, in seconds"):
        encode_character_audio(None, [CharacterAudio(loud, 16000, start, "audio_1")])  # type: ignore[arg-type]


def test_start_offsets_widget_parses_seconds_and_names_itself_on_errors():
    from conftest import load_pack

    convert = load_pack("nodes.convert")
    assert convert.parse_offsets("0, 2.5", 3) == [0.0, 2.5, 0.0]
    assert convert.parse_offsets(" 1;2 ", 2) == [1.0, 2.0]
    for text in ("nan", "inf", "0, -1", "abc", "1e999", "0,,x", "1e12"):
        with pytest.raises(ValueError, match=r"start_offsets: value \d \(.*\): .*(finite|out of range|expected a "
                                             r"number).*Give where this clip starts.*Separate the seconds by commas"):
            convert.parse_offsets(text, 3)
    with pytest.raises(ValueError, match="start_offsets has 3 values but only 2 audio inputs are connected"):
        convert.parse_offsets("0, 1, 2", 2)
