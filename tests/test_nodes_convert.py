"""Pure conversions used by the nodes (run without ComfyUI)."""

from __future__ import annotations

import pytest
import torch
from conftest import load_pack

convert = load_pack("nodes.convert")


def test_masks_by_character_places_each_mask_at_its_index():
    m0, m2 = torch.ones(1, 8, 8), torch.zeros(1, 8, 8)
    out = convert.masks_by_character({"mask_2": m2, "mask_0": m0, "mask_1": None}, 3)
    assert out[0] is m0 and out[1] is None and out[2] is m2
    assert convert.masks_by_character(None, 2) == [None, None]
    with pytest.raises(ValueError, match="mask_3 is connected but characters=2"):
        convert.masks_by_character({"mask_3": m0}, 2)


def test_mask_preview_tints_each_character():
    masks = torch.zeros(2, 64, 64)
    masks[0, :, :32] = 1
    masks[1, :, 32:] = 1
    image = torch.rand(1, 64, 64, 3)
    preview = convert.mask_preview(image, masks)
    assert preview.shape == (1, 64, 64, 3) and not torch.allclose(preview, image, atol=0.05)
