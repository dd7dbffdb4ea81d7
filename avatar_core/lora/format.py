"""The LoRA file format: every key layout we read, and the one the trainer writes, in one place.

A LoRA file is a flat state dict of `<module>.<suffix>` keys. The suffix says what a tensor is
(`SUFFIXES`; PEFT files that keep the adapter name, `lora_A.<adapter>.weight`, are read too); the module
part names a layer in one of the HunyuanVideo spellings (`alias_table`), found by exact lookup, never by
guessing:
* official names (ComfyUI / diffusion-pipe / musubi): `diffusion_model.double_blocks.0.img_attn_qkv`,
  `transformer.…`, and ComfyUI's own spelling of its modules (`img_attn.qkv`, `img_mod.lin`, `img_mlp.0`,
  `modulation.lin`, the token refiner's `mlp.0`, `time_in.in_layer`: `COMFY_SPELLING`);
* kohya / musubi-tuner: `lora_unet_double_blocks_0_img_attn_qkv` (any of the above, dots as underscores);
* diffusers (PEFT): `transformer.transformer_blocks.0.attn.to_q`, …; q / k / v (and proj_mlp) are row
  ranges of our fused `*_attn_qkv` / `linear1` weights (`Target.rows`).
What the tensors do to a weight is model/patches.py (ComfyUI's arithmetic). A new spelling or tensor kind
is one row in a table below; the trainer writes through `write_state_dict`, so what it writes is read back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch

from ..errors import InputError


class LoraError(InputError):
    """A LoRA file that does not fit the Avatar model."""


# <module>.<suffix> -> what the tensor is. "down" (rank, in), "up" (out, rank), "alpha" (scalar), "up_bias" (out,)
# PEFT's lora_B bias, "dora_scale" DoRA magnitude, "diff" / "diff_b" full weight / bias changes.
SUFFIXES: dict[str, str] = {
    "lora_down.weight": "down", "lora_A.weight": "down", "lora.down.weight": "down",
    "lora_up.weight": "up", "lora_B.weight": "up", "lora.up.weight": "up",
    "lora_up.bias": "up_bias", "lora_B.bias": "up_bias",
    "alpha": "alpha", "dora_scale": "dora_scale", "diff": "diff", "diff_b": "diff_b",
}
_NAMED = re.compile(r"^(?P<module>.+)\.lora_(?P<ab>[AB])\.(?P<adapter>[^.]+)\.(?P<what>weight|bias)$")  # PEFT
_NAMED_KIND = {("A", "weight"): "down", ("B", "weight"): "up", ("B", "bias"): "up_bias"}

DOTTED_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "base_model.model.", "transformer.", "unet.")
UNDERSCORE_PREFIXES = ("lora_unet_", "lora_transformer_", "lycoris_")
# Official name part -> ComfyUI's name for it (its HunyuanVideo modules: comfy/ldm/hunyuan_video/model.py).
COMFY_SPELLING = (("_attn_qkv", "_attn.qkv"), ("_attn_proj", "_attn.proj"), ("_mod.linear", "_mod.lin"),
                  ("modulation.linear", "modulation.lin"), ("_mlp.fc1", "_mlp.0"), ("_mlp.fc2", "_mlp.2"),
                  (".mlp.fc1", ".mlp.0"), (".mlp.fc2", ".mlp.2"),  # the token refiner's MLP (after the two above)
                  ("time_in.mlp.0", "time_in.in_layer"), ("time_in.mlp.2", "time_in.out_layer"),
                  ("t_embedder.mlp.0", "t_embedder.in_layer"), ("t_embedder.mlp.2", "t_embedder.out_layer"),
                  ("c_embedder.linear_1", "c_embedder.in_layer"), ("c_embedder.linear_2", "c_embedder.out_layer"))

# What the trainer writes: ComfyUI's layout (its own LoRA loader for HunyuanVideo reads it, so does ours).
WRITE_PREFIX = "diffusion_model."
WRITE_SUFFIXES = {"down": "lora_down.weight", "up": "lora_up.weight", "alpha": "alpha"}


@dataclass(frozen=True)
class Target:
    module: str                          # our linear layer
    rows: tuple[int, int] | None = None  # output rows [start, stop) of that layer, None: all


@dataclass
class Parsed:
    modules: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)  # module part -> {kind: tensor}
    stray: list[str] = field(default_factory=list)                            # keys that are none of SUFFIXES
    adapters: set[str] = field(default_factory=set)                           # PEFT adapter names seen


def split_key(key: str) -> tuple[str, str, str | None] | None:
    """'a.b.lora_down.weight' -> ('a.b', 'down', None); 'a.lora_A.default.weight' -> ('a', 'down', 'default')."""
    for suffix, kind in SUFFIXES.items():
        if key.endswith("." + suffix):
            return key[: -len(suffix) - 1], kind, None
    m = _NAMED.match(key)
    if m and (m["ab"], m["what"]) in _NAMED_KIND:
        return m["module"], _NAMED_KIND[(m["ab"], m["what"])], m["adapter"]
    return None


def parse(sd: dict[str, torch.Tensor], name: str) -> Parsed:
    """Tensors grouped per module part; a file holding several PEFT adapters is refused (which one?)."""
    out = Parsed()
    for key, tensor in sd.items():
        parts = split_key(key)
        if parts is None:
            out.stray.append(key)
            continue
        module, kind, adapter = parts
        out.modules.setdefault(module, {})[kind] = tensor
        if adapter is not None:
            out.adapters.add(adapter)
    if len(out.adapters) > 1:
        raise LoraError(f"{name}: holds the PEFT adapters {sorted(out.adapters)}; save one adapter per file "
                        "(PEFT: get_peft_model_state_dict(model, adapter_name=...)) and load each on its own")
    return out


def write_state_dict(modules: dict[str, tuple[torch.Tensor, torch.Tensor, float]],
                     dtype: torch.dtype = torch.bfloat16) -> dict[str, torch.Tensor]:
    """{our module name: (down (rank, in), up (out, rank), alpha)} -> a LoRA state dict in WRITE_* layout."""
    sd = {}
    for module, (down, up, alpha) in modules.items():
        key = WRITE_PREFIX + module + "."
        sd[key + WRITE_SUFFIXES["down"]] = down.detach().to("cpu", dtype).contiguous()
        sd[key + WRITE_SUFFIXES["up"]] = up.detach().to("cpu", dtype).contiguous()
        sd[key + WRITE_SUFFIXES["alpha"]] = torch.tensor(float(alpha))
    return sd


# ---------------------------------------------------------------- module names
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


def comfy_name(name: str) -> str:
    """Our (official) module name -> ComfyUI's name of the same HunyuanVideo module."""
    for ours, theirs in COMFY_SPELLING:
        name = name.replace(ours, theirs)
    return name


def alias_table(linear_names: list[str], cfg) -> tuple[dict[str, Target], dict[str, Target]]:
    """(dotted aliases, underscore aliases) -> Target, for a model with these linear layers."""
    dotted = {n: Target(n) for n in linear_names}
    dotted.update({comfy_name(n): Target(n) for n in linear_names if comfy_name(n) not in dotted})
    dotted.update({k: v for k, v in _diffusers_aliases(cfg).items() if v.module in dotted})
    underscore = {k.replace(".", "_"): v for k, v in dotted.items()}
    return dotted, underscore


def resolve(base: str, dotted: dict[str, Target], underscore: dict[str, Target]) -> Target | None:
    """The module part of a LoRA key -> our target, or None."""
    for p in UNDERSCORE_PREFIXES:
        if base.startswith(p):
            return underscore.get(base[len(p):])
    name = base
    for p in DOTTED_PREFIXES:  # `transformer.` after `diffusion_model.`: strip at most one of each
        if name.startswith(p):
            name = name[len(p):]
    return dotted.get(name)
