"""Ulysses sequence parallelism for one window (all-to-all over heads and sequence).

Each rank of the sequence group keeps WHOLE latent frames of the token sequence ``[ref frame, video
frames]`` (contiguous, as even as possible: 34 frames on 4 ranks -> 9, 9, 8, 8) plus every text token.
Everything per token (modulation, MLPs, RoPE, qk-norm) runs on the local frames only. Around the one
attention call, q/k/v of the local frames are exchanged so that each rank holds ALL frames for
``heads / degree`` heads (the text tokens are already on every rank and are just head-sliced); the
segmented attention then sees the full sequence with the usual valid lengths, and a second all-to-all
sends each rank its own frames back with all heads. The text outputs are all-gathered over heads.

Because shards are whole latent frames, the frame-local audio adapters, the face masks and the emotion
module run on the local frames with no gather (the official code all-gathers the image tokens before
every adapter). The deep-cache tokens leave the model whole (gathered), so the sampler's per-frame cache
is the same as on one GPU; a cached call slices its own frames again.

The model reaches this module through ``RunOptions.sequence`` (a worker's run options hold its
SequenceParallel) and ``AttnContext.sp`` (set by :meth:`SequenceParallel.localize`); one process alone
uses ``model.shard.WholeWindow``, which has the same interface and exchanges nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.distributed as dist

from ..model.attention import segmented_attention


def frame_shards(frames: int, degree: int) -> tuple[int, ...]:
    """Frames per rank for ``frames`` token frames over ``degree`` ranks (first ranks get the remainder)."""
    base, extra = divmod(frames, degree)
    return tuple(base + (r < extra) for r in range(degree))


def check_degree(heads: int, degree: int) -> None:
    """Clear early error for a sequence-parallel degree the model cannot use."""
    if degree < 1 or heads % degree:
        ok = [d for d in range(1, heads + 1) if heads % d == 0]
        raise ValueError(f"sequence-parallel degree {degree} does not divide the model's {heads} attention heads; "
                         f"use one of {ok}")


class SequenceParallel:
    """The sequence-parallel group of one rank; :meth:`localize` binds it to a window's token grid."""

    def __init__(self, group: Any, heads: int):
        self.group = group
        self.degree = dist.get_world_size(group)
        self.rank = dist.get_rank(group)
        check_degree(heads, self.degree)

    def localize(self, ctx: Any, grid: tuple[int, int, int]) -> Any:
        """The AttnContext of this rank: RoPE rows of its own frames, and the shard that does the exchanges."""
        shard = SequenceShard(self, grid)
        a, b = shard.token_range
        return replace(ctx, cos=ctx.cos[a:b], sin=ctx.sin[a:b], sp=shard)


