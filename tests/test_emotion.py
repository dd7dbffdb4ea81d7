"""Emotion reference -> latent through a passed-in VAE function."""

from __future__ import annotations

import pytest
import torch

from avatar_core.conditioning.emotion import EMOTION_NEEDS_AEM, emotion_warning, encode_emotion_image


class PoolVAE:
    """Stand-in VAE (8x8 average pooling, 3 -> 16 channels by a fixed matrix); records what it was given."""

    def __init__(self) -> None:
        self.seen: torch.Tensor | None = None
        self.mix = torch.arange(48, dtype=torch.float32).reshape(16, 3) / 48

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        self.seen = pixels
        pooled = torch.nn.functional.avg_pool2d(pixels.movedim(-1, 1), 8)  # [1, 3, H/8, W/8]
        return torch.einsum("oc,bchw->bohw", self.mix, pooled)[:, :, None]  # [1, 16, 1, H/8, W/8]


def test_latent_shape_scaling_and_vae_input():
    vae = PoolVAE()
    image = torch.rand(1, 64, 96, 3)
    latent = encode_emotion_image(image, vae, scaling_factor=0.476986)
    assert latent.shape == (1, 16, 1, 8, 12)
    assert torch.equal(vae.seen, image)  # IMAGE layout in [0, 1], untouched at the right size
    assert torch.allclose(latent, vae(image) * 0.476986)


def test_resized_to_the_video_size():
    vae = PoolVAE()
    latent = encode_emotion_image(torch.full((1, 100, 60, 3), 0.5), vae, size=(64, 48))
    assert vae.seen.shape == (1, 64, 48, 3) and latent.shape == (1, 16, 1, 8, 6)
    assert torch.allclose(vae.seen, torch.full_like(vae.seen, 0.5))  # a flat image stays flat when resized


def test_bad_inputs_fail_clearly():
    with pytest.raises(ValueError, match="multiple of 16"):
        encode_emotion_image(torch.rand(1, 60, 64, 3), PoolVAE())
    with pytest.raises(ValueError, match="batch of 2"):
        encode_emotion_image(torch.rand(2, 64, 64, 3), PoolVAE())
    with pytest.raises(ValueError, match="HunyuanVideo VAE"):
        encode_emotion_image(torch.rand(1, 64, 64, 3), lambda px: torch.zeros(1, 4, 1, 8, 8))  # an SD-style 4-channel VAE


def test_missing_aem_is_reported_only_when_emotion_is_given():
    assert emotion_warning(has_aem=False, emotion_given=True) == EMOTION_NEEDS_AEM and "AEM" in EMOTION_NEEDS_AEM
    assert emotion_warning(has_aem=True, emotion_given=True) is None
    assert emotion_warning(has_aem=False, emotion_given=False) is None
