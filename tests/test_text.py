"""The official LLaVA text conditioning (shared/fixtures/text): tokens, pixels, merge, pad states, mask, errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from avatar_core.conditioning import text as T
from avatar_core.conditioning.image import official_video_size
from avatar_core.conditioning.llava import TorchLlava
from avatar_core.conditioning.llava_image import llava_pixels
from avatar_core.parity.common import load_fixture
from avatar_core.parity.tokenizer import TokenizerUnavailable, load_llava_tokenizer

SHARED = Path(os.environ.get("HYAVATAR_SHARED", Path(__file__).resolve().parents[2] / "shared"))
FIXTURES = SHARED / "fixtures" / "text"
needs_fixtures = pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"text fixtures not found at {FIXTURES}")


def _cases():
    for path in sorted(FIXTURES.glob("case_*.json")):
        yield json.loads(path.read_text(encoding="utf-8")), load_fixture(path.with_suffix(".safetensors"))


@pytest.fixture(scope="module")
def tokenizer():
    try:
        return load_llava_tokenizer()
    except TokenizerUnavailable as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def model():
    return TorchLlava.load(FIXTURES / "tiny_llava_config.json", FIXTURES / "tiny_llava_weights.safetensors")


class NoModel:
    """A runner that must not be reached (errors are raised before any model runs)."""

    def embed_tokens(self, ids):
        raise AssertionError("the LLM ran")

    image_features = hidden_states = embed_tokens


@needs_fixtures
def test_tokens_string_and_prefix_rule_are_the_official_ones(tokenizer):
    for meta, f in _cases():
        for name, p in meta["prompts"].items():
            assert T.official_string(p["prompt"]) == p["string_given_to_tokenizer"]
            if p.get("meta_prompt_in_csv"):  # positive prompts: the dataset prefix; the negative has none
                assert T.with_prefix(p["meta_prompt_in_csv"], True) == p["prompt"]
            tokens = T.tokenize_prompt(tokenizer, p["prompt"], name)
            assert torch.equal(tokens.input_ids, f[f"{name}.input_ids"]), name
            assert torch.equal(tokens.attention_mask, f[f"{name}.attention_mask"]), name
            assert tokens.valid == p["facts"]["n_tokens_valid"]


@needs_fixtures
def test_too_long_prompt_is_refused_before_the_llm_with_the_tokens_to_cut(tokenizer):
    longest = max((p["prompt"] for meta, _ in _cases() for p in meta["prompts"].values()),
                  key=lambda s: T.tokenize_prompt(tokenizer, s).valid)
    assert T.tokenize_prompt(tokenizer, longest).valid == T.MAX_LENGTH  # the fixtures hold one that just fits
    with pytest.raises(ValueError, match=r"negative_prompt too long: .* needs 262; cut about 6 tokens"):
        T.encode_official(NoModel(), T.tokenize_prompt(tokenizer, longest + " one two three four five six",
                                                       "negative_prompt"), torch.zeros(576, 32))
    with pytest.raises(ValueError, match="'<image>' is reserved"):
        T.tokenize_prompt(tokenizer, "a <image> here")


def test_positional_mask_and_merge_layout_follow_the_official_procedure():
    """Replay the official steps on ids: pad to 351, mask, legacy merge (pads behind the 576 image rows),
    575 ones appended, crop 95; positions count text + image, every pad sits at position 1."""
    for n in (97, 122, 300, 351):
        ids = torch.tensor([T.BOS] + [5] * (n - 2) + [T.IMAGE_TOKEN] + [T.PAD_TOKEN] * (351 - n))
        tokens = T.PromptTokens(ids, (ids != T.PAD_TOKEN).long())
        expected = torch.tensor([1] * n + [0] * (351 - n) + [1] * 575)[95:]
        assert torch.equal(T.prompt_mask(tokens.attention_mask), expected)
        mask, pos = T.merged_layout(tokens)
        real = n - 1 + 576
        assert mask.sum() == real and mask[:real].all() and pos[real:].eq(1).all()
        assert torch.equal(pos[:real], torch.arange(real)) and len(mask) == 926
        assert int(expected.sum()) == real - 95  # the sum selects exactly text + image after the crop


class Recorder:
    """LLM stand-in that records how many rows it ran: a row's state depends on its input and position."""

    def __init__(self):
        self.rows = []

    def embed_tokens(self, ids):
        return ids[..., None].float().expand(-1, -1, 4) / 1e5

    def hidden_states(self, embeds, mask, position_ids):
        self.rows.append(embeds.shape[1])
        return embeds + position_ids[..., None] + mask.sum()


def test_pad_states_are_computed_once_and_shared_by_every_pad():
    runner = Recorder()
    ids = torch.tensor([T.BOS] + [7] * 20 + [T.IMAGE_TOKEN] + [T.PAD_TOKEN] * 329)
    tokens = T.PromptTokens(ids, (ids != T.PAD_TOKEN).long())
    full = T.merged_states(runner, tokens, torch.ones(576, 4))
    real = 22 - 1 + 576
    assert runner.rows == [real + 1] and full.shape == (926, 4)  # the real rows + ONE pad row
    assert (full[real:] == full[real]).all() and full[real].abs().sum() > 0  # not zero: the LLM's pad state


@needs_fixtures
def test_pixels_are_bitwise_the_official_ones_from_the_video_size_rule():
    for meta, f in _cases():
        image = Image.open(FIXTURES / meta["source_image"]["file"])
        w, h = meta["reference_after_official_resize"]["size_wh"]
        assert official_video_size(image.height, image.width, 704) == (h, w)  # the official --image-size 704
        as_comfy_image = torch.from_numpy(np.array(image.convert("RGB"))).float() / 255  # LoadImage's IMAGE
        pixels = llava_pixels(as_comfy_image)
        assert torch.equal(pixels, f["pixel_values_fp32"]) and torch.equal(pixels.half(), f["pixel_values"])


@needs_fixtures
def test_pure_torch_llava_gives_the_official_states_and_mistakes_are_caught(model):
    meta, f = next(_cases())
    name = next(iter(meta["prompts"]))
    tokens = T.PromptTokens(f[f"{name}.input_ids"], f[f"{name}.attention_mask"])
    with torch.no_grad():
        states, mask = T.encode_official(model, tokens, f["image_features"])
    ref = f[f"{name}.prompt_embeds"]
    assert torch.allclose(states, ref, atol=1e-5, rtol=1e-5) and torch.equal(mask, f[f"{name}.prompt_mask"])
    real = tokens.valid - 1 + 576 - 95
    zero_pads = states.clone()
    zero_pads[real:] = 0  # what the previous version gave the transformer
    assert (zero_pads - ref).abs().max() > 1.0
