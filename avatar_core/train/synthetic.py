"""Synthetic training data for tests and benchmarks: clip caches of random tensors with the real layouts, talking
videos (a synthetic face and a speech-like sound) and random stand-in encoders for the dataset builder."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import torch

from .data import ClipSample, write_clip


def synthetic_clip(cfg, frames: int, h: int, w: int, text_len: int = 8, seed: int = 0,
                   emotion: bool = False) -> ClipSample:
    """Latents with structure (a smooth pattern plus a little noise), so a model can learn something."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    grid = torch.linspace(-1, 1, h)[:, None] * torch.linspace(-1, 1, w)[None, :]
    latents = grid.expand(16, frames, h, w) * r(16, 1, 1, 1) + 0.1 * r(16, frames, h, w)
    mask = torch.zeros(1, 1, h, w)
    mask[..., : h // 2 + 1, :] = 1
    n_valid = max(1, text_len * 2 // 3)
    return ClipSample(latents=latents, ref_latents=latents[:, :1].clone(), audio=r(4 * frames - 3, 10, 5, 384),
                      face_mask=mask, text_states=r(text_len, cfg.text_dim),
                      text_mask=torch.tensor([1] * n_valid + [0] * (text_len - n_valid)),
                      text_pooled=r(cfg.text_pooled_dim), motion_exp=torch.full((4,), 30),
                      motion_pose=torch.full((4,), 25), fps=torch.tensor(25.0),
                      emotion=r(16, 1, h, w) if emotion else None, caption=f"synthetic clip {seed}")


def write_synthetic_folder(folder: str | Path, cfg, clips: int = 2, frames: int = 3, h: int = 4, w: int = 6,
                           text_len: int = 8, emotion: bool = False) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(clips):
        write_clip(folder / f"clip{i:03d}.safetensors", synthetic_clip(cfg, frames, h, w, text_len, i, emotion))
    return folder


# ---------------------------------------------------------------- videos and encoders for the dataset builder
def speech_like(seconds: float, rate: int, seed: int = 0) -> np.ndarray:
    """A voiced sound with syllables: harmonics of a gliding ~120 Hz pitch, gated at ~4 syllables a second."""
    t = np.arange(int(seconds * rate)) / rate
    g = np.random.default_rng(seed)
    f0 = 120 * (1 + 0.1 * np.sin(2 * np.pi * 0.7 * t + g.uniform(0, 6)))
    phase = 2 * np.pi * np.cumsum(f0) / rate
    voice = sum(np.sin(k * phase) / k for k in range(1, 8))
    syllables = np.clip(np.sin(2 * np.pi * 4.0 * t + g.uniform(0, 6)), 0, None) ** 2
    return (0.3 * voice * syllables).astype(np.float32)


def write_talking_video(path: str | Path, seconds: float = 1.5, fps: int = 30, size: tuple[int, int] = (96, 128),
                        face: bool = True, audio: bool = True, rate: int = 22050, seed: int = 0,
                        silent: bool = False) -> Path:
    """An mp4 (H.264 + AAC) of a synthetic face (a skin-coloured disc whose mouth opens with the sound)
    drifting over a dark background, with a speech-like mono track (all zeros if `silent`): a test video."""
    import av
    h, w = size
    wave = speech_like(seconds, rate, seed) * (0.0 if silent else 1.0)
    yy, xx = np.mgrid[0:h, 0:w]
    with av.open(str(path), "w") as c:
        video = c.add_stream("libx264", rate=fps)
        video.height, video.width, video.pix_fmt = h, w, "yuv420p"
        sound = c.add_stream("aac", rate=rate, layout="mono") if audio else None
        for k in range(int(seconds * fps)):
            img = np.empty((h, w, 3), np.uint8)
            img[:] = (20, 30, 60)
            if face:
                cx, cy, r = w / 2 + 0.1 * w * np.sin(k / 9), h / 2, 0.28 * min(h, w)
                img[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = (230, 180, 150)
                level = float(np.abs(wave[int(k / fps * rate): int((k + 1) / fps * rate)]).mean() * 8)
                mouth = ((xx - cx) / (0.4 * r)) ** 2 + ((yy - cy - 0.45 * r) / (0.05 * r + level * r)) ** 2 < 1
                img[mouth] = (90, 20, 30)
            c.mux(video.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        c.mux(video.encode())
        if sound is not None:
            for start in range(0, len(wave), 1024):
                frame = av.AudioFrame.from_ndarray(wave[None, start:start + 1024], format="fltp", layout="mono")
                frame.sample_rate, frame.pts = rate, start
                c.mux(sound.encode(frame))
            c.mux(sound.encode())
    return Path(path)


class BrightFaceDetector:
    """Finds the synthetic face of write_talking_video: the box of its skin-coloured pixels (none: no face)."""

    def detect(self, image: np.ndarray) -> list:
        from ..conditioning.faces import FaceBox
        skin = (image[..., 0] > 150) & (image[..., 1] > 110) & (image[..., 2] > 90)
        if skin.sum() < 20:
            return []
        ys, xs = np.nonzero(skin)
        return [FaceBox(float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1), 0.99)]


def tiny_encoders(cfg, seed: int = 0, faces=None):
    """Random stand-ins for the VAE, text and audio encoders with the real layouts, for the tiny model:
    the latents are the frames pooled 8x8 in space and 1 + 4k in time, then mixed into 16 channels; the
    audio features follow the sound's loudness around each frame; the text states depend on the caption."""
    from ..conditioning.audio import samples_per_frame
    from ..conditioning.waveform import to_mono_16k
    from .prepare import Encoders
    g = torch.Generator().manual_seed(seed)
    mix, audio_dirs = torch.randn(16, 3, generator=g), torch.randn(5, 384, generator=g)

    def vae(frames: torch.Tensor) -> torch.Tensor:
        x = torch.nn.functional.avg_pool2d(frames.permute(0, 3, 1, 2), 8)            # [F, 3, h, w]
        groups = [x[:1]] + [x[i:i + 4].mean(0, keepdim=True) for i in range(1, x.shape[0], 4)]
        return torch.einsum("oc,tchw->othw", mix, torch.cat(groups) - 0.5)           # [16, T, h, w]

    def text(caption: str, image: torch.Tensor):
        t = torch.Generator().manual_seed(zlib.crc32(caption.encode()))
        n = min(8, len(caption.split()) + 1)
        return (torch.randn(8, cfg.text_dim, generator=t), torch.tensor([1] * n + [0] * (8 - n)),
                torch.randn(cfg.text_pooled_dim, generator=t))

    def audio(wave: torch.Tensor, rate: int, fps: float, frames: int) -> torch.Tensor:
        mono, spf = to_mono_16k(wave, rate), samples_per_frame(fps)
        mono = torch.nn.functional.pad(mono, (0, max(frames * spf - mono.numel(), 0)))
        loud = mono[: frames * spf].reshape(frames, spf).abs().mean(1)                 # [F]
        around = torch.nn.functional.pad(loud, (4, 5))
        windows = torch.stack([around[i:i + frames] for i in range(10)], 1)             # [F, 10]
        return windows[..., None, None] * audio_dirs                                     # [F, 10, 5, 384]

    return Encoders(vae=vae, text=text, audio=audio, faces=faces)
