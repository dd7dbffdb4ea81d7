"""Reference-image size: the official preprocessing's choice of video size."""

from __future__ import annotations

import math

from ..specs.concepts import VIDEO_SIZE
from ..specs.fields import Int, checked
from ..specs.tensors import MAX_SIDE

_SIDE = Int(1, MAX_SIDE, unit="px", fix="Give the reference image's size in pixels.")

# Official long-side caps by short side (audio_dataset.py); other sizes use 1.5x.
_LONG_SIDE = {704: 1216, 512: 768, 384: 576, 256: 384}


@checked(height=_SIDE, width=_SIDE, image_size=VIDEO_SIZE)
def official_video_size(height: int, width: int, image_size: int = 704) -> tuple[int, int]:
    """(height, width) of the video for a reference image, as the official code picks it.

    Short side -> `image_size`, each side rounded to a multiple of 64; if that exceeds the area
    image_size x long_cap (704 x 1216 for 704), the ORIGINAL size is rescaled to that area and rounded again.
    """
    scale = image_size / min(height, width)
    h, w = round(height * scale / 64) * 64, round(width * scale / 64) * 64
    cap = image_size * _LONG_SIDE.get(image_size, image_size * 1.5)
    if h * w > cap:
        scale = math.sqrt(cap / (width * height))
        h, w = round(height * scale / 64) * 64, round(width * scale / 64) * 64
    return max(h, 64), max(w, 64)
