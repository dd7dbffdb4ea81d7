"""LoRA merges against closed forms: W' = W + strength * (alpha / rank) * up @ down, written out here, rounded
ONCE to the stored format: a correctly rounded bf16 weight, and an e4m3 weight whose scale covers the merged
weight (a stale scale saturates it) within one e4m3 rounding per element. (The same merge against ComfyUI's own
LoRA code: tests/test_lora_comfy.py.)"""

from __future__ import annotations

import torch

from avatar_core.config import AvatarConfig
from avatar_core.loading import build_random_transformer
from avatar_core.lora import load_lora, set_loras
from avatar_core.model.fp8 import enable_fp8_

CFG = AvatarConfig.tiny()
LAYER = "double_blocks.1.img_attn_qkv"


def _lora(layer: str, shape: tuple[int, int], rank: int, alpha: float | None, seed: int, big: float = 0.0):
    """A ComfyUI-layout LoRA for one layer; `big` adds one large entry to the update (raises the weight's amax)."""
    g = torch.Generator().manual_seed(seed)
    up, down = torch.randn(shape[0], rank, generator=g) * 0.05, torch.randn(rank, shape[1], generator=g) * 0.05
    up[3, 0], down[0, 5] = big, 1.0 if big else down[0, 5]
    sd = {f"diffusion_model.{layer}.lora_up.weight": up, f"diffusion_model.{layer}.lora_down.weight": down}
    if alpha is not None:
        sd[f"diffusion_model.{layer}.alpha"] = torch.tensor(alpha)
    scale = 1.0 if alpha is None else alpha / rank          # no alpha: scale 1 (PEFT, ComfyUI)
    return sd, scale * (up.double() @ down.double())


def _stored(model, layer: str) -> torch.Tensor:
    """The layer's effective weight from its state-dict entries (the official fp8 layout: weight * scale_weight)."""
    sd = model.state_dict()
    w = sd[layer + ".weight"].double()
    scale = sd.get(layer + ".scale_weight")
    return w if scale is None else w * scale.double().reshape(-1, 1) if scale.numel() > 1 else w * scale.double()


def _half_ulp_bf16(x: torch.Tensor) -> torch.Tensor:
    """Half a bf16 unit in the last place at |x| (8 significant bits)."""
    e = torch.floor(torch.log2(x.abs().clamp_min(1e-30)))
    return torch.pow(2.0, e - 8)


def test_a_bf16_merge_is_the_fp32_sum_of_every_lora_rounded_once():
    model = build_random_transformer(CFG, dtype=torch.bfloat16, seed=3)
    base = _stored(model, LAYER)
    shape = tuple(base.shape)
    (sd1, d1), (sd2, d2) = _lora(LAYER, shape, 3, 2.0, 1), _lora(LAYER, shape, 2, None, 2)
    set_loras(model, [(load_lora(sd1, model), 0.7), (load_lora(sd2, model), -1.3)])
    exact = base + 0.7 * d1 - 1.3 * d2
    err = (_stored(model, LAYER) - exact).abs()
    assert bool((err <= _half_ulp_bf16(exact) * 1.01 + 1e-12).all()), float((err / _half_ulp_bf16(exact)).max())
    assert float((_stored(model, LAYER) - base).abs().max()) > 0.01          # the merge happened


def test_an_fp8_merge_gets_a_scale_that_covers_it_and_one_e4m3_rounding():
    """The update raises the weight's largest entry ~20x: with the old scale it would saturate at 448 * scale."""
    model = build_random_transformer(CFG, dtype=torch.float32, seed=3)
    enable_fp8_(model)
    base = _stored(model, LAYER)
    sd, delta = _lora(LAYER, tuple(base.shape), 4, 2.0, 5, big=40.0)
    set_loras(model, [(load_lora(sd, model), 0.5)])
    want = base + 0.5 * delta
    assert float(want.abs().max()) > 10 * float(base.abs().max())
    scale = model.state_dict()[LAYER + ".scale_weight"].double()
    scale = scale.reshape(-1, 1) if scale.numel() > 1 else scale
    got = _stored(model, LAYER)
    # e4m3: 3 mantissa bits, relative rounding error <= 2^-4; below 2^-6 * scale the step is 2^-9 * scale
    bound = want.abs() * 2.0 ** -4 + scale * 2.0 ** -10
    assert bool(((got - want).abs() <= bound * 1.001).all()), float(((got - want).abs() / bound).max())
    assert float((scale * 448 - want.abs().amax()).min()) >= -1e-6 * float(want.abs().max())   # nothing saturates
    set_loras(model, [])
    torch.testing.assert_close(_stored(model, LAYER), base, rtol=0, atol=0)