@dataclass
class SequenceShard:
    """This rank's frames of one window and the collectives that move tokens between ranks."""

    sp: SequenceParallel
    grid: tuple[int, int, int]  # (latent frames T, h, w) of the window, in tokens

    def __post_init__(self) -> None:
        t, h, w = self.grid
        if t < self.sp.degree:
            raise ValueError(f"sequence parallelism over {self.sp.degree} GPUs needs windows of at least "
                             f"{self.sp.degree} latent frames, got {t}")
        self.hw = h * w
        self.frames = frame_shards(t + 1, self.sp.degree)  # token frames (ref + video) per rank
        self.counts = [f * self.hw for f in self.frames]   # image tokens per rank
        start = sum(self.frames[: self.sp.rank])
        self.frame_range = (start, start + self.frames[self.sp.rank])
        self.token_range = (start * self.hw, (start + self.frames[self.sp.rank]) * self.hw)
        self.n_image = (t + 1) * self.hw                   # ref + video tokens of the whole window

    @property
    def n_local(self) -> int:
        return self.counts[self.sp.rank]

    @property
    def n_ref(self) -> int:
        """Reference-frame tokens held here (rank 0 holds frame 0 = the reference frame)."""
        return self.hw if self.frame_range[0] == 0 else 0

    # ------------------------------------------------------------------ token layout
    def shard_stream(self, img: torch.Tensor, injection: Any) -> tuple[torch.Tensor, Any]:
        """Whole-window [ref, video] tokens (B, (T+1)hw, D) and the model's ``Injection`` (audio tokens
        (B, N, T, 16, D), face-mask weights (B, N, T*hw, 1), n_ref, frames) -> this rank's part of each.
        Emotion tokens are not per frame: kept whole."""
        a, b = self.token_range
        f0, f1 = max(self.frame_range[0], 1) - 1, self.frame_range[1] - 1  # video frame range
        local = replace(injection, audio=injection.audio[:, :, f0:f1],
                        masks=injection.masks[:, :, f0 * self.hw:f1 * self.hw], n_ref=self.n_ref, frames=f1 - f0)
        return img[:, a:b], local

    def shard_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Whole cache tokens (B, (T+1)hw + Lt, D) -> this rank's (B, n_local + Lt, D)."""
        a, b = self.token_range
        return torch.cat([tokens[:, a:b], tokens[:, self.n_image:]], dim=1)

    def gather_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """This rank's (B, n_local + Lt, D) -> whole (B, (T+1)hw + Lt, D) on every rank."""
        n = self.n_local
        return torch.cat([self._gather_seq(tokens[:, :n], self.counts), tokens[:, n:]], dim=1)

    def video_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Local video tokens (no reference frame, no text) of (B, n_local + Lt, D)."""
        return tokens[:, self.n_ref:self.n_local]

    def gather_video(self, x: torch.Tensor) -> torch.Tensor:
        """Per-token outputs of the local video tokens (B, n, C) -> the whole window's (B, T*hw, C)."""
        counts = list(self.counts)
        counts[0] -= self.hw  # rank 0's reference frame has no output
        return self._gather_seq(x, counts)

    def _gather_seq(self, x: torch.Tensor, counts: Sequence[int]) -> torch.Tensor:
        """All-gather uneven sequence chunks (B, counts[rank], ...) -> (B, sum(counts), ...)."""
        longest = max(counts)
        pad = x.new_zeros((x.shape[0], longest - x.shape[1], *x.shape[2:]))
        buf = torch.cat([x, pad], dim=1).contiguous()
        parts = [torch.empty_like(buf) for _ in counts]
        dist.all_gather(parts, buf, group=self.sp.group)
        return torch.cat([p[:, :n] for p, n in zip(parts, counts)], dim=1)

    # ------------------------------------------------------------------ attention
    accepts_fp8_heads = False  # q, k and v travel stacked in one all-to-all: one dtype

    def attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, valid: Sequence[int],
                  backend: str, qk_scales: torch.Tensor | None = None) -> torch.Tensor:
        """Segmented attention of the whole window. q, k, v: (B, n_local + Lt, H, Dh) with this rank's image
        tokens first, then every text token -> (B, n_local + Lt, H * Dh) for the same tokens. ``valid``:
        whole-window lengths of the first segment (as on one GPU)."""
        if qk_scales is not None:
            raise ValueError("sequence-parallel attention takes bf16 q and k (accepts_fp8_heads is False)")
        n_img = self.n_local
        deg, r = self.sp.degree, self.sp.rank
        B, _, H, Dh = q.shape
        hs = H // deg
        qkv = torch.stack([q, k, v])                                        # (3, B, n + Lt, H, Dh)
        img = self._heads_to_sequence(qkv[:, :, :n_img])                    # (3, B, N, hs, Dh)
        txt = qkv[:, :, n_img:, r * hs:(r + 1) * hs]                        # (3, B, Lt, hs, Dh)
        fq, fk, fv = torch.cat([img, txt], dim=2).unbind(0)
        out = segmented_attention(fq, fk, fv, valid, backend).unflatten(-1, (hs, Dh))  # (B, N + Lt, hs, Dh)
        img_out = self._sequence_to_heads(out[:, :self.n_image].contiguous())          # (B, n, H, Dh)
        parts = [torch.empty_like(out[:, self.n_image:]) for _ in range(deg)]
        dist.all_gather(parts, out[:, self.n_image:].contiguous(), group=self.sp.group)
        txt_out = torch.cat(parts, dim=2)                                   # (B, Lt, H, Dh) heads in rank order
        return torch.cat([img_out, txt_out], dim=1).flatten(2)

    def _heads_to_sequence(self, x: torch.Tensor) -> torch.Tensor:
        """(3, B, n_local, H, Dh) -> (3, B, N, H/deg, Dh): send head group j to rank j, receive every frame."""
        deg = self.sp.degree
        s, B, n, H, Dh = x.shape
        hs = H // deg
        send = x.unflatten(3, (deg, hs)).movedim(3, 0).contiguous()        # (deg, 3, B, n, hs, Dh)
        unit = s * B * hs * Dh
        recv = x.new_empty(sum(self.counts) * unit)
        dist.all_to_all_single(recv, send.flatten(), [c * unit for c in self.counts], [n * unit] * deg,
                               group=self.sp.group)
        chunks = recv.split([c * unit for c in self.counts])
        return torch.cat([c.view(s, B, cnt, hs, Dh) for c, cnt in zip(chunks, self.counts)], dim=2)

    def _sequence_to_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, H/deg, Dh) -> (B, n_local, H, Dh): send frames of rank j to rank j, receive every head group."""
        deg = self.sp.degree
        B, _, hs, Dh = x.shape
        unit = B * hs * Dh
        send = torch.cat([c.flatten() for c in x.split(self.counts, dim=1)])
        n = self.n_local
        recv = x.new_empty(deg * n * unit)
        dist.all_to_all_single(recv, send, [n * unit] * deg, [c * unit for c in self.counts], group=self.sp.group)
        return recv.view(deg, B, n, hs, Dh).permute(1, 2, 0, 3, 4).flatten(2, 3)  # (B, n, H, Dh)
