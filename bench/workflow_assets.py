"""RANDOM weights of the real shapes for every model file the example workflows load, in ComfyUI's layout.

    python bench/workflow_assets.py --comfyui /path/to/ComfyUI --base BASE [--scale full|tiny] [--device cuda]

Writes under BASE/models (skipping files already there), one JSON line per file (name, GiB, seconds):

  diffusion_models/hunyuan_video_avatar_bf16.safetensors   the 13B Avatar transformer, bf16 (26 GB; the fp8 and
                                                           fast presets quantise this file at load, as for users)
  text_encoders/llava_llama3_fp16.safetensors               LLaVA-Llama-3-8B's language model, fp16 (16 GB)
  text_encoders/clip_l.safetensors                          CLIP-L text model, fp16
  clip_vision/llava_llama3_vision.safetensors               CLIP ViT-L/14-336 + the LLaVA projector, fp16
  vae/hunyuan_video_vae_bf16.safetensors                    the HunyuanVideo VAE, bf16
  audio_encoders/whisper-tiny/model.safetensors + config.json   whisper-tiny
  face_detection/detface.pt                                 a STAND-IN detector of YOLOv5s cost (bench/standin_detector.py)

Key names and shapes come from ComfyUI's own classes (built on the meta device: the modules its loaders
build when they detect these files), so ComfyUI recognises each file as it recognises the real one; the
transformer is the pack's own. Values follow the pack's random-weight rule (avatar_core.loading.init_random_:
matrices N(0, 1/fan_in), norm weights ~1, other vectors ~N(0, 0.01)): finite, activations keep their size,
and the video is NOISE. `--scale tiny` (CPU checks) keeps every file and key layout but makes the Avatar
transformer AvatarConfig.tiny() (text widths kept) and LLaVA 4 layers (layer -3 is read) with a 256-wide MLP (TINY_LLAMA;
bench/workflow_gpu.py --scale tiny builds ComfyUI's LLaMA with the same sizes).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import wave
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
TINY_LLAMA = {"num_hidden_layers": 4, "intermediate_size": 256}  # hidden 4096 stays: ComfyUI's LLaVA projector is 4096 wide
AVATAR = "hunyuan_video_avatar_bf16.safetensors"
LLAVA, CLIP_L, VISION = "llava_llama3_fp16.safetensors", "clip_l.safetensors", "llava_llama3_vision.safetensors"
VAE, DETECTOR = "hunyuan_video_vae_bf16.safetensors", "detface.pt"
# The HunyuanVideo VAE (official config: 128 base channels x (1, 2, 4, 4), 2 res blocks, 16 latent channels, causal
# 3-D convs, 4x time compression) as ComfyUI builds it for a file with `decoder.conv_in.conv.weight`.
VAE_DDCONFIG = {"double_z": True, "z_channels": 16, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
                "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0,
                "conv3d": True, "time_compress": 4}
WHISPER_CONFIG = {"model_type": "whisper", "d_model": 384, "encoder_layers": 4, "encoder_attention_heads": 6,
                  "encoder_ffn_dim": 1536, "num_mel_bins": 80, "max_source_positions": 1500,
                  "activation_function": "gelu"}


def _pack():
    sys.path.insert(0, str(REPO / "scripts"))
    import smoke_assets
    return smoke_assets, smoke_assets._pack()


def save_random(module, path: Path, dtype, device: str, seed: int) -> None:
    """Allocate a meta-built module on `device`, fill it with the pack's random rule, save it as `dtype`."""
    from safetensors.torch import save_file
    _, imp = _pack()
    loading = imp("hyavatar_pack.avatar_core.loading")
    module = module.to_empty(device=device)
    loading.init_random_(module, seed, "cuda" if device.startswith("cuda") else "cpu")  # by name: norms ~1, ...
    floats = {k: v for k, v in module.state_dict().items() if v.is_floating_point()}  # index buffers are no weights
    state = {k: v.detach().to(dtype).contiguous().cpu() for k, v in floats.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))


