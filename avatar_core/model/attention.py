"""The one attention module: every attention call of the model goes through here.

PyTorch SDPA is the default. Faster kernels (FlashAttention 2/3, SageAttention) are used when asked for
and installed, falling back to SDPA with a one-line warning otherwise.

The official model masks text padding with varlen segments: per sample, [video tokens + the first
`sum(text_mask)` text tokens] form one segment and the remaining text tokens another. We reproduce that
by slicing (no additive mask: a mask costs ~35% on an H100).
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

BACKENDS = ("sdpa", "flash_attn", "sage")
_warned: set[str] = set()


def _warn_once(msg: str) -> None:
    if msg not in _warned:
        _warned.add(msg)
        log.warning(msg)


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    # (B, L, H, D) in and out; SDPA wants heads first.
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return out.transpose(1, 2)


def _flash(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    try:
        from flash_attn_interface import flash_attn_func  # FlashAttention 3 (Hopper)
        out = flash_attn_func(q, k, v)
        return out[0] if isinstance(out, tuple) else out
    except ImportError:
        from flash_attn import flash_attn_func  # FlashAttention 2
        return flash_attn_func(q, k, v)


def _sage(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    from sageattention import sageattn
    return sageattn(q, k, v, tensor_layout="NHD")


_KERNELS: dict[str, Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "sdpa": _sdpa, "flash_attn": _flash, "sage": _sage,
}
_MODULES = {"flash_attn": ("flash_attn_interface", "flash_attn"), "sage": ("sageattention",)}


def resolve_backend(name: str) -> str:
    """Return `name` if it can run here, else 'sdpa' (warning once)."""
    if name not in BACKENDS:
        raise ValueError(f"unknown attention backend {name!r}; choose one of {BACKENDS}")
    if name == "sdpa":
        return name
    if not any(importlib.util.find_spec(m) for m in _MODULES[name]):
        _warn_once(f"attention backend {name!r} is not installed; using PyTorch SDPA instead")
        return "sdpa"
    return name


def _run(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: str) -> torch.Tensor:
    kernel = _KERNELS[backend]
    if backend != "sdpa" and (q.dtype not in (torch.float16, torch.bfloat16) or not q.is_cuda):
        kernel = _sdpa  # the optional kernels are half-precision CUDA only
    return kernel(q, k, v)                                                  # (B, L, H, D)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: str = "sdpa") -> torch.Tensor:
    """Full (unmasked) attention. q, k, v: (B, L, H, D) -> (B, L, H * D)."""
    return _run(q, k, v, backend).flatten(2)


def segmented_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, valid: Sequence[int],
                        backend: str = "sdpa") -> torch.Tensor:
    """Attention where, per sample b, tokens [0, valid[b]) and [valid[b], L) attend only within their segment.

    q, k, v: (B, L, H, D) -> (B, L, H * D). This is the official varlen layout (see module docstring).
    Each segment's result is written once into the output (no concatenation copies).
    """
    B, L = q.shape[:2]
    out = torch.empty_like(q)                                               # (B, L, H, D)
    groups = [(slice(None), valid[0])] if len(set(valid)) == 1 else [(slice(b, b + 1), n) for b, n in enumerate(valid)]
    for rows, n in groups:                                                  # one batched call per segment if possible
        for seg in (slice(0, n), slice(n, L)):
            if seg.stop > seg.start:
                out[rows, seg] = _run(q[rows, seg], k[rows, seg], v[rows, seg], backend)
    return out.flatten(2)


def masked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """SDPA with a boolean (B, 1, Lq, Lk) mask (True = attend). Only the small text refiner uses it."""
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask)
    return out.transpose(1, 2).flatten(2)
