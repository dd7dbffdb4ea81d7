"""The attention-kernel registry and the fp8 quantisation of q/k/v (CPU parts; the GPU kernels are checked by
tests/test_gpu_attention.py on a Hopper device)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from avatar_core.model import attention as A
from avatar_core.model.fused import quantize_segments_fp8


def _sdpa_segments(q, k, v, cu):
    """Reference: plain float SDPA per packed segment."""
    out = torch.empty_like(q)
    for a, b in zip(cu[:-1], cu[1:]):
        out[a:b] = F.scaled_dot_product_attention(*(t[None, a:b].transpose(1, 2) for t in (q, k, v)))[0].transpose(0, 1)
    return out


def test_registry_names_and_resolution():
    assert A.backends()[0] == "auto" and {"sdpa", "fa3", "fa3_fp8"} <= set(A.KERNELS)
    assert A.available_kernels()[:1] == ["auto"] and "sdpa" in A.available_kernels()
    assert A.resolve_backend(None) == "auto" and A.resolve_backend("sdpa") == "sdpa"
    with pytest.raises(ValueError, match="unknown attention backend"):
        A.resolve_backend("flash4")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU fallback")
def test_unavailable_kernels_fall_back_to_sdpa_on_cpu():
    q = torch.randn(1, 4, 2, 8)
    for name in ("fa3", "fa3_fp8", "auto"):
        assert A.pick(name, q).name == "sdpa"
    assert A.resolve_backend("fa3") == "auto"          # FA3 needs a Hopper GPU and its wheel
    assert "fa3" not in A.available_kernels()


def test_cu_seqlens_drop_empty_segments():
    assert A._cu_seqlens([6, 9], 9) == [0, 6, 9, 18]
    assert A._cu_seqlens([9, 9], 9) == [0, 9, 18]
    assert A._cu_seqlens([4, 7], 9) == [0, 4, 9, 16, 18]


def test_varlen_record_is_one_registration_and_matches_slicing():
    """A new kernel is one record; its varlen entry gets the packed segments of every sample."""
    calls = []

    def varlen(q, k, v, cu):
        calls.append(cu)
        return _sdpa_segments(q, k, v, cu)
    A.register(A.AttentionKernel("test_varlen", A._sdpa, lambda q: True, varlen=varlen))
    try:
        torch.manual_seed(3)
        q, k, v = (torch.randn(2, 9, 2, 4) for _ in range(3))
        out = A.segmented_attention(q, k, v, [6, 9], "test_varlen")
        assert calls == [[0, 6, 9, 18]]
        assert torch.allclose(out, A.segmented_attention(q, k, v, [6, 9], "sdpa"), atol=1e-6)
    finally:
        del A.KERNELS["test_varlen"]


def test_quantize_segments_scales_and_roundtrip():
    torch.manual_seed(4)
    x = torch.randn(40, 3, 16) * torch.tensor([1.0, 10.0, 0.1])[None, :, None]
    cu = [0, 30, 40]
    x8, s = quantize_segments_fp8(x, cu)
    assert x8.dtype == torch.float8_e4m3fn and s.shape == (2, 3)
    back = x8.float() * s.repeat_interleave(torch.tensor([30, 10]), dim=0)[:, :, None]
    assert ((back - x).norm() / x.norm()) < 0.05                    # e4m3: 3 mantissa bits
    assert torch.allclose(s[0], x[:30].abs().amax(dim=(0, 2)) / 448.0)


def test_smoothing_keys_and_values_leaves_attention_unchanged():
    torch.manual_seed(5)
    q, k, v = (torch.randn(1, 24, 2, 8) for _ in range(3))
    k = k + 3.0                                                       # a common key offset
    smoothed = k - k.mean(dim=1, keepdim=True)
    assert torch.allclose(A._sdpa(q, k, v), A._sdpa(q, smoothed, v), atol=1e-5)
    v = v + 2.0                                                       # values: P (v - m) + m == P v
    m = v.mean(dim=1, keepdim=True)
    assert torch.allclose(A._sdpa(q, k, v), A._sdpa(q, k, v - m) + m, atol=1e-5)


def _fp8_attention_error(q, k, v, cu, per_tensor: bool) -> float:
    """Error of attention on dequantised e4m3 q/k/v (emulates the fp8 kernel's inputs, not its P rounding)."""
    if per_tensor:
        deq = [(t / (t.abs().amax() / 448)).to(torch.float8_e4m3fn).float() * (t.abs().amax() / 448) for t in (q, k, v)]
    else:
        sizes = torch.tensor([b - a for a, b in zip(cu[:-1], cu[1:])])
        deq = []
        for t, smooth in ((q, False), (k, True), (v, False)):
            t8, s = quantize_segments_fp8(t, cu, smooth=smooth)
            deq.append(t8.float() * s.repeat_interleave(sizes, dim=0)[:, :, None])
    ref = _sdpa_segments(q, k, v, cu)
    return ((_sdpa_segments(*deq, cu) - ref).norm() / ref.norm()).item()


def test_per_head_smoothed_scales_beat_naive_per_tensor():
    """Heads of different ranges and a key offset (as qk-norm weights give): our scales lose less."""
    torch.manual_seed(6)
    T, H, D, cu = 512, 4, 32, [0, 400, 512]
    spread = torch.tensor([0.01, 0.1, 1.0, 3.0])[None, :, None]
    q = torch.randn(T, H, D) * spread
    k = (torch.randn(T, H, D) + 3.0) * spread
    v = torch.randn(T, H, D) * spread
    ours, naive = _fp8_attention_error(q, k, v, cu, False), _fp8_attention_error(q, k, v, cu, True)
    assert ours < 0.5 * naive, (ours, naive)


def test_qk_fp8_scales_bound_every_head_vector():
    """The data-free e4m3 scales of q and k (fast preset): the worst case (a one-hot head vector on the largest
    norm weight) lands just under 448, and ordinary rows keep e4m3's relative precision (~2^-4)."""
    from avatar_core.model.fused import qk_fp8_scales, qkv_to_heads
    from avatar_core.model.layers import RMSNorm
    torch.manual_seed(0)
    H, D, R = 3, 16, 40
    qn, kn = RMSNorm(D), RMSNorm(D)
    with torch.no_grad():
        qn.weight.copy_(1 + 0.5 * torch.randn(D))
        kn.weight.copy_(0.2 * torch.randn(D))
    qkv = torch.randn(R, 3 * H * D)
    big = int(qn.weight.abs().argmax())
    qkv[0, :H * D] = 0
    qkv[0, big] = 5.0                                  # head 0 of q: one-hot where |w| is largest
    theta = torch.rand(R, D // 2) * 6.3
    rope = theta.cos().repeat_interleave(2, -1), theta.sin().repeat_interleave(2, -1)
    scales = qk_fp8_scales([qn], [kn])
    assert scales.shape == (2,) and torch.allclose(scales[1], kn.weight.abs().max() * D ** 0.5 * (1 + 1 / 128) / 448)
    ref = tuple(torch.empty(R, H, D) for _ in range(3))
    f8 = (torch.empty(R, H, D, dtype=torch.float8_e4m3fn), torch.empty(R, H, D, dtype=torch.float8_e4m3fn),
          torch.empty(R, H, D))
    with torch.no_grad():
        qkv_to_heads(qkv, qn, kn, rope, 0, R, ref, 0)
        qkv_to_heads(qkv, qn, kn, rope, 0, R, f8, 0, inv_scales=1.0 / scales)
    for i in range(2):
        codes = f8[i].float()
        assert (ref[i] / scales[i]).abs().max() <= 448          # the bound holds: nothing was clamped
        rel = ((codes * scales[i] - ref[i]).norm() / ref[i].norm()).item()
        assert rel < 4e-2, rel
    # the one-hot row: after RoPE its pair still has norm sqrt(D) * |w|, i.e. 448 / (1 + 1/128): the bound is tight
    assert (ref[0][0, 0] / scales[0]).norm() > 440
    assert torch.equal(f8[2], ref[2])


def test_fp8_heads_only_for_fa3_fp8_inference(monkeypatch):
    """The e4m3 q/k path is taken only for fa3_fp8, on a half-precision tensor of a head size FA3 was built for,
    with autograd off (FA3 has no backward: training keeps bf16 heads and falls back to another kernel)."""
    from dataclasses import replace
    monkeypatch.setitem(A.KERNELS, "fa3_fp8", replace(A.KERNELS["fa3_fp8"], available=lambda: True))
    monkeypatch.setattr(A.fa3, "supports", lambda q: q.dtype in (torch.float16, torch.bfloat16)   # as on a Hopper
                        and q.shape[-1] in A.fa3.HEAD_DIMS)
    like = torch.empty(0, dtype=torch.bfloat16)
    with torch.no_grad():
        assert A.fp8_heads_ready("fa3_fp8", like, 128)
        assert not A.fp8_heads_ready("fa3", like, 128) and not A.fp8_heads_ready("auto", like, 128)
        assert not A.fp8_heads_ready("fa3_fp8", like, 96)
        assert not A.fp8_heads_ready("fa3_fp8", like.float(), 128)
    assert not A.fp8_heads_ready("fa3_fp8", like, 128)                         # autograd on


def test_fp8_heads_is_a_capability_of_the_record(monkeypatch):
    """Any record with an `fp8_heads` entry gets the e4m3 q/k path, under its own `supports` and `available`;
    fa3_fp8 without the entry would not."""
    from dataclasses import replace
    like = torch.empty(0, dtype=torch.bfloat16)
    monkeypatch.setitem(A.KERNELS, "fp8_test", A.AttentionKernel("fp8_test", A._sdpa, lambda q: q.shape[-1] == 64,
                                                                 fp8_heads=lambda *a: None))
    with torch.no_grad():
        assert A.fp8_heads_ready("fp8_test", like, 64) and not A.fp8_heads_ready("fp8_test", like, 128)
        monkeypatch.setitem(A.KERNELS, "fp8_test", replace(A.KERNELS["fp8_test"], available=lambda: False))
        assert not A.fp8_heads_ready("fp8_test", like, 64)
        monkeypatch.setitem(A.KERNELS, "fa3_fp8", replace(A.KERNELS["fa3_fp8"], available=lambda: True,
                                                          supports=lambda q: True, fp8_heads=None))
        assert not A.fp8_heads_ready("fa3_fp8", like, 128)
        with pytest.raises(ValueError, match="no fp8_heads entry"):
            A.segmented_attention(*(torch.zeros(1, 4, 2, 8) for _ in range(3)), [4], "sdpa",
                                  qk_scales=torch.ones(2))


def test_a_kernel_registered_after_import_is_a_choice_everywhere():
    """The registry is read at use: a record registered now is accepted by RunOptions (not refused as unknown),
    listed by the loader's choices, and runs the model's attention."""
    from conftest import load_pack
    from test_model import call, tiny_inputs

    from avatar_core.config import AvatarConfig
    from avatar_core.loading import build_random_transformer
    from avatar_core.model.options import RunOptions
    calls = []

    def spy(q, k, v):
        calls.append(q.shape)
        return A._sdpa(q, k, v)
    with pytest.raises(ValueError, match="attention: 'late_spy' is not one of"):
        RunOptions(attention="late_spy")
    A.register(A.AttentionKernel("late_spy", spy, lambda q: True))
    pack_attention = load_pack("avatar_core.model.attention")       # the module the nodes import (pack name)
    pack_attention.register(A.KERNELS["late_spy"])
    try:
        assert RunOptions(attention="late_spy").attention == "late_spy"
        assert "late_spy" in A.backends() and "late_spy" in load_pack("nodes.availability").attention_kernels()
        model = build_random_transformer(AvatarConfig.tiny(), seed=1)
        inp = tiny_inputs(B=2)
        out = call(model, inp, options=RunOptions(attention="late_spy"))
        cfg = model.cfg
        assert len(calls) >= cfg.depth_double + cfg.depth_single      # every block's attention went through it
        assert torch.equal(out, call(model, inp, options=RunOptions(attention="sdpa")))  # the same arithmetic
    finally:
        del A.KERNELS["late_spy"], pack_attention.KERNELS["late_spy"]


def test_fp8_heads_path_through_the_blocks_on_cpu():
    """The block plumbing of the fast preset's e4m3 q/k (a GPU path) run on the CPU, chosen by capability: a kernel
    registered with an `fp8_heads` entry (here dequantise + SDPA, in place of FA3's fp8 call) gets it, with no name
    check anywhere. Every block and sample hands e4m3 q/k with its norm-weight scales to the attention, and the
    forward stays within e4m3 error of the plain one."""
    from test_model import call, tiny_inputs

    from avatar_core.config import AvatarConfig
    from avatar_core.loading import build_random_transformer
    from avatar_core.model.fused import qk_fp8_scales
    from avatar_core.model.options import RunOptions
    cfg = AvatarConfig.tiny()
    model = build_random_transformer(cfg, seed=1)
    inp = tiny_inputs(B=2)
    ref = call(model, inp, options=RunOptions(attention="sdpa"))
    seen = []

    def fake_fp8(q, k, v, cu, qk_scales=None):
        assert q.dtype == k.dtype == torch.float8_e4m3fn and v.dtype == torch.float32
        seen.append(qk_scales)
        return _sdpa_segments(q.float() * qk_scales[0], k.float() * qk_scales[1], v, cu)
    A.register(A.AttentionKernel("test_fp8_heads", A._sdpa, lambda q: True, exact=False, fp8_heads=fake_fp8))
    try:
        out = call(model, inp, options=RunOptions(attention="test_fp8_heads"))
    finally:
        del A.KERNELS["test_fp8_heads"]
    expected = [qk_fp8_scales((b.img_attn_q_norm, b.txt_attn_q_norm), (b.img_attn_k_norm, b.txt_attn_k_norm))
                for b in model.double_blocks] + [qk_fp8_scales((b.q_norm,), (b.k_norm,)) for b in model.single_blocks]
    assert len(seen) == 2 * len(expected)                                 # every block, both samples
    assert all(torch.equal(s, e) for s, e in zip(seen, [e for e in expected for _ in range(2)]))
    rel = ((out - ref).norm() / ref.norm()).item()
    assert 0 < rel < 2e-2, rel           # 5.4e-3 here
