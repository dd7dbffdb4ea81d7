"""The sampler's reference-latent cache (nodes/reference_cache.py): a rerun with the same image, VAE and size
skips the 129-frame VAE encode and gets the same latents; anything else that changes encodes again. The official
mode keeps its seed-free moments, so a new seed skips the encode too and still gets the latent a fresh encode
with that seed gave."""

from __future__ import annotations

import gc

import pytest
import torch
from conftest import load_pack
from test_reference_encode import _Official, _stand_in

from avatar_core.conditioning.reference import (
    SCALING_FACTOR,
    VaeTiling,
    official_pixels,
    official_reference_moments,
    sample_posterior,
)

cache_mod = load_pack("nodes.reference_cache")


class FakeVAE:
    """Counts encodes; its latents depend on the image so a stale entry would show."""

    def __init__(self):
        self.calls = 0

    def encode(self, image):
        self.calls += 1
        return image.mean() * torch.ones(1, 16, 3, 4, 4) + self.calls  # differs on every real encode


def run(cache, image, vae, what=(64, 64, 9)):
    return cache.get(image, vae, what, lambda: vae.encode(image))


def test_same_image_vae_and_size_encode_once():
    cache, vae, image = cache_mod.ReferenceCache(), FakeVAE(), torch.rand(1, 64, 64, 3)
    first = run(cache, image, vae)
    again = run(cache, image.clone(), vae)  # another tensor, the same pixels
    assert vae.calls == 1 and cache.hits == 1
    assert torch.equal(first, again)
    again.add_(1)  # the caller owns what it gets: the cached latents do not change
    assert torch.equal(run(cache, image, vae), first)


def test_a_change_of_pixels_vae_or_size_encodes_again():
    cache, vae, image = cache_mod.ReferenceCache(), FakeVAE(), torch.rand(1, 64, 64, 3)
    run(cache, image, vae)
    changed = image.clone()
    changed[0, 0, 0, 0] += 1e-3  # one value
    run(cache, changed, vae)
    assert vae.calls == 2
    run(cache, changed, vae, what=(128, 64, 9))
    assert vae.calls == 3
    other = FakeVAE()
    run(cache, changed, other, what=(128, 64, 9))
    assert other.calls == 1 and cache.hits == 0


def test_a_dropped_vae_is_not_kept_alive_and_never_matches_a_new_one():
    cache, image = cache_mod.ReferenceCache(), torch.rand(1, 32, 32, 3)
    vae = FakeVAE()
    run(cache, image, vae)
    del vae
    gc.collect()
    assert cache._vae() is None  # the cache holds no VAE (a switched VAE file frees its memory)
    fresh = FakeVAE()
    run(cache, image, fresh)
    assert fresh.calls == 1


def _old_official_latent(frames: torch.Tensor, seed: int, tiling: VaeTiling) -> torch.Tensor:
    """The official latent as the sampler made it before the split, one encode per seed, written out: the official
    tiled encode in its own structure (test_reference_encode._Official) and DiagonalGaussianDistribution.sample()
    * scaling_factor (float16 noise from a generator seeded with the seed, exp of the float16 product in float32)."""
    moments = _Official(tiling).encode(official_pixels(frames))
    mean, logvar = moments.chunk(2, dim=1)
    std = torch.exp((0.5 * logvar.clamp(-30, 20)).float())
    noise = torch.randn(mean.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float16)
    return (mean + std * noise) * SCALING_FACTOR


class CountingEncoder:
    """The stand-in VAE encoder + quant_conv of test_reference_encode, counting its tile calls."""

    def __init__(self):
        self.calls = 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return _stand_in(x)


def _official_through_cache(cache, frames, encoder, seed, tiling):
    """What nodes/reference.py does with the sampler's cache (its ComfyUI run: tests/comfy_reference_check.py):
    the seed-free moments from the cache (a CPU copy on a hit), the seeded sample drawn from them."""
    what = cache_mod.encode_key(frames.shape[2], frames.shape[1], frames.shape[0], "official")
    moments = cache.get(frames, encoder, what, lambda: official_reference_moments(frames, encoder, tiling))
    return sample_posterior(moments, seed)


def test_a_new_seed_reuses_the_official_moments_and_gets_the_old_latent_bit_for_bit():
    frames = (torch.rand(33, 40, 48, 3, generator=torch.Generator().manual_seed(5)) * 255).round().to(torch.uint8)
    tiling = VaeTiling(tile=32, tile_frames=16)  # 3 temporal x 2 x 2 spatial tiles of the 33 frames
    cache, encoder = cache_mod.ReferenceCache(), CountingEncoder()
    for n, seed in enumerate((9, 1, 2**31 + 7)):
        got = _official_through_cache(cache, frames, encoder, seed, tiling)
        assert got.dtype == torch.float32 and torch.equal(got, _old_official_latent(frames, seed, tiling))
        if n == 0:
            per_encode = encoder.calls
            assert per_encode > 1  # the tiles were encoded
        assert encoder.calls == per_encode and cache.hits == n  # later seeds: no encoder call at all
    changed = frames.clone()
    changed[0, 0, 0, 0] += 1  # one value of one frame
    got = _official_through_cache(cache, changed, encoder, 9, tiling)
    assert encoder.calls == 2 * per_encode and torch.equal(got, _old_official_latent(changed, 9, tiling))


def test_the_key_is_the_size_frames_and_mode_never_the_seed():
    key = cache_mod.encode_key
    assert key(704, 704, 129, "official") != key(704, 704, 129, "comfyui")
    assert key(704, 704, 129, "official") != key(704, 704, 33, "official") != key(704, 512, 33, "official")
    with pytest.raises(TypeError):
        key(704, 704, 129, "official", 1)  # the seed is no part of what is encoded
