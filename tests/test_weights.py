"""The linear family owns the weights: a new weight format is one record, patches restore exactly, and
block swap never leaves a stale or half-swapped weight behind (a failed forward, a step-cache skip)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from test_lora import comfy_layout
from test_model import tiny_inputs

from avatar_core.config import AvatarConfig
from avatar_core.loading import build_random_transformer, load_transformer
from avatar_core.lora import load_lora, set_loras
from avatar_core.model import formats
from avatar_core.model.fp8 import FP8_E4M3_ROWS
from avatar_core.model.linear import Family, Linear, Storage, members, store_blocks_
from avatar_core.model.offload import BlockSwap
from avatar_core.model.patches import LowRank
from avatar_core.runner import RandomSpec
from avatar_core.sampling.stepcache import StepCache, StepCacheConfig

CFG = AvatarConfig.tiny()


def _call(m, inp, **kw):
    inp = dict(inp)
    with torch.no_grad():
        return m(inp.pop("x"), inp.pop("t"), **inp, **kw)


# ---------------------------------------------------------------- a new weight format: one record
def _int8_rows(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    scale = (w.float().abs().amax(dim=1, keepdim=True) / 127).clamp_min(1e-12)     # (out, 1)
    return (w.float() / scale).round().clamp(-127, 127).to(torch.int8), scale


def _from_int8_rows(q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    return q.to(dtype or torch.float32) * scale.to(dtype or torch.float32)


INT8_ROWS = Storage("int8_rows", torch.int8, scale="row", quantise=_int8_rows, dequantise=_from_int8_rows)


@pytest.fixture(params=["int8_rows", "fp8_e4m3fn_rows"])
def new_format(request, monkeypatch):
    """The whole change a new weight format needs: one entry in model/formats.py WEIGHT_FORMATS (int8_rows with
    its Storage record above; fp8_e4m3fn_rows with model/fp8.py's, which bench/fp8_frontier.py measures)."""
    storage = {"int8_rows": INT8_ROWS, "fp8_e4m3fn_rows": FP8_E4M3_ROWS}[request.param]
    monkeypatch.setitem(formats.WEIGHT_FORMATS, request.param, formats.WeightFormat(torch.float32, Family(storage)))
    return request.param


def test_a_new_weight_format_is_one_record(new_format, tmp_path):
    ref = build_random_transformer(CFG, seed=1)
    runner = RandomSpec(config=CFG, seed=1, weight_format=new_format).build("cpu")
    model = runner.diffusion_model
    layer = model.double_blocks[1].img_attn_qkv
    storage = formats.WEIGHT_FORMATS[new_format].storage
    assert layer.weight.dtype == storage.dtype and layer.scale_weight.shape == (layer.out_features, 1)
    inp = tiny_inputs(seed=2)
    want = _call(ref, inp)
    got = _call(model, inp)
    assert ((got - want).norm() / want.norm()).item() < 0.05          # int8 / fp8 rows: a small, real error
    assert not torch.equal(got, want)
    x = torch.randn(5, layer.in_features)
    torch.testing.assert_close(layer.rows(x, 8, 40), layer(x)[:, 8:40])  # the row seam blocks and Ulysses use
    # loading a file into the format: the same quantisation as converting the loaded model
    path = tmp_path / "m.safetensors"
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))
    loaded = load_transformer(path, config=CFG, dtype=torch.float32, operations=formats.WEIGHT_FORMATS[new_format].operations)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in loaded.state_dict().items())
    # LoRA: merged into the int8 storage (one requantisation) and restored bit for bit; block swap streams it
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sd, expected = comfy_layout()
    base = layer.read_weight()
    set_loras(model, [(load_lora(sd, model), 1.0)])
    delta = layer.read_weight() - base
    want_delta = expected["double_blocks.1.img_attn_qkv"]
    assert ((delta - want_delta).norm() / want_delta.norm()).item() < 0.1      # one requantisation (fp8: 0.08)
    patched = _call(model, inp)
    swapped = RandomSpec(config=CFG, seed=1, weight_format=new_format, offload="low_memory").build("cpu")
    set_loras(swapped.diffusion_model, [(load_lora(sd, swapped.diffusion_model), 1.0)])
    assert torch.equal(_call(swapped.diffusion_model, inp), patched)
    set_loras(model, [])
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_a_format_that_keeps_patches_beside_the_weight_applies_them_at_use():
    """merge=False: the stored tensors never change; every use sees the patched weight."""
    model = build_random_transformer(CFG, seed=1)
    store_blocks_(model, Family(Storage("int8_rows_unmerged", torch.int8, "row", _int8_rows, _from_int8_rows,
                                        merge=False)))
    layer = model.single_blocks[1].linear1
    stored = {k: v.clone() for k, v in layer.stored().items()}
    base, bias = layer.weight_rows(torch.float32), layer.bias_rows(torch.float32)
    sd, expected = comfy_layout()
    sd["diffusion_model.single_blocks.1.linear1.diff_b"] = diff_b = torch.randn(layer.out_features)
    set_loras(model, [(load_lora(sd, model), 0.5)])
    assert all(torch.equal(v, stored[k]) for k, v in layer.stored().items())
    torch.testing.assert_close(layer.weight_rows(torch.float32), base + 0.5 * expected["single_blocks.1.linear1"])
    torch.testing.assert_close(layer.bias_rows(torch.float32, 2, 7), (bias + 0.5 * diff_b)[2:7])
    torch.testing.assert_close(layer.weight_rows(torch.float32, 3, 9), (base + 0.5 * expected["single_blocks.1.linear1"])[3:9])
    set_loras(model, [])
    assert torch.equal(layer.weight_rows(torch.float32), base)


