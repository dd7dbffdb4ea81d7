"""AvatarTransformer: the HunyuanVideo-Avatar MM-DiT (official state-dict names and layout).

Reading order: `forward` -> `_conditioning_vector` -> `_blocks` (video/text blocks, audio adapters
and the optional emotion module) -> single-stream blocks -> final layer. The deep cache is explicit:
a full call can return the input of the last single block; a cached call starts from it.

The module holds weights and fixed structure only: every per-run choice (attention kernel, chunking,
sequence parallelism, the sampler's step cache) is an argument of `forward`, so one loaded model serves
any number of runs with different settings and nothing of a run stays on it.
"""

from __future__ import annotations

import contextlib
import weakref
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn as nn

from ..config import AvatarConfig
from ..specs.conditioning import check_model_inputs
from .audio import AudioAdapter, AudioProjection, audio_tokens_per_latent, face_mask_tokens
from .blocks import AttnContext, DoubleStreamBlock, SingleStreamBlock
from .compile import is_compiled
from .emotion import AudioEmotionModule
from .layers import FinalLayer, MLPEmbedder, PatchEmbed, TimestepEmbedder
from .linear import Linear, Linears, Operations, keep_plain_
from .options import RunOptions
from .rope import avatar_rope
from .token_refiner import SingleTokenRefiner


class StepSkipper(Protocol):
    """The sampler's step cache (sampling.stepcache.StepCache), as the forward sees it."""

    def lookup(self, first_out: torch.Tensor, first_in: torch.Tensor) -> torch.Tensor | None: ...

    def store(self, first_out: torch.Tensor, tokens: torch.Tensor) -> None: ...


@dataclass(frozen=True)
class Injection:
    """What the audio adapters and the emotion module add to the video tokens (one window, or this rank's
    frames of it under sequence parallelism)."""

    audio: torch.Tensor             # (B, N, T, 16, D) audio tokens per latent frame and character
    masks: torch.Tensor             # (B, N, T*h*w, 1) face-mask weight of every video token
    emotion: torch.Tensor | None    # (B, Le, D) emotion tokens (AEM), or None
    n_ref: int                      # reference-frame tokens in front of the video tokens
    frames: int                     # latent frames of the video tokens


