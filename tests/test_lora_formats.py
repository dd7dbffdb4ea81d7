"""LoRA formats people have, each as ComfyUI applies it (expected values written out by hand from ComfyUI's
LoRA arithmetic: comfy/lora.py, comfy/weight_adapter/lora.py and base.py `weight_decompose`), and the
trainer's files read back through the one LoRA format module."""

from __future__ import annotations

import logging

import pytest
import torch

from avatar_core.config import AvatarConfig
from avatar_core.loading import build_random_transformer
from avatar_core.lora import LoraError, load_lora, set_loras
from avatar_core.lora.format import WRITE_SUFFIXES, split_key
from avatar_core.train.adapters import add_lora, lora_state_dict

CFG = AvatarConfig.tiny()
D, M = CFG.hidden_size, CFG.mlp_hidden
R = 4
EPS32 = 1.1920928955078125e-07  # torch.finfo(torch.float32).eps, ComfyUI's DoRA norm guard


def _r(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _model():
    return build_random_transformer(CFG, dtype=torch.float32, seed=11)


def _weights(model, name):
    layer = model.get_submodule(name)
    return layer.weight.detach().clone(), None if layer.bias is None else layer.bias.detach().clone()


def _applied(sd, strength=1.0):
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    lora = load_lora(sd, model)
    set_loras(model, [(lora, strength)])
    return model, before, lora


@pytest.mark.parametrize("key, layer", [
    ("diffusion_model.txt_in.individual_token_refiner.blocks.1.mlp.0", "txt_in.individual_token_refiner.blocks.1.mlp.fc1"),
    ("diffusion_model.txt_in.individual_token_refiner.blocks.0.mlp.2", "txt_in.individual_token_refiner.blocks.0.mlp.fc2"),
    ("diffusion_model.txt_in.individual_token_refiner.blocks.0.self_attn.qkv",
     "txt_in.individual_token_refiner.blocks.0.self_attn_qkv"),
    ("diffusion_model.time_in.in_layer", "time_in.mlp.0"),
    ("diffusion_model.txt_in.c_embedder.out_layer", "txt_in.c_embedder.linear_2"),
    ("lora_unet_double_blocks_0_img_mod_lin", "double_blocks.0.img_mod.linear"),
    ("lora_unet_txt_in_individual_token_refiner_blocks_1_mlp_0", "txt_in.individual_token_refiner.blocks.1.mlp.fc1"),
])
def test_comfyuis_own_module_spelling_patches_the_same_layer(key, layer):
    w0, _ = _weights(_model(), layer)
    up, down = _r(w0.shape[0], R, seed=1), _r(R, w0.shape[1], seed=2)
    model, before, lora = _applied({key + ".lora_up.weight": up, key + ".lora_down.weight": down,
                                    key + ".alpha": torch.tensor(2.0)}, 0.7)
    assert lora.unmatched == ()
    torch.testing.assert_close(model.state_dict()[layer + ".weight"], w0 + 0.7 * (2.0 / R) * (up @ down))
    assert sum(not torch.equal(v, before[k]) for k, v in model.state_dict().items()) == 1


def _dora_expected(w, up, down, alpha, magnitude, strength):
    """ComfyUI's weight_decompose, by hand: C = W + (alpha/r) up@down; the norm is of W (before the update) per
    output row when the magnitude has one value per row, else of C per input column."""
    c = w + (alpha / down.shape[0]) * (up @ down)
    if magnitude.shape == (w.shape[0], 1):
        norm = torch.sqrt((w * w).sum(dim=1, keepdim=True))
    else:
        norm = torch.sqrt((c * c).sum(dim=0, keepdim=True))
    c = c * (magnitude / (norm + EPS32))
    return w + strength * (c - w)


@pytest.mark.parametrize("axis", ["rows", "columns", "rows_1d"])
@pytest.mark.parametrize("strength", [1.0, 0.6])
def test_dora_magnitude_as_comfyui_applies_it(axis, strength):
    layer = "double_blocks.1.img_attn_proj"
    w0, _ = _weights(_model(), layer)
    up, down = _r(D, R, seed=3) * 0.3, _r(R, D, seed=4) * 0.3
    magnitude = {"rows": _r(D, 1, seed=5).abs() + 0.5, "columns": _r(1, D, seed=5).abs() + 0.5,
                 "rows_1d": _r(D, seed=5).abs() + 0.5}[axis]
    key = "diffusion_model." + layer
    sd = {key + ".lora_up.weight": up, key + ".lora_down.weight": down, key + ".alpha": torch.tensor(8.0),
          key + ".dora_scale": magnitude}
    model, before, lora = _applied(sd, strength)
    assert lora.unmatched == ()
    m2 = magnitude.reshape(-1, 1) if axis == "rows_1d" else magnitude
    torch.testing.assert_close(model.state_dict()[layer + ".weight"], _dora_expected(w0, up, down, 8.0, m2, strength))
    set_loras(model, [])
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_bias_of_lora_b_and_full_diffs():
    qkv, final = "double_blocks.2.txt_attn_qkv", "final_layer.linear"
    w_qkv, b_qkv = _weights(_model(), qkv)
    w_fin, b_fin = _weights(_model(), final)
    up, down, lb = _r(3 * D, R, seed=6), _r(R, D, seed=7), _r(3 * D, seed=8)
    diff, diff_b = _r(*w_fin.shape, seed=9) * 0.01, _r(w_fin.shape[0], seed=10)
    sd = {f"transformer.{qkv}.lora_A.weight": down, f"transformer.{qkv}.lora_B.weight": up,
          f"transformer.{qkv}.lora_B.bias": lb, f"transformer.{qkv}.alpha": torch.tensor(2.0),
          f"diffusion_model.{final}.diff": diff, f"diffusion_model.{final}.diff_b": diff_b}
    model, before, lora = _applied(sd, 0.5)
    assert lora.unmatched == () and lora.matched == 2
    after = model.state_dict()
    s = 0.5 * 2.0 / R                                              # PEFT: lora_B's bias is scaled like up @ down
    torch.testing.assert_close(after[qkv + ".weight"], w_qkv + s * (up @ down))
    torch.testing.assert_close(after[qkv + ".bias"], b_qkv + s * lb)
    torch.testing.assert_close(after[final + ".weight"], w_fin + 0.5 * diff)
    torch.testing.assert_close(after[final + ".bias"], b_fin + 0.5 * diff_b)
    set_loras(model, [])
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_peft_keys_with_the_adapter_name():
    """diffusers / PEFT keys that keep the adapter name (`lora_A.default.weight`), rows of the fused qkv."""
    w0, _ = _weights(_model(), "double_blocks.1.img_attn_qkv")
    ups, downs = [_r(D, R, seed=20 + i) for i in range(3)], [_r(R, D, seed=30 + i) for i in range(3)]
    sd = {}
    for n, up, down in zip(("to_q", "to_k", "to_v"), ups, downs):
        sd[f"transformer.transformer_blocks.1.attn.{n}.lora_A.default.weight"] = down
        sd[f"transformer.transformer_blocks.1.attn.{n}.lora_B.default.weight"] = up
    model, _, lora = _applied(sd)
    assert lora.unmatched == () and lora.matched == 3
    torch.testing.assert_close(model.state_dict()["double_blocks.1.img_attn_qkv.weight"],
                               w0 + torch.cat([u @ d for u, d in zip(ups, downs)]))
    sd["transformer.transformer_blocks.1.attn.to_q.lora_A.style.weight"] = downs[0]
    with pytest.raises(LoraError, match=r"adapters \['default', 'style'\]"):
        load_lora(sd, _model())


def test_a_bias_change_of_a_layer_without_bias_is_reported(caplog):
    layer = "audio_adapter_blocks.0.to_q"                         # bias=False in the official model
    w0, _ = _weights(_model(), layer)
    up, down = _r(w0.shape[0], R, seed=40), _r(R, w0.shape[1], seed=41)
    key = "diffusion_model." + layer
    with caplog.at_level(logging.WARNING):
        model, _, lora = _applied({key + ".lora_up.weight": up, key + ".lora_down.weight": down,
                                   key + ".diff_b": torch.ones(w0.shape[0])})
    torch.testing.assert_close(model.state_dict()[layer + ".weight"], w0 + up @ down)
    assert lora.unmatched == (f"{key} (its bias change: {layer} has no bias)",) and "not matched" in caplog.text


@pytest.mark.parametrize("extra, message", [
    ({"diff": torch.zeros(D, D)}, "both LoRA factors and a full diff"),
    ({"dora_scale": torch.ones(3, 3)}, "dora_scale of shape"),
    ({"lora_B.bias": torch.ones(D + 1)}, "lora_B bias of shape"),
])
def test_malformed_modules_fail_clearly(extra, message):
    key = "diffusion_model.double_blocks.0.img_attn_proj"
    sd = {key + ".lora_up.weight": torch.zeros(D, R), key + ".lora_down.weight": torch.zeros(R, D)}
    sd.update({f"{key}.{k}": v for k, v in extra.items()})
    with pytest.raises(LoraError, match=message):
        load_lora(sd, _model())


def test_the_trainers_file_reads_back_as_the_same_deltas():
    """What the trainer writes (lora/format.py's layout) -> the reader -> the trained deltas, layer by layer."""
    trained = _model()
    adapters = add_lora(trained, "double:1,single:0", rank=R, alpha=2.0)
    with torch.no_grad():
        for i, d in enumerate(adapters.values()):
            d.up.copy_(_r(*d.up.shape, seed=50 + i))
    sd = lora_state_dict(adapters)
    kinds = {split_key(k)[1] for k in sd}
    assert kinds == set(WRITE_SUFFIXES) and all(split_key(k)[2] is None for k in sd)
    model, before, lora = _applied(sd)
    assert lora.unmatched == () and lora.matched == len(adapters) == len(sd) // 3
    after = model.state_dict()
    for name, d in adapters.items():
        up, down = d.up.detach().bfloat16().float(), d.down.detach().bfloat16().float()   # saved in bf16
        torch.testing.assert_close(after[name + ".weight"], before[name + ".weight"] + (2.0 / R) * (up @ down))
    changed = {k.rsplit(".", 1)[0] for k, v in after.items() if not torch.equal(v, before[k])}
    assert changed == set(adapters)
