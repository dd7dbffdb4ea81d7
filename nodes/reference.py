"""The sampler's reference latent from ComfyUI's VAE: its own encode ("comfyui") or the official one ("official").

ComfyUI's HunyuanVideo VAE (comfy.sd.VAE around an AutoencoderKL) returns the posterior MEAN of an untiled
encode. The official mode needs the mean AND the log-variance of each tile: those are the encoder's output
through quant_conv (``first_stage_model.encoder`` + ``quant_conv``, what its ``encode`` computes before keeping
the mean), run here tile by tile (avatar_core/conditioning/reference.py).

The encode is split at the seed: the VAE's work (ComfyUI's latents, or the official mode's blended moments)
does not depend on it and is what the sampler's cache keeps; the official posterior sample (seeded noise) is
drawn from those moments on every run, so a new seed skips the 129-frame encode.
"""

from __future__ import annotations

import comfy.latent_formats
import comfy.model_management as mm
import comfy.utils
import torch

from ..avatar_core.conditioning.reference import (
    VaeTiling,
    official_reference_moments,
    sample_posterior,
)
from ..avatar_core.errors import InputError
from .convert import image_to_frames
from .reference_cache import ReferenceCache, encode_key

LATENT = comfy.latent_formats.HunyuanVideo()


def reference_latents(image: torch.Tensor, vae, w: int, h: int, frames: int, mode: str = "comfyui",
                      seed: int = 0, cache: ReferenceCache | None = None) -> torch.Tensor:
    """The reference image at the video size (LANCZOS), repeated over the window and VAE-encoded:
    [1, 16, window, h/8, w/8] float32, scaled (see REFERENCE_MODES). With ``cache``, the seed-free encode is
    taken from it when the image, the VAE, the size and the mode are those of its last entry."""
    def encode() -> torch.Tensor:
        return reference_encoding(image, vae, w, h, frames, mode)

    encoded = cache.get(image[:1], vae, encode_key(w, h, frames, mode), encode) if cache is not None else encode()
    if mode == "official":  # the noise is drawn on the VAE's device, as on the first run (the cache keeps a CPU copy)
        ref = sample_posterior(encoded.to(vae.device), seed, LATENT.scale_factor)
    else:
        ref = encoded                                                      # [1, 16, window, h/8, w/8]
    if not torch.isfinite(ref).all():
        raise InputError("vae: encoding the reference image gave NaN/inf, so the video would be black. Load the "
                         "HunyuanVideo VAE (hunyuan_video_vae_bf16.safetensors) with VAELoader, or a different "
                         "VAE file; an fp16 VAE can overflow.")
    return ref.float()


def reference_encoding(image: torch.Tensor, vae, w: int, h: int, frames: int, mode: str) -> torch.Tensor:
    """The seed-free VAE work: ComfyUI's scaled latents ("comfyui"), or the official blended moments [1, 32,
    window, h/8, w/8] float16 on the VAE's device ("official")."""
    pixels = comfy.utils.common_upscale(image[:1, :, :, :3].movedim(-1, 1), w, h, "lanczos", "disabled").movedim(1, -1)
    if mode == "official":
        return _official_moments(pixels, vae, frames)
    return vae.encode(image_to_frames(pixels, frames)) * LATENT.scale_factor


def _official_moments(pixels: torch.Tensor, vae, frames: int) -> torch.Tensor:
    """Official tiled encode with ComfyUI's VAE weights, in the VAE's dtype on its device: the blended moments."""
    model = getattr(vae, "first_stage_model", None)
    if model is None or not hasattr(model, "encoder") or not hasattr(model, "quant_conv"):
        raise InputError("reference_encode='official' needs the HunyuanVideo VAE (an AutoencoderKL with encoder and "
                         "quant_conv); this VAE has none: load hunyuan_video_vae_bf16.safetensors with VAELoader "
                         "or set reference_encode to 'comfyui'.")
    tiling = VaeTiling()
    tile_shape = (1, 3, tiling.tile_frames + 1, tiling.tile, tiling.tile)
    mm.load_models_gpu([vae.patcher], memory_required=vae.memory_used_encode(tile_shape, vae.vae_dtype),
                       force_full_load=getattr(vae, "disable_offload", False))
    u8 = (pixels[0].float().clamp(0, 1) * 255).round()  # LoadImage / lanczos give uint8 values / 255
    video = u8[None].expand(frames, -1, -1, -1)           # [frames, h, w, 3], a view

    def moments(x: torch.Tensor) -> torch.Tensor:
        return model.quant_conv(model.encoder(x.to(device=vae.device, dtype=vae.vae_dtype)))

    with torch.no_grad():
        return official_reference_moments(video, moments, tiling)
