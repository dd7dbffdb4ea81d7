"""`python -m avatar_core.parity.text_precision DIR`: how far lower-precision LLaVA weights move the text states.

On a shared/fixtures/text folder (tiny RANDOM model: an indication, not the 8B's numbers), relative L2 of the
831 final states of every prompt against the official fp32 result, for: fp16 weights computed in float32 (what
ComfyUI does with llava_llama3_fp16), fp16 weights and compute (the official run), and fp8 e4m3fn weights with
one scale per tensor on the LLM's linear layers, the rest fp16 (a simulation of llava_llama3_fp8_scaled).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from ..conditioning import text as T
from ..conditioning.llava import TorchLlava
from .common import load_fixture


def _weights(base: TorchLlava, kind: str) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in base.w.items():
        if kind == "fp16":
            out[k] = v.half()
        elif kind == "fp8" and k.startswith("language_model.model.layers.") and v.ndim == 2:
            scale = v.abs().max() / torch.finfo(torch.float8_e4m3fn).max
            out[k] = (v / scale).to(torch.float8_e4m3fn).float() * scale
        else:  # fp16 weights, float32 compute
            out[k] = v.half().float()
    return out


def measure(fixture_dir: Path) -> dict[str, list[float]]:
    base = TorchLlava.load(fixture_dir / "tiny_llava_config.json", fixture_dir / "tiny_llava_weights.safetensors")
    kinds = {k: TorchLlava(base.cfg, _weights(base, k)) for k in ("fp16_weights", "fp16", "fp8")}
    rel: dict[str, list[float]] = {k: [] for k in kinds}
    for path in sorted(fixture_dir.glob("case_*.json")):
        f = load_fixture(path.with_suffix(".safetensors"))
        for p in json.loads(path.read_text(encoding="utf-8"))["prompts"]:
            tokens = T.PromptTokens(f[f"{p}.input_ids"], f[f"{p}.attention_mask"])
            ref = f[f"{p}.prompt_embeds"].double()
            for kind, model in kinds.items():
                pixels = f["pixel_values"][None] if kind != "fp16" else f["pixel_values"][None].half()
                with torch.no_grad():
                    states, _ = T.encode_official(model, tokens, model.image_features(pixels)[0])
                rel[kind].append(float((states.double() - ref).norm() / ref.norm()))
    return rel


if __name__ == "__main__":
    torch.set_num_threads(1)
    for kind, values in measure(Path(sys.argv[1])).items():
        print(f"{kind:13s} relative L2 of the 831 states vs official fp32: mean {sum(values) / len(values):.2e} "
              f"max {max(values):.2e} ({len(values)} prompts)")
