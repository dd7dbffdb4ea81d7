"""The sampler's reference encode, kept for the next run when the image, the VAE, the size and the mode are the same.

The Avatar Sampler VAE-encodes the reference image repeated over a whole window (129 frames at the official
size) inside the node, so ComfyUI's own cache cannot skip it: a new seed, more steps or another step_cache
re-ran the encode every time. The last result is kept here, keyed by the image's content, the VAE object and
what is encoded (size, frames, mode); a hit returns a copy of the same tensor, so a rerun samples from exactly
what a fresh encode gave the first time. What is kept never depends on the seed: ComfyUI's mode keeps its
latents (the posterior mean), the official mode the blended moments its per-seed posterior sample is drawn
from (nodes/reference.py). One entry on the CPU (16 MB at 704x704 either way: float32 latents, or float16
moments of twice the channels); no ComfyUI import.
"""

from __future__ import annotations

import hashlib
import weakref
from collections.abc import Callable, Hashable

import torch


def content_key(image: torch.Tensor) -> str:
    """A digest of the image's values (and shape / dtype): two tensors with the same pixels share it."""
    data = image.detach().to("cpu").contiguous()
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{tuple(data.shape)}{data.dtype}".encode())
    h.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return h.hexdigest()


def encode_key(width: int, height: int, frames: int, mode: str) -> Hashable:
    """What the sampler encodes, for the cache: the size, the frames and the mode (not the seed: the official
    mode's seeded posterior sample is drawn after the cache, from the moments it keeps)."""
    return (width, height, frames, mode)


class ReferenceCache:
    def __init__(self) -> None:
        self._vae: weakref.ref | None = None   # the VAE the entry was made with (not kept alive by the cache)
        self._key: Hashable | None = None
        self._latents: torch.Tensor | None = None
        self.hits = 0

    def get(self, image: torch.Tensor, vae: object, what: Hashable, encode: Callable[[], torch.Tensor]) -> torch.Tensor:
        """`encode()`'s result for (image content, vae, what): from the last call when all three match."""
        key = (content_key(image), what)
        if self._latents is not None and self._key == key and self._vae is not None and self._vae() is vae:
            self.hits += 1
            return self._latents.clone()
        latents = encode()
        try:
            self._vae = weakref.ref(vae)
        except TypeError:  # an object without weak references: never served from the cache
            self._vae = None
        self._key, self._latents = key, latents.detach().to("cpu").clone()
        return latents
