"""The reference latent as the official code makes it: tiled VAE encode, then a posterior SAMPLE.

Official (Tencent-Hunyuan/HunyuanVideo-Avatar @ fd59436, sample_inference_audio.py predict + hymm_sp/vae), restated:
* pixels: the video-size reference (uint8 values held in float16) repeated to 129 frames, ``x / 127.5 - 1`` in
  float16;
* ``vae.enable_tiling()``: the 129 frames are encoded in temporal tiles of ``sample_tsize + 1`` = 65 frames
  every 48 frames (overlap 0.25), each tile wider than ``sample_size`` = 256 px encoded in spatial tiles of 256 px
  every 192 px; every tile gives moments (encoder + quant_conv: mean and log-variance, float16 under the fp16
  autocast). Tiles are blended in raster order, each over its already blended neighbour above / to the left (or
  in time, before): its first ``extent`` rows take ``prev_tail * (1 - k / extent) + own * (k / extent)``, extent =
  latent tile x 0.25 (8 latent pixels, 4 latent frames); then every spatial tile keeps 24 x 24 latent pixels,
  the first temporal tile 13 latent frames and the others 12 (after dropping their first, causal, frame);
* ``latent_dist.sample()``: logvar clamped to [-30, 20], ``std = exp(0.5 * logvar)`` (the product in float16, the
  exponential in float32: autocast runs exp in float32), noise ``randn`` in float16, ``mean + std * noise`` (float32
  by type promotion), times the scaling factor 0.476986. The noise comes from the global CUDA generator: seeded
  with ``--seed`` by the multi-GPU script (sample_batch.py, ``torch.cuda.manual_seed_all``), left at PyTorch's
  default seed by the single-GPU script. Here a generator seeded with the run's seed draws it (the multi-GPU
  script's draw on a CUDA device, when nothing used the CUDA generator before).

ComfyUI's VAE encodes untiled and keeps the mean (``mode()``) in its own dtype: ``reference_mode="comfyui"``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..errors import InputError

SCALING_FACTOR = 0.476986  # HunyuanVideo VAE config.json
REFERENCE_MODES = {
    "comfyui": "ComfyUI's VAE encode: untiled, the posterior mean, in the VAE's dtype",
    "official": "the official encode: tiled as officially, a posterior sample (float16 noise seeded with the seed)",
}
Moments = Callable[[torch.Tensor], torch.Tensor]  # pixels [B, 3, T, H, W] in [-1, 1] -> [B, 2C, t, h, w]


@dataclass(frozen=True)
class VaeTiling:
    """The official encoder tiling (HunyuanVideo VAE config.json: sample_size 256, sample_tsize 64; the VAE's
    tile_overlap_factor 0.25; 8x spatial, 4x temporal compression)."""

    tile: int = 256         # pixels
    tile_frames: int = 64   # frames (a temporal tile reads one more: the causal first frame)
    overlap: float = 0.25
    spatial_stride: int = 8
    temporal_stride: int = 4

    @property
    def latent_tile(self) -> int:
        return self.tile // self.spatial_stride

    @property
    def latent_tile_frames(self) -> int:
        return self.tile_frames // self.temporal_stride


def _blend(prev: torch.Tensor, cur: torch.Tensor, extent: int, dim: int) -> None:
    """In place: the first ``k`` slices of ``cur`` along ``dim`` fade in from the last ``k`` of ``prev``."""
    k = min(prev.shape[dim], cur.shape[dim], extent)
    if k == 0:
        return
    shape = [1] * cur.dim()
    shape[dim] = k
    w = (torch.arange(k, device=cur.device, dtype=cur.dtype) / k).view(shape)
    head = cur.narrow(dim, 0, k)
    head.copy_(prev.narrow(dim, prev.shape[dim] - k, k) * (1 - w) + head * w)


def _spatial(moments: Moments, x: torch.Tensor, t: VaeTiling, dtype: torch.dtype) -> torch.Tensor:
    """Moments of [B, 3, T, H, W] from overlapping spatial tiles (module docstring), in ``dtype``."""
    step, extent = int(t.tile * (1 - t.overlap)), int(t.latent_tile * t.overlap)
    keep = t.latent_tile - extent
    rows = [[moments(x[..., i:i + t.tile, j:j + t.tile]).to(dtype) for j in range(0, x.shape[-1], step)]
            for i in range(0, x.shape[-2], step)]
    for i, row in enumerate(rows):
        for j, tile in enumerate(row):
            if i:
                _blend(rows[i - 1][j], tile, extent, -2)
            if j:
                _blend(row[j - 1], tile, extent, -1)
    return torch.cat([torch.cat([tile[..., :keep, :keep] for tile in row], -1) for row in rows], -2)


def _any_size(moments: Moments, x: torch.Tensor, t: VaeTiling, dtype: torch.dtype) -> torch.Tensor:
    if x.shape[-1] > t.tile or x.shape[-2] > t.tile:
        return _spatial(moments, x, t, dtype)
    return moments(x).to(dtype)


def tiled_moments(moments: Moments, x: torch.Tensor, tiling: VaeTiling = VaeTiling(),
                  dtype: torch.dtype = torch.float16) -> torch.Tensor:
    """The official tiled encode of pixels [B, 3, T, H, W] -> moments [B, 2C, t, h, w] (module docstring). Tiles
    are blended in ``dtype``: float16 as the official fp16 VAE; float32 to compare with an fp32 run."""
    if x.shape[2] <= tiling.tile_frames:
        return _any_size(moments, x, tiling, dtype)
    step, extent = int(tiling.tile_frames * (1 - tiling.overlap)), int(tiling.latent_tile_frames * tiling.overlap)
    keep = tiling.latent_tile_frames - extent
    tiles = []
    for k, start in enumerate(range(0, x.shape[2], step)):
        m = _any_size(moments, x[:, :, start:start + tiling.tile_frames + 1], tiling, dtype)
        tiles.append(m if k == 0 else m[:, :, 1:])
    for k in range(1, len(tiles)):
        _blend(tiles[k - 1], tiles[k], extent, 2)
    return torch.cat([tiles[0][:, :, :keep + 1]] + [m[:, :, :keep] for m in tiles[1:]], 2)


def sample_posterior(moments: torch.Tensor, seed: int, scaling_factor: float = SCALING_FACTOR) -> torch.Tensor:
    """The official ``latent_dist.sample() * scaling_factor`` of moments [B, 2C, ...] (float16 as officially;
    module docstring): float32 [B, C, ...]. The noise is drawn in the moments' dtype by a generator on their
    device seeded with ``seed``."""
    mean, logvar = moments.chunk(2, dim=1)
    std = torch.exp((0.5 * logvar.clamp(-30.0, 20.0)).float())
    gen = torch.Generator(moments.device).manual_seed(seed)
    noise = torch.randn(mean.shape, generator=gen, device=moments.device, dtype=moments.dtype)
    return (mean.float() + std * noise.float()) * scaling_factor


def official_pixels(frames: torch.Tensor) -> torch.Tensor:
    """Video [T, H, W, 3] of uint8 values (uint8, or float holding 0..255) -> [1, 3, T, H, W] float16 in [-1, 1],
    computed in float16 as officially (``x / 127.5 - 1``)."""
    if frames.dim() != 4 or frames.shape[-1] != 3:
        raise InputError(f"reference frames must be [T, H, W, 3], got {tuple(frames.shape)}")
    x = frames.to(torch.float16).permute(3, 0, 1, 2)[None]  # [1, 3, T, H, W]
    return x / 127.5 - 1.0


def official_reference_moments(frames: torch.Tensor, moments: Moments, tiling: VaeTiling = VaeTiling()) -> torch.Tensor:
    """The seed-free, expensive half of the official reference latent: the blended moments (mean and
    log-variance, float16) [1, 2C, t, h, w] of video frames [T, H, W, 3] (uint8 values). A caller may keep them
    and draw ``sample_posterior`` for every seed: the same latent as ``official_reference_latent``, bit for bit,
    as long as they come back to the device they were made on (the noise is drawn there).

    ``moments`` runs the VAE encoder + quant_conv on pixels [1, 3, T', H', W'] (float16 in [-1, 1]; cast them
    to the VAE's dtype and device) and returns [1, 2C, t', h', w'] (mean and log-variance).
    """
    return tiled_moments(moments, official_pixels(frames), tiling)


def official_reference_latent(frames: torch.Tensor, moments: Moments, seed: int,
                              scaling_factor: float = SCALING_FACTOR, tiling: VaeTiling = VaeTiling()) -> torch.Tensor:
    """The official reference latent of video frames [T, H, W, 3] (uint8 values): float32 [1, C, t, h, w]
    (``moments`` as in ``official_reference_moments``)."""
    return sample_posterior(official_reference_moments(frames, moments, tiling), seed, scaling_factor)
