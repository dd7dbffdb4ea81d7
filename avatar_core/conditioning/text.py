"""LLaVA text states -> the official 831-token layout and positional mask the Avatar transformer was trained with.

Official text path (reference/official_implementation.md §6): the prompt ends in ``<image>``; the tokenizer pads
the templated prompt to 95 + 256 tokens; transformers' legacy LLaVA merge puts the 576 image tokens in place of
``<image>`` and the pad tokens behind them; the attention mask gets 575 ones appended; cropping the 95 template
tokens leaves 256 + 575 = 831 positions:

    states: [text before <image> | 576 image tokens | text after <image> | pad states ]
    mask:   [ones for the L - 575 real positions    | zeros for padding   | 575 ones   ]

where L is the number of real positions (text tokens with the image tokens merged in). The mask is not aligned
with the states, and the token refiner reads it positionally (mean pooling, self-attention mask), so parity
needs this exact mask. Where the official code has the LLM's states of pad tokens, we have zeros: encoders
that return unpadded states (ComfyUI's) never computed them.
"""

from __future__ import annotations

import torch

TEXT_LEN = 256  # official text_len: LLaVA tokens after the 95-token template crop, <image> counted once
IMAGE_TOKENS = 576  # LLaVA (CLIP ViT-L/14 at 336 px) image tokens replacing the one <image> token
OFFICIAL_LENGTH = TEXT_LEN + IMAGE_TOKENS - 1  # 831


def official_text_layout(
    states: torch.Tensor,
    mask: torch.Tensor | None = None,
    image_tokens: int = IMAGE_TOKENS,
    text_len: int = TEXT_LEN,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Unpadded LLaVA states [B, L, D] (image tokens merged in) -> (states [B, 831, D], mask [B, 831] int64).

    ``mask``: the encoder's own attention mask, if any; it must be all ones (unpadded states), else the real
    length is unknown. The real positions keep their order and values; positions L.. are zeros.
    """
    if states.ndim != 3:
        raise ValueError(f"text states: expected [batch, tokens, dim], got shape {tuple(states.shape)}.")
    b, length, dim = states.shape  # (B, L, D)
    total = text_len + image_tokens - 1
    if length < image_tokens:
        raise ValueError(
            f"text states have {length} tokens, fewer than the {image_tokens} LLaVA image tokens: encode the prompt "
            "together with the reference image (CLIPVisionEncode of llava_llama3_vision -> Avatar Text Encode)."
        )
    if length > total:
        raise ValueError(
            f"prompt too long: {length - image_tokens + 1} LLaVA tokens, the model takes {text_len}; shorten the prompt."
        )
    if mask is not None and int(mask.sum()) != mask.numel():
        raise ValueError(
            "text conditioning is padded already (its attention mask has zeros): connect it straight from "
            "Avatar Text Encode or Avatar Load Conditioning."
        )
    out = states.new_zeros(b, total, dim)  # (B, 831, D)
    out[:, :length] = states
    official_mask = torch.zeros(b, total, dtype=torch.long, device=states.device)  # (B, 831)
    official_mask[:, : length - (image_tokens - 1)] = 1  # real text positions, <image> counted once
    official_mask[:, total - (image_tokens - 1) :] = 1  # the 575 appended ones
    return out, official_mask
