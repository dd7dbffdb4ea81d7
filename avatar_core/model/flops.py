"""FLOP count of one transformer forward (matmuls and attention; elementwise work ignored)."""

from __future__ import annotations

from ..config import AvatarConfig


def forward_flops(cfg: AvatarConfig, batch: int, latent_frames: int, latent_h: int, latent_w: int,
                  text_len: int, text_valid: int | None = None, characters: int = 1) -> float:
    """FLOPs of one full forward. Attention counts the official segments (valid text + padding apart)."""
    pt, ph, pw = cfg.patch_size
    hw = (latent_h // ph) * (latent_w // pw)
    n_img = (latent_frames // pt) * hw
    n_all = n_img + hw + text_len                     # video + reference frame + text
    valid = n_img + hw + (text_len if text_valid is None else text_valid)
    D = cfg.hidden_size
    per_token = 2 * 12 * D * D                        # qkv + proj + 4x MLP (double) == linear1 + linear2 (single)
    linear = (cfg.depth_double + cfg.depth_single) * per_token * n_all
    attn_pairs = valid ** 2 + (n_all - valid) ** 2
    attention = (cfg.depth_double + cfg.depth_single) * 4 * attn_pairs * D
    adapters = len([b for b in cfg.adapter_after_double if b < cfg.depth_double]) * characters * (
        2 * 2 * D * cfg.adapter_dim * n_img + 2 * 2 * cfg.audio_tokens_per_latent * cfg.adapter_dim * n_img)
    return float(batch * (linear + attention + adapters))


def cached_forward_flops(cfg: AvatarConfig, batch: int, latent_frames: int, latent_h: int, latent_w: int,
                         text_len: int, text_valid: int | None = None) -> float:
    """FLOPs of a deep-cache forward: one single block."""
    full_single = forward_flops(AvatarConfig(**{**cfg.to_dict(), "depth_double": 0, "depth_single": 1,
                                                "adapter_after_double": ()}),
                                batch, latent_frames, latent_h, latent_w, text_len, text_valid)
    return full_single