# ---------------------------------------------------------------- the member interface
def test_a_write_goes_to_the_stored_weight_never_to_a_staged_copy():
    layer = Linear(4, 3)
    home = layer.weight.detach()
    layer.stage({"weight": torch.zeros(3, 4), "bias": torch.zeros(3)})
    assert torch.equal(layer(torch.ones(1, 4)), torch.zeros(1, 3))            # computes from the copy
    version = layer.weight_version
    layer.write_weight(torch.ones(3, 4))
    assert layer.weight.data_ptr() == home.data_ptr() and torch.equal(home, torch.ones(3, 4))  # home, unstaged
    assert layer.weight_version == version + 1


def test_patches_apply_in_order_and_restore_exactly():
    layer = Linear(6, 4)
    before = layer.snapshot()
    up, down = torch.randn(4, 2), torch.randn(2, 6)
    dora = LowRank(up, down, 1.0, dora_scale=torch.rand(4, 1) + 0.5)
    plain = LowRank(up, down, 4.0)
    w0 = layer.read_weight()
    layer.set_patches([(plain, 0.5), (dora, 1.0)])
    w1 = w0 + 0.5 * 2.0 * up @ down                                           # alpha / rank = 2
    calc = w1 + 0.5 * up @ down
    want = calc * dora.dora_scale / (w1.norm(dim=1, keepdim=True) + torch.finfo(torch.float32).eps)
    torch.testing.assert_close(layer.read_weight(), want)
    layer.set_patches([])
    assert all(torch.equal(layer.stored()[k], v) for k, v in before.items())


# ---------------------------------------------------------------- block swap: failures and shortened forwards
def _pair():
    ref, swapped = build_random_transformer(CFG, seed=5), build_random_transformer(CFG, seed=5)
    return ref, swapped, BlockSwap(swapped, "cpu", resident=1)


@pytest.mark.parametrize("failing", [0, 2])
def test_a_failed_forward_inside_a_swapped_block_leaves_no_stale_weight(failing):
    """The bug of issue 23: an error inside a swapped block, then a LoRA strength change, then later forwards."""
    ref, swapped, _ = _pair()
    sd = comfy_layout()[0]
    set_loras(swapped, [(load_lora(sd, swapped), 1.0)])
    inp = tiny_inputs(seed=3)
    norm = swapped.double_blocks[failing].img_attn_q_norm

    def out_of_memory(*a, **k):
        raise torch.OutOfMemoryError("injected: CUDA out of memory")
    norm.forward = out_of_memory
    with pytest.raises(torch.OutOfMemoryError):
        _call(swapped, inp)
    del norm.forward
    for m in members(swapped).values():  # nothing left staged: every member computes from its stored tensors
        assert m.weight.data_ptr() == m.stored()["weight"].data_ptr()
    set_loras(swapped, [(load_lora(sd, swapped), 0.5)])
    set_loras(ref, [(load_lora(sd, ref), 0.5)])
    want = _call(ref, inp)
    for _ in range(2):
        assert torch.equal(_call(swapped, inp), want)
    set_loras(swapped, [])
    set_loras(ref, [])
    assert torch.equal(_call(swapped, inp), _call(ref, inp))


def test_a_step_cache_skip_then_a_lora_change_uses_the_new_weights():
    """A skipped step runs only the first block, so the next block's copy is taken and never used by it."""
    ref, swapped, _ = _pair()
    sd = comfy_layout()[0]  # patches double_blocks.1, the block prefetched while block 0 runs
    set_loras(swapped, [(load_lora(sd, swapped), 1.0)])
    inp = tiny_inputs(seed=3)
    cache = StepCache(StepCacheConfig(threshold=1e9, max_skips_in_row=1))
    _call(swapped, inp, step_cache=cache)
    _call(swapped, dict(inp, t=torch.full((1,), 499.0)), step_cache=cache)
    assert cache.skipped == 1
    set_loras(swapped, [(load_lora(sd, swapped), 0.5)])
    set_loras(ref, [(load_lora(sd, ref), 0.5)])
    assert torch.equal(_call(swapped, inp), _call(ref, inp))
