"""A folder of videos becomes a training dataset (avatar_core/train/prepare.py) and trains end to end (#26).

The videos are written here with PyAV: a synthetic face whose mouth moves with a speech-like sound; the
encoders are the tiny random stand-ins of train/synthetic.py (the real ones are ComfyUI's, in the node)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from avatar_core.config import AvatarConfig
from avatar_core.errors import InputError
from avatar_core.train.data import ClipFolder, read_clip
from avatar_core.train.prepare import PrepareConfig, clip_name, main, prepare_dataset
from avatar_core.train.synthetic import BrightFaceDetector, speech_like, tiny_encoders, write_talking_video
from avatar_core.train.video import frames_at, probe, read_audio

CFG = AvatarConfig.tiny()
SMALL = dict(clip_frames=9, image_size=64, min_side=64, progress=False)


def _encoders():
    return tiny_encoders(CFG, faces=BrightFaceDetector())


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("videos")
    write_talking_video(folder / "wide.mp4", 1.6, 30, (96, 192), seed=1)      # 40 frames at 25 fps: 4 clips
    write_talking_video(folder / "tall.mp4", 1.2, 24, (128, 96), seed=2)      # 30 frames: 3 clips
    (folder / "tall.txt").write_text("A woman explains a recipe.\n")
    write_talking_video(folder / "noface.mp4", 0.8, 25, (96, 128), face=False)
    write_talking_video(folder / "mute.mp4", 0.8, 25, (96, 128), audio=False)
    write_talking_video(folder / "silent.mp4", 0.8, 25, (96, 128), silent=True)
    write_talking_video(folder / "short.mp4", 0.2, 25, (96, 128))
    write_talking_video(folder / "small.mp4", 0.8, 25, (48, 64))
    (folder / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")
    (folder / "notes.md").write_text("not a video: ignored")
    return folder


PROGRESS: list[tuple[int, int]] = []


@pytest.fixture(scope="module")
def dataset(videos, tmp_path_factory):
    out = tmp_path_factory.mktemp("dataset")
    PROGRESS.clear()  # a second pytest run in one process (mutmut's clean run after its coverage run) keeps it
    report = prepare_dataset(PrepareConfig(str(videos), str(out), **SMALL), _encoders(),
                             on_progress=lambda done, total: PROGRESS.append((done, total)))
    return out, report


def test_a_folder_of_videos_becomes_clips_and_bad_files_are_named(dataset):
    out, report = dataset
    names = sorted(p.name for p in report.written)
    assert names == [f"{clip_name(out / 'tall.mp4', i)}.safetensors" for i in range(3)] + \
                    [f"{clip_name(out / 'wide.mp4', i)}.safetensors" for i in range(4)]
    why = {(s.video, s.clip): s.why for s in report.skipped}
    assert why.keys() == {("broken.mp4", None), ("mute.mp4", None), ("short.mp4", None), ("small.mp4", None),
                          ("silent.mp4", None), ("noface.mp4", 0), ("noface.mp4", 1)}
    assert why["silent.mp4", None] == "its audio track is silent"
    assert why["broken.mp4", None].startswith("unreadable")
    assert "no audio track" in why["mute.mp4", None]
    assert "too short: 0.20 s" in why["short.mp4", None] and "0.36 s" in why["short.mp4", None]
    assert "too small: 64x48" in why["small.mp4", None]
    assert why["noface.mp4", 0] == "no face in its first frame"
    summary = report.summary()
    assert "7 clips written" in summary and "noface.mp4 clips 0-1: no face" in summary
    assert PROGRESS == [(k, 11) for k in range(1, 12)]                  # 4 + 3 + 2 + 2 planned clips, each once


def test_clips_hold_the_sampler_layout_in_two_aspect_ratio_buckets(dataset):
    out, _ = dataset
    folder = ClipFolder(out)
    assert sorted(len(b) for b in folder.buckets) == [3, 4]
    wide, tall = read_clip(out / "wide_mp4_c0000.safetensors"), read_clip(out / "tall_mp4_c0001.safetensors")
    assert tuple(wide.latents.shape) == (16, 3, 8, 16) and tuple(tall.latents.shape) == (16, 3, 8, 8)
    assert tuple(wide.audio.shape) == (9, 10, 5, 384) and float(wide.fps) == 25.0
    assert tall.caption == "A woman explains a recipe." and wide.caption == "A person is talking."
    fm = wide.face_mask[0, 0]                                            # the grown face box, not the frame
    assert fm[4, 8] == 1 and fm.mean() < 1 and fm[0, 0] == 0


def test_audio_rows_are_the_whole_tracks_features_cut_at_each_clip(dataset, videos):
    out, _ = dataset
    info = probe(videos / "wide.mp4")
    wave, rate = read_audio(videos / "wide.mp4", info.start_s)
    whole = _encoders().audio(wave, rate, 25.0, 36)                       # 4 clips x 9 frames
    for i in range(4):
        clip = read_clip(out / f"wide_mp4_c{i:04d}.safetensors")
        torch.testing.assert_close(clip.audio, whole[9 * i: 9 * (i + 1)])
    assert whole.abs().sum() > 0


def test_the_audio_is_read_in_sync_with_the_first_frame(tmp_path):
    write_talking_video(tmp_path / "a.mp4", 1.0, 25, (64, 64), rate=16000, seed=4)
    wave, rate = read_audio(tmp_path / "a.mp4", probe(tmp_path / "a.mp4").start_s)
    ref = speech_like(1.0, 16000, 4)
    x, n = wave[0].numpy(), 12000

    def match(lag):
        return float(np.dot(ref[1000:n], x[1000 + lag:n + lag]))
    assert rate == 16000 and max(range(-400, 401), key=match) == 0         # no lag (AAC priming handled)
    early, _ = read_audio(tmp_path / "a.mp4", 0.25)                       # a video starting 0.25 s into the track
    torch.testing.assert_close(early[0, :4000], wave[0, 4000:8000])


def test_frames_are_resampled_to_the_clip_rate_by_time(tmp_path):
    import av
    path = tmp_path / "count.mp4"
    with av.open(str(path), "w") as c:                                   # frame k of 30 fps has grey level 6k
        s = c.add_stream("libx264", rate=30)
        s.width, s.height, s.pix_fmt = 64, 64, "yuv444p"
        s.options = {"crf": "0"}
        for k in range(36):
            c.mux(s.encode(av.VideoFrame.from_ndarray(np.full((64, 64, 3), 6 * k, np.uint8), format="rgb24")))
        c.mux(s.encode())
    frames = list(frames_at(path, probe(path), 25.0, (32, 32)))
    shown = [round(float(f.mean()) / 6) for f in frames]
    assert shown == [math.floor(k * 30 / 25 + 1e-9) for k in range(30)]   # the frame on screen at k / 25 s


def test_upright_frames_follow_the_files_rotation():
    import av

    from avatar_core.train.video import _rgb
    img = np.zeros((40, 80, 3), np.uint8)
    img[:, :20] = 255                                                    # stored landscape, white left quarter
    frame = av.VideoFrame.from_ndarray(img, format="rgb24")
    up = _rgb(frame, 40, 80, 270)                                         # phone portrait: turn clockwise
    assert up.shape == (80, 40, 3)
    assert up[:18].mean() > 250 and up[22:].mean() < 5                   # the left edge became the top


def test_a_rerun_resumes_without_rewriting_and_other_settings_are_refused(videos, tmp_path):
    out = tmp_path / "set"
    first = prepare_dataset(PrepareConfig(str(videos), str(out), max_clips=2, **SMALL), _encoders())
    assert len(first.written) == 4
    stamps = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in first.written}
    removed = first.written[1]
    removed.unlink()
    enc, vae_calls = _encoders(), []
    vae = enc.vae
    enc.vae = lambda frames: vae_calls.append(1) or vae(frames)
    again = prepare_dataset(PrepareConfig(str(videos), str(out), **SMALL), enc)
    assert removed in again.written and len(again.written) == 4          # the missing one and the 3 not yet made
    assert len(vae_calls) == 2 * 4                                       # frames + reference of those 4 only
    assert {p for p in again.kept} == set(first.written) - {removed}
    assert all((p.stat().st_mtime_ns, p.read_bytes()) == stamps[p] for p in again.kept)
    enc, audio_calls = _encoders(), []
    audio = enc.audio
    enc.audio = lambda *a: audio_calls.append(1) or audio(*a)
    third = prepare_dataset(PrepareConfig(str(videos), str(out), **SMALL), enc)
    assert third.written == [] and len(third.kept) == 7
    assert len(audio_calls) == 1             # a done video is not even decoded; only noface.mp4 (no clip) is
    with pytest.raises(InputError, match="clip_frames 9 -> 13"):
        prepare_dataset(PrepareConfig(str(videos), str(out), **{**SMALL, "clip_frames": 13}), _encoders())


@pytest.mark.parametrize("kw, message", [
    (dict(clip_frames=32), "clip_frames: 32 frames is not 4k\\+1"),
    (dict(clip_frames=3), "clip_frames: 3 is out of range"),
    (dict(fps=30.0), "fps: 30.0 is not one of \\[25.0, 12.5\\]"),
    (dict(image_size=100), "image_size: 100 is not a multiple of 64"),
    (dict(max_clips=-1), "max_clips: -1 is out of range"),
    (dict(caption="  "), "caption: is empty"),
])
def test_bad_settings_are_refused_before_any_video_is_read(videos, tmp_path, kw, message):
    with pytest.raises(InputError, match=message):
        prepare_dataset(PrepareConfig(str(videos), str(tmp_path / "o"), **{**SMALL, **kw}), _encoders())
    assert not (tmp_path / "o").exists()


def test_a_folder_without_videos_is_refused(tmp_path):
    with pytest.raises(InputError, match="no video files"):
        prepare_dataset(PrepareConfig(str(tmp_path), str(tmp_path / "o"), **SMALL), _encoders())
    with pytest.raises(InputError, match="not a folder"):
        prepare_dataset(PrepareConfig(str(tmp_path / "nope"), str(tmp_path / "o"), **SMALL), _encoders())


def test_the_cli_surveys_a_folder_and_refuses_to_encode_without_encoders(videos, tmp_path, capsys):
    main([str(videos), "--clip-frames", "9", "--image-size", "64", "--min-side", "64"])
    out = capsys.readouterr().out
    assert "wide.mp4: 192x96 1.6 s -> 4 clips at 128x64" in out and "mute.mp4: skipped, has no audio" in out
    with pytest.raises(SystemExit):
        main([str(videos), "--output", str(tmp_path / "o")])
    assert "Avatar Training Dataset From Folder" in capsys.readouterr().err
    report = main([str(videos), "--output", str(tmp_path / "r"), "--random-encoders", "tiny", "--clip-frames", "9",
                   "--image-size", "64", "--min-side", "64", "--max-clips", "1"])
    assert len(report.written) == 3 and len(ClipFolder(tmp_path / "r")) == 3   # no detector: noface.mp4 too
    assert "3 clips written" in capsys.readouterr().out


def test_videos_to_a_trained_lora_end_to_end(dataset, tmp_path):
    """Prepare -> train with every memory feature at once (warmup + cosine, buckets, fp8 base, block swap,
    gradient checkpointing) -> the LoRA file loads through the LoRA reader onto a plain base."""
    from avatar_core.loading import build_random_transformer
    from avatar_core.lora import load_lora
    from avatar_core.train import TrainConfig, train
    out, _ = dataset
    result = train(TrainConfig(data=str(out), output=str(tmp_path / "run"), random_model="tiny", dtype="fp32",
                               steps=4, batch_size=2, lr=3e-3, lr_warmup=1, lr_schedule="cosine", fp8_base=True,
                               block_swap=3, gradient_checkpointing=True, lora_rank=4, lora_alpha=4.0,
                               save_every=1000, progress=False, device="cpu"))
    assert result.step == 4 and all(math.isfinite(v) for v in result.losses)
    lora = load_lora(result.lora, build_random_transformer(CFG, seed=0))
    assert lora.unmatched == () and lora.matched > 0


def test_write_exclusive_never_replaces_a_file_and_leaves_no_part_file(tmp_path):
    from avatar_core.output_files import write_exclusive
    assert write_exclusive(tmp_path / "a.bin", b"first") == tmp_path / "a.bin"
    assert write_exclusive(tmp_path / "a.bin", b"second") is None
    assert (tmp_path / "a.bin").read_bytes() == b"first" and sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]


def test_a_matroska_video_is_measured_by_its_containers_duration(tmp_path):
    """Matroska stores no per-stream duration; the container's is in AV_TIME_BASE units (microseconds)."""
    info = probe(write_talking_video(tmp_path / "talk.mkv", 1.2, 25, (64, 96)))   # 30 frames at 25 fps: 1.2 s
    assert (info.width, info.height, info.fps) == (96, 64, 25.0)
    assert 1.2 <= info.duration_s < 1.2 + 0.1, info   # + the AAC priming / last packet, never seconds off


def test_a_silent_clip_is_skipped_and_the_clips_after_it_are_still_made(tmp_path, monkeypatch):
    """A pause in the speech skips that clip only: the speaker talks again in the next ones."""
    import avatar_core.train.synthetic as synthetic
    speech = synthetic.speech_like

    def pause_first(seconds, rate, seed=0):   # digital silence for the first 0.45 s (clip 0 is 9 frames: 0.36 s)
        wave = speech(seconds, rate, seed)
        wave[: int(0.45 * rate)] = 0.0
        return wave

    monkeypatch.setattr(synthetic, "speech_like", pause_first)
    (tmp_path / "videos").mkdir()
    write_talking_video(tmp_path / "videos" / "pause.mp4", 1.2, 25, (96, 128))   # 30 frames: 3 clips of 9
    out = tmp_path / "out"
    report = prepare_dataset(PrepareConfig(str(tmp_path / "videos"), str(out), **SMALL), _encoders())
    assert [(s.video, s.clip, s.why) for s in report.skipped] == [("pause.mp4", 0, "silent (no speech in this clip)")]
    assert sorted(p.name for p in report.written) == [f"{clip_name(out / 'pause.mp4', i)}.safetensors" for i in (1, 2)]
