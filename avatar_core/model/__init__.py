"""The Avatar MM-DiT: layers, blocks, audio/emotion modules and the transformer."""

from .transformer import AvatarTransformer

__all__ = ["AvatarTransformer"]