def _diffusers_names(cfg: AvatarConfig) -> dict[str, tuple[str, tuple[int, int] | None]]:
    """diffusers' name of every official linear a LoRA may target -> (official layer, its output rows), written out
    from diffusers' own conversion of an official HunyuanVideo LoRA (loaders/lora_conversion_utils.py,
    _convert_hunyuan_video_lora_to_diffusers): fused q/k/v split in equal thirds (single blocks: q, k, v of D rows
    each, then proj_mlp with the rest), the renames of its TRANSFORMER_KEYS_RENAME_DICT and of the text refiner."""
    D, M = cfg.hidden_size, cfg.mlp_hidden
    thirds = ((0, D), (D, 2 * D), (2 * D, 3 * D))
    out: dict[str, tuple[str, tuple[int, int] | None]] = {"proj_out": ("final_layer.linear", None)}
    for i in range(cfg.depth_double):
        ours, theirs = f"double_blocks.{i}.", f"transformer_blocks.{i}."
        for q, rows in zip(("to_q", "to_k", "to_v"), thirds):
            out[theirs + "attn." + q] = (ours + "img_attn_qkv", rows)
        for q, rows in zip(("add_q_proj", "add_k_proj", "add_v_proj"), thirds):
            out[theirs + "attn." + q] = (ours + "txt_attn_qkv", rows)
        for name, layer in (("attn.to_out.0", "img_attn_proj"), ("attn.to_add_out", "txt_attn_proj"),
                            ("norm1.linear", "img_mod.linear"), ("norm1_context.linear", "txt_mod.linear"),
                            ("ff.net.0.proj", "img_mlp.fc1"), ("ff.net.2", "img_mlp.fc2"),
                            ("ff_context.net.0.proj", "txt_mlp.fc1"), ("ff_context.net.2", "txt_mlp.fc2")):
            out[theirs + name] = (ours + layer, None)
    for i in range(cfg.depth_single):
        ours, theirs = f"single_blocks.{i}.", f"single_transformer_blocks.{i}."
        for q, rows in zip(("attn.to_q", "attn.to_k", "attn.to_v"), thirds):
            out[theirs + q] = (ours + "linear1", rows)
        out[theirs + "proj_mlp"] = (ours + "linear1", (3 * D, 3 * D + M))
        out[theirs + "proj_out"] = (ours + "linear2", None)
        out[theirs + "norm.linear"] = (ours + "modulation.linear", None)
    for i in range(cfg.refiner_depth):
        ours, theirs = f"txt_in.individual_token_refiner.blocks.{i}.", f"context_embedder.token_refiner.refiner_blocks.{i}."
        for q, rows in zip(("to_q", "to_k", "to_v"), thirds):
            out[theirs + "attn." + q] = (ours + "self_attn_qkv", rows)
        for name, layer in (("attn.to_out.0", "self_attn_proj"), ("ff.net.0.proj", "mlp.fc1"), ("ff.net.2", "mlp.fc2"),
                            ("norm_out.linear", "adaLN_modulation.1")):
            out[theirs + name] = (ours + layer, None)
    return out


def test_every_diffusers_layer_name_reaches_the_official_layer_and_rows_diffusers_converts_it_from():
    from avatar_core.lora.format import Target, alias_table, resolve
    from avatar_core.model.linear import members
    cfg = AvatarConfig.tiny()
    assert cfg.depth_double and cfg.depth_single and cfg.refiner_depth   # every family of blocks present
    dotted, underscore = alias_table(list(members(build_random_transformer(cfg, seed=0))), cfg)
    want = {name: Target(layer, rows) for name, (layer, rows) in _diffusers_names(cfg).items()}
    diffusers_like = ("transformer_blocks.", "single_transformer_blocks.", "context_embedder.", "proj_out")
    assert {k: v for k, v in dotted.items() if k.startswith(diffusers_like)} == want
    for name, target in want.items():   # as PEFT / diffusers files spell the keys, and with underscores
        assert resolve("transformer." + name, dotted, underscore) == target, name
        assert resolve("lora_transformer_" + name.replace(".", "_"), dotted, underscore) == target, name