# RoPE tables of the last window size, per model: a memo of a pure function of (config, window size,
# device), kept beside the model (never written onto it by a run) and freed with it.
_ROPE_MEMO: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _rope_tables(model: AvatarTransformer, grid: tuple[int, int, int],
                 device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    key, memo = (grid, str(device)), _ROPE_MEMO.get(model)
    if memo is None or memo[0] != key:  # built once per window size (CPU math, then one copy)
        cos, sin = avatar_rope(*grid, model.cfg.rope_dims, model.cfg.rope_theta)
        memo = _ROPE_MEMO[model] = (key, (cos.to(device), sin.to(device)))
    return memo[1]


# Per-run choices that older code wrote onto the model: now arguments of forward (RunOptions, step_cache) or of
# the runner's LoadSpec. Writing one is an error, so that such code fails instead of being silently ignored.
RUN_CHOICES = frozenset({"attention_backend", "chunk_tokens", "fused_kernels", "step_cache", "block_swap",
                         "sequence_parallel"})


class AvatarTransformer(nn.Module):
    # Modules the official build keeps in fp32 (created without its bf16 factory kwargs).
    FP32_MODULES = ("final_layer.linear", "audio_proj", "before_proj", "audio_adapter_blocks")
    # Repeated blocks (for block swap / per-block compile).
    REPEATED_BLOCKS = ("double_blocks", "single_blocks")

    def __init__(self, cfg: AvatarConfig, operations: Operations = Linears):
        """`operations`: the linear-layer family of the repeated blocks (plain, fp8, ...; model/linear.py)."""
        super().__init__()
        self.cfg = cfg
        D, pt, ph, pw = cfg.hidden_size, *cfg.patch_size
        # Registration order = the official state-dict order (the manifest checks it).
        self.img_in = PatchEmbed(cfg.patch_size, cfg.in_channels, D)
        self.ref_in = PatchEmbed(cfg.patch_size, cfg.in_channels, D)
        self.txt_in = SingleTokenRefiner(cfg.text_dim, D, cfg.num_heads, cfg.refiner_depth)
        self.time_in = TimestepEmbedder(D)
        self.vector_in = MLPEmbedder(cfg.text_pooled_dim, D)
        self.double_blocks = nn.ModuleList([DoubleStreamBlock(D, cfg.num_heads, cfg.mlp_hidden, cfg.qkv_bias,
                                                              operations) for _ in range(cfg.depth_double)])
        self.single_blocks = nn.ModuleList(
            [SingleStreamBlock(D, cfg.num_heads, cfg.mlp_hidden, operations) for _ in range(cfg.depth_single)])
        keep_plain_(self, operations)  # the block linears the family keeps in the compute dtype (e.g. modulation)
        self.final_layer = FinalLayer(D, pt * ph * pw * cfg.out_channels)
        self.audio_proj = AudioProjection(cfg.audio_in_dim, cfg.audio_proj_dim, cfg.audio_tokens_per_frame, D)
        self.motion_exp = TimestepEmbedder(D // cfg.motion_dims)
        self.motion_pose = TimestepEmbedder(D // cfg.motion_dims)
        self.fps_proj = TimestepEmbedder(D)
        self.before_proj = Linear(D, D)
        self.audio_adapter_blocks = nn.ModuleList(
            [AudioAdapter(D, cfg.adapter_dim) for _ in cfg.adapter_after_double])
        self._adapter_slot = {blk: i for i, blk in enumerate(cfg.adapter_after_double)}
        self.aem: AudioEmotionModule | None = None  # attached by loading.load_emotion_module

    def __setattr__(self, name: str, value) -> None:
        if name in RUN_CHOICES:
            raise AttributeError(f"AvatarTransformer.{name} is a per-run choice, not a model attribute: pass "
                                 "options=RunOptions(...) / step_cache= to the forward, or set it in the runner's LoadSpec")
        super().__setattr__(name, value)

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor, t: torch.Tensor, *, ref_latents: torch.Tensor, text_states: torch.Tensor,
                text_mask: torch.Tensor | None, text_pooled: torch.Tensor, motion_exp: torch.Tensor,
                motion_pose: torch.Tensor, fps: torch.Tensor, audio: torch.Tensor, face_mask: torch.Tensor,
                emotion: torch.Tensor | None = None, freqs: tuple[torch.Tensor, torch.Tensor] | None = None,
                cached_tokens: torch.Tensor | None = None, return_cache: bool = False,
                options: RunOptions | None = None, step_cache: StepSkipper | None = None):
        """One denoising call on one window. Shapes: see docs/ARCHITECTURE.md ("Model call contract")."""
        cfg, opts = self.cfg, options or RunOptions()
        audio = audio if audio.dim() == 6 else audio.unsqueeze(1)             # (B, N, F, 10, 5, 384)
        check_model_inputs(cfg, x, ref_latents, text_states, text_mask, audio, face_mask, cached_tokens)
        B, _, T, H, W = x.shape
        grid = (T // cfg.patch_size[0], H // cfg.patch_size[1], W // cfg.patch_size[2])
        n_img, n_ref = grid[0] * grid[1] * grid[2], grid[1] * grid[2]
        cos, sin = freqs if freqs is not None else _rope_tables(self, grid, x.device)
        n_txt = text_states.shape[1]
        n_valid = [n_txt] * B if text_mask is None else [int(v) for v in text_mask.sum(dim=1).tolist()]
        dtype = self.img_in.proj.weight.dtype
        with self._autocast(x.device, dtype):
            ctx = AttnContext(cos.to(x.device), sin.to(x.device), [n_ref + n_img + v for v in n_valid],
                              opts.attention, opts.chunk_tokens, opts.fused_kernels and not is_compiled(self))
            ctx = opts.sequence.localize(ctx, grid)  # this process's frames of the window (all, or Ulysses)
            vec = self._conditioning_vector(t, motion_exp, motion_pose, fps, text_pooled, dtype)   # (B, D)
            if cached_tokens is None:
                txt = self.txt_in(text_states.to(dtype), t, text_mask)                               # (B, Lt, D)
                inj = self._injection(audio, face_mask, emotion, grid, dtype)
                h = self._blocks(x.to(dtype), ref_latents.to(dtype), txt, vec, inj, ctx, step_cache)
            else:
                h = ctx.sp.shard_tokens(cached_tokens.to(dtype))           # (B, Lref + Limg + Lt, D)
            cache = ctx.sp.gather_tokens(h) if return_cache else None       # whole window
            h = self.single_blocks[-1](h, vec, n_txt, ctx)
            out = ctx.sp.gather_video(self.final_layer(ctx.sp.video_tokens(h), vec, ctx.kernels))  # (B, Limg, p*C)
        out = self.unpatchify(out.float(), grid)                           # (B, C, T, H, W)
        return (out, cache) if return_cache else out

    def _conditioning_vector(self, t, motion_exp, motion_pose, fps, text_pooled, dtype) -> torch.Tensor:
        B = t.shape[0]
        vec = self.time_in(t)
        vec = vec + self.motion_exp(motion_exp.reshape(-1)).reshape(B, -1)
        vec = vec + self.motion_pose(motion_pose.reshape(-1)).reshape(B, -1)
        vec = vec + self.fps_proj(fps)
        return vec + self.vector_in(text_pooled.to(dtype))

    def _blocks(self, x, ref_latents, txt, vec, inj: Injection, ctx: AttnContext,
                step_cache: StepSkipper | None) -> torch.Tensor:
        """Every block but the last single one -> its input tokens (B, Lref + Limg + Lt, D), the deep cache.

        With a step cache, a step whose first-block change is small reuses the last computed residual.
        """
        img = self.before_proj(self.ref_in(ref_latents)) + self.img_in(x)            # (B, Limg, D)
        ref = self.img_in(ref_latents[:, :, :1])                                      # (B, Lref, D) RoPE t=-1
        img, inj = ctx.sp.shard_stream(torch.cat([ref, img], dim=1), inj)            # this process's frames
        first = None
        for i, block in enumerate(self.double_blocks):
            img0, txt0 = img, txt
            img, txt = block(img, txt, vec, ctx)
            img = self._after_double(i, img, inj, ctx)
            if i == 0 and step_cache is not None:
                first = torch.cat([img, txt], dim=1)
                hit = step_cache.lookup(first, torch.cat([img0, txt0], dim=1))
                if hit is not None:
                    return hit
            del img0, txt0
        h = torch.cat([img, txt], dim=1)                                  # (B, Lref + Limg + Lt, D)
        for block in self.single_blocks[:-1]:
            h = block(h, vec, txt.shape[1], ctx)
        if first is not None:
            step_cache.store(first, h)
        return h

    def _injection(self, audio, face_mask, emotion, grid, dtype: torch.dtype) -> Injection:
        """Audio tokens per latent frame, face-mask weights per video token, emotion tokens: whole window."""
        tt, th, tw = grid
        B, N = audio.shape[:2]
        a = self.audio_proj(audio.flatten(0, 1).to(self.audio_proj.proj1.weight.dtype))  # (B*N, F, 4, D)
        a = audio_tokens_per_latent(a, tt, self.cfg.temporal_compression).unflatten(0, (B, N))  # (B, N, T, 16, D)
        masks = face_mask_tokens(face_mask, tt, th, tw).to(dtype)                     # (B, N, Limg, 1)
        emo = None
        if self.aem is not None and emotion is not None:
            emo = self.aem.tokens(emotion.to(a.device))                               # (B, Le, D)
        return Injection(audio=a, masks=masks, emotion=emo, n_ref=th * tw, frames=tt)

    def _after_double(self, i: int, img: torch.Tensor, inj: Injection, ctx: AttnContext) -> torch.Tensor:
        """Audio adapter (and emotion) injection after double block i."""
        if i in self._adapter_slot:
            img = self._inject_audio(self.audio_adapter_blocks[self._adapter_slot[i]], img, inj.audio,
                                     inj.masks, inj.n_ref, inj.frames)
        if inj.emotion is not None and self.aem.has_layer(i):
            upd = self.aem.apply(i, img[:, inj.n_ref:], inj.emotion, ctx.backend)
            img = torch.cat([img[:, :inj.n_ref], img[:, inj.n_ref:] + upd], dim=1)
        return img

    @staticmethod
    def _inject_audio(adapter: AudioAdapter, img, audio_tokens, masks, n_ref: int, frames: int):
        """img += sum_c mask_c * adapter(audio_c) on the video tokens; reference tokens untouched."""
        B, L, D = img.shape
        video = img[:, n_ref:]
        q = adapter.query(video.reshape(B, frames, -1, D))                         # (B, T, hw, inner)
        delta = None
        for c in range(audio_tokens.shape[1]):
            d = adapter.attend(q, audio_tokens[:, c]).reshape(B, -1, D) * masks[:, c]
            delta = d if delta is None else delta + d
        return torch.cat([img[:, :n_ref], video + delta], dim=1)

    def unpatchify(self, x: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        """(B, T*h*w, C*pt*ph*pw) -> (B, C, T*pt, h*ph, w*pw); token channels ordered (c, pt, ph, pw)."""
        (t, h, w), (pt, ph, pw) = grid, self.cfg.patch_size
        c = self.cfg.out_channels
        x = x.reshape(x.shape[0], t, h, w, c, pt, ph, pw).permute(0, 4, 1, 5, 2, 6, 3, 7)
        return x.reshape(x.shape[0], c, t * pt, h * ph, w * pw)

    @staticmethod
    def _autocast(device: torch.device, dtype: torch.dtype):
        # The official loop runs under bf16 autocast with a few fp32-stored modules; so do we.
        if dtype in (torch.float16, torch.bfloat16):
            return torch.autocast(device.type, dtype=dtype)
        return contextlib.nullcontext()
