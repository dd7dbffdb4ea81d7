"""The sampler's reference-latent cache (nodes/reference_cache.py): a rerun with the same image, VAE and size
skips the 129-frame VAE encode and gets the same latents; anything else that changes encodes again."""

from __future__ import annotations

import gc

import torch
from conftest import load_pack

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


def test_the_official_encode_is_cached_per_seed_comfyuis_for_every_seed():
    """The official mode draws a posterior sample with the seed: another seed must encode again."""
    key = cache_mod.encode_key
    assert key(704, 704, 129, "comfyui", 1) == key(704, 704, 129, "comfyui", 2)
    assert key(704, 704, 129, "official", 1) != key(704, 704, 129, "official", 2)
    assert key(704, 704, 129, "official", 1) != key(704, 704, 129, "comfyui", 1)
    cache, vae, image = cache_mod.ReferenceCache(), FakeVAE(), torch.rand(1, 64, 64, 3)
    for seed in (1, 2):
        cache.get(image, vae, key(64, 64, 9, "official", seed), lambda: vae.encode(image))
    assert vae.calls == 2
