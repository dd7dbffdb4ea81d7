"""MM-DiT transformer blocks: double stream (separate video/text weights) and single stream.

Both blocks run one sample at a time (cond and uncond in turn: the attention inputs of one sample are
alive at once) and, inside a sample, the token-wise work (norm + modulate, linears, MLP, residual) in
chunks of `ctx.chunk` tokens, so no (L, 4 * D) MLP hidden state or concatenated copy exists in full.
q, k and v are written once, by `qkv_to_heads`, into (L, H, Dh) buffers that attention reads as they are.
The arithmetic is the official one; chunking only changes which rows a matrix product sees at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from .attention import fp8_heads_ready
from .fused import add_gated, gelu_tanh_, ln_modulate, qk_fp8_scales, qkv_to_heads
from .layers import MLP, Modulation, RMSNorm
from .linear import Linears, Operations


@dataclass
class AttnContext:
    """What every block needs: RoPE tables for the video tokens, the text segments, execution choices."""

    cos: torch.Tensor            # (L_img, head_dim), L_img includes the reference frame
    sin: torch.Tensor
    valid: Sequence[int]         # per sample: L_img + number of valid text tokens (first segment)
    backend: str = "sdpa"
    chunk: int = 16384           # tokens per chunk of the token-wise work (memory vs. launch count)
    kernels: bool = True         # fused Triton kernels on CUDA (False: the PyTorch reference ops)
    sp: Any = None               # the frames this process holds: shard.WholeWindow or ulysses.SequenceShard

    @property
    def rope(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cos, self.sin


def _chunks(n: int, size: int):
    for start in range(0, n, size):
        yield start, min(start + size, n)


@dataclass
class Heads:
    """The (L, H, Dh) q, k, v buffers of one sample; q and k are e4m3 when `qk_scales` is set."""

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    qk_scales: torch.Tensor | None = None     # (2,) fp32 scales of e4m3 q and k
    inv_scales: torch.Tensor | None = None    # 1 / qk_scales, what the qk-norm + RoPE pass multiplies by

    @property
    def out(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.q, self.k, self.v


def _fp8_scales(heads: int, like: torch.Tensor, ctx: AttnContext, q_norms, k_norms) -> torch.Tensor | None:
    """Once per block call: the e4m3 scales of q and k when this call takes the fast preset's fp8-heads path
    (fa3_fp8, one process, Triton kernels), else None. Data-free (`qk_fp8_scales`): no pass reads q or k for them."""
    dtype = _compute_dtype(like)
    if ctx.kernels and ctx.sp.accepts_fp8_heads and fp8_heads_ready(ctx.backend, like.new_empty(0, dtype=dtype),
                                                                    like.shape[-1] // heads):
        return qk_fp8_scales(q_norms, k_norms)
    return None


def _compute_dtype(like: torch.Tensor) -> torch.dtype:
    return torch.get_autocast_dtype(like.device.type) if torch.is_autocast_enabled(like.device.type) else like.dtype


def _heads(n: int, heads: int, like: torch.Tensor, scales: torch.Tensor | None) -> Heads:
    """Buffers for n tokens: q and k in e4m3 when `scales` (from `_fp8_scales`) is given."""
    dtype = _compute_dtype(like)

    def buf(dt: torch.dtype) -> torch.Tensor:
        return torch.empty(n, heads, like.shape[-1] // heads, dtype=dt, device=like.device)
    if scales is not None:
        return Heads(buf(torch.float8_e4m3fn), buf(torch.float8_e4m3fn), buf(dtype), scales, 1.0 / scales)
    return Heads(buf(dtype), buf(dtype), buf(dtype))


def _attend(heads: Heads, valid: int, ctx: AttnContext) -> torch.Tensor:
    q, k, v = (t.unsqueeze(0) for t in heads.out)                                # (1, L, H, Dh)
    return ctx.sp.attention(q, k, v, [valid], ctx.backend, heads.qk_scales)[0]  # (L, D)


class DoubleStreamBlock(nn.Module):
    def __init__(self, hidden: int, heads: int, mlp_hidden: int, qkv_bias: bool = True,
                 operations: Operations = Linears):
        super().__init__()
        self.heads = heads
        head_dim = hidden // heads
        for s in ("img", "txt"):
            self.add_module(f"{s}_mod", Modulation(hidden, 6, operations))
            self.add_module(f"{s}_attn_qkv", operations.Linear(hidden, 3 * hidden, bias=qkv_bias))
            self.add_module(f"{s}_attn_q_norm", RMSNorm(head_dim))
            self.add_module(f"{s}_attn_k_norm", RMSNorm(head_dim))
            self.add_module(f"{s}_attn_proj", operations.Linear(hidden, hidden, bias=qkv_bias))
            self.add_module(f"{s}_mlp", MLP(hidden, mlp_hidden, "gelu_tanh", operations))

    def _qkv(self, s: str, x: torch.Tensor, mod: list[torch.Tensor], rope, heads: Heads, dst: int, ctx: AttnContext):
        """x (L, D) of one sample -> normalised, rotated heads in heads[dst:dst + L]."""
        for a, b in _chunks(x.shape[0], ctx.chunk):
            h = ln_modulate(x[a:b], mod[0], mod[1], kernels=ctx.kernels)        # (n, D)
            qkv = getattr(self, f"{s}_attn_qkv")(h)                             # (n, 3D)
            qkv_to_heads(qkv, getattr(self, f"{s}_attn_q_norm"), getattr(self, f"{s}_attn_k_norm"), rope, a,
                         x.shape[0] if rope is not None else 0, heads.out, dst + a, ctx.kernels, heads.inv_scales)

    def _post(self, s: str, x: torch.Tensor, attn: torch.Tensor, mod: list[torch.Tensor], out: torch.Tensor,
              ctx: AttnContext) -> None:
        """out = x + proj(attn) * gate1, then out += mlp(norm(out)) * gate2, chunk by chunk. (L, D) each."""
        _, _, gate1, shift2, scale2, gate2 = mod
        mlp = getattr(self, f"{s}_mlp")
        for a, b in _chunks(x.shape[0], ctx.chunk):
            y = add_gated(x[a:b], getattr(self, f"{s}_attn_proj")(attn[a:b]), gate1,
                          out=None if torch.is_grad_enabled() else out[a:b])             # (n, D)
            h = gelu_tanh_(mlp.fc1(ln_modulate(y, shift2, scale2, kernels=ctx.kernels)))   # (n, 4D)
            add_gated(y, mlp.fc2(h), gate2, out=out[a:b])

    def forward(self, img: torch.Tensor, txt: torch.Tensor, vec: torch.Tensor, ctx: AttnContext):
        img_mod, txt_mod = self.img_mod(vec), self.txt_mod(vec)                 # 6 x (B, 1, D)
        img_out, txt_out = torch.empty_like(img), torch.empty_like(txt)
        n = img.shape[1]
        scales = _fp8_scales(self.heads, img, ctx, (self.img_attn_q_norm, self.txt_attn_q_norm),
                             (self.img_attn_k_norm, self.txt_attn_k_norm))
        for i in range(img.shape[0]):
            im, tm = [m[i, 0] for m in img_mod], [m[i, 0] for m in txt_mod]
            heads = _heads(n + txt.shape[1], self.heads, img, scales)
            self._qkv("img", img[i], im, ctx.rope, heads, 0, ctx)
            self._qkv("txt", txt[i], tm, None, heads, n, ctx)
            attn = _attend(heads, ctx.valid[i], ctx)                            # (Li + Lt, D)
            del heads
            self._post("img", img[i], attn[:n], im, img_out[i], ctx)
            self._post("txt", txt[i], attn[n:], tm, txt_out[i], ctx)
        return img_out, txt_out


class SingleStreamBlock(nn.Module):
    """Joint [video; text] block with parallel attention + MLP (one linear in, one linear out)."""

    def __init__(self, hidden: int, heads: int, mlp_hidden: int, operations: Operations = Linears):
        super().__init__()
        self.heads, self.hidden, self.mlp_hidden = heads, hidden, mlp_hidden
        head_dim = hidden // heads
        self.linear1 = operations.Linear(hidden, 3 * hidden + mlp_hidden)
        self.linear2 = operations.Linear(hidden + mlp_hidden, hidden)
        self.q_norm = RMSNorm(head_dim)
        self.k_norm = RMSNorm(head_dim)
        self.modulation = Modulation(hidden, 3, operations)

    def _sample(self, x: torch.Tensor, shift, scale, gate, n_rope: int, valid: int, out: torch.Tensor,
                ctx: AttnContext, scales: torch.Tensor | None) -> None:
        """One sample: x (L, D) -> out (L, D); `scales`: e4m3 q/k scales from `_fp8_scales` (or None)."""
        D, L = self.hidden, x.shape[0]
        heads = _heads(L, self.heads, x, scales)
        for a, b in _chunks(L, ctx.chunk):
            h = ln_modulate(x[a:b], shift, scale, kernels=ctx.kernels)
            qkv_to_heads(self.linear1.rows(h, 0, 3 * D), self.q_norm, self.k_norm, ctx.rope, a, n_rope,
                         heads.out, a, ctx.kernels, heads.inv_scales)
        attn = _attend(heads, valid, ctx)                                        # (L, D)
        del heads
        for a, b in _chunks(L, ctx.chunk):
            h = ln_modulate(x[a:b], shift, scale, kernels=ctx.kernels)          # recomputed: cheaper than keeping
            mlp = self.linear1.rows(h, 3 * D)                           # (n, 4D)
            cat = torch.empty(b - a, D + self.mlp_hidden, dtype=mlp.dtype, device=mlp.device)
            cat[:, :D] = attn[a:b]
            gelu_tanh_(mlp, out=cat[:, D:])
            del mlp
            add_gated(x[a:b], self.linear2(cat), gate, out=out[a:b])

    def forward(self, x: torch.Tensor, vec: torch.Tensor, txt_len: int, ctx: AttnContext) -> torch.Tensor:
        shift, scale, gate = self.modulation(vec)                               # 3 x (B, 1, D)
        out = torch.empty_like(x)
        scales = _fp8_scales(self.heads, x, ctx, (self.q_norm,), (self.k_norm,))
        for i in range(x.shape[0]):
            self._sample(x[i], shift[i, 0], scale[i, 0], gate[i, 0], x.shape[1] - txt_len, ctx.valid[i], out[i], ctx,
                         scales)
        return out
