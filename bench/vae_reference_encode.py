"""The reference latent, measured against the official VAE code: ComfyUI's encode and our "official" mode.

Builds the official ``AutoencoderKLCausal3D`` (HunyuanVideo 884-16c: channels 128/256/512/512, 2 layers per
block, 16 latent channels) from a checkout of the official repository given on the command line (its code is
imported from there at run time; nothing of it is copied or committed), with random weights, hands the same
weights to ComfyUI's ``comfy.sd.VAE`` (which converts the official key layout itself), and encodes one small
reference video three ways on the CPU:

* official: ``enable_tiling(); encode(x).latent_dist`` -> the mean, and ``sample()`` after seeding the global
  generator with the seed (the multi-GPU script's ``torch.manual_seed(seed)``), times the scaling factor;
* ComfyUI mode (the sampler's ``reference_encode="comfyui"``): ``VAE.encode`` = untiled, the mean;
* our official mode (``reference_encode="official"``): avatar_core.conditioning.reference on ComfyUI's encoder.

The tiles are made smaller than the official 256 px / 64 frames (``--tile``, ``--tile-frames``) so that a small
input is tiled in space and time as a 704 px, 129-frame reference is; everything runs in ``--dtype`` (fp32, or
fp16 / bf16: CPU has no fp16 autocast, so group norms run in that dtype too; ``--comfy-dtype`` runs ComfyUI's
VAE in another dtype, e.g. the bf16 ComfyUI picks on most GPUs). Random weights give a posterior
std near 1 unless ``--logvar`` sets the log-variance bias (trained VAEs: a small std).

    PYTHONPATH=/path/to/diffusers-0.33-and-loguru /path/to/ComfyUI/venv/bin/python bench/vae_reference_encode.py \\
        --official /path/to/HunyuanVideo-Avatar --comfyui /path/to/ComfyUI
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def official_vae(root: Path, tile: int, tile_frames: int, seed: int, logvar: float | None):
    sys.path.insert(0, str(root))
    from hymm_sp.vae.autoencoder_kl_causal_3d import AutoencoderKLCausal3D  # the official class, from its checkout

    torch.manual_seed(seed)
    vae = AutoencoderKLCausal3D(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlockCausal3D",) * 4,
        up_block_types=("UpDecoderBlockCausal3D",) * 4, block_out_channels=(128, 256, 512, 512), layers_per_block=2,
        latent_channels=16, norm_num_groups=32, sample_size=tile, sample_tsize=tile_frames,
        scaling_factor=0.476986, time_compression_ratio=4, mid_block_add_attention=True, act_fn="silu").eval()
    if logvar is not None:
        with torch.no_grad():
            vae.quant_conv.bias[16:] = logvar
            vae.quant_conv.weight[16:] *= 0.1
    return vae


def rel(a: torch.Tensor, b: torch.Tensor) -> dict:
    d = (a.float() - b.float())
    return {"max_abs": float(d.abs().max()), "rel_l2": float(d.norm() / b.float().norm())}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--official", type=Path, required=True, help="checkout of Tencent-Hunyuan/HunyuanVideo-Avatar")
    ap.add_argument("--comfyui", type=Path, required=True, help="ComfyUI checkout (its comfy package)")
    ap.add_argument("--frames", type=int, default=33)
    ap.add_argument("--height", type=int, default=176)
    ap.add_argument("--width", type=int, default=208)
    ap.add_argument("--tile", type=int, default=128, help="spatial tile in pixels (official 256)")
    ap.add_argument("--tile-frames", type=int, default=16, help="temporal tile in frames (official 64)")
    ap.add_argument("--dtype", choices=list(DTYPES), default="fp32", help="the official VAE's dtype")
    ap.add_argument("--comfy-dtype", choices=list(DTYPES), default=None,
                    help="ComfyUI's VAE dtype (default: --dtype; bf16 is what ComfyUI picks on most GPUs)")
    ap.add_argument("--logvar", type=float, default=None, help="log-variance bias (default: random weights')")
    ap.add_argument("--seed", type=int, default=128)
    ap.add_argument("--out", type=Path, default=None, help="write the numbers as JSON here")
    args = ap.parse_args()
    dtype = DTYPES[args.dtype]
    comfy_dtype = DTYPES[args.comfy_dtype or args.dtype]

    sys.path.insert(0, str(args.comfyui))
    sys.path.insert(0, str(REPO))
    import comfy.cli_args

    comfy.cli_args.args.cpu = True  # the comparison runs on the CPU (ComfyUI would otherwise look for a GPU)
    import comfy.sd

    from avatar_core.conditioning.reference import VaeTiling, official_pixels, sample_posterior, tiled_moments

    t0 = time.time()
    vae = official_vae(args.official, args.tile, args.tile_frames, args.seed, args.logvar)
    comfy_vae = comfy.sd.VAE(sd={k: v.clone() for k, v in vae.state_dict().items()}, dtype=comfy_dtype)
    vae = vae.to(dtype)
    g = torch.Generator().manual_seed(args.seed)
    frame = (torch.rand(args.height, args.width, 3, generator=g) * 255).round()
    frames = frame[None].expand(args.frames, -1, -1, -1)  # the reference repeated, as officially
    x = official_pixels(frames).to(dtype)  # [1, 3, T, H, W] in [-1, 1]

    with torch.no_grad():
        vae.enable_tiling()
        dist = vae.encode(x).latent_dist
        torch.manual_seed(args.seed)  # the official sample() draws from the global generator
        official_sample = dist.sample() * 0.476986
        official_mean = dist.mean * 0.476986
        vae.disable_tiling()
        untiled_official = vae.encode(x).latent_dist.mean * 0.476986

        model = comfy_vae.first_stage_model
        comfy_mode = comfy_vae.encode(frames / 255.0).float() * 0.476986  # the sampler's ComfyUI path (0..1 IMAGE)
        enc = lambda px: model.quant_conv(model.encoder(px.to(comfy_vae.vae_dtype)))  # noqa: E731
        tiling = VaeTiling(tile=args.tile, tile_frames=args.tile_frames)
        moments = tiled_moments(enc, x, tiling, dtype=dtype)
        ours_sample = sample_posterior(moments, args.seed)
        ours_mean = moments.chunk(2, dim=1)[0].float() * 0.476986

    std = dist.std.float()
    report = {
        "setup": {**{k: str(v) for k, v in vars(args).items()}, "latent_shape": list(official_sample.shape),
                  "posterior_std_mean": float(std.mean()), "official_sample_abs_mean": float(official_sample.abs().mean()),
                  "seconds": round(time.time() - t0, 1)},
        "comfyui_mode_vs_official_sample": rel(comfy_mode, official_sample),
        "comfyui_mode_vs_official_mean": rel(comfy_mode, official_mean),
        "official_untiled_mean_vs_tiled_mean": rel(untiled_official, official_mean),
        "comfyui_untiled_mean_vs_official_untiled_mean": rel(comfy_mode, untiled_official),
        "our_official_mode_vs_official_sample": rel(ours_sample, official_sample),
        "our_official_mode_mean_vs_official_mean": rel(ours_mean, official_mean),
    }
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
