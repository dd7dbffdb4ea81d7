"""FlashAttention-3 (bf16 and fp8) against bf16 SDPA on a Hopper GPU. Skipped without one (CI has no GPU).

Run on the device: python -m pytest tests/test_gpu_attention.py -q
Bounds (relative Frobenius error against SDPA in float32 on the same inputs, q/k RMS-normalised as in the
model, one segment of 8,192 + a text segment): bf16 kernels < 1e-2 (bf16 rounding; SDPA bf16 itself ~3e-3);
fp8 < 8e-2 (e4m3 q/k/v and P: 5.7e-2 keys smoothed, 6.3e-2 keys and values smoothed, on the same kind of
inputs at L = 66,655 in bench/bench_fa3.py on an H200).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from avatar_core.model import attention as A
from avatar_core.model import attention_fa3

pytestmark = pytest.mark.skipif(not (torch.cuda.is_available() and attention_fa3.available()),
                                reason="needs a Hopper GPU with FlashAttention-3 (tokenspeed-fa3) installed")


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def _inputs(L: int = 8448, H: int = 24, D: int = 128, seed: int = 0):
    g = torch.Generator("cuda").manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, device="cuda")  # noqa: E731
    q = F.rms_norm(r(1, L, H, D), (D,)) * (1 + 0.3 * r(D))
    k = F.rms_norm(r(1, L, H, D), (D,)) * (1 + 0.3 * r(D)) + 0.5 * r(1, 1, H, D)   # a key offset
    v = r(1, L, H, D)
    return [t.to(torch.bfloat16).contiguous() for t in (q, k, v)]


def _reference(q, k, v, valid: int) -> torch.Tensor:
    out = torch.empty(q.shape, dtype=torch.float32, device=q.device)
    L = q.shape[1]
    for seg in (slice(0, valid), slice(valid, L)):
        qs, ks, vs = (t[:, seg].float().transpose(1, 2) for t in (q, k, v))
        out[:, seg] = F.scaled_dot_product_attention(qs, ks, vs).transpose(1, 2)
    return out.flatten(2)


@pytest.mark.parametrize("name,bound", [("sdpa", 1e-2), ("fa3", 1e-2), ("fa3_fp8", 8e-2)])
def test_kernel_against_float32_reference(name, bound):
    q, k, v = _inputs()
    valid = 8192 + 100
    assert A.pick(name, q).name == name
    ref = _reference(q, k, v, valid)
    out = A.segmented_attention(q, k, v, [valid], name)
    assert torch.isfinite(out).all()
    assert out.dtype == torch.bfloat16
    assert _rel(out, ref) < bound, _rel(out, ref)


def test_auto_is_fa3_on_hopper_and_dense_matches_varlen():
    q, k, v = _inputs(L=4096, seed=1)
    assert A.pick("auto", q).name == "fa3"
    dense = A.attention(q, k, v, "fa3")
    seg = A.segmented_attention(q, k, v, [4096], "fa3")
    assert _rel(seg, dense) < 1e-3
    dense8 = A.attention(q, k, v, "fa3_fp8")
    assert _rel(dense8, dense) < 8e-2


def test_triton_quantisation_matches_reference():
    from avatar_core.model import fused_triton
    q, k, _ = _inputs(L=3000, seed=2)
    cu = [0, 2500, 3000]
    for x, smooth in ((q[0], False), (k[0], True)):
        x8, s = fused_triton.quantize_segments_fp8(x, cu, smooth, 448.0)
        x8_ref, s_ref = (t.cuda() for t in _cpu_reference(x, cu, smooth))
        assert torch.allclose(s, s_ref, rtol=1e-4)
        # x / s and x * (1 / s) may round to neighbouring e4m3 codes: compare values, not codes
        assert _rel(x8.float(), x8_ref.float()) < 1e-2


def _cpu_reference(x, cu, smooth):
    from avatar_core.model.fused import quantize_segments_fp8
    return quantize_segments_fp8(x.cpu(), cu, smooth=smooth)


def test_fp8_with_grad_falls_back():
    q, k, v = _inputs(L=512, seed=3)
    q.requires_grad_(True)
    assert A.pick("fa3_fp8", q).name == "sdpa"            # the wheel has no backward


def _norms(D: int, seed: int):
    from avatar_core.model.layers import RMSNorm
    g = torch.Generator("cuda").manual_seed(seed)
    norms = [RMSNorm(D).cuda().to(torch.bfloat16) for _ in range(2)]
    with torch.no_grad():
        for n in norms:
            n.weight.copy_(1 + 0.5 * torch.randn(D, generator=g, device="cuda"))
    return norms


def _rope(R: int, D: int, seed: int):
    g = torch.Generator("cuda").manual_seed(seed)
    theta = torch.rand(R, D // 2, generator=g, device="cuda") * 6.3
    return theta.cos().repeat_interleave(2, -1), theta.sin().repeat_interleave(2, -1)   # pairs (2i, 2i + 1)


def test_qk_norm_rope_pass_writes_e4m3_without_saturating():
    """The fast preset's q/k: the Triton qk-norm + RoPE pass writes e4m3 with the norm-weight bound scales."""
    from avatar_core.model.fused import qk_fp8_scales, qkv_to_heads, use_kernels
    H, D, R = 24, 128, 3000
    qn, kn = _norms(D, seed=4)
    qkv = torch.randn(R, 3 * H * D, device="cuda", dtype=torch.bfloat16)
    qkv[7, :2 * H * D] = 0              # row 7: one-hot q and k head 0 on the largest norm weight (the worst case)
    qkv[7, int(qn.weight.abs().argmax())] = 3.0
    qkv[7, H * D + int(kn.weight.abs().argmax())] = 3.0
    rope = _rope(R, D, seed=5)
    scales = qk_fp8_scales([qn], [kn])
    bufs = lambda dt: tuple(torch.empty(R, H, D, dtype=t, device="cuda") for t in (dt, dt, torch.bfloat16))  # noqa: E731
    fused, ref, ref8 = bufs(torch.float8_e4m3fn), bufs(torch.bfloat16), bufs(torch.float8_e4m3fn)
    with torch.no_grad():                                                  # the Triton kernels serve inference only
        assert use_kernels(qkv)                                            # so `fused` really is the Triton pass
        qkv_to_heads(qkv, qn, kn, rope, 0, R, fused, 0, True, 1.0 / scales)
        qkv_to_heads(qkv, qn, kn, rope, 0, R, ref, 0, False)               # bf16, the PyTorch reference
        qkv_to_heads(qkv, qn, kn, rope, 0, R, ref8, 0, False, 1.0 / scales)  # the reference's own e4m3
    for i in range(2):
        assert (ref[i].float() / scales[i]).abs().max() <= 448            # the bound holds: never clamped
        assert (ref[i][7, 0].float() / scales[i]).norm() > 420              # the one-hot row comes close
        assert _rel(fused[i].float(), ref8[i].float()) < 1e-2               # Triton == reference (+- one code)
        assert _rel(fused[i].float() * scales[i], ref[i]) < 4e-2            # e4m3: 3 mantissa bits
    assert torch.equal(fused[2], ref[2])


