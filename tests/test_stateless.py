"""The model holds weights and structure only: a run with every per-run choice set leaves no trace on it."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
import torch
from test_pool_inputs import CFG, conditioning

from avatar_core.config import AvatarConfig
from avatar_core.loading import build_random_transformer
from avatar_core.model import AvatarTransformer
from avatar_core.runner import RunChoices
from avatar_core.sampling import DeepCacheConfig, SamplerConfig
from avatar_core.sampling.stepcache import StepCacheConfig
from avatar_core.sampling.windows import WindowConfig

PLAIN = (int, float, str, bool, type(None), tuple, torch.dtype, torch.device, AvatarConfig)


def _value(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        return ("tensor", id(v), v.data_ptr(), v.dtype, v.device, tuple(v.shape), v.detach().clone())
    if isinstance(v, PLAIN):
        return v
    if isinstance(v, dict):  # hooks, submodules, parameters, buffers, lookup tables
        return {k: _value(x) if not isinstance(x, torch.nn.Module) else id(x) for k, x in v.items()}
    return ("object", type(v).__name__, id(v))


def snapshot(model: torch.nn.Module) -> dict[str, dict[str, Any]]:
    """Every attribute of every module (parameters and buffers with identity, storage and values)."""
    return {name: {k: _value(v) for k, v in vars(mod).items()} for name, mod in model.named_modules()}


def _same(a: Any, b: Any, where: str) -> None:
    if isinstance(a, tuple) and a and a[0] == "tensor":
        assert a[:6] == b[:6] and torch.equal(a[6], b[6]), f"{where} changed"
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), f"{where}: {sorted(set(a) ^ set(b))}"
        for k in a:
            _same(a[k], b[k], f"{where}.{k}")
    else:
        assert a == b, f"{where}: {a!r} -> {b!r}"


def assert_unchanged(before: dict, after: dict) -> None:
    assert before.keys() == after.keys()
    for name in before:
        _same(before[name], after[name], name or "<model>")


@pytest.mark.parametrize("offload", ["none", "low_memory"])
def test_a_run_leaves_the_model_as_it_was(offload: str) -> None:
    """Step cache, deep cache, chunking, offload, attention choice, long-video windows: all on, nothing stays."""
    runner = RunChoices(weight_format="fp32", offload=offload, chunk_tokens=40, attention="flash_attn").finish(
        build_random_transformer(CFG, seed=0), "cpu")
    model = runner.diffusion_model
    before = snapshot(model)
    config = SamplerConfig(steps=3, seed=1, windows=WindowConfig(9, 3), deep_cache=DeepCacheConfig(cached_steps=(2,)),
                           step_cache=StepCacheConfig(1e9, 1))
    res = runner.sample(conditioning(window=9, frames=120), config)
    assert res.step_cache.skipped > 0
    runner.sample(conditioning(window=9, frames=120, chars=2), replace(config, split_cfg=True))
    assert_unchanged(before, snapshot(model))


def test_the_snapshot_sees_a_per_run_attribute() -> None:
    """Guard: what the old code did (settings written onto the shared model) is caught."""
    model = build_random_transformer(CFG, seed=0)
    before = snapshot(model)
    model.run_note = object()
    with pytest.raises(AssertionError, match="run_note"):
        assert_unchanged(before, snapshot(model))
    del model.run_note
    model.double_blocks[0].img_mlp.fc1.weight.data.mul_(2)
    with pytest.raises(AssertionError, match="fc1"):
        assert_unchanged(before, snapshot(model))


def test_the_model_has_no_run_attributes() -> None:
    with torch.device("meta"):
        model = AvatarTransformer(AvatarConfig.tiny())
    for name in ("chunk_tokens", "fused_kernels", "step_cache", "attention_backend", "block_swap",
                 "sequence_parallel", "_rope_tables"):
        assert not hasattr(model, name), name
    with pytest.raises(AttributeError, match="chunk_tokens is a per-run choice"):
        model.chunk_tokens = 4096  # old code that wrote settings onto the model fails loudly
