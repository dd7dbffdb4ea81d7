"""The video size the official preprocessing picks for a reference image (audio_dataset.py)."""

from __future__ import annotations

import pytest

from avatar_core.conditioning.image import official_video_size


@pytest.mark.parametrize("hw, size, expected", [
    ((704, 704), 704, (704, 704)),
    # 1920x1080 -> 704x1280 exceeds 704x1216; the original is rescaled by sqrt(704*1216 / (1920*1080)) = 0.6425:
    # 1080*0.6425/64 = 10.84 -> 11 -> 704, 1920*0.6425/64 = 19.28 -> 19 -> 1216.
    ((1080, 1920), 704, (704, 1216)),
    ((512, 384), 384, (512, 384)),         # 512x384 is under 384x576: kept
    # 2048x1024 at 512 -> 1024x512 exceeds 512x768: scale sqrt(512*768 / (2048*1024)) = 0.433 -> 896x448.
    ((1024, 2048), 512, (448, 896)),
    ((1000, 700), 640, (896, 640)),        # no official cap for 640: 1.5x, 640x960 area; 914 -> 896 fits
])
def test_official_video_size(hw, size, expected):
    assert official_video_size(*hw, size) == expected


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="multiple of 64"):
        official_video_size(512, 512, 700)
    with pytest.raises(ValueError, match="height: 0 is out of range"):
        official_video_size(0, 512, 512)
