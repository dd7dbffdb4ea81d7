"""What each refusal of the tensor, audio and field specs says: the fix, the caller's hint, the right numbers.

Mutation testing of avatar_core/specs (scripts/mutation.sh specs) found refusals whose fix or hint could be dropped,
a rank rule that could be flipped and a boundary that could move with no test failing; each case here is written
from the spec's documented contract (avatar_core/specs/*.py docstrings), not from its output.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from avatar_core.errors import InputError
from avatar_core.sampling.sampler import TextConditioning
from avatar_core.sampling.stepcache import StepCacheConfig
from avatar_core.specs import tensors
from avatar_core.specs.audio import SILENCE_PEAK, WAVEFORM
from avatar_core.specs.fields import DECLARED, Items, Number, Rule, declared, span
from avatar_core.specs.tensors import IMAGE, MASK, ONE_IMAGE

HINT = "HINT-7f3 (the caller's advice)"

BAD_IMAGES = {  # case -> (spec, value, words the message must hold)
    "rank 3 to the batch spec": (IMAGE, torch.rand(64, 64, 3), "[batch, height, width, 3]"),
    "channels first": (IMAGE, torch.rand(1, 3, 64, 80), "image.permute(0, 2, 3, 1)"),
    "an empty batch": (IMAGE, torch.rand(0, 64, 64, 3), "0 images"),
    "a batch to the one-image spec": (ONE_IMAGE, torch.rand(2, 64, 64, 3), "pick one frame"),
    "too small": (IMAGE, torch.rand(1, 32, 80, 3), "80x32 is too small; give at least 64x64 pixels"),
    "too small, unbatched [H, W, C]": (ONE_IMAGE, torch.rand(40, 8, 3), "8x40 is too small; give at least 16x16"),
    "integer pixels": (IMAGE, torch.zeros(1, 64, 64, 3, dtype=torch.uint8), "use image.float() / 255."),
    "NaN pixels": (IMAGE, torch.full((1, 64, 64, 3), float("nan")), "is broken (reload the image)."),
    "0..255 pixels": (IMAGE, torch.full((1, 64, 64, 3), 200.0), "0..1"),
    "a float numpy array": (ONE_IMAGE, np.zeros((64, 64, 3), np.float32), "RGB uint8 [H, W, 3]"),
    "not an image": (IMAGE, [1, 2], "got list"),
}


@pytest.mark.parametrize("case", sorted(BAD_IMAGES))
def test_each_image_refusal_says_its_fix_and_passes_the_hint_on(case):
    spec, value, words = BAD_IMAGES[case]
    with pytest.raises(InputError) as err:
        spec.check("reference", value, HINT)
    msg = str(err.value)
    assert msg.startswith("reference: ") and words in msg, msg
    assert spec.fix in msg and HINT in msg, msg


def test_the_one_image_spec_takes_an_unbatched_image_and_the_batch_spec_refuses_it():
    image = torch.rand(64, 80, 3)
    assert ONE_IMAGE.check("reference", image) is image
    with pytest.raises(InputError, match="got shape"):
        IMAGE.check("reference", image)
    batch = image[None]
    assert IMAGE.check("reference", batch) is batch and ONE_IMAGE.check("reference", batch) is batch


def test_silence_is_a_peak_below_the_bound_not_at_it():
    """SILENCE_PEAK: 'peak below this counts as silence' (float64 samples hold the bound exactly)."""
    wav = torch.zeros(1, 1600, dtype=torch.float64)
    wav[0, 10] = SILENCE_PEAK
    assert WAVEFORM.check("audio", wav) is wav
    wav[0, 10] = -math.nextafter(SILENCE_PEAK, 0.0)
    with pytest.raises(InputError, match="silent"):
        WAVEFORM.check("audio", wav, HINT)


def test_span_words_each_kind_of_range():
    assert span(1, 5, "s") == "between 1 and 5 s"
    assert span(3, None, "frames") == ">= 3 frames"
    assert span(0, None, "", above=True) == "> 0"
    assert span(0, 2, "x", above=True) == "> 0 and <= 2 x"
    assert span(None, 9, "") == "<= 9"


def test_a_list_of_the_wrong_length_names_the_range_and_passes_the_hint_on():
    spec = Items(inner=Number(lo=0, hi=1), lo=1, hi=2, fix="Give one or two weights.")
    with pytest.raises(InputError) as err:
        spec.check("weights", [0.1, 0.2, 0.3], HINT)
    assert str(err.value) == f"weights: has 3 items; give between 1 and 2 items. Give one or two weights. {HINT}"
    assert spec.check("weights", [0.5]) == (0.5,)


def test_a_declared_subclass_keeps_its_parents_rules():
    def apart(obj) -> str:
        return "" if obj.a != obj.b else "a and b are equal"

    def ordered(obj) -> str:
        return "" if obj.a < obj.b else "a is not below b"

    @declared(Rule(("a", "b"), apart, "Give two different numbers."), a=Number(lo=0, hi=10), b=Number(lo=0, hi=10))
    @dataclass
    class Parent:
        a: float
        b: float

    @declared(Rule(("a", "b"), ordered, "Give a below b."), c=Number(lo=0, hi=1))
    @dataclass
    class Child(Parent):
        c: float = 0.0

    try:
        with pytest.raises(InputError, match="equal"):
            Child(2.0, 2.0)
        with pytest.raises(InputError, match="not below"):
            Child(3.0, 2.0)
        assert Child(1.0, 2.0).b == 2.0
    finally:
        DECLARED[:] = [c for c in DECLARED if c not in (Parent, Child)]


def test_a_prefixed_config_names_its_fields_with_the_prefix():
    with pytest.raises(InputError) as err:
        StepCacheConfig(threshold=-1.0)
    assert str(err.value).startswith("step_cache.threshold: "), str(err.value)


def test_text_outputs_of_another_batch_are_refused_with_every_shape_named():
    states, mask, pooled = torch.randn(2, 8, 16), torch.ones(2, 8), torch.randn(1, 12)
    with pytest.raises(InputError) as err:
        TextConditioning(states, mask, pooled)
    msg = str(err.value)
    assert "states (2, 8, 16), mask (2, 8) and pooled (1, 12) do not belong together" in msg, msg
    assert TextConditioning(states, mask, pooled.expand(2, 12)).pooled.shape == (2, 12)


def test_non_finite_values_are_counted_in_every_chunk(monkeypatch):
    """The count is exact however many chunks the tensor spans (the chunk made small so that 40 values span 10)."""
    monkeypatch.setattr(tensors, "_CHECK_CHUNK", 4)
    value = torch.zeros(40)
    value[[3, 17, 39]] = torch.tensor([float("nan"), float("inf"), float("-inf")])
    assert tensors.non_finite_count(value) == 3
    with pytest.raises(InputError, match="3 of 40 values are NaN or inf"):
        tensors.Tensor(ndims=(1,)).check("latents", value)


def test_a_mask_over_the_pixel_budget_is_refused_though_each_side_fits():
    side = int(math.isqrt(tensors.MAX_PIXELS)) + 1     # side^2 > MAX_PIXELS, side <= MAX_SIDE
    assert side <= tensors.MAX_SIDE
    big = torch.zeros(1, 1).expand(side, side)         # no memory behind it: the check reads the shape first
    with pytest.raises(InputError, match=f"a {side}x{side} mask is larger than this pack handles"):
        MASK.check("face_mask", big, HINT)
    fits = torch.zeros(1, 1).expand(side - 1, side - 1)
    assert MASK.check("face_mask", fits) is fits
