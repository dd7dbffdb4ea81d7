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
ref_c = reference.reference_latents(image, vae, 48, 64, 5, "comfyui", 0)
ref_o = reference.reference_latents(image, vae, 48, 64, 5, "official", 7)
model = vae.first_stage_model
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
}))
