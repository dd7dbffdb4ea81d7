"""The official LLaVA text conditioning: tokens, legacy image merge, hidden layer -3, crop and positional mask.

What the official encoder computes (shared/fixtures/text/README.md, hymm_sp/text_encoder/__init__.py):

    string  = TEMPLATE.format(prompt) + "\\nThe person looks like<image>"   (suffix AFTER the user <|eot_id|>)
    tokens  = BOS + BPE(string), right-padded with <pad> to 351 = 95 template + 256 text (error if longer)
    LLM in  = [embeddings of the n-1 tokens before <image>][576 image features][351-n ZERO rows]
    mask    = 1 on text + image, 0 on pads; positions 0..n+574, and 1 for every pad
    states  = output of decoder layer L-2 (HF hidden_states[-3], no final norm), rows 95.. -> [831, D]
    mask    = cat(tokenizer mask, 575 ones)[95:] -> [831]: NOT aligned with the states (see the README)

The LLM and vision tower are pluggable (`LlavaRunner`): ComfyUI's loaded models in the node, the pure-torch
`llava.TorchLlava` for the parity check. Every pad position of a prompt has the same state (zero input,
position 1, the same visible keys), so it is computed once: the LLM runs on the real rows plus one pad.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from ..errors import InputError

TEMPLATE = (
    "<|start_header_id|>system<|end_header_id|>\n\nDescribe the video by detailing the following aspects: "
    "1. The main content and theme of the video.2. The color, shape, size, texture, quantity, text, and spatial "
    "relationships of the objects.3. Actions, events, behaviors temporal relationships, physical movement changes "
    "of the objects.4. background environment, light, style and atmosphere.5. camera angles, movements, and "
    "transitions used in the video:<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n{}<|eot_id|>"
)
PERSON_SUFFIX = "\nThe person looks like<image>"
PROMPT_PREFIX = "Authentic, Realistic, Natural, High-quality, Lens-Fixed, "  # positive prompts only
NEGATIVE_PROMPT = ("Aerial view, aerial view, overexposed, low quality, deformation, a poor composition, bad hands, "
                   "bad teeth, bad eyes, bad limbs, distortion, blurring, Lens changes")

BOS, IMAGE_TOKEN, PAD_TOKEN = 128000, 128257, 128258
CROP_START = 95                 # template tokens incl. BOS, cropped after the LLM
TEXT_LEN = 256                  # official text_len
MAX_LENGTH = CROP_START + TEXT_LEN  # 351 tokens given to the LLM before the merge
IMAGE_TOKENS = 576              # CLIP ViT-L/14 at 336 px
MERGED_LENGTH = MAX_LENGTH + IMAGE_TOKENS - 1   # 926
OFFICIAL_LENGTH = MERGED_LENGTH - CROP_START    # 831


class LlavaRunner(Protocol):
    """The three model calls the official pipeline needs; batch 1, float32 results."""

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor: ...  # [1, L] -> [1, L, D]

    def image_features(self, pixels: torch.Tensor) -> torch.Tensor: ...  # [1, 3, 336, 336] -> [1, 576, D]

    def hidden_states(self, embeds: torch.Tensor, mask: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        """[1, S, D], [1, S], [1, S] -> output of decoder layer L-2 (HF hidden_states[-3]), no final norm."""
        ...


@dataclass(frozen=True)
class PromptTokens:
    input_ids: torch.Tensor       # [351] int64
    attention_mask: torch.Tensor  # [351] int64

    @property
    def valid(self) -> int:
        """n: tokens before padding, BOS and <image> included."""
        return int(self.attention_mask.sum())


def official_string(prompt: str) -> str:
    return TEMPLATE.format(prompt) + PERSON_SUFFIX


def with_prefix(prompt: str, add_prefix: bool) -> str:
    return (PROMPT_PREFIX if add_prefix else "") + prompt


def _encode(tokenizer, text: str) -> list[int]:
    """Token ids of `text` from an HF `tokenizers.Tokenizer`, a transformers tokenizer or ComfyUI's BPE
    tokenizer (called like transformers'). The official tokenizer starts with BOS; tokenizers built from a
    tokenizer.json whose post-processor they cannot read add none, so BOS is added here when missing."""
    if callable(tokenizer):  # transformers / ComfyUI: tokenizer(text)["input_ids"]
        ids = list(tokenizer(text)["input_ids"])
    else:  # tokenizers.Tokenizer
        ids = list(tokenizer.encode(text).ids)
    return ids if ids[:1] == [BOS] else [BOS] + ids


def tokenize_prompt(tokenizer, prompt: str, name: str = "prompt") -> PromptTokens:
    """The official tokens of one prompt: [351] ids padded with <pad>, and the tokenizer mask.

    Raised before any model runs: a prompt that does not fit (officially truncation cuts <image> off and the
    LLaVA merge crashes) and a prompt that contains the <image> token itself (the merge would crash too)."""
    ids = _encode(tokenizer, official_string(prompt))
    if ids[-1] != IMAGE_TOKEN or ids.count(IMAGE_TOKEN) != 1:
        raise InputError(f"{name}: the text '<image>' is reserved for the reference image's tokens; "
                         f"remove it from the {name}.")
    if len(ids) > MAX_LENGTH:
        raise InputError(
            f"{name} too long: the official text encoder takes {TEXT_LEN} tokens after its template and this "
            f"{name} needs {len(ids) - CROP_START}; cut about {len(ids) - MAX_LENGTH} tokens "
            f"(a token is ~3/4 of an English word). {name}: {prompt[:80]!r}{'...' if len(prompt) > 80 else ''}")
    pads = MAX_LENGTH - len(ids)
    input_ids = torch.tensor(ids + [PAD_TOKEN] * pads, dtype=torch.long)
    mask = torch.tensor([1] * len(ids) + [0] * pads, dtype=torch.long)
    return PromptTokens(input_ids, mask)


def prompt_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """The official prompt_mask [831]: the tokenizer mask with 575 ones appended, template cropped."""
    ones = attention_mask.new_ones(IMAGE_TOKENS - 1)
    return torch.cat([attention_mask, ones])[CROP_START:]


def merged_layout(tokens: PromptTokens) -> tuple[torch.Tensor, torch.Tensor]:
    """LLM mask and position ids [926] after the legacy merge: 1 / 0..n+574 on text + image, 0 / 1 on pads."""
    real = tokens.valid - 1 + IMAGE_TOKENS
    mask = torch.zeros(MERGED_LENGTH, dtype=torch.long)
    mask[:real] = 1
    positions = torch.ones(MERGED_LENGTH, dtype=torch.long)
    positions[:real] = torch.arange(real)
    return mask, positions


def merged_states(runner: LlavaRunner, tokens: PromptTokens, image_features: torch.Tensor) -> torch.Tensor:
    """Layer -3 states [926, D] of the merged sequence (all positions, pads included, before the crop)."""
    n = tokens.valid
    real = n - 1 + IMAGE_TOKENS
    pads = MERGED_LENGTH - real
    mask, positions = merged_layout(tokens)
    rows = real + (1 if pads else 0)  # one pad row stands for all: every pad state is the same
    text = runner.embed_tokens(tokens.input_ids[None, : n - 1])  # (1, n-1, D)
    feats = image_features.reshape(1, IMAGE_TOKENS, -1).to(text)  # (1, 576, D)
    embeds = torch.cat([text, feats, text.new_zeros(1, rows - real, text.shape[-1])], dim=1)  # (1, rows, D)
    out = runner.hidden_states(embeds, mask[None, :rows].to(text.device), positions[None, :rows].to(text.device))
    out = out[0].float()  # (rows, D)
    return torch.cat([out[:real], out[real:].expand(pads, -1)]) if pads else out  # (926, D)


def encode_official(runner: LlavaRunner, tokens: PromptTokens,
                    image_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(states [831, D] float32, mask [831] int64): what the official pipeline gives the transformer."""
    states = merged_states(runner, tokens, image_features)[CROP_START:]
    return states, prompt_mask(tokens.attention_mask).to(states.device)


def check_official_conditioning(states: torch.Tensor, mask: torch.Tensor | None, name: str) -> None:
    """Conditioning must be in the official layout: [B, 831, D] states and the [B, 831] positional mask."""
    if states.ndim != 3 or states.shape[1] != OFFICIAL_LENGTH or mask is None or \
            tuple(mask.shape) != tuple(states.shape[:2]):
        raise InputError(
            f"{name}: text conditioning of shape {tuple(states.shape)} is not the official 831-position layout "
            "made by Avatar Text Encode (it comes from another text encoder node or an older version of this "
            "pack): encode the prompt with Avatar Text Encode, or load a file saved from it.")
