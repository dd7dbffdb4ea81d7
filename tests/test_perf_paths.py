"""CPU checks of the performance paths: each fast/low-memory option computes the default path's function."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_model import tiny_inputs

from avatar_core.config import AvatarConfig
from avatar_core.loading import build_random_transformer
from avatar_core.model import fused
from avatar_core.model.attention import segmented_attention
from avatar_core.model.fp8 import FP8Linear, enable_fp8_, quantize_weight
from avatar_core.model.layers import RMSNorm
from avatar_core.model.offload import BlockSwap
from avatar_core.model.options import RunOptions
from avatar_core.model.rope import apply_rope
from avatar_core.sampling.stepcache import StepCache, StepCacheConfig


@pytest.fixture(scope="module")
def model():
    return build_random_transformer(AvatarConfig.tiny(), seed=3)


def _call(m, inp, **kw):
    inp = dict(inp)
    with torch.no_grad():
        return m(inp.pop("x"), inp.pop("t"), **inp, **kw)


def _close(a, b, tol=1e-5):
    assert ((a - b).norm() / b.norm()).item() < tol


def test_chunked_tokens_equal_unchunked(model):
    inp = tiny_inputs(B=2)
    ref = _call(model, inp)
    _close(_call(model, inp, options=RunOptions(chunk_tokens=5)), ref)   # many chunks, a ragged last one


def test_block_swap_equals_resident():
    m = build_random_transformer(AvatarConfig.tiny(), seed=4)
    inp = tiny_inputs(B=2, seed=1)
    ref, ref_cache = _call(m, inp, return_cache=True)
    swap = BlockSwap(m, "cpu", resident=1)
    assert len(swap.swapped) == len(m.double_blocks) + len(m.single_blocks) - 1
    out, cache = _call(m, inp, return_cache=True)
    assert torch.equal(out, ref) and torch.equal(cache, ref_cache)
    assert torch.equal(_call(m, inp, cached_tokens=cache), _call(m, inp, cached_tokens=ref_cache))
    swap.remove()
    assert torch.equal(_call(m, inp), ref)


def test_step_cache_threshold_zero_is_uncached(model):
    inp = tiny_inputs(B=2, seed=2)
    refs = [_call(model, dict(inp, t=torch.full((2,), t))) for t in (900.0, 880.0, 860.0)]
    sc = StepCache(StepCacheConfig(threshold=0.0))
    outs = [_call(model, dict(inp, t=torch.full((2,), t)), step_cache=sc) for t in (900.0, 880.0, 860.0)]
    assert sc.skipped == 0 and sc.calls == 3
    for o, r in zip(outs, refs):
        assert torch.equal(o, r)
    sc = StepCache(StepCacheConfig(threshold=1e9, max_skips_in_row=1))  # skips every other call
    outs = [_call(model, dict(inp, t=torch.full((2,), t)), step_cache=sc) for t in (900.0, 899.0, 898.0, 897.0)]
    assert sc.skipped == 2                # calls 2 and 4
    assert all(torch.isfinite(o).all() for o in outs)
    assert not torch.equal(outs[1], _call(model, dict(inp, t=torch.full((2,), 899.0))))


def test_step_cache_keys_keep_separate_histories():
    sc = StepCache(StepCacheConfig(threshold=1e9))
    a, b = torch.ones(1, 4, 2), torch.full((1, 4, 2), 5.0)
    for key, first in (("w0", a), ("w1", b)):
        with sc.stream(key):
            assert sc.lookup(first + 1, first) is None
            sc.store(first + 1, first + 3)
    with sc.stream("w1"):
        assert torch.equal(sc.lookup(b + 1, b), b + 3)


def test_fp8_linear_output_rows_equal_full_slice():
    torch.manual_seed(0)
    lin = FP8Linear(32, 48)
    q, s = quantize_weight(torch.randn(48, 32))
    lin.weight.data, lin.scale_weight, lin.bias.data = q, s, torch.randn(48)
    x = torch.randn(5, 32)
    assert torch.allclose(lin(x, 16, 40), lin(x)[:, 16:40])


def test_fp8_model_close_to_bf16_path():
    m = build_random_transformer(AvatarConfig.tiny(), seed=5)
    inp = tiny_inputs(B=1, seed=3)
    ref = _call(m, inp)
    enable_fp8_(m, fast=True)                                 # fast falls back to dequantise on the CPU
    assert ((_call(m, inp) - ref).norm() / ref.norm()).item() < 0.1


def test_row_quantisation_roundtrip():
    x = torch.randn(7, 64) * torch.logspace(-2, 2, 7)[:, None]
    q, s = fused.quantize_rows_fp8(x)
    assert q.dtype == torch.float8_e4m3fn and s.shape == (7, 1)
    assert ((q.float() * s - x).norm(dim=1) / x.norm(dim=1)).max() < 0.05


def test_qkv_to_heads_matches_block_math():
    torch.manual_seed(1)
    H, Dh, R, first, n_rope = 2, 8, 6, 3, 7
    qn, kn = RMSNorm(Dh), RMSNorm(Dh)
    qn.weight.data.uniform_(0.5, 1.5), kn.weight.data.uniform_(0.5, 1.5)
    qkv = torch.randn(R, 3 * H * Dh)
    cos, sin = torch.randn(12, Dh).cos(), torch.randn(12, Dh).sin()
    bufs = tuple(torch.full((R + 2, H, Dh), float("nan")) for _ in range(3))
    fused.qkv_to_heads(qkv, qn, kn, (cos, sin), first, n_rope, bufs, 2)
    q, k, v = qkv.unflatten(-1, (3, H, Dh)).unbind(1)
    n = n_rope - first                                        # tokens 3..6 rotated, 7..8 not
    q_ref = qn(q)
    q_ref = torch.cat([apply_rope(q_ref[None, :n], cos[first:n_rope], sin[first:n_rope])[0], q_ref[n:]])
    assert torch.allclose(bufs[0][2:], q_ref) and torch.equal(bufs[2][2:], v)
    assert torch.isnan(bufs[1][:2]).all()


def test_a_failing_triton_kernel_falls_back_once_and_stays_off(monkeypatch, caplog):
    """A Triton too old for a kernel (or a build problem) logs once and leaves the PyTorch path, same result."""
    calls = []

    class Broken:
        def qkv_to_heads(self, *a):
            calls.append(1)
            raise RuntimeError("tl.split is not supported")
    monkeypatch.setattr(fused, "use_kernels", lambda *a, **k: True)
    monkeypatch.setattr(fused, "_load_kernels", lambda: Broken())
    monkeypatch.setattr(fused, "_failed", {})
    torch.manual_seed(3)
    qn, kn = RMSNorm(8), RMSNorm(8)
    qkv = torch.randn(5, 3 * 2 * 8)
    rope = (torch.randn(5, 8).cos(), torch.randn(5, 8).sin())
    bufs = [tuple(torch.empty(5, 2, 8) for _ in range(3)) for _ in range(3)]
    with caplog.at_level("WARNING", logger=fused.__name__):
        fused.qkv_to_heads(qkv, qn, kn, rope, 0, 5, bufs[0], 0)
        fused.qkv_to_heads(qkv, qn, kn, rope, 0, 5, bufs[1], 0)
    fused.qkv_to_heads(qkv, qn, kn, rope, 0, 5, bufs[2], 0, kernels=False)     # the reference
    assert len(calls) == 1 and "qk-norm + RoPE" in fused._failed
    assert sum("Triton qk-norm + RoPE kernel failed" in r.message for r in caplog.records) == 1
    for got in bufs[:2]:
        assert all(torch.equal(a, b) for a, b in zip(got, bufs[2]))


def test_segmented_attention_equals_per_segment_sdpa():
    torch.manual_seed(2)
    q, k, v = (torch.randn(2, 9, 2, 4) for _ in range(3))
    out = segmented_attention(q, k, v, [6, 9])
    for b, n in enumerate([6, 9]):
        for seg in (slice(0, n), slice(n, 9)):
            if seg.start == seg.stop:
                continue
            ref = F.scaled_dot_product_attention(*(t[b:b + 1, seg].transpose(1, 2) for t in (q, k, v)))
            assert torch.allclose(out[b:b + 1, seg], ref.transpose(1, 2).flatten(2), atol=1e-6)


def test_ln_modulate_reference_is_official_math():
    x, sh, sc = torch.randn(2, 5, 16), torch.randn(2, 1, 16), torch.randn(2, 1, 16)
    assert torch.equal(fused.ln_modulate(x, sh, sc), F.layer_norm(x, (16,), eps=1e-6) * (1 + sc) + sh)


def test_low_memory_option_equals_default():
    from avatar_core.runner import RunChoices
    m = build_random_transformer(AvatarConfig.tiny(), seed=6)
    inp = tiny_inputs(B=2, seed=4)
    ref = _call(m, inp)
    runner = RunChoices(weight_format="fp32", offload="low_memory", chunk_tokens=7).finish(m, "cpu")
    assert runner.offload is not None and runner.options.chunk_tokens == 7
    assert runner.info.swapped_blocks == len(m.double_blocks) + len(m.single_blocks) - 1
    _close(_call(m, inp, options=runner.options), ref)


def test_every_block_linear_reads_its_weight_through_weight_rows():
    """The linear family's one weight access (the seam a LoRA / weight patch uses): patching weight_rows of
    the plain and of the fp8 member changes the model's output."""
    from avatar_core.model.linear import Linear
    cfg = AvatarConfig.tiny()
    m = build_random_transformer(cfg, seed=7)
    inp = tiny_inputs(B=1, seed=5)
    # Every linear is a member now; the tiny config's audio adapters after its last double block never run.
    idle = {f"audio_adapter_blocks.{i}." for i, after in enumerate(cfg.adapter_after_double) if after >= cfg.depth_double}
    for member in (Linear, FP8Linear):
        if member is FP8Linear:
            enable_fp8_(m)
        ref = _call(m, inp)
        original, seen = member.weight_rows, set()

        def patched(self, dtype=None, start=0, stop=None, o=original, seen=seen):
            seen.add(id(self))
            return 1.01 * o(self, dtype, start, stop)
        member.weight_rows = patched
        try:
            assert not torch.equal(_call(m, inp), ref), member.__name__
        finally:
            member.weight_rows = original
        assert seen == {id(mod) for name, mod in m.named_modules()  # every member that runs, no other path
                        if type(mod) is member and not any(name.startswith(p) for p in idle)}
        assert torch.equal(_call(m, inp), ref)
