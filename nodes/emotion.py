"""Emotion reference: an IMAGE of the wanted expression, VAE-encoded for the Audio Emotion Module."""

from __future__ import annotations

import comfy.latent_formats
import comfy.utils
import torch
from comfy_api.latest import io

from ..avatar_core.specs.concepts import EMOTION_SIZE
from ..avatar_core.specs.tensors import IMAGE
from .convert import official_size
from .types import Emotion


class AvatarEmotionEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AvatarEmotionEncode", display_name="Avatar Emotion Reference", category="HunyuanVideo-Avatar",
            description="Encodes an emotion reference image with the native HunyuanVideo VAE. Used only when the "
                        "model has Audio Emotion Module weights (the public checkpoint has none: then it is ignored).",
            inputs=[
                io.Image.Input("image", tooltip="A face showing the wanted emotion."),
                io.Vae.Input("vae", tooltip="The HunyuanVideo VAE (hunyuan_video_vae_bf16.safetensors)."),
                io.Int.Input("image_size", default=512, min=EMOTION_SIZE.ui_min, max=EMOTION_SIZE.ui_max, step=64,
                             tooltip="Short side the EMOTION image is resized to before VAE encoding; independent "
                                     "of the sampler's video image_size (704). Its latent only gives the emotion "
                                     "module cross-attention tokens, so 512 (1024 tokens) keeps that cheap; the "
                                     "public code has no emotion module, hence no official value."),
            ],
            outputs=[Emotion.Output(display_name="emotion")],
        )

    @classmethod
    def execute(cls, image: torch.Tensor, vae, image_size: int) -> io.NodeOutput:
        IMAGE.check("image", image, "Connect the emotion reference image.")
        image_size = EMOTION_SIZE.check("image_size", image_size, "Set Avatar Emotion Reference's image_size.")
        h, w = official_size(image.shape[1], image.shape[2], image_size)
        pixels = comfy.utils.common_upscale(image[:1, :, :, :3].movedim(-1, 1), w, h, "lanczos", "disabled")
        latent = vae.encode(pixels.movedim(1, -1))  # [1, 16, 1, h/8, w/8]
        return io.NodeOutput(latent * comfy.latent_formats.HunyuanVideo().scale_factor)
