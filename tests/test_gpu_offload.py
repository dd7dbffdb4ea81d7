"""Block swap on a CUDA GPU (pinned host weights, side-stream copies): a forward that fails inside a swapped
block, or a step-cache skip, then a LoRA change, and later forwards still see the current weights (CI has no GPU).

Run on the device: python -m pytest tests/test_gpu_offload.py -q
"""

from __future__ import annotations

import pytest
import torch
from test_lora import comfy_layout
from test_model import tiny_inputs

from avatar_core.config import AvatarConfig
from avatar_core.loading import build_random_transformer
from avatar_core.lora import load_lora, set_loras
from avatar_core.model.fp8 import enable_fp8_
from avatar_core.model.linear import members
from avatar_core.model.offload import BlockSwap
from avatar_core.sampling.stepcache import StepCache, StepCacheConfig

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (block swap's pinned-memory "
                                                                     "and side-stream path)")
CFG = AvatarConfig.tiny()


def _call(m, inp, **kw):
    inp = {k: v.cuda() if isinstance(v, torch.Tensor) else v for k, v in inp.items()}
    with torch.no_grad():
        return m(inp.pop("x"), inp.pop("t"), **inp, **kw)


TOL = {"fp32": 1e-5, "fp8_fast": 1e-2}  # fp8_fast: bf16 activations, fp8 tensor-core matmuls


def _pair(weights: str):
    models = []
    for _ in range(2):
        m = build_random_transformer(CFG, dtype=torch.float32 if weights == "fp32" else torch.bfloat16, seed=5)
        if weights == "fp8_fast":
            enable_fp8_(m, fast=True)
        models.append(m)
    ref, swapped = models
    ref.cuda()
    swap = BlockSwap(swapped, "cuda", resident=1)
    assert all(m.stored()["weight"].is_pinned() for b in swap.swapped for m in members(b).values())
    return ref, swapped


def _set(model, sd, strength):
    set_loras(model, [(load_lora(sd, model), strength)], compute_device="cuda")


@pytest.mark.parametrize("weights", ["fp32", "fp8_fast"])
@pytest.mark.parametrize("failing", [0, 2])
def test_a_failed_forward_inside_a_swapped_block_leaves_no_stale_weight(weights, failing):
    ref, swapped = _pair(weights)
    sd = comfy_layout()[0]
    _set(swapped, sd, 1.0)
    inp = tiny_inputs(seed=3)
    # A module every kernel path calls (the fused qk-norm + RoPE pass of fp8_fast on CUDA skips the norms'
    # forward): the block's last linear, so the failure comes after the block's weights were swapped in.
    failing_layer = swapped.double_blocks[failing].img_mlp.fc2

    def out_of_memory(*a, **k):
        raise torch.OutOfMemoryError("injected: CUDA out of memory")
    failing_layer.forward = out_of_memory
    with pytest.raises(torch.OutOfMemoryError):
        _call(swapped, inp)
    del failing_layer.forward
    assert all(m.weight.device.type == "cpu" for b in swapped.double_blocks[:2] for m in members(b).values())
    tol = TOL[weights]
    _set(ref, sd, 1.0)
    stale = _call(ref, inp)                                  # what a stale strength-1.0 weight would give
    _set(swapped, sd, 0.5)
    _set(ref, sd, 0.5)
    want = _call(ref, inp)
    assert (stale - want).abs().max() > 20 * tol            # the check below can see the bug
    for _ in range(2):
        torch.testing.assert_close(_call(swapped, inp), want, rtol=tol, atol=tol)
    set_loras(swapped, [], compute_device="cuda")
    set_loras(ref, [], compute_device="cuda")
    torch.testing.assert_close(_call(swapped, inp), _call(ref, inp), rtol=tol, atol=tol)


def test_a_step_cache_skip_then_a_lora_change_uses_the_new_weights():
    ref, swapped = _pair("fp32")
    sd = comfy_layout()[0]
    _set(swapped, sd, 1.0)
    inp = tiny_inputs(seed=3)
    cache = StepCache(StepCacheConfig(threshold=1e9, max_skips_in_row=1))
    _call(swapped, inp, step_cache=cache)
    _call(swapped, dict(inp, t=torch.full((1,), 499.0)), step_cache=cache)
    assert cache.skipped == 1
    _set(swapped, sd, 0.5)
    _set(ref, sd, 0.5)
    torch.testing.assert_close(_call(swapped, inp), _call(ref, inp), rtol=1e-5, atol=1e-5)
