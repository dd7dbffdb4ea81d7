"""LoRA key layouts of the HunyuanVideo family -> our linear layers (official module names).

Layouts read (module part of a key, before `.lora_down.weight` / `.lora_A.weight` / `.alpha`):
* ComfyUI / diffusion-pipe / official names: `diffusion_model.double_blocks.0.img_attn_qkv`,
  `transformer.double_blocks.0.img_attn_qkv`, also ComfyUI's internal spelling (`img_attn.qkv`, `img_mod.lin`,
  `img_mlp.0`, `modulation.lin`).
* musubi-tuner / kohya: `lora_unet_double_blocks_0_img_attn_qkv` (the same names, dots as underscores).
* diffusers (PEFT): `transformer.transformer_blocks.0.attn.to_q`, `...single_transformer_blocks.0.proj_mlp`;
  q / k / v (and proj_mlp) are row ranges of our fused `*_attn_qkv` / `linear1` weights.
Every alias is listed once per model in :func:`alias_table`; a key resolves by exact lookup, never by guessing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

DOTTED_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "base_model.model.", "transformer.", "unet.")
UNDERSCORE_PREFIXES = ("lora_unet_", "lora_transformer_", "lycoris_")
DOWN = ("lora_down.weight", "lora_A.weight", "lora.down.weight")
UP = ("lora_up.weight", "lora_B.weight", "lora.up.weight")
ALPHA = ("alpha",)
# ComfyUI's internal HunyuanVideo spelling -> the official one (applied to dotted names).
_COMFY_SPELLING = (("_attn.qkv", "_attn_qkv"), ("_attn.proj", "_attn_proj"), ("_mod.lin", "_mod.linear"),
                   ("_mlp.0", "_mlp.fc1"), ("_mlp.2", "_mlp.fc2"), ("modulation.lin", "modulation.linear"))


@dataclass(frozen=True)
class Target:
    module: str                        # our linear layer
    rows: tuple[int, int] | None = None  # output rows [start, stop) of that layer, None: all


def _diffusers_aliases(cfg) -> dict[str, Target]:
    D, M = cfg.hidden_size, cfg.mlp_hidden
    thirds = [(0, D), (D, 2 * D), (2 * D, 3 * D)]
    out: dict[str, Target] = {}
    for i in range(cfg.depth_double):
        src, dst = f"transformer_blocks.{i}.", f"double_blocks.{i}."
        for name, rows in zip(("to_q", "to_k", "to_v"), thirds):
            out[src + "attn." + name] = Target(dst + "img_attn_qkv", rows)
        for name, rows in zip(("add_q_proj", "add_k_proj", "add_v_proj"), thirds):
            out[src + "attn." + name] = Target(dst + "txt_attn_qkv", rows)
        for a, b in (("attn.to_out.0", "img_attn_proj"), ("attn.to_add_out", "txt_attn_proj"),
                     ("norm1.linear", "img_mod.linear"), ("norm1_context.linear", "txt_mod.linear"),
                     ("ff.net.0.proj", "img_mlp.fc1"), ("ff.net.2", "img_mlp.fc2"),
                     ("ff_context.net.0.proj", "txt_mlp.fc1"), ("ff_context.net.2", "txt_mlp.fc2")):
            out[src + a] = Target(dst + b)
    for i in range(cfg.depth_single):
        src, dst = f"single_transformer_blocks.{i}.", f"single_blocks.{i}."
        for name, rows in zip(("to_q", "to_k", "to_v"), thirds):
            out[src + "attn." + name] = Target(dst + "linear1", rows)
        out[src + "proj_mlp"] = Target(dst + "linear1", (3 * D, 3 * D + M))
        out[src + "proj_out"] = Target(dst + "linear2")
        out[src + "norm.linear"] = Target(dst + "modulation.linear")
    for i in range(cfg.refiner_depth):
        src, dst = f"context_embedder.token_refiner.refiner_blocks.{i}.", f"txt_in.individual_token_refiner.blocks.{i}."
        for name, rows in zip(("to_q", "to_k", "to_v"), thirds):
            out[src + "attn." + name] = Target(dst + "self_attn_qkv", rows)
        for a, b in (("attn.to_out.0", "self_attn_proj"), ("ff.net.0.proj", "mlp.fc1"), ("ff.net.2", "mlp.fc2"),
                     ("norm_out.linear", "adaLN_modulation.1")):
            out[src + a] = Target(dst + b)
    out["proj_out"] = Target("final_layer.linear")
    return out


def alias_table(linear_names: list[str], cfg) -> tuple[dict[str, Target], dict[str, Target]]:
    """(dotted aliases, underscore aliases) -> Target, for a model with these linear layers."""
    dotted = {n: Target(n) for n in linear_names}
    dotted.update({k: v for k, v in _diffusers_aliases(cfg).items() if v.module in dotted})
    underscore = {k.replace(".", "_"): v for k, v in dotted.items()}
    return dotted, underscore


def _official_spelling(name: str) -> str:
    for a, b in _COMFY_SPELLING:
        name = name.replace(a, b)
    return name


def resolve(base: str, dotted: dict[str, Target], underscore: dict[str, Target]) -> Target | None:
    """The module part of a LoRA key -> our target, or None."""
    for p in UNDERSCORE_PREFIXES:
        if base.startswith(p):
            return underscore.get(base[len(p):])
    name = base
    for p in DOTTED_PREFIXES:  # `transformer.` after `diffusion_model.`: strip at most one of each
        if name.startswith(p):
            name = name[len(p):]
    return dotted.get(name) or dotted.get(_official_spelling(name))


def split_key(key: str) -> tuple[str, str] | None:
    """'a.b.lora_down.weight' -> ('a.b', 'down'); None for keys that are not LoRA factors / alphas."""
    for kind, suffixes in (("down", DOWN), ("up", UP), ("alpha", ALPHA)):
        for s in suffixes:
            if key.endswith("." + s):
                return key[: -len(s) - 1], kind
    return None


def group_factors(sd: dict[str, torch.Tensor]) -> tuple[dict[str, dict[str, torch.Tensor]], list[str]]:
    """Tensors grouped per module part: {base: {'down', 'up', 'alpha'}}, and the keys that are neither."""
    groups: dict[str, dict[str, torch.Tensor]] = {}
    other = []
    for k, v in sd.items():
        parts = split_key(k)
        if parts is None:
            other.append(k)
        else:
            groups.setdefault(parts[0], {})[parts[1]] = v
    return groups, other
