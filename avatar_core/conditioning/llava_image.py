"""The official LLaVA input image: the reference at the video size (LANCZOS), then 336x336 bilinear, CLIP mean/std.

Official: audio_dataset.py resizes the reference to the video size with PIL LANCZOS, and `llava_transform`
(torchvision Resize((336, 336)) on a PIL image = PIL bilinear, ToTensor, Normalize) makes the pixels, which are
cast to float16 before LLaVA. Plain Pillow + torch gives the same floats bitwise (fixtures README).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from .image import official_video_size

CLIP_MEAN = (0.48145466, 0.4578275, 0.4082107)  # official values (ComfyUI's mean[2] is 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
LLAVA_SIZE = 336


def to_pil(image: torch.Tensor | np.ndarray | Image.Image) -> Image.Image:
    """RGB PIL image from a PIL image, a uint8 [H, W, 3] array or a float [H, W, C] tensor in 0..1
    (ComfyUI IMAGE item: LoadImage divides uint8 by 255, so rounding x * 255 gives the file's pixels back)."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, torch.Tensor):
        if image.dtype != torch.uint8:
            image = (image[..., :3].float().clamp(0, 1) * 255).round().to(torch.uint8)
        image = image.cpu().numpy()
    return Image.fromarray(np.ascontiguousarray(image[..., :3]), "RGB")


def reference_at_video_size(image: Image.Image, video_hw: tuple[int, int]) -> Image.Image:
    """The reference resized to the video (height, width) with LANCZOS, as the official dataset does."""
    h, w = video_hw
    return image.resize((w, h), Image.LANCZOS)


def llava_pixels(image: torch.Tensor | np.ndarray | Image.Image, image_size: int = 704,
                 video_hw: tuple[int, int] | None = None) -> torch.Tensor:
    """Official LLaVA pixel values [3, 336, 336] float32 (cast to float16 before the vision tower, as the
    official code does). `video_hw` defaults to the official video size for `image_size`."""
    pil = to_pil(image)
    if video_hw is None:
        video_hw = official_video_size(pil.height, pil.width, image_size)
    small = reference_at_video_size(pil, video_hw).resize((LLAVA_SIZE, LLAVA_SIZE), Image.BILINEAR)
    x = torch.from_numpy(np.array(small)).permute(2, 0, 1).float().div(255)  # (3, 336, 336)
    mean = torch.tensor(CLIP_MEAN, dtype=torch.float32)[:, None, None]
    std = torch.tensor(CLIP_STD, dtype=torch.float32)[:, None, None]
    return (x - mean) / std
