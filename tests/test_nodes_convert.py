"""Pure conversions used by the nodes (run without ComfyUI)."""

from __future__ import annotations

import pytest
import torch
from conftest import load_pack

convert = load_pack("nodes.convert")


@pytest.mark.parametrize("hw, size, expected", [
    ((704, 704), 704, (704, 704)),
    ((1080, 1920), 704, (640, 1216)),     # over the 704 x 1216 area: rescaled, multiples of 64
    ((512, 384), 384, (512, 384)),
])
def test_official_size_short_side_and_multiples_of_64(hw, size, expected):
    h, w = convert.official_size(*hw, size)
    assert (h, w) == expected
    assert h % 64 == 0 and w % 64 == 0


def test_official_size_rejects_non_multiple():
    with pytest.raises(ValueError, match="multiple of 64"):
        convert.official_size(512, 512, 700)


def test_official_text_layout_matches_the_official_positional_mask():
    # 10 text tokens with <image> expanded to 576 -> L = 9 + 576 = 585 unpadded states.
    states = torch.randn(1, 585, 8)
    padded, mask = convert.official_text_layout(states, None)
    assert padded.shape == (1, 831, 8) and mask.shape == (1, 831)
    assert torch.equal(padded[:, :585], states) and padded[:, 585:].abs().sum() == 0
    assert mask[0, :10].all() and not mask[0, 10:256].any() and mask[0, 256:].all()
    assert int(mask.sum()) == 585   # the model attends to exactly the real tokens


def test_official_text_layout_rejects_too_long_prompts():
    with pytest.raises(ValueError, match="prompt too long"):
        convert.official_text_layout(torch.randn(1, 900, 4), None)


def test_box_masks_grow_around_the_centre_and_clamp():
    m = convert.box_masks([(40, 40, 60, 60)], (100, 100), 3.0)
    assert m.shape == (1, 100, 100)
    ys, xs = torch.nonzero(m[0], as_tuple=True)
    assert (int(xs.min()), int(xs.max()), int(ys.min()), int(ys.max())) == (20, 79, 20, 79)
    edge = convert.box_masks([(0, 0, 20, 20)], (50, 50), 3.0)
    assert edge[0, 0, 0] == 1 and edge[0, 40, 40] == 0


def test_masks_to_latent_layout_and_preview():
    masks = torch.zeros(2, 64, 64)
    masks[0, :, :32] = 1
    masks[1, :, 32:] = 1
    lat = convert.masks_to_latent(masks, (8, 8))
    assert lat.shape == (1, 2, 1, 8, 8)
    assert lat[0, 0, 0, :, :3].min() == 1 and lat[0, 0, 0, :, 5:].max() == 0
    image = torch.rand(1, 64, 64, 3)
    preview = convert.mask_preview(image, masks)
    assert preview.shape == (1, 64, 64, 3) and not torch.allclose(preview, image, atol=0.05)