def test_prequantised_qk_attention_matches_float32():
    from avatar_core.model.fused import qk_fp8_scales, qkv_to_heads
    H, D, L, valid = 24, 128, 8448, 8292
    qn, kn = _norms(D, seed=6)
    qkv = torch.randn(L, 3 * H * D, device="cuda", dtype=torch.bfloat16)
    rope = _rope(L, D, seed=7)
    scales = qk_fp8_scales([qn], [kn])
    b16 = tuple(torch.empty(L, H, D, dtype=torch.bfloat16, device="cuda") for _ in range(3))
    b8 = (torch.empty(L, H, D, dtype=torch.float8_e4m3fn, device="cuda"),
          torch.empty(L, H, D, dtype=torch.float8_e4m3fn, device="cuda"), torch.empty_like(b16[2]))
    with torch.no_grad():            # as in the model: with autograd on, pick() would choose SDPA for `separate`
        qkv_to_heads(qkv, qn, kn, rope, 0, valid, b16, 0)
        qkv_to_heads(qkv, qn, kn, rope, 0, valid, b8, 0, True, 1.0 / scales)
        ref = _reference(*(t[None] for t in b16), valid)
        assert A.pick("fa3_fp8", b16[0]).name == "fa3_fp8"
        pre = A.segmented_attention(*(t[None] for t in b8), [valid], "fa3_fp8", qk_scales=scales)
        separate = A.segmented_attention(*(t[None] for t in b16), [valid], "fa3_fp8")
    assert pre.dtype == torch.bfloat16 and torch.isfinite(pre).all()
    assert _rel(pre, ref) < 8e-2, _rel(pre, ref)
    assert _rel(pre, ref) < 1.5 * _rel(separate, ref), (_rel(pre, ref), _rel(separate, ref))


def test_fast_forward_with_fused_qk_quantisation(monkeypatch):
    """Whole forward (random weights, head dim 128): fused e4m3 q/k vs the separate quantisation pass vs SDPA."""
    from avatar_core.config import AvatarConfig
    from avatar_core.loading import build_random_transformer
    from avatar_core.model import blocks
    from avatar_core.model.options import RunOptions
    from bench.common import make_inputs, parse_shape
    cfg = AvatarConfig(hidden_size=256, num_heads=2, depth_double=2, depth_single=2, rope_dims=(32, 48, 48),
                       text_dim=32, text_pooled_dim=16, audio_proj_dim=16, adapter_dim=32)
    model = build_random_transformer(cfg, dtype=torch.bfloat16, device="cuda", seed=0)
    inp = make_inputs(cfg, parse_shape("256x256"), 2, "cuda")
    x, t = inp.pop("x"), inp.pop("t")
    calls = []
    real = blocks.fp8_heads_ready
    monkeypatch.setattr(blocks, "fp8_heads_ready", lambda *a: calls.append(real(*a)) or calls[-1])
    with torch.no_grad():
        ref = model(x, t, **inp, options=RunOptions(attention="sdpa"))
        fused = model(x, t, **inp, options=RunOptions(attention="fa3_fp8"))
        assert calls and all(calls[-(cfg.depth_double + cfg.depth_single):])   # every block took the fused path
        monkeypatch.setattr(blocks, "fp8_heads_ready", lambda *a: False)
        separate = model(x, t, **inp, options=RunOptions(attention="fa3_fp8"))
    assert torch.isfinite(fused).all()
    assert _rel(fused, ref) < 8e-2 and _rel(fused, ref) < 1.5 * _rel(separate, ref), (_rel(fused, ref), _rel(separate, ref))
