"""The one attention module: every attention call of the model goes through here.

Attention kernels are records in one registry (`KERNELS`): a name, a dense function, an optional varlen
function, `supports(q)` (can it run on this tensor), `available()` (is it installed and is the hardware
there) and capabilities (`exact`, `fp8_heads`). A new kernel is one `register(...)` call, at any time: every
name list and capability check (RunOptions, the loader's choices, the fp8-heads path) reads the records
when it is used. "auto" (the default) takes the first record of `AUTO` that supports the call:
FlashAttention-3 on Hopper when its package imports, PyTorch SDPA (cuDNN on Hopper) otherwise. An
unavailable choice falls back to "auto" with a one-line warning.

The official model masks text padding with varlen segments: per sample, [video tokens + the first
`sum(text_mask)` text tokens] form one segment and the remaining text tokens another. Kernels with a
varlen entry run all segments in one call (cu_seqlens); the others get one call per segment, by slicing
(no additive mask: a mask costs ~35% on an H100).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import attention_fa3 as fa3

log = logging.getLogger(__name__)
_warned: set[str] = set()

Dense = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]      # (B, L, H, D) x3 -> (B, L, H, D)
Varlen = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, list[int]], torch.Tensor]  # (T, H, D) x3, cu -> (T, H, D)
# (T, H, D) e4m3 q, k and half-precision v, cu, the (2,) fp32 scales of q and k -> (T, H, D) in v's dtype
Fp8Heads = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, list[int], torch.Tensor], torch.Tensor]


def _warn_once(msg: str) -> None:
    if msg not in _warned:
        _warned.add(msg)
        log.warning(msg)


@dataclass(frozen=True)
class AttentionKernel:
    name: str
    dense: Dense
    supports: Callable[[torch.Tensor], bool]
    available: Callable[[], bool] = lambda: True
    varlen: Varlen | None = None
    exact: bool = True                       # False: quantised (fp8 / int8) arithmetic, ~1e-2 relative error
    note: str = ""                           # what it is and what it needs (shown when it is not available)
    # Capability: a varlen entry taking q and k already in e4m3 (the qk-norm + RoPE pass writes them so,
    # saving a quantisation pass; `fp8_heads_ready`). None: the kernel takes q, k, v as the model computes them.
    fp8_heads: Fp8Heads | None = None


KERNELS: dict[str, AttentionKernel] = {}
AUTO = ("fa3", "sdpa")                        # "auto" takes the first of these that supports the call


def register(kernel: AttentionKernel) -> AttentionKernel:
    KERNELS[kernel.name] = kernel
    return kernel


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    # (B, L, H, D) in and out; SDPA wants heads first.
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return out.transpose(1, 2)


def _flash2(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    from flash_attn import flash_attn_func
    return flash_attn_func(q, k, v)


def _sage(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    from sageattention import sageattn
    return sageattn(q, k, v, tensor_layout="NHD")


def _half_cuda(q: torch.Tensor) -> bool:
    return q.is_cuda and q.dtype in (torch.float16, torch.bfloat16)


def _no_grad(q: torch.Tensor) -> bool:
    return not (torch.is_grad_enabled() and q.requires_grad)


register(AttentionKernel("sdpa", _sdpa, lambda q: True, note="PyTorch SDPA (cuDNN / flash on CUDA); everywhere"))
register(AttentionKernel("fa3", fa3.dense, lambda q: fa3.supports(q) and _no_grad(q), fa3.available,
                         varlen=fa3.varlen, note="FlashAttention-3, bf16; a Hopper GPU and the FlashAttention-3 package "
                                              "(tokenspeed-fa3; install.py adds it there)"))
register(AttentionKernel("fa3_fp8", fa3.dense_fp8, lambda q: fa3.supports(q) and _no_grad(q), fa3.available,
                         varlen=fa3.varlen_fp8, exact=False, fp8_heads=fa3.varlen_fp8,
                         note="FlashAttention-3 on e4m3 q/k/v (per-segment, per-head scales; smoothed k), bf16 out; "
                              "a Hopper GPU and the FlashAttention-3 package (install.py adds it there)"))
register(AttentionKernel("flash_attn", _flash2, lambda q: _half_cuda(q) and _no_grad(q),
                         lambda: fa3.importable("flash_attn"),
                         note="FlashAttention 2; a CUDA GPU and `pip install flash-attn`"))
register(AttentionKernel("sage", _sage, _half_cuda, lambda: fa3.importable("sageattention"), exact=False,
                         note="SageAttention, 8-bit QK; a CUDA GPU and `pip install sageattention`"))


def backends() -> tuple[str, ...]:
    """Every name the model accepts now, "auto" first (read from the registry at each call)."""
    return ("auto", *KERNELS)


def available_kernels() -> list[str]:
    """Names that can run on this machine, "auto" first (what the loader lists)."""
    return ["auto"] + [name for name, kern in KERNELS.items() if kern.available()]


def resolve_backend(name: str | None) -> str:
    """Return `name` if it can run here, else "auto" (warning once). None means "auto"."""
    name = name or "auto"
    if name not in backends():
        raise ValueError(f"attention: unknown attention backend {name!r}; choose one of {backends()} (a new kernel "
                         "is registered with avatar_core.model.attention.register before the run)")
    if name != "auto" and not KERNELS[name].available():
        _warn_once(f"attention backend {name!r} is not available here ({KERNELS[name].note}); using 'auto' instead")
        return "auto"
    return name


def pick(name: str, q: torch.Tensor) -> AttentionKernel:
    """The record that runs this call: `name` if it supports q, else the first "auto" record that does."""
    kern = KERNELS.get(name)
    if kern is not None and kern.available() and kern.supports(q):
        return kern
    for auto in AUTO:
        if KERNELS[auto].available() and KERNELS[auto].supports(q):
            return KERNELS[auto]
    return KERNELS["sdpa"]


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """Full (unmasked) attention. q, k, v: (B, L, H, D) -> (B, L, H * D)."""
    return pick(backend, q).dense(q, k, v).flatten(2)


def _cu_seqlens(valid: Sequence[int], L: int) -> list[int]:
    """Boundaries of the non-empty segments of B samples of L tokens packed one after another."""
    cu = [0]
    for b, n in enumerate(valid):
        for c in (b * L + n, (b + 1) * L):
            if c > cu[-1]:
                cu.append(c)
    return cu


def segmented_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, valid: Sequence[int],
                        backend: str = "auto", qk_scales: torch.Tensor | None = None) -> torch.Tensor:
    """Attention where, per sample b, tokens [0, valid[b]) and [valid[b], L) attend only within their segment.

    q, k, v: (B, L, H, D) -> (B, L, H * D). This is the official varlen layout (see module docstring).
    Each segment's result is written once into the output (no concatenation copies).
    qk_scales: q and k are already e4m3 with these (2,) scales (`fp8_heads_ready`): the `backend` record's
    `fp8_heads` entry takes them.
    """
    B, L = q.shape[:2]
    if qk_scales is not None:
        heads = KERNELS[backend].fp8_heads if backend in KERNELS else None
        if heads is None:
            raise ValueError(f"attention kernel {backend!r} has no fp8_heads entry: it cannot take e4m3 q and k "
                             "(the model asks only kernels for which fp8_heads_ready is True)")
        packed = heads(q.flatten(0, 1), k.flatten(0, 1), v.flatten(0, 1), _cu_seqlens(valid, L), qk_scales)
        return packed.view(B, L, -1)
    kern = pick(backend, q)
    if kern.varlen is not None and all(t.is_contiguous() for t in (q, k, v)):
        packed = kern.varlen(q.flatten(0, 1), k.flatten(0, 1), v.flatten(0, 1), _cu_seqlens(valid, L))
        return packed.view(B, L, -1)
    out = torch.empty_like(q)                                               # (B, L, H, D)
    groups = [(slice(None), valid[0])] if len(set(valid)) == 1 else [(slice(b, b + 1), n) for b, n in enumerate(valid)]
    for rows, n in groups:                                                  # one batched call per segment if possible
        for seg in (slice(0, n), slice(n, L)):
            if seg.stop > seg.start:
                out[rows, seg] = kern.dense(q[rows, seg], k[rows, seg], v[rows, seg])
    return out.flatten(2)


def fp8_heads_ready(backend: str, like: torch.Tensor, head_dim: int) -> bool:
    """Can the qk-norm + RoPE pass write q and k straight to e4m3 for heads of `head_dim` on `like`'s device and
    dtype? Only for a kernel whose record has the `fp8_heads` capability (fa3_fp8, the fast preset's), where it
    saves the separate q/k quantisation, and only when that kernel runs these heads; never with autograd on
    (no fp8 kernel here has a backward)."""
    kern = KERNELS.get(backend)
    return (kern is not None and kern.fp8_heads is not None and not torch.is_grad_enabled() and kern.available()
            and kern.supports(like.new_empty(0, 1, head_dim)))


def masked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """SDPA with a boolean (B, 1, Lq, Lk) mask (True = attend). Only the small text refiner uses it."""
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask)
    return out.transpose(1, 2).flatten(2)
