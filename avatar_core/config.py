"""Typed model configuration for the HunyuanVideo-Avatar transformer.

Every size the official code hard-codes (3072, 16 audio tokens per latent frame, adapters after double
blocks 1, 3, ..., 19) is a field here, with the released model's value as the default.
"""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class AvatarConfig:
    """Sizes of the Avatar MM-DiT. Defaults are the released 13B model."""

    in_channels: int = 16
    out_channels: int = 16
    hidden_size: int = 3072
    num_heads: int = 24
    mlp_ratio: float = 4.0
    depth_double: int = 20
    depth_single: int = 40
    patch_size: tuple[int, int, int] = (1, 2, 2)
    rope_dims: tuple[int, int, int] = (16, 56, 56)
    rope_theta: float = 256.0
    qkv_bias: bool = True
    text_dim: int = 4096          # LLaVA hidden states
    text_pooled_dim: int = 768    # CLIP-L pooled output
    refiner_depth: int = 2
    # Audio (whisper-tiny windows: 10 positions x 5 hidden states x 384 channels per video frame).
    audio_window: int = 10
    audio_layers: int = 5
    audio_channels: int = 384
    audio_proj_dim: int = 1024            # AudioProjNet2 intermediate width
    audio_tokens_per_frame: int = 4       # tokens per video frame out of audio_proj
    temporal_compression: int = 4         # video frames per latent frame (causal VAE)
    adapter_dim: int = 1024               # single-head cross-attention width of the audio adapters
    adapter_after_double: tuple[int, ...] = tuple(range(1, 20, 2))
    motion_dims: int = 4                  # motion_exp / motion_pose take 4 ids each

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def mlp_hidden(self) -> int:
        return int(self.hidden_size * self.mlp_ratio)

    @property
    def audio_tokens_per_latent(self) -> int:
        """16 for the released model: 4 video frames x 4 tokens."""
        return self.audio_tokens_per_frame * self.temporal_compression

    @property
    def audio_in_dim(self) -> int:
        return self.audio_window * self.audio_layers * self.audio_channels

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if sum(self.rope_dims) != self.head_dim:
            raise ValueError(f"rope_dims {self.rope_dims} must sum to head_dim {self.head_dim}")
        if self.hidden_size % self.motion_dims:
            raise ValueError(f"hidden_size must be divisible by motion_dims ({self.motion_dims})")

    @classmethod
    def avatar_13b(cls) -> AvatarConfig:
        """The released HunyuanVideo-Avatar transformer (12.99 B parameters)."""
        return cls()

    @classmethod
    def tiny(cls) -> AvatarConfig:
        """A few-MB model with every feature present, for tests and the smoke mode."""
        return cls(hidden_size=64, num_heads=2, depth_double=4, depth_single=2, rope_dims=(8, 12, 12),
                   text_dim=32, text_pooled_dim=16, audio_proj_dim=16, adapter_dim=32)

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict) -> AvatarConfig:
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown AvatarConfig fields: {sorted(unknown)}")
        conv = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        return cls(**conv)

