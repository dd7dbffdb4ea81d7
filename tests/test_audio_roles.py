"""Roles on a shared timeline: a listener's features are Whisper's encoding of digital silence (the official path
written out in test_audio._official_features), a speaker's track is its clip on digital silence, and the
characters after the last track are listeners. Small random Whisper encoders: the real layout, fast."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_audio import _official_features, _PositionStub, _speechy, _tiny_whisper

from avatar_core.conditioning.audio import (
    CharacterAudio,
    encode_character_audio,
    frame_windows,
    hidden_of_windows,
    listener_features,
    with_listeners,
)
from avatar_core.errors import InputError

SPF = 640  # 16 kHz samples per video frame at 25 fps


@pytest.fixture(scope="module")
def encoder() -> torch.nn.Module:
    return _tiny_whisper()


def test_a_listener_gets_whisper_of_digital_silence_through_the_official_path(encoder):
    speech = _speechy(3.0, 16000)[0]
    feats = encode_character_audio(encoder, [CharacterAudio(speech, 16000, 0.0), CharacterAudio.listener()])
    silence = _official_features(encoder, np.zeros(speech.numel(), np.float32))  # a silent WAV of the same length
    assert feats.shape[0] == 2 and feats[1].shape == silence.shape == (75, 10, 3, 64)
    assert torch.equal(feats[1], silence)
    assert feats[1].abs().amax() > 0.1  # not zero features (the official CFG's "no audio" input)
    assert torch.equal(listener_features(encoder, 25.0, 75), silence)


def test_a_speaker_is_its_clip_on_digital_silence_through_the_official_path(encoder):
    clip = _speechy(1.5, 16000, seed=3)[0]
    feats = encode_character_audio(encoder, [CharacterAudio(clip, 16000, 2.0)], num_frames=200)  # 8 s video
    track = np.zeros(200 * SPF, np.float32)
    track[2 * 16000:2 * 16000 + clip.numel()] = clip.numpy()  # what a WAV of this speaker alone holds
    assert torch.equal(feats[0], _official_features(encoder, track))


def test_a_speaker_outside_its_turn_gets_the_silence_features_where_its_speech_is_not_in_whisper_s_window(encoder):
    """70 s video, speech in the first 2 s. Whisper windows start every 1000 positions (20 s); positions from 1250
    on are taken from windows without speech (whisper.chunk_plan), so frame f >= 627 (its first position
    2f - 4 >= 1250) must equal the listener's features exactly. Earlier silent frames share a window with the
    speech and carry it (the log-mel floor and attention span the window): as officially, for a pause."""
    clip = _speechy(2.0, 16000, seed=5)[0]
    feats = encode_character_audio(encoder, [CharacterAudio(clip, 16000, 0.0), CharacterAudio.listener()],
                                   num_frames=1750)
    speaker, listener = feats[0], feats[1]
    assert torch.equal(speaker[627:], listener[627:])
    assert not torch.equal(speaker[626], listener[626])
    rel = (speaker[100:600] - listener[100:600]).flatten(1).norm(dim=1) / listener[100:600].flatten(1).norm(dim=1)
    assert rel.min() > 0  # silent samples in the speech's window: Whisper of silence IN CONTEXT


def test_a_long_listener_is_one_silent_window_laid_out_like_every_window():
    """The position stub gives position p of a window call p + 1 (k * 10000 more for the k-th call): one call,
    and every frame reads the WINDOW-LOCAL position its chunk keeps, 0 before the clip as officially."""
    stub = _PositionStub()
    feats = encode_character_audio(stub, [CharacterAudio.listener()], num_frames=65 * 25)
    assert stub.calls == 1
    f = torch.arange(feats.shape[1])[:, None]
    g = 2 * f - 4 + torch.arange(10)[None]  # global 50 Hz position of frame f, slot j
    k = (g >= 1250).long() + (g >= 2250).long()  # windows at 0, 1000, 2000 keep [0,1250), [1250,2250), [2250,..)
    expected = torch.where(g < 0, torch.zeros(()), g - 1000 * k + 1.0)
    assert torch.equal(feats[0, :, :, 0, 0], expected)


def test_a_long_listener_equals_the_windowed_encoding_of_zero_samples(encoder):
    from avatar_core.conditioning.audio import positions_needed
    from avatar_core.conditioning.whisper import whisper_hidden_states

    frames = 65 * 25
    positions = positions_needed(frames, 25.0)
    hidden = torch.cat([torch.zeros(4, 3, 64), whisper_hidden_states(encoder, torch.zeros(frames * SPF), positions)])
    assert torch.equal(listener_features(encoder, 25.0, frames), frame_windows(hidden, 25.0, frames))


def test_only_listeners_need_a_length():
    with pytest.raises(InputError, match="every character is a listener.*num_frames"):
        encode_character_audio(_PositionStub(), [CharacterAudio.listener(), CharacterAudio.listener()])


@pytest.mark.parametrize("fps", [25.0, 12.5])
def test_hidden_states_come_back_from_their_windows(fps):
    hidden = torch.randn(3, 4 + int(50 / fps) * 29 + 6, 5, 8)
    windows = frame_windows(hidden, fps, 30)
    assert torch.equal(hidden_of_windows(windows, fps), hidden)
    assert torch.equal(hidden_of_windows(windows.contiguous(), fps), hidden)


def test_characters_after_the_last_track_are_listeners_without_copying_windows():
    tracks = frame_windows(torch.randn(2, 4 + 2 * 99 + 6, 5, 8), 25.0, 100)
    quiet = frame_windows(torch.randn(4 + 2 * 99 + 6, 5, 8), 25.0, 100)
    out = with_listeners(tracks, quiet, 4, 25.0)
    assert torch.equal(out, torch.cat([tracks, quiet[None].expand(2, -1, -1, -1, -1)]))
    assert out.untyped_storage().nbytes() == 4 * (4 + 2 * 99 + 6) * 5 * 8 * 4  # hidden states, not 5x windows
    assert with_listeners(tracks, quiet, 2, 25.0) is tracks
    with pytest.raises(InputError, match="2 audio tracks but only 1 characters"):
        with_listeners(tracks, quiet, 1, 25.0)
    with pytest.raises(InputError, match="does not match"):
        with_listeners(tracks, quiet[:50], 3, 25.0)


def test_unconnected_audio_inputs_are_listeners_and_offsets_follow_the_character():
    from conftest import load_pack

    convert = load_pack("nodes.convert")
    a = {"waveform": torch.full((1, 1, 16000), 0.5), "sample_rate": 16000}
    tracks = convert.character_tracks({"audio_0": None, "audio_1": a, "audio_3": a, "audio_4": None}, "0, 1.5, 9, 2")
    assert [t.role for t in tracks] == ["listener", "speaker", "listener", "speaker"]
    assert [t.start_s for t in tracks if t.role == "speaker"] == [1.5, 2.0]
    assert tracks[1].name == "audio_1 (character 2)" and "audio_2 not connected" in tracks[2].name
    assert [t.role for t in convert.character_tracks({}, "0")] == ["listener"]
    # a template's "0, 0, 0, 0" with its last audio disconnected: the trailing listener's offset is ignored
    assert [t.start_s for t in convert.character_tracks({"audio_0": a, "audio_1": a}, "0, 0.5, 0, 0", 8)] == [0.0, 0.5]
    with pytest.raises(ValueError, match="start_offsets has 9 values"):
        convert.character_tracks({"audio_0": a}, ", ".join(["0"] * 9), 8)


def test_the_sampler_gives_each_mask_without_a_track_the_listener_features():
    from conftest import load_pack

    convert = load_pack("nodes.convert")
    tracks = frame_windows(torch.randn(2, 4 + 2 * 19 + 6, 5, 8), 25.0, 20)
    quiet = frame_windows(torch.randn(4 + 2 * 19 + 6, 5, 8), 25.0, 20)
    feats = convert.AudioFeatures(tracks, 25.0, quiet)
    assert torch.equal(feats.for_characters(3), torch.cat([tracks, quiet[None]]))
    with pytest.raises(ValueError, match="only 1 character masks: set characters to 2"):  # the pack's InputError
        feats.for_characters(1)
    with pytest.raises(ValueError, match="give one mask per audio"):
        convert.AudioFeatures(tracks, 25.0).for_characters(3)
