"""Periodic samples during training: the first clip's conditioning through the real sampler.

Saved as latents (`samples/step-000500.safetensors`, model scale, decode with the HunyuanVideo VAE after
dividing by 0.476986), or as an .mp4 when a decoder (latents -> frames [F, H, W, 3] in 0..1) is given.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from ..sampling.deepcache import DeepCacheConfig
from ..sampling.sampler import AvatarConditioning, SamplerConfig, TextConditioning, sample_avatar
from ..sampling.windows import WindowConfig
from .data import ClipSample
from .loss import model_inputs


def sample_conditioning(clip: ClipSample, device: torch.device, use_emotion: bool) -> AvatarConditioning:
    kw = model_inputs(clip, device, use_emotion)
    text = TextConditioning(kw["text_states"], kw["text_mask"], kw["text_pooled"])
    return AvatarConditioning(ref_latents=kw["ref_latents"], text=text, negative_text=text, audio=kw["audio"],
                              face_mask=kw["face_mask"], motion_exp=kw["motion_exp"], motion_pose=kw["motion_pose"],
                              fps=kw["fps"], emotion=kw["emotion"])


@torch.no_grad()
def write_sample(model, clip: ClipSample, folder: Path, step: int, cfg, decoder=None, use_emotion: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    device = torch.device(cfg.device)
    config = SamplerConfig(steps=cfg.sample_steps, seed=cfg.seed, windows=WindowConfig(window=clip.frames, offset=0),
                           deep_cache=DeepCacheConfig(enabled=False))
    latents = sample_avatar(model, sample_conditioning(clip, device, use_emotion), config).latents.float().cpu()
    if decoder is None:
        path = folder / f"step-{step:06d}.safetensors"
        save_file({"latents": latents.contiguous()}, str(path), metadata={"caption": clip.caption})
        return path
    frames = decoder(latents)                                              # [F, H, W, 3] in 0..1
    path = folder / f"step-{step:06d}.mp4"
    write_mp4(path, frames, float(clip.fps))
    return path


def write_mp4(path: Path, frames: torch.Tensor, fps: float) -> None:
    from fractions import Fraction

    import av
    pixels = (frames.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
        stream.height, stream.width = pixels.shape[1] // 2 * 2, pixels.shape[2] // 2 * 2
        stream.pix_fmt = "yuv420p"
        for img in pixels:
            frame = av.VideoFrame.from_ndarray(img[: stream.height, : stream.width], format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
