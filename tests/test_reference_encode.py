"""The official reference encode (avatar_core/conditioning/reference.py): tiling, blending, posterior sample.

The expected values come from a second implementation written here in the official code's own structure
(Tencent-Hunyuan/HunyuanVideo-Avatar @ fd59436, hymm_sp/vae/autoencoder_kl_causal_3d.py: encode ->
temporal_tiled_encode -> spatial_tiled_encode, blend_v / blend_h / blend_t writing into the current tile;
vae.py DiagonalGaussianDistribution.sample; sample_inference_audio.py predict), with a stand-in encoder whose
output depends on the tile it sees (so every seam and blend weight shows). The measured comparison against the
official VAE code itself, at the real VAE shape: bench/vae_reference_encode.py (README "Differences").
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from avatar_core.conditioning.reference import (
    SCALING_FACTOR,
    VaeTiling,
    official_pixels,
    official_reference_latent,
    sample_posterior,
    tiled_moments,
)
from avatar_core.errors import InputError


def _stand_in(x: torch.Tensor) -> torch.Tensor:
    """Pixels [B, 3, T, H, W] -> moments [B, 4, 1 + (T-1)//4, H/8, W/8]: causal 4x time and 8x space pooling,
    plus a term that depends on the tile's own size and content (tiles disagree where they overlap)."""
    x = x.float()
    first, rest = x[:, :, :1], x[:, :, 1:]
    t = F.avg_pool3d(first, (1, 8, 8))
    if rest.shape[2]:
        t = torch.cat([t, F.avg_pool3d(rest, (4, 8, 8), ceil_mode=True)], 2)
    local = t - t.mean(dim=(2, 3, 4), keepdim=True) * 0.5 + x.shape[-1] / 997 + x.shape[2] / 311
    return torch.cat([local[:, :2], 0.1 * local[:, 1:3] - 1.0], 1)  # mean (2 ch), logvar (2 ch)


class _Official:
    """The official tiled encode in its own structure (lists of tiles, blends written into the current tile)."""

    def __init__(self, t: VaeTiling) -> None:
        self.sample_size, self.tsize, self.factor = t.tile, t.tile_frames, t.overlap
        self.latent_size, self.latent_tsize = t.tile // 8, t.tile_frames // 4

    @staticmethod
    def _blend(a, b, extent, dim):  # blend_v (dim -2), blend_h (-1), blend_t (-3)
        extent = min(a.shape[dim], b.shape[dim], extent)
        if extent == 0:
            return b
        a_region = a.narrow(dim, a.shape[dim] - extent, extent)
        b_region = b.narrow(dim, 0, extent)
        weights = torch.arange(extent, dtype=a.dtype) / extent
        weights = weights.view([extent if d == dim % 5 else 1 for d in range(5)])
        b.narrow(dim, 0, extent)[...] = a_region * (1 - weights) + b_region * weights
        return b

    def spatial(self, x):
        overlap = int(self.sample_size * (1 - self.factor))
        blend = int(self.latent_size * self.factor)
        limit = self.latent_size - blend
        rows = []
        for i in range(0, x.shape[-2], overlap):
            rows.append([_stand_in(x[:, :, :, i:i + self.sample_size, j:j + self.sample_size]).half()
                         for j in range(0, x.shape[-1], overlap)])
        result_rows = []
        for i, row in enumerate(rows):
            result_row = []
            for j, tile in enumerate(row):
                if i > 0:
                    tile = self._blend(rows[i - 1][j], tile, blend, -2)
                if j > 0:
                    tile = self._blend(row[j - 1], tile, blend, -1)
                result_row.append(tile[:, :, :, :limit, :limit])
            result_rows.append(torch.cat(result_row, dim=-1))
        return torch.cat(result_rows, dim=-2)

    def encode(self, x):
        if x.shape[2] > self.tsize:
            overlap = int(self.tsize * (1 - self.factor))
            blend = int(self.latent_tsize * self.factor)
            limit = self.latent_tsize - blend
            row = []
            for i in range(0, x.shape[2], overlap):
                tile = x[:, :, i:i + self.tsize + 1]
                big = tile.shape[-1] > self.sample_size or tile.shape[-2] > self.sample_size
                tile = self.spatial(tile) if big else _stand_in(tile).half()
                row.append(tile[:, :, 1:] if i > 0 else tile)
            out = []
            for i, tile in enumerate(row):
                if i > 0:
                    tile = self._blend(row[i - 1], tile, blend, -3)
                    out.append(tile[:, :, :limit])
                else:
                    out.append(tile[:, :, :limit + 1])
            return torch.cat(out, dim=2)
        if x.shape[-1] > self.sample_size or x.shape[-2] > self.sample_size:
            return self.spatial(x)
        return _stand_in(x).half()


def _pixels(t: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(1, 3, t, h, w, generator=g) * 2 - 1).half()


@pytest.mark.parametrize("t, h, w, tiling", [
    (129, 112, 160, VaeTiling(tile=64, tile_frames=64)),  # the official 129 frames: 3 temporal tiles, 3 x 4 spatial
    (33, 136, 72, VaeTiling(tile=64, tile_frames=24)),    # last tiles partial in every axis
    (17, 64, 64, VaeTiling(tile=32, tile_frames=16)),    # a last temporal tile of one frame
    (9, 32, 32, VaeTiling(tile=32, tile_frames=16)),     # no tiling at all
])
def test_tiled_moments_are_the_official_tiled_encode_bitwise(t, h, w, tiling):
    x = _pixels(t, h, w)
    ours = tiled_moments(_stand_in, x, tiling)
    ref = _Official(tiling).encode(x)
    assert ours.dtype == torch.float16 and ours.shape == ref.shape and ours.shape[-2:] == (h // 8, w // 8)
    assert torch.equal(ours, ref)
    if tiling.tile_frames == 64:  # the official tiling keeps the causal frame count: 129 frames -> 33 latents
        assert ours.shape[2] == 1 + (t - 1) // 4
    if ours.shape[2] > 1 and max(h, w) > tiling.tile:  # the tiles really disagreed: tiling changed the result
        assert not torch.equal(ours, _stand_in(x).half())


def test_default_tiling_is_the_official_vae_config():
    t = VaeTiling()
    assert (t.tile, t.tile_frames, t.overlap, t.latent_tile, t.latent_tile_frames) == (256, 64, 0.25, 32, 16)


def test_posterior_sample_is_the_official_arithmetic():
    g = torch.Generator().manual_seed(3)
    moments = torch.randn(1, 4, 5, 6, 7, generator=g).half()
    moments[:, 2:, 0, 0, 0] = 60.0  # clamped to 20
    mean, logvar = moments.chunk(2, dim=1)
    std = torch.exp((0.5 * logvar.clamp(-30, 20)).float())  # exp in float32 (autocast), its input in float16
    noise = torch.randn(mean.shape, generator=torch.Generator().manual_seed(11), dtype=torch.float16)
    expected = (mean + std * noise) * SCALING_FACTOR  # float16 + float32 -> float32
    ours = sample_posterior(moments, 11)
    assert ours.dtype == torch.float32 and torch.equal(ours, expected)
    assert not torch.equal(sample_posterior(moments, 12), expected)
    assert torch.isfinite(ours).all() and ours[0, 0, 0, 0, 0] != mean[0, 0, 0, 0, 0].float() * SCALING_FACTOR


def test_official_pixels_are_computed_in_float16():
    frames = torch.arange(256, dtype=torch.uint8).view(1, 16, 16, 1).expand(3, 16, 16, 3)
    x = official_pixels(frames)
    assert x.dtype == torch.float16 and x.shape == (1, 3, 3, 16, 16)
    half = torch.arange(256, dtype=torch.float16).view(16, 16)
    assert torch.equal(x[0, 0, 0], half / 127.5 - 1)  # not (v / 255 * 2 - 1) in float32
    assert torch.equal(official_pixels(frames.float()), x)
    with pytest.raises(InputError, match=r"\[T, H, W, 3\]"):
        official_pixels(torch.zeros(16, 16, 3))


def test_official_reference_latent_chains_pixels_tiles_and_sample():
    frames = (torch.rand(33, 40, 48, 3, generator=torch.Generator().manual_seed(5)) * 255).round().to(torch.uint8)
    tiling = VaeTiling(tile=32, tile_frames=16)
    seen = []

    def moments(x):
        seen.append(x.dtype)
        return _stand_in(x)

    got = official_reference_latent(frames, moments, seed=9, tiling=tiling)
    expected = sample_posterior(_Official(tiling).encode(official_pixels(frames)), 9)
    assert torch.equal(got, expected) and got.shape == (1, 2, 9, 5, 6)
    assert set(seen) == {torch.float16}
