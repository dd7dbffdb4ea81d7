"""The official 831-token text layout, derived here step by step from the official procedure (§6)."""

from __future__ import annotations

import pytest
import torch

from avatar_core.conditioning.text import OFFICIAL_LENGTH, official_text_layout

TEMPLATE, TEXT_LEN, IMAGE, PAD = 95, 256, -1, 0


def official_mask_by_simulation(n_text_before: int, n_text_after: int) -> torch.Tensor:
    """Replay the official steps on token ids: template + text + <image> + text, right-padded to 95 + 256;
    tokenizer mask; legacy merge expands <image> to 576 tokens (pads move behind them); 575 ones appended to
    the mask; crop the 95 template positions."""
    ids = [7] * TEMPLATE + [1] * n_text_before + [IMAGE] + [2] * n_text_after
    ids += [PAD] * (TEMPLATE + TEXT_LEN - len(ids))
    mask = [int(t != PAD) for t in ids] + [1] * 575
    return torch.tensor(mask[TEMPLATE:])


@pytest.mark.parametrize("before, after", [(9, 0), (9, 1), (40, 3), (254, 1)])
def test_mask_is_the_official_positional_mask(before, after):
    length = before + 576 + after  # what an unpadded encoder returns
    states = torch.randn(2, length, 8)
    padded, mask = official_text_layout(states)
    expected = official_mask_by_simulation(before, after)
    assert mask.shape == (2, OFFICIAL_LENGTH) == (2, 831) and expected.shape == (831,)
    assert torch.equal(mask[0], expected) and torch.equal(mask[1], expected)
    assert int(mask[0].sum()) == length  # the model attends to exactly as many tokens as are real
    assert torch.equal(padded[:, :length], states) and padded[:, length:].abs().sum() == 0


def test_full_length_prompt_has_no_padding():
    padded, mask = official_text_layout(torch.ones(1, 831, 4))
    assert mask.all() and padded.shape == (1, 831, 4)


def test_errors_name_the_fix():
    with pytest.raises(ValueError, match="prompt too long: 257 LLaVA tokens"):
        official_text_layout(torch.randn(1, 832, 4))
    with pytest.raises(ValueError, match="CLIPVisionEncode"):
        official_text_layout(torch.randn(1, 300, 4))  # no image tokens merged in
    with pytest.raises(ValueError, match="padded already"):
        official_text_layout(torch.randn(1, 600, 4), torch.tensor([[1] * 590 + [0] * 10]))
    with pytest.raises(ValueError, match=r"\[batch, tokens, dim\]"):
        official_text_layout(torch.randn(600, 4))
