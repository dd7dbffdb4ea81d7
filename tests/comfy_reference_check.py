"""Run with ComfyUI's Python (tests/test_comfy_reference.py does): nodes/reference.py on a real comfy.sd.VAE of the
HunyuanVideo architecture with random weights. Prints one JSON line of measurements."""

from __future__ import annotations

import json
import math
import sys

comfy_path, tests_dir = sys.argv[1], sys.argv[2]
sys.path[:0] = [comfy_path, tests_dir]
sys.argv = sys.argv[:1] + ["--cpu"]
import comfy.options  # noqa: E402

comfy.options.enable_args_parsing()
import comfy.sd  # noqa: E402
import comfy.utils  # noqa: E402
import torch  # noqa: E402
from comfy.ldm.models.autoencoder import AutoencoderKL  # noqa: E402
from conftest import load_pack  # noqa: E402

ddconfig = {"double_z": True, "z_channels": 16, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
            "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0, "conv3d": True,
            "time_compress": 4}
shapes = AutoencoderKL(ddconfig=ddconfig, embed_dim=16).state_dict()
g = torch.Generator().manual_seed(0)
state = {k: (torch.randn(v.shape, generator=g) / math.sqrt(v[0].numel()) if v.dim() > 1 else torch.zeros(v.shape))
         for k, v in shapes.items()}
state = {k: (v + 1 if k.endswith("norm.weight") or ".norm" in k and k.endswith("weight") else v) for k, v in state.items()}
vae = comfy.sd.VAE(sd=state)
reference = load_pack("nodes.reference")
image = torch.randint(0, 256, (1, 64, 48, 3), generator=g).float() / 255  # LoadImage: uint8 / 255
model = vae.first_stage_model
encodes = []
model.encoder.register_forward_hook(lambda *_: encodes.append(1))
ref_c = reference.reference_latents(image, vae, 48, 64, 5, "comfyui", 0)
encodes.clear()
ref_o = reference.reference_latents(image, vae, 48, 64, 5, "official", 7)
per_encode = len(encodes)  # encoder runs of one official encode
# the sampler's path: the cache keeps the seed-free moments; seed 3 encodes, seed 7 draws from the kept moments
cache = reference.ReferenceCache()
cached = {seed: reference.reference_latents(image, vae, 48, 64, 5, "official", seed, cache=cache) for seed in (3, 7)}
new_seed_encodes = len(encodes) - 2 * per_encode  # ref_o's and seed 3's encodes, nothing for seed 7
before = len(encodes)
changed = image.clone()
changed[0, 0, 0, 0] = 1 - changed[0, 0, 0, 0]
reference.reference_latents(changed, vae, 48, 64, 5, "official", 7, cache=cache)
changed_image_encodes = len(encodes) - before
cached_c = [reference.reference_latents(image, vae, 48, 64, 5, "comfyui", seed, cache=cache) for seed in (1, 2)]
# the sampler's official latent before the split, one whole official_reference_latent per seed
core = load_pack("avatar_core.conditioning.reference")
pixels = comfy.utils.common_upscale(image[:1].movedim(-1, 1), 48, 64, "lanczos", "disabled").movedim(1, -1)
video = (pixels[0].float().clamp(0, 1) * 255).round()[None].expand(5, -1, -1, -1)
with torch.no_grad():
    old = core.official_reference_latent(video, lambda x: model.quant_conv(model.encoder(x.to(vae.device, vae.vae_dtype))),
                                         7, reference.LATENT.scale_factor, core.VaeTiling()).float()
with torch.no_grad():
    x = (image[0] * 255).round().to(torch.float16)[None].expand(5, -1, -1, -1).permute(3, 0, 1, 2)[None] / 127.5 - 1
    moments = model.quant_conv(model.encoder(x.float())).half()
mean, logvar = moments.chunk(2, dim=1)
std = torch.exp((0.5 * logvar.clamp(-30, 20)).float())
noise = torch.randn(mean.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float16).float()
sf = 0.476986
print(json.dumps({
    "shape_comfyui": list(ref_c.shape), "shape_official": list(ref_o.shape),
    "official_minus_comfyui_vs_std_noise": float(((ref_o - ref_c) / sf - std * noise).abs().max()),
    "std_noise_abs_max": float((std * noise).abs().max()),
    "official_vs_expected": float((ref_o - (mean.float() + std * noise) * sf).abs().max()),
    "encoder_calls_per_encode": per_encode, "new_seed_encoder_calls": new_seed_encodes,
    "changed_image_encoder_calls": changed_image_encodes,
    "cached_seed_is_the_old_latent": torch.equal(cached[7], old) and torch.equal(ref_o, old),
    "seeds_differ": not torch.equal(cached[3], cached[7]),
    "comfyui_cached_is_uncached": all(torch.equal(r, ref_c) for r in cached_c),
}))
