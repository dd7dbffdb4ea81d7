"""Emotion reference image -> the latent the Audio Emotion Module (AEM) consumes.

As the paper describes, the emotion condition is the VAE latent of the reference image: [1, 16, 1, H/8, W/8],
scaled like the reference latents (times the VAE scaling factor, 0.476986 for HunyuanVideo's VAE). The VAE
is passed in as a function so the node can use ComfyUI's VAE; nothing here needs AEM weights, but the
public checkpoint has none, so a consumer without them must say that the emotion input is ignored.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..errors import InputError
from ..specs.conditioning import EMOTION_LATENT
from ..specs.fields import Instance, Int, Items, Maybe, Number, checked
from ..specs.tensors import MAX_SIDE, Image

LATENT_CHANNELS = 16
SPATIAL_STRIDE = 8
SIZE_MULTIPLE = 16  # VAE stride 8 x the model's 2x2 patches

EMOTION_NEEDS_AEM = (
    "emotion reference ignored: emotion control needs Audio Emotion Module (AEM) weights, which the public "
    "HunyuanVideo-Avatar checkpoint does not include. Load an AEM weight file with the model, or disconnect "
    "the emotion input."
)


def emotion_warning(has_aem: bool, emotion_given: bool) -> str | None:
    """The message a consumer must show when an emotion latent is given but no AEM weights are loaded."""
    return EMOTION_NEEDS_AEM if emotion_given and not has_aem else None


def _as_image_batch(image: torch.Tensor) -> torch.Tensor:
    """A checked IMAGE [1, H, W, C] or [H, W, C] float in [0, 1] -> [1, H, W, 3] float32."""
    return (image[None] if image.ndim == 3 else image)[..., :3].float()


def _resize(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear (antialiased) resize of [1, H, W, 3] to (height, width)."""
    if tuple(image.shape[1:3]) == tuple(size):
        return image
    chw = F.interpolate(image.movedim(-1, 1), size=size, mode="bilinear", align_corners=False, antialias=True)
    return chw.movedim(1, -1).clamp(0, 1)


@checked(image=Image(batch=False, min_side=SIZE_MULTIPLE, fix="Give one emotion reference image."),
         vae_encode=Instance(Callable, what="a function", fix="Give the VAE's encode function."),
         scaling_factor=Number(0.0, 100.0, above=True, fix="HunyuanVideo's VAE factor is 0.476986 (1.0 if "
                                                             "vae_encode already scales)."),
         size=Maybe(Items(Int(SIZE_MULTIPLE, MAX_SIDE, multiple=SIZE_MULTIPLE), lo=2, hi=2,
                          fix="Give the video size (height, width); its sides are multiples of 16.")))
def encode_emotion_image(
    image: torch.Tensor,
    vae_encode: Callable[[torch.Tensor], torch.Tensor],
    scaling_factor: float = 1.0,
    size: tuple[int, int] | None = None,
) -> torch.Tensor:
    """VAE latent of an emotion reference image: [1, 16, 1, H/8, W/8] float32.

    ``image``: IMAGE layout [1, H, W, 3] in [0, 1]; resized to ``size`` (height, width), e.g. the video size, when given.
    ``vae_encode``: pixels [1, H, W, 3] in [0, 1] -> latent [1, 16, T, H/8, W/8] (or [1, 16, H/8, W/8]); the
    first latent frame is kept. ``scaling_factor``: multiplied in (pass the VAE's factor when ``vae_encode``
    returns unscaled latents, 1.0 when it already scales them).
    """
    pixels = _as_image_batch(image)
    height, width = size if size is not None else pixels.shape[1:3]
    if height % SIZE_MULTIPLE or width % SIZE_MULTIPLE:
        raise InputError(
            f"emotion image: size {height}x{width} is not a multiple of {SIZE_MULTIPLE}; use the video size "
            "(its sides are multiples of 16) as `size`."
        )
    latent = vae_encode(_resize(pixels, (int(height), int(width))))
    if latent.ndim == 4:
        latent = latent[:, :, None]
    expected = (LATENT_CHANNELS, height // SPATIAL_STRIDE, width // SPATIAL_STRIDE)
    if latent.ndim != 5 or latent.shape[0] != 1 or (latent.shape[1], *latent.shape[3:]) != expected:
        raise InputError(
            f"emotion image: the VAE returned {tuple(latent.shape)}, expected [1, {expected[0]}, T, {expected[1]}, "
            f"{expected[2]}]; connect the HunyuanVideo VAE (16 latent channels, 8x spatial compression)."
        )
    EMOTION_LATENT.check("emotion image: the VAE's latent", latent)
    return latent[:, :, :1].float() * scaling_factor  # [1, 16, 1, H/8, W/8]
