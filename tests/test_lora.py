"""LoRA loading: every key layout mapped layer by layer, exact restore (bf16, fp8, block swap), wrong families."""

from __future__ import annotations

import logging

import pytest
import torch
from safetensors.torch import save_file
from test_model import call, tiny_inputs

from avatar_core.config import AvatarConfig
from avatar_core.errors import InputError
from avatar_core.loading import build_random_transformer
from avatar_core.lora import LoraError, load_lora, set_loras
from avatar_core.model.fp8 import FP8Linear, enable_fp8_
from avatar_core.model.offload import BlockSwap

CFG = AvatarConfig.tiny()
D, M = CFG.hidden_size, CFG.mlp_hidden
R = 4


def _factors(out_rows: int, in_dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(out_rows, R, generator=g) * 0.1, torch.randn(R, in_dim, generator=g) * 0.1  # up, down


def _model(dtype=torch.bfloat16):
    return build_random_transformer(CFG, dtype=dtype, seed=5)


# Expected deltas are built per layer from the factors with torch.cat (no row-range code of ours involved).
def comfy_layout(suffixes=("lora_up.weight", "lora_down.weight"), prefix="diffusion_model.", internal=False):
    """ComfyUI / diffusion-pipe keys (official names, or ComfyUI's internal spelling), with alpha = 2 * rank."""
    sd, expected = {}, {}
    layers = {"double_blocks.1.img_attn_qkv": (3 * D, D), "double_blocks.0.txt_mlp.fc2": (D, M),
              "single_blocks.1.linear1": (3 * D + M, D), "double_blocks.2.img_mod.linear": (6 * D, D)}
    spelled = {"double_blocks.1.img_attn_qkv": "double_blocks.1.img_attn.qkv", "double_blocks.0.txt_mlp.fc2":
               "double_blocks.0.txt_mlp.2", "single_blocks.1.linear1": "single_blocks.1.linear1",
               "double_blocks.2.img_mod.linear": "double_blocks.2.img_mod.lin"}
    for i, (name, (o, n)) in enumerate(layers.items()):
        up, down = _factors(o, n, i)
        key = prefix + (spelled[name] if internal else name)
        sd[f"{key}.{suffixes[0]}"], sd[f"{key}.{suffixes[1]}"] = up, down
        sd[f"{key}.alpha"] = torch.tensor(2.0 * R)
        expected[name] = 2.0 * up @ down
    return sd, expected


def musubi_layout():
    sd, expected = {}, {}
    for i, (name, (o, n)) in enumerate({"double_blocks.3.txt_attn_proj": (D, D),
                                         "single_blocks.0.linear2": (D, D + M)}.items()):
        up, down = _factors(o, n, 10 + i)
        key = "lora_unet_" + name.replace(".", "_")
        sd[key + ".lora_up.weight"], sd[key + ".lora_down.weight"], sd[key + ".alpha"] = up, down, torch.tensor(1.0)
        expected[name] = up @ down / R
    return sd, expected


def diffusers_layout():
    """PEFT keys (lora_A / lora_B, no alpha): q, k, v and proj_mlp are separate layers in diffusers."""
    sd, expected = {}, {}
    parts = [_factors(D, D, 20 + i) for i in range(3)]
    for (up, down), n in zip(parts, ("to_q", "to_k", "to_v")):
        sd[f"transformer.transformer_blocks.1.attn.{n}.lora_A.weight"] = down
        sd[f"transformer.transformer_blocks.1.attn.{n}.lora_B.weight"] = up
    expected["double_blocks.1.img_attn_qkv"] = torch.cat([u @ d for u, d in parts])
    single = [_factors(D, D, 30 + i) for i in range(3)] + [_factors(M, D, 33)]
    for (up, down), n in zip(single, ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp")):
        sd[f"transformer.single_transformer_blocks.0.{n}.lora_A.weight"] = down
        sd[f"transformer.single_transformer_blocks.0.{n}.lora_B.weight"] = up
    expected["single_blocks.0.linear1"] = torch.cat([u @ d for u, d in single])
    up, down = _factors(D, D, 40)
    sd["transformer.transformer_blocks.2.attn.to_add_out.lora_A.weight"] = down
    sd["transformer.transformer_blocks.2.attn.to_add_out.lora_B.weight"] = up
    expected["double_blocks.2.txt_attn_proj"] = up @ down
    return sd, expected


LAYOUTS = {
    "comfy_up_down": lambda: comfy_layout(),
    "comfy_A_B_transformer_prefix": lambda: comfy_layout(("lora_B.weight", "lora_A.weight"), "transformer."),
    "comfy_internal_spelling": lambda: comfy_layout(internal=True),
    "musubi": musubi_layout,
    "diffusers": diffusers_layout,
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_each_layout_patches_exactly_its_layers(layout, tmp_path):
    sd, expected = LAYOUTS[layout]()
    path = tmp_path / f"{layout}.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    model = _model(torch.float32)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    lora = load_lora(path, model)
    assert lora.unmatched == () and lora.matched == len({k.rsplit(".", 2)[0] for k in sd if "lora" in k})
    set_loras(model, [(lora, 0.5)])
    after = model.state_dict()
    for name, delta in expected.items():
        torch.testing.assert_close(after[name + ".weight"], before[name + ".weight"] + 0.5 * delta,
                                   rtol=1e-5, atol=1e-6)
    untouched = [k for k in after if k.rsplit(".", 1)[0] not in expected]
    assert all(torch.equal(after[k], before[k]) for k in untouched)


def _all_equal(model, before) -> bool:
    return all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("storage", ["bf16", "fp8", "block_swap", "fp8+block_swap"])
def test_strength_change_and_unload_restore_bitwise(storage):
    model = _model()
    if "fp8" in storage:
        enable_fp8_(model)
        assert isinstance(model.double_blocks[1].img_attn_qkv, FP8Linear)
    swap = BlockSwap(model, "cpu", resident=1) if "block_swap" in storage else None
    inp = tiny_inputs()
    base_out = call(model, inp)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    lora = load_lora(comfy_layout()[0], model)
    set_loras(model, [(lora, 1.0)])
    patched_out = call(model, inp)
    assert not _all_equal(model, before) and not torch.equal(patched_out, base_out)
    set_loras(model, [(lora, 0.3)])
    set_loras(model, [(lora, 0.3), (load_lora(musubi_layout()[0], model), -1.0)])
    set_loras(model, [])
    assert _all_equal(model, before)
    assert torch.equal(call(model, inp), base_out)
    if swap is not None:
        swap.remove()


def test_block_swap_streams_the_patched_weights():
    """Weights held on the host (block swap): the forward sees the patch, as an unswapped model does."""
    plain, swapped = _model(), _model()
    BlockSwap(swapped, "cpu", resident=1)
    sd = comfy_layout()[0]
    set_loras(plain, [(load_lora(sd, plain), 1.0)])
    set_loras(swapped, [(load_lora(sd, swapped), 1.0)])
    inp = tiny_inputs(seed=3)
    assert torch.equal(call(plain, inp), call(swapped, inp))


def test_fp8_patch_is_requantised_close_to_the_merged_weight():
    model = _model(torch.float32)
    enable_fp8_(model)
    layer = model.double_blocks[1].img_attn_qkv
    sd, expected = comfy_layout()
    base = layer.read_weight()
    set_loras(model, [(load_lora(sd, model), 1.0)])
    want = base + expected["double_blocks.1.img_attn_qkv"]
    err = (layer.read_weight() - want).abs().max() / want.abs().max()
    assert err < 0.07  # one e4m3 rounding (3 mantissa bits)


def test_wrong_family_fails_clearly():
    wan = {f"diffusion_model.blocks.{i}.self_attn.q.lora_down.weight": torch.zeros(R, 5120) for i in range(3)}
    wan.update({f"diffusion_model.blocks.{i}.self_attn.q.lora_up.weight": torch.zeros(5120, R) for i in range(3)})
    with pytest.raises(LoraError, match="another model family") as err:
        load_lora(wan, _model())
    # the message shows the file's first keys (sorted), so the user sees which model it was made for
    assert "keys such as diffusion_model.blocks.0.self_attn.q.lora_down.weight, " in str(err.value)


def test_same_names_other_size_fails_clearly():
    sd = {"diffusion_model.double_blocks.0.img_attn_qkv.lora_down.weight": torch.zeros(R, 3072),
          "diffusion_model.double_blocks.0.img_attn_qkv.lora_up.weight": torch.zeros(9216, R)}
    with pytest.raises(LoraError, match="another size or family"):
        load_lora(sd, _model())


def test_partial_match_warns_with_counts(caplog):
    sd, _ = musubi_layout()
    sd["lora_unet_not_a_layer.lora_down.weight"] = torch.zeros(R, D)
    sd["lora_unet_not_a_layer.lora_up.weight"] = torch.zeros(D, R)
    sd["some.dora_scale"] = torch.zeros(D)
    with caplog.at_level(logging.WARNING):
        lora = load_lora(sd, _model())
    assert lora.matched == 2 and len(lora.unmatched) == 2
    assert "2 LoRA modules applied, 2 not matched" in caplog.text


def test_pickled_files_are_refused(tmp_path):
    path = tmp_path / "x.pt"
    path.write_bytes(b"not read")
    with pytest.raises(InputError, match="safetensors only"):  # the file-level checks: weight_files.LORA
        load_lora(path, _model())


def test_other_adapter_types_are_named():
    loha = {"lora_unet_double_blocks_0_img_attn_qkv.hada_w1_a": torch.zeros(4, 4)}
    with pytest.raises(LoraError, match="LoHa, LoKr"):
        load_lora(loha, _model())


def test_lora_files_by_path_are_read_once_and_applied(tmp_path):
    from avatar_core.lora import set_lora_files
    path = tmp_path / "a.safetensors"
    save_file({k: v.contiguous() for k, v in comfy_layout()[0].items()}, str(path))
    model, ref = _model(), _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    set_lora_files(model, [(str(path), 0.7)])
    set_lora_files(model, [(str(path), 0.7)])                       # same request: nothing redone
    set_loras(ref, [(load_lora(path, ref), 0.7)])
    assert len(model._avatar_lora_files) == 1
    assert all(torch.equal(v, ref.state_dict()[k]) for k, v in model.state_dict().items())
    set_lora_files(model, [])
    assert _all_equal(model, before)
