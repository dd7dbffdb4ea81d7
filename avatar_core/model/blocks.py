"""MM-DiT transformer blocks: double stream (separate video/text weights) and single stream."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attention import segmented_attention
from .layers import MLP, Modulation, RMSNorm, modulate
from .rope import apply_rope


@dataclass
class AttnContext:
    """What every block's attention needs: RoPE tables for the video tokens and the text segments."""

    cos: torch.Tensor            # (L_img, head_dim), L_img includes the reference frame
    sin: torch.Tensor
    valid: Sequence[int]         # per sample: L_img + number of valid text tokens (first segment)
    backend: str = "sdpa"


class DoubleStreamBlock(nn.Module):
    def __init__(self, hidden: int, heads: int, mlp_hidden: int, qkv_bias: bool = True):
        super().__init__()
        self.heads = heads
        head_dim = hidden // heads
        for s in ("img", "txt"):
            self.add_module(f"{s}_mod", Modulation(hidden, 6))
            self.add_module(f"{s}_attn_qkv", nn.Linear(hidden, 3 * hidden, bias=qkv_bias))
            self.add_module(f"{s}_attn_q_norm", RMSNorm(head_dim))
            self.add_module(f"{s}_attn_k_norm", RMSNorm(head_dim))
            self.add_module(f"{s}_attn_proj", nn.Linear(hidden, hidden, bias=qkv_bias))
            self.add_module(f"{s}_mlp", MLP(hidden, mlp_hidden, act="gelu_tanh"))

    def _qkv(self, s: str, x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor):
        h = modulate(F.layer_norm(x, x.shape[-1:], eps=1e-6), shift, scale)
        q, k, v = getattr(self, f"{s}_attn_qkv")(h).unflatten(-1, (3, self.heads, -1)).unbind(2)  # (B, L, H, Dh)
        return getattr(self, f"{s}_attn_q_norm")(q).to(v), getattr(self, f"{s}_attn_k_norm")(k).to(v), v

    def _post(self, s: str, x: torch.Tensor, attn: torch.Tensor, mod: list[torch.Tensor]) -> torch.Tensor:
        _, _, gate1, shift2, scale2, gate2 = mod
        x = x + getattr(self, f"{s}_attn_proj")(attn) * gate1
        h = modulate(F.layer_norm(x, x.shape[-1:], eps=1e-6), shift2, scale2)
        return x + getattr(self, f"{s}_mlp")(h) * gate2

    def forward(self, img: torch.Tensor, txt: torch.Tensor, vec: torch.Tensor, ctx: AttnContext):
        img_mod, txt_mod = self.img_mod(vec), self.txt_mod(vec)
        iq, ik, iv = self._qkv("img", img, img_mod[0], img_mod[1])          # (B, Li, H, Dh)
        iq, ik = apply_rope(iq, ctx.cos, ctx.sin), apply_rope(ik, ctx.cos, ctx.sin)
        tq, tk, tv = self._qkv("txt", txt, txt_mod[0], txt_mod[1])          # (B, Lt, H, Dh)
        attn = segmented_attention(torch.cat([iq, tq], 1), torch.cat([ik, tk], 1), torch.cat([iv, tv], 1),
                                   ctx.valid, ctx.backend)                  # (B, Li + Lt, D)
        n = img.shape[1]
        return self._post("img", img, attn[:, :n], img_mod), self._post("txt", txt, attn[:, n:], txt_mod)


class SingleStreamBlock(nn.Module):
    """Joint [video; text] block with parallel attention + MLP (one linear in, one linear out)."""

    def __init__(self, hidden: int, heads: int, mlp_hidden: int):
        super().__init__()
        self.heads, self.hidden, self.mlp_hidden = heads, hidden, mlp_hidden
        head_dim = hidden // heads
        self.linear1 = nn.Linear(hidden, 3 * hidden + mlp_hidden)
        self.linear2 = nn.Linear(hidden + mlp_hidden, hidden)
        self.q_norm = RMSNorm(head_dim)
        self.k_norm = RMSNorm(head_dim)
        self.modulation = Modulation(hidden, 3)

    def forward(self, x: torch.Tensor, vec: torch.Tensor, txt_len: int, ctx: AttnContext) -> torch.Tensor:
        shift, scale, gate = self.modulation(vec)
        h = modulate(F.layer_norm(x, x.shape[-1:], eps=1e-6), shift, scale)
        qkv, mlp = self.linear1(h).split([3 * self.hidden, self.mlp_hidden], dim=-1)
        q, k, v = qkv.unflatten(-1, (3, self.heads, -1)).unbind(2)          # (B, L, H, Dh)
        q, k = self.q_norm(q).to(v), self.k_norm(k).to(v)
        n = x.shape[1] - txt_len
        q = torch.cat([apply_rope(q[:, :n], ctx.cos, ctx.sin), q[:, n:]], 1)
        k = torch.cat([apply_rope(k[:, :n], ctx.cos, ctx.sin), k[:, n:]], 1)
        attn = segmented_attention(q, k, v, ctx.valid, ctx.backend)          # (B, L, D)
        out = self.linear2(torch.cat([attn, F.gelu(mlp, approximate="tanh")], dim=-1))
        return x + out * gate
