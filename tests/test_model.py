"""The Avatar transformer against the official code's fixtures and its own contracts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from avatar_core.config import AvatarConfig
from avatar_core.loading import build_random_transformer
from avatar_core.manifest import manifest_lines
from avatar_core.model.audio import AudioAdapter
from avatar_core.parity.transformer import forward_checks, load_fixture_model

SHARED = Path(os.environ.get("HYAVATAR_SHARED", Path(__file__).resolve().parents[2] / "shared"))
FIXTURES = SHARED / "fixtures" / "parity"
needs_fixtures = pytest.mark.skipif(not (FIXTURES / "tiny_config.json").is_file(),
                                    reason=f"parity fixtures not found at {FIXTURES} (set HYAVATAR_SHARED)")


@pytest.mark.skipif(not (SHARED / "reference").is_dir(), reason="shared/reference not found")
def test_13b_manifest_equals_official_key_list():
    ref = (SHARED / "reference" / "avatar_transformer_13b_keys.tsv").read_text().strip().splitlines()
    assert manifest_lines(AvatarConfig.avatar_13b()) == ref


def test_13b_parameter_count():
    with torch.device("meta"):
        from avatar_core.model import AvatarTransformer
        n = sum(p.numel() for p in AvatarTransformer(AvatarConfig.avatar_13b()).parameters())
    assert n == 12_991_493_184  # reference/avatar_transformer_13b_config.json "parameter_count"


@needs_fixtures
@pytest.mark.parametrize("case", sorted(p.name for p in FIXTURES.glob("fwd_*.safetensors")))
def test_forward_matches_official(case):
    model = load_fixture_model(FIXTURES)
    results = forward_checks(model, FIXTURES / case)
    assert len(results) >= 1
    bad = [r.line() for r in results if not r.ok]
    assert not bad, "\n".join(bad)


def tiny_inputs(B=1, N=1, T=3, H=4, W=6, L=8, seed=0):
    cfg = AvatarConfig.tiny()
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    mask = torch.zeros(B, N, 1, H, W)
    mask[..., : H // 2, : W // 2] = 1
    return dict(x=r(B, 16, T, H, W), t=torch.full((B,), 500.0), ref_latents=r(B, 16, T, H, W),
                text_states=r(B, L, cfg.text_dim), text_mask=torch.tensor([[1] * 5 + [0] * (L - 5)] * B),
                text_pooled=r(B, cfg.text_pooled_dim), motion_exp=torch.full((B, 4), 30),
                motion_pose=torch.full((B, 4), 25), fps=torch.full((B,), 25.0),
                audio=r(B, N, 4 * T - 3, 10, 5, 384), face_mask=mask)


@pytest.fixture(scope="module")
def tiny_model():
    return build_random_transformer(AvatarConfig.tiny(), seed=1)


def call(model, inp, **kw):
    inp = dict(inp)
    x, t = inp.pop("x"), inp.pop("t")
    with torch.no_grad():
        return model(x, t, **inp, **kw)


def test_one_character_layouts_agree(tiny_model):
    inp = tiny_inputs()
    five_d = dict(inp, audio=inp["audio"][:, 0])   # the official [B, F, 10, 5, 384] layout
    assert torch.equal(call(tiny_model, inp), call(tiny_model, five_d))


def test_second_character_with_empty_mask_changes_nothing(tiny_model):
    one, two = tiny_inputs(N=1), tiny_inputs(N=2)
    two["audio"][:, 0], two["face_mask"][:, 1] = one["audio"][:, 0], 0
    for k in ("x", "ref_latents", "text_states", "text_pooled"):
        two[k] = one[k]
    # Not bitwise: audio_proj then runs on a batch of 2 tracks (different GEMM blocking).
    assert torch.allclose(call(tiny_model, one), call(tiny_model, two), atol=1e-5, rtol=1e-5)


def test_second_character_updates_only_its_mask_region():
    torch.manual_seed(0)
    adapter = AudioAdapter(64, 32)
    B, T, hw, D, n_ref = 1, 3, 24, 64, 24
    img = torch.randn(B, n_ref + T * hw, D)
    audio = torch.randn(B, 2, T, 16, D)
    masks = torch.zeros(B, 2, T * hw, 1)
    masks[:, 0, :30] = 1.0
    masks[:, 1, 40:55] = 0.5
    from avatar_core.model.transformer import AvatarTransformer as M
    single = M._inject_audio(adapter, img, audio[:, :1], masks[:, :1], n_ref, T)
    both = M._inject_audio(adapter, img, audio, masks, n_ref, T)
    changed = (both - single).abs().sum(-1)[0, n_ref:] > 0
    assert changed[40:55].all() and not changed[:40].any() and not changed[55:].any()
    assert torch.equal(both[:, :n_ref], img[:, :n_ref])  # reference tokens untouched


def test_second_character_affects_output(tiny_model):
    one, two = tiny_inputs(N=1), tiny_inputs(N=2)
    two["audio"][:, 0], two["face_mask"][:, 0] = one["audio"][:, 0], one["face_mask"][:, 0]
    two["face_mask"][:, 1] = 0
    two["face_mask"][:, 1, :, 2:, 3:] = 1
    for k in ("x", "ref_latents", "text_states", "text_pooled"):
        two[k] = one[k]
    assert not torch.allclose(call(tiny_model, one), call(tiny_model, two))


def test_input_errors_name_the_input(tiny_model):
    inp = tiny_inputs()
    with pytest.raises(ValueError, match="'audio'.*4T-3"):
        call(tiny_model, dict(inp, audio=inp["audio"][:, :, :-1]))
    with pytest.raises(ValueError, match="'face_mask'"):
        call(tiny_model, dict(inp, face_mask=inp["face_mask"].repeat(1, 2, 1, 1, 1)))
    with pytest.raises(ValueError, match="'ref_latents'"):
        call(tiny_model, dict(inp, ref_latents=inp["ref_latents"][:, :, :1]))


@pytest.mark.parametrize("name, change, words", [
    ("x", lambda i: dict(i, x=i["x"][:, :8], ref_latents=i["ref_latents"][:, :8]), "(B, 16, T, H, W)"),
    ("x", lambda i: dict(i, x=i["x"][..., :5], ref_latents=i["ref_latents"][..., :5]), "divisible by the patch"),
    ("text_states", lambda i: dict(i, text_states=i["text_states"][..., :-1]), "expected (1, L,"),
    ("text_mask", lambda i: dict(i, text_mask=i["text_mask"][:, :-1]), "expected (1, 8), got (1, 7)"),
])
def test_each_model_input_error_names_its_input(tiny_model, name, change, words):
    with pytest.raises(ValueError) as err:
        call(tiny_model, change(tiny_inputs()))
    assert f"input {name!r}" in str(err.value) and words in str(err.value)


def test_deep_cache_call_reproduces_full_call_last_block(tiny_model):
    inp = tiny_inputs()
    full, cache = call(tiny_model, inp, return_cache=True)
    again = call(tiny_model, inp, cached_tokens=cache)
    assert torch.allclose(full, again, atol=1e-6)
    with pytest.raises(ValueError, match="cached_tokens"):
        call(tiny_model, inp, cached_tokens=cache[:, 1:])


def test_bf16_forward_close_to_fp32():
    m32 = build_random_transformer(AvatarConfig.tiny(), seed=3)
    m16 = build_random_transformer(AvatarConfig.tiny(), dtype=torch.bfloat16, seed=3)
    assert m16.before_proj.weight.dtype == torch.float32 and m16.img_in.proj.weight.dtype == torch.bfloat16
    inp = tiny_inputs()
    a, b = call(m32, inp), call(m16, inp)
    assert b.dtype == torch.float32 and torch.isfinite(b).all()
    assert (a - b).abs().mean() < 0.05 * a.abs().mean()
