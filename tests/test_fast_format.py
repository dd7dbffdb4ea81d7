"""The fast preset's weight format: every block linear in e4m3 (per-tensor scale) except the modulation linears,
which keep the file's bf16 weights exactly (bench/fp8_frontier.py measured why on the 13B model)."""

from __future__ import annotations

import re

import torch

from avatar_core.config import AvatarConfig
from avatar_core.loading import build_random_transformer, save_transformer
from avatar_core.model.linear import block_linear_names, members
from avatar_core.runner import LoadSpec, RandomSpec

MODULATION = re.compile(r"(img_mod|txt_mod|modulation)\.linear$")  # written out here, not imported


def _e4m3_per_tensor(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The official fp8 rule, by hand: scale = max|w| / 448, q = e4m3(w / scale)."""
    scale = w.float().abs().max() / 448.0
    return (w.float() / scale).clamp(-448, 448).to(torch.float8_e4m3fn), scale


def test_fast_keeps_modulation_in_bf16_and_stores_the_rest_in_e4m3(tmp_path):
    cfg = AvatarConfig.tiny()
    source = build_random_transformer(cfg, dtype=torch.bfloat16, seed=3)
    path = tmp_path / "m.safetensors"
    save_transformer(source, path)
    file = {k: v for k, v in source.state_dict().items()}
    model = LoadSpec(path=str(path), weight_format="fast", attention="sdpa").build("cpu").diffusion_model
    names = block_linear_names(model)
    assert sum(bool(MODULATION.search(n)) for n in names) == 2 * cfg.depth_double + cfg.depth_single
    layers = members(model)
    for name in names:
        layer, w = layers[name], file[name + ".weight"]
        if MODULATION.search(name):
            assert layer.weight.dtype == torch.bfloat16 and torch.equal(layer.weight, w), name
        else:
            q, s = _e4m3_per_tensor(w)
            assert layer.weight.dtype == torch.float8_e4m3fn, name
            assert torch.equal(layer.weight.view(torch.uint8), q.view(torch.uint8)), name
            assert torch.allclose(layer.scale_weight, s), name


def test_the_fp8_formats_and_random_weights_follow_the_same_records():
    cfg = AvatarConfig.tiny()
    for fmt, plain_mod in (("fast", True), ("fp8_e4m3fn_fast", False), ("fp8_e4m3fn", False)):
        model = RandomSpec(config=cfg, weight_format=fmt, attention="sdpa").build("cpu").diffusion_model
        layers = members(model)
        for name in block_linear_names(model):
            stored = layers[name].weight.dtype == torch.float8_e4m3fn
            assert stored != (plain_mod and bool(MODULATION.search(name))), (fmt, name)
