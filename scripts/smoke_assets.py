"""Tiny RANDOM model files and inputs for the smoke run: they prove the install works, the video is noise.

Writes, under MODELS/:  diffusion_models/avatar_tiny_random.safetensors (AvatarConfig.tiny),
audio_encoders/whisper_tiny_random.safetensors (whisper-tiny shapes, random), vae/taehv_random.safetensors
(ComfyUI's own TAEHV architecture, which its VAELoader detects as a 16-channel HunyuanVideo-latent VAE),
avatar_conditioning/smoke_random.safetensors (random text states; the real text encoders are 8B and
cannot be made tiny); under INPUT/: smoke_face.png and smoke_speech.wav. Needs ComfyUI importable (for TAEHV).
"""

from __future__ import annotations

import math
import os
import sys
import wave
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

REPO = Path(__file__).resolve().parents[1]


def _pack():
    import importlib
    import types
    if "hyavatar_pack" not in sys.modules:
        pkg = types.ModuleType("hyavatar_pack")
        pkg.__path__ = [str(REPO)]
        sys.modules["hyavatar_pack"] = pkg
    return importlib.import_module


def write_models(models: Path) -> dict[str, str]:
    imp = _pack()
    config = imp("hyavatar_pack.avatar_core.config")
    loading = imp("hyavatar_pack.avatar_core.loading")
    files = {}
    dit = models / "diffusion_models" / "avatar_tiny_random.safetensors"
    dit.parent.mkdir(parents=True, exist_ok=True)
    loading.save_transformer(loading.build_random_transformer(config.AvatarConfig.tiny(), seed=0), dit)
    files["dit"] = dit.name

    whisper = models / "audio_encoders" / "whisper_tiny_random.safetensors"
    whisper.parent.mkdir(parents=True, exist_ok=True)
    save_file(whisper_tiny_state(), str(whisper))
    files["whisper"] = whisper.name

    import comfy.options  # ComfyUI's defaults would probe CUDA; this only builds a module on the CPU
    argv, sys.argv = sys.argv, [sys.argv[0], "--cpu"]
    comfy.options.enable_args_parsing()
    import comfy.taesd.taehv as taehv
    sys.argv = argv
    vae = models / "vae" / "taehv_random.safetensors"
    vae.parent.mkdir(parents=True, exist_ok=True)
    net = taehv.TAEHV(latent_channels=16)
    # ComfyUI builds its layers without initialising them (the weights are loaded afterwards): the memory is
    # whatever was there, often NaN/inf. Random, finite, seeded, scaled by 1/sqrt(fan-in) so that activations
    # keep their size through the layers (the decoded video is visible noise, not black); biases 0.
    g = torch.Generator().manual_seed(0)
    state = {k: (torch.randn(v.shape, generator=g) / math.sqrt(v[0].numel()) if v.dim() > 1 else torch.zeros(v.shape))
             for k, v in net.state_dict().items()}
    save_file({k: v.half().contiguous() for k, v in state.items()}, str(vae))
    files["vae"] = vae.name

    cond = models / "avatar_conditioning" / "smoke_random.safetensors"
    write_text_conditioning(cond, config.AvatarConfig.tiny())
    files["conditioning"] = cond.name
    return files


def whisper_tiny_state(d: int = 384, layers: int = 4, ffn: int = 1536, mels: int = 80, positions: int = 1500,
                       seed: int = 0) -> dict[str, torch.Tensor]:
    """Random encoder weights with whisper-tiny's keys and shapes (HF WhisperModel names), written directly:
    importing transformers to build them would cost the smoke run seconds. The loader checks every key."""
    g = torch.Generator().manual_seed(seed)

    def w(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g) / math.sqrt(math.prod(shape[1:]))

    sd = {"conv1.weight": w(d, mels, 3), "conv1.bias": torch.zeros(d), "conv2.weight": w(d, d, 3),
          "conv2.bias": torch.zeros(d), "embed_positions.weight": w(positions, d),
          "layer_norm.weight": torch.ones(d), "layer_norm.bias": torch.zeros(d)}
    for i in range(layers):
        p = f"layers.{i}."
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            sd[f"{p}self_attn.{proj}.weight"] = w(d, d)
            if proj != "k_proj":  # Whisper's key projection has no bias
                sd[f"{p}self_attn.{proj}.bias"] = torch.zeros(d)
        for norm in ("self_attn_layer_norm", "final_layer_norm"):
            sd[f"{p}{norm}.weight"], sd[f"{p}{norm}.bias"] = torch.ones(d), torch.zeros(d)
        sd.update({f"{p}fc1.weight": w(ffn, d), f"{p}fc1.bias": torch.zeros(ffn), f"{p}fc2.weight": w(d, ffn),
                   f"{p}fc2.bias": torch.zeros(d)})
    return {f"encoder.{k}": v.contiguous() for k, v in sd.items()}


def write_text_conditioning(path: Path, config) -> None:
    """Random positive/negative text states of `config`'s widths, in Avatar Save Conditioning's file layout."""
    path.parent.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    save_file({f"{p}.{k}": torch.randn(*shape, generator=g) for p in ("pos", "neg")
               for k, shape in (("states", (1, 600, config.text_dim)), ("pooled", (1, config.text_pooled_dim)))},
              str(path))


def write_inputs(input_dir: Path, seconds: float = 1.2) -> dict[str, str]:
    from PIL import Image
    input_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (160, 128, 3), dtype=np.uint8)).save(input_dir / "smoke_face.png")
    rate = 16000
    n = int(seconds * rate)
    tt = np.arange(n) / rate
    sig = 0.3 * np.sin(2 * math.pi * 180 * tt) * (0.5 + 0.5 * np.sin(2 * math.pi * 3 * tt))  # voiced-like buzz
    with wave.open(str(input_dir / "smoke_speech.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((sig * 32767).astype(np.int16).tobytes())
    return {"image": "smoke_face.png", "audio": "smoke_speech.wav"}


def read_input_audio(path: Path) -> tuple[torch.Tensor, int]:
    """The speech written by write_inputs (16-bit mono WAV) -> (float waveform [T] in [-1, 1], sample rate)."""
    with wave.open(str(path)) as w:
        data = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).astype(np.float32) / 32768.0
        return torch.from_numpy(data.copy()), w.getframerate()


if __name__ == "__main__":  # python scripts/smoke_assets.py BASE [COMFYUI_PATH [SECONDS]] -> one JSON line {models, inputs}
    import json
    base = Path(sys.argv[1] if len(sys.argv) > 1 else os.getcwd())
    if len(sys.argv) > 2:
        sys.path.insert(0, sys.argv[2])
    seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 1.2
    print(json.dumps({"models": write_models(base / "models"), "inputs": write_inputs(base / "input", seconds)}))