def write_transformer(path: Path, scale: str, device: str) -> None:
    import torch
    _, imp = _pack()
    config = imp("hyavatar_pack.avatar_core.config").AvatarConfig
    loading = imp("hyavatar_pack.avatar_core.loading")
    from dataclasses import replace
    cfg = config.avatar_13b() if scale == "full" else replace(config.tiny(), text_dim=4096, text_pooled_dim=768)
    model = loading.build_random_transformer(cfg, dtype=torch.bfloat16, device=device, seed=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    loading.save_transformer(model, path)


def write_llava(path: Path, scale: str, device: str) -> None:
    import comfy.ops
    import comfy.text_encoders.llama as llama
    import torch
    net = llama.Llama2(dict(TINY_LLAMA) if scale == "tiny" else {}, torch.float16, "meta", comfy.ops.manual_cast)
    save_random(net, path, torch.float16, device, seed=1)


def write_clip_l(path: Path, device: str) -> None:
    import torch
    from comfy import sd1_clip
    net = sd1_clip.SDClipModel(device="meta", dtype=torch.float16).transformer  # the keys ComfyUI's load_sd fills
    save_random(net, path, torch.float16, device, seed=2)


def write_clip_vision(path: Path, device: str) -> None:
    import comfy.clip_vision
    import comfy.ops
    import torch
    config = json.loads((Path(comfy.clip_vision.__file__).parent / "clip_vision_config_vitl_336_llava.json").read_text())
    net = comfy.clip_vision.IMAGE_ENCODERS[config["model_type"]](config, torch.float16, "meta", comfy.ops.manual_cast)
    save_random(net, path, torch.float16, device, seed=3)


def write_vae(path: Path, device: str) -> None:
    import torch
    from comfy.ldm.models.autoencoder import AutoencoderKL
    with torch.device("meta"):
        net = AutoencoderKL(ddconfig=dict(VAE_DDCONFIG), embed_dim=16)
    save_random(net, path, torch.bfloat16, device, seed=4)


def write_whisper(folder: Path) -> None:
    from safetensors.torch import save_file
    smoke_assets, _ = _pack()
    folder.mkdir(parents=True, exist_ok=True)
    save_file(smoke_assets.whisper_tiny_state(), str(folder / "model.safetensors"))  # whisper-tiny's shapes
    (folder / "config.json").write_text(json.dumps(WHISPER_CONFIG, indent=1))


def write_detector(path: Path) -> None:
    sys.path.insert(0, str(REPO / "bench"))
    from standin_detector import write_standin_detector
    write_standin_detector(path)


def write_speech(src: Path, dst: Path, seconds: float) -> None:
    """`src` (16-bit PCM WAV) repeated to `seconds`: speech for clips longer than the example's."""
    with wave.open(str(src)) as w:
        params, data = w.getparams(), np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
    n = int(seconds * params.framerate) * params.nchannels
    reps = math.ceil(n / len(data))
    with wave.open(str(dst), "wb") as out:
        out.setparams(params)
        out.writeframes(np.tile(data, reps)[:n].tobytes())


def plan(models: Path, scale: str, device: str) -> list[tuple[Path, object]]:
    return [
        (models / "diffusion_models" / AVATAR, lambda p: write_transformer(p, scale, device)),
        (models / "text_encoders" / LLAVA, lambda p: write_llava(p, scale, device)),
        (models / "text_encoders" / CLIP_L, lambda p: write_clip_l(p, device)),
        (models / "clip_vision" / VISION, lambda p: write_clip_vision(p, device)),
        (models / "vae" / VAE, lambda p: write_vae(p, device)),
        (models / "audio_encoders" / "whisper-tiny" / "model.safetensors", lambda p: write_whisper(p.parent)),
        (models / "face_detection" / DETECTOR, write_detector),
    ]


def write_all(base: Path, scale: str, device: str, only: list[str] | None = None) -> list[dict]:
    rows = []
    for path, write in plan(base / "models", scale, device):
        if only and not any(o in path.name for o in only):
            continue
        row = {"file": str(path.relative_to(base)), "scale": scale}
        if path.is_file():
            row.update(skipped="exists")
        else:
            t = time.perf_counter()
            write(path)
            row.update(seconds=round(time.perf_counter() - t, 1))
        row["gib"] = round(path.stat().st_size / 2**30, 3)
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--comfyui", type=Path, required=True, help="ComfyUI folder (its classes give the key layouts)")
    ap.add_argument("--base", type=Path, required=True, help="ComfyUI base folder (models/ is written)")
    ap.add_argument("--scale", choices=["full", "tiny"], default="full")
    ap.add_argument("--device", default="cpu", help="where random values are drawn (cuda: much faster at full scale)")
    ap.add_argument("--only", nargs="*", help="write only files whose name contains one of these")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(args.comfyui))
    argv_, sys.argv = sys.argv, [sys.argv[0], "--cpu"]  # ComfyUI's arguments: build classes only, no device probing
    import comfy.options
    comfy.options.enable_args_parsing()
    import comfy.cli_args  # noqa: F401  (parsed now, from the argv above)
    sys.argv = argv_
    write_all(args.base, args.scale, args.device, args.only)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
