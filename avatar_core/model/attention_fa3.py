"""FlashAttention-3 (Hopper) behind the attention registry: bf16 and fp8 (e4m3) entries, dense and varlen.

Optional dependency: the PyPI wheel `tokenspeed-fa3` (modules `flash_attn_interface` + `flash_attn_3`, built
for CUDA 13 against the torch stable ABI, forward only). It is imported once, on first use, and only where
a Hopper GPU is present; a wheel that does not load with this torch (or no wheel) leaves FA3 unavailable
with a one-line warning, and "auto" then uses PyTorch SDPA.

fp8: q, k and v are quantised to e4m3 with one scale per (segment, head), FA3's finest (`q_descale` etc. are
(num_segments, heads)); keys are first smoothed by subtracting their per-segment, per-channel mean, which
leaves softmax(q k^T) unchanged (it shifts every score of a query by the same q.mean) and shrinks the
range the keys' fp8 grid must cover. Values are smoothed the same way and their mean added back to the
output (rows of P sum to 1, so P (v - m) + m = P v): FA3 rounds P to e4m3 before P v, and that rounding
multiplies whatever v holds; on the model's own activations (values' mean ~0.3-0.6 of their RMS) it cost
0.33-0.48 relative error per call unsmoothed and 3-5e-3 smoothed (bench/README.md, H200, random weights).
The output is bf16, ready for the next linear.

In the model (one process, Triton kernels on) q and k arrive already e4m3: the qk-norm + RoPE pass writes
them with one data-free scale each (`fused.qk_fp8_scales`, a bound from the norm weights; no key smoothing
there), and `varlen_fp8` gets those scales as `qk_scales`; only v is quantised here.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import logging

import torch

from .fused import quantize_segments_fp8

log = logging.getLogger(__name__)
HEAD_DIMS = (64, 128, 192, 256)                 # compiled into the wheel
SMOOTH_V = True    # values too: out = P (v - mean) + mean (see the module docstring); one add per segment


def importable(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


@functools.cache
def _interface():
    """flash_attn_interface, or None (with one warning) when it is missing or does not load with this torch."""
    if not importable("flash_attn_interface"):
        return None
    try:
        return importlib.import_module("flash_attn_interface")
    except Exception as e:  # noqa: BLE001  (a wheel built for another torch/CUDA raises OSError, ImportError...)
        log.warning("FlashAttention-3 is installed but does not load with torch %s (%s: %s); using PyTorch SDPA",
                    torch.__version__, type(e).__name__, str(e).splitlines()[0] if str(e) else "")
        return None


@functools.cache
def _hopper(index: int) -> bool:
    return torch.cuda.get_device_capability(index)[0] == 9


def available() -> bool:
    """A Hopper GPU is present and the FA3 package loads."""
    return (torch.cuda.is_available() and _hopper(torch.cuda.current_device()) and importable("flash_attn_interface")
            and _interface() is not None)


def supports(q: torch.Tensor) -> bool:
    return (q.is_cuda and q.dtype in (torch.float16, torch.bfloat16) and q.shape[-1] in HEAD_DIMS
            and _hopper(q.device.index if q.device.index is not None else torch.cuda.current_device()))


def _first(out):
    return out[0] if isinstance(out, tuple) else out


def dense(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(B, L, H, D) -> (B, L, H, D)."""
    return _first(_interface().flash_attn_func(q, k, v))


def _cu(cu: list[int], device: torch.device) -> tuple[torch.Tensor, int]:
    lengths = [b - a for a, b in zip(cu[:-1], cu[1:])]
    return torch.tensor(cu, dtype=torch.int32).to(device, non_blocking=True), max(lengths)


def varlen(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu: list[int]) -> torch.Tensor:
    """Packed (T, H, D) segments [cu[i], cu[i + 1]) -> (T, H, D), one launch."""
    cu_t, longest = _cu(cu, q.device)
    return _first(_interface().flash_attn_varlen_func(q, k, v, cu_t, cu_t, longest, longest))


def varlen_fp8(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu: list[int],
               qk_scales: torch.Tensor | None = None) -> torch.Tensor:
    """As `varlen`, on e4m3 copies of q, k, v (module docstring); bf16 out.

    qk_scales: None, or the (2,) fp32 scales of q and k that are already e4m3 (written so by the qk-norm +
    RoPE pass, `fused.qk_fp8_scales`: one bound-derived scale each, no smoothing); v is then still bf16.
    """
    S = len(cu) - 1
    if qk_scales is None:
        q8, qs = quantize_segments_fp8(q, cu)
        k8, ks = quantize_segments_fp8(k, cu, smooth=True)
    else:
        q8, k8 = q, k
        qs, ks = (s.expand(S, q.shape[1]) for s in qk_scales)
    v_means: list[torch.Tensor] = []
    v8, vs = quantize_segments_fp8(v, cu, smooth=SMOOTH_V, means=v_means)
    cu_t, longest = _cu(cu, q.device)
    out = _first(_interface().flash_attn_varlen_func(q8, k8, v8, cu_t, cu_t, longest, longest,
                                                     q_descale=qs, k_descale=ks, v_descale=vs))
    for a, b, mean in zip(cu[:-1], cu[1:], v_means):
        # mean in the output's dtype: a bf16 += fp32 broadcast takes PyTorch's slow casting kernel (~1 ms a call
        # at 704x704: 0.115 s per forward in bench run 5's profile); the mean's own bf16 rounding is ~2^-9.
        out[a:b] += mean.to(out.dtype)
    return out.to(v.dtype)


def dense_fp8(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(B, L, H, D) -> (B, L, H, D): each sample one segment of the varlen fp8 call."""
    B, L = q.shape[:2]
    flat = [t.reshape(B * L, *t.shape[2:]) for t in (q, k, v)]
    return varlen_fp8(*flat, [b * L for b in range(B + 1)]).view(q.shape)
