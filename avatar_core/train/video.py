"""Video files for the dataset builder (train/prepare.py): probe, the whole audio track, frames at a new rate.

PyAV (FFmpeg) reads any container FFmpeg knows. Frames are resampled to the clip rate by time (each output
frame at k / fps takes the decoded frame shown at that moment), turned upright when the file says it was
recorded rotated (phones), and scaled by FFmpeg (Lanczos) straight to the video size, so a long 4K file
never sits in memory whole. The audio keeps its own rate and channels (the pack's waveform path resamples
it for Whisper) and is aligned to the first video frame: a track that starts later is led by silence,
one that starts earlier is cut.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv")


class VideoError(Exception):
    """A file that cannot be used as a training video (the message says why, for the skip list)."""


@dataclass(frozen=True)
class VideoInfo:
    width: int             # upright (after the file's rotation)
    height: int
    fps: float             # the file's frame rate
    duration_s: float      # of the video stream
    start_s: float         # time of the first frame
    rotation: int          # degrees the frames are turned to be upright (0, 90, 180, 270)
    audio: bool            # has an audio track


def reason(e: BaseException) -> str:
    """FFmpeg's words for a failure, without the file name the skip list already gives."""
    return str(getattr(e, "strerror", None) or e)


def _open(path: Path):
    import av
    try:
        return av.open(str(path))
    except (av.FFmpegError, OSError, ValueError) as e:
        raise VideoError(f"unreadable: {reason(e)}") from e


def probe(path: str | Path) -> VideoInfo:
    """Size, rate, length and audio of a video; the first frame is decoded, so a broken stream fails here."""
    import av
    with _open(Path(path)) as c:
        if not c.streams.video:
            raise VideoError("has no video stream")
        stream = c.streams.video[0]
        try:
            first = next(c.decode(stream))
        except (StopIteration, av.FFmpegError) as e:
            raise VideoError(f"no frame could be decoded ({reason(e) if str(e) else 'empty stream'})") from e
        rotation = int(getattr(first, "rotation", 0) or 0) % 360
        w, h = (first.height, first.width) if rotation in (90, 270) else (first.width, first.height)
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 0.0
        start = float(first.time or 0.0)
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif c.duration is not None:
            duration = c.duration / 1e6
        else:
            duration = 0.0
        return VideoInfo(w, h, fps, duration, start, rotation, bool(c.streams.audio))


def read_audio(path: str | Path, start_s: float = 0.0) -> tuple[torch.Tensor, int]:
    """The first audio track as float32 [channels, samples] at its own rate, from time `start_s` (the first
    video frame): silence in front when the track starts later, its head cut when it starts earlier."""
    import av
    with _open(Path(path)) as c:
        if not c.streams.audio:
            raise VideoError("has no audio track")
        stream = c.streams.audio[0]
        resampler = av.AudioResampler(format="fltp")  # planar float, same layout and rate
        chunks, rate, first_time = [], None, None
        for frame in c.decode(stream):
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray())
                rate = out.sample_rate
                first_time = out.time if first_time is None and out.time is not None else first_time
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray())
    if not chunks or rate is None:
        raise VideoError("its audio track holds no samples")
    wav = torch.from_numpy(np.concatenate(chunks, axis=1).astype(np.float32))      # [C, S]
    lead = round(((first_time or 0.0) - start_s) * rate)
    wav = torch.nn.functional.pad(wav, (lead, 0)) if lead > 0 else wav[:, -lead:]
    return wav, int(rate)


def frames_at(path: str | Path, info: VideoInfo, fps: float, size: tuple[int, int]) -> Iterator[np.ndarray]:
    """Upright RGB uint8 frames [h, w, 3] at `fps`, scaled to `size` (h, w): frame k is the decoded frame on
    screen at time start + k / fps (each decoded frame is scaled once, only if some output frame shows it)."""
    h, w = size
    step = 1.0 / fps
    with _open(Path(path)) as c:
        stream = c.streams.video[0]
        stream.thread_type = "AUTO"
        k, shown, shown_t, image = 0, None, 0.0, None
        for frame in c.decode(stream):
            t = (shown_t + 1 / max(info.fps, 1.0)) if frame.time is None else frame.time - info.start_s
            while shown is not None and k * step < t - 1e-6:    # output frames before this one: the one on screen
                image = _rgb(shown, w, h, info.rotation) if image is None else image
                yield image
                k += 1
            shown, shown_t, image = frame, t, None
        end = shown_t + 1 / max(info.fps, 1.0)                   # the last frame stays on screen one frame
        while shown is not None and k * step < end - 1e-6:
            image = _rgb(shown, w, h, info.rotation) if image is None else image
            yield image
            k += 1


def _rgb(frame, w: int, h: int, rotation: int) -> np.ndarray:
    fw, fh = (h, w) if rotation in (90, 270) else (w, h)        # scale in the stored orientation, then turn
    img = frame.reformat(width=fw, height=fh, format="rgb24", interpolation="LANCZOS").to_ndarray()
    if rotation:
        img = np.ascontiguousarray(np.rot90(img, k=rotation // 90))
    return img


def frame_count(info: VideoInfo, fps: float) -> int:
    """Frames at `fps` in the video's length as the file states it (frames_at may give one more or fewer)."""
    return int(math.floor(info.duration_s * fps + 1e-6))
