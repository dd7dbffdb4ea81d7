"""Hypothesis strategies derived from spec declarations (avatar_core/specs): invalid and valid values per spec CLASS.

`invalid(spec, like)` draws values the spec must refuse (wrong type, NaN, +/-inf, below lo, above hi, a wrong
unit, a wrong shape or dtype); `valid(spec, like)` draws edge values it must accept (lo, hi, typical). `like` is a
valid value of the field (from a base example), used to keep tensor shapes. A spec class without a rule here
fails the tests (`Unknown`): a new KIND of spec needs its generators; a new FIELD is covered once declared.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from hypothesis import strategies as st

from avatar_core.specs import concepts
from avatar_core.specs.audio import Waveform
from avatar_core.specs.fields import Choice, Flag, Instance, Int, Items, Maybe, Number, SampleRate, Spec, Text, _same
from avatar_core.specs.tensors import MAX_PIXELS, TOLERANCE, Device, Image, Mask, Tensor

NAN, INF = float("nan"), float("inf")
FINITE = dict(allow_nan=False, allow_infinity=False)
WRONG_TYPES = st.one_of(st.text(max_size=5), st.none(), st.just([1, 2]), st.just(object()))

# Text specs with a validator: values it must refuse / accept (a new validator needs an entry: Unknown otherwise).
TEXT_BAD = {concepts._blocks_problem: ["double:x", "quad", "all,single:1-", "double:-3"],
            concepts._regex_problem: ["(", "[a", "*x"]}
TEXT_GOOD = {concepts._blocks_problem: ["all", "double", "single:0-3", "double:0-9,single:20-39"],
             concepts._regex_problem: [".*", "linear1", ".*attn.*|linear1"]}


class Unknown(AssertionError):
    """A spec class (or Text validator) the generators do not know: add its strategies here."""


def _validator_key(spec: Text) -> Any:
    fn = spec.validate
    for key in TEXT_BAD:
        if key is fn:
            return key
    raise Unknown(f"no bad/good examples for the Text validator {fn!r}")


def _number_invalid(spec: Number | Int, integral: bool) -> st.SearchStrategy:
    parts = [st.sampled_from([NAN, INF, -INF]), st.text(max_size=4), st.none(), st.booleans(), st.just([1.0])]
    if spec.lo is not None:
        if integral:
            parts.append(st.integers(max_value=int(spec.lo) - 1))
        else:
            parts.append(st.floats(max_value=spec.lo, exclude_max=not getattr(spec, "above", False),
                                   min_value=-1e30, **FINITE))
    if spec.hi is not None:
        parts.append(st.integers(min_value=int(spec.hi) + 1) if integral
                     else st.floats(min_value=spec.hi, exclude_min=True, max_value=max(1e30, 2 * spec.hi), **FINITE))
    if integral:
        parts.append(st.floats(min_value=-1e6, max_value=1e6, **FINITE).filter(lambda x: not x.is_integer()))
        if spec.multiple > 1:
            lo, hi = spec.lo or 0, spec.hi or 10**6
            parts.append(st.integers(lo, hi).filter(lambda v: v % spec.multiple != 0))
    return st.one_of(parts)


def _tensor_invalid(spec: Tensor, like: torch.Tensor) -> st.SearchStrategy:
    bad: list[Any] = [like.tolist() if like.numel() < 50 else [1.0], like.numpy() if like.dim() else 1.0]
    rank = next(r for r in range(1, 8) if r not in spec.ndims)
    bad.append(torch.zeros((1,) * rank))
    if spec.kind == "float":
        bad.append(like.to(torch.int64) if like.is_floating_point() else like)
    if spec.kind == "number":
        bad.append(torch.ones_like(like, dtype=torch.bool))
    if spec.finite and like.is_floating_point() and like.numel():
        for v in (NAN, INF, -INF):
            t = like.clone()
            t.view(-1)[-1] = v
            bad.append(t)
    if spec.hi is not None and like.numel():
        bad.append(torch.full_like(like, spec.hi + 1))
    if spec.lo is not None and like.numel():
        bad.append(torch.full_like(like, spec.lo - 1 if not spec.above else spec.lo))
    return st.sampled_from([b for b in bad if b is not like])


def _image_invalid(spec: Image, like: torch.Tensor) -> st.SearchStrategy:
    one = like[:1] if like.dim() == 4 else like[None]
    b, h, w, c = one.shape
    nan = one.clone()
    nan[0, h // 2, w // 2, 0] = NAN
    huge = int(math.isqrt(MAX_PIXELS)) + 64  # an expanded view: nothing is allocated, the size check must come first
    bad = [nan, one * 255, one * 2 - 1 - 0.5, (one * 255).to(torch.uint8), one[0, :, :, 0], one.permute(0, 3, 1, 2),
           one[:, : spec.min_side - 1], torch.zeros(1, 1, 1, 3).expand(1, huge, huge, 3), one.numpy(), "image.png",
           torch.zeros(0, h, w, c)]
    if not spec.batch:
        bad.append(one.expand(2, -1, -1, -1))
    return st.sampled_from(bad)


def _mask_invalid(spec: Mask, like: torch.Tensor) -> st.SearchStrategy:
    one = like.float()
    nan = one.clone()
    nan.view(-1)[0] = NAN
    rank = next(r for r in range(1, 8) if r not in spec.ndims)
    huge = int(math.isqrt(MAX_PIXELS)) + 64
    big = torch.zeros((1,) * (len(like.shape) - 2) + (1, 1)).expand(*like.shape[:-2], huge, huge)
    bad = [nan, torch.ones_like(one) * 255, (one * 255).to(torch.uint8), one.to(torch.int64), one - 1 - 2 * TOLERANCE,
           torch.zeros((2,) * rank), big, one.numpy(), torch.zeros(*like.shape[:-2], 0, like.shape[-1])]
    return st.sampled_from(bad)


def _waveform_invalid() -> st.SearchStrategy:
    loud = torch.full((32000,), 0.5)
    return st.sampled_from([torch.zeros(0), torch.zeros(32000), torch.full((32000,), NAN), loud.clone().index_fill_(
        0, torch.tensor([7]), INF), torch.full((2, 1, 32000), 0.5), torch.full((32000, 2), 0.5), torch.full((8, 8), 0.5),
        torch.full((32000,), 12000.0), torch.full((32000,), 5, dtype=torch.int64), torch.ones(32000, dtype=torch.bool),
        [0.5] * 100, "speech.wav"])


def invalid(spec: Spec, like: Any = None) -> st.SearchStrategy:
    """Values ``spec`` must refuse (``like``: a valid value of the field, for shapes)."""
    if isinstance(spec, Maybe):  # None is valid here
        return invalid(spec.inner, like).filter(lambda v: v is not None)
    if isinstance(spec, Tensor) and like is None:  # an optional tensor whose base example is None
        like = torch.zeros((2,) * spec.ndims[0])
    if isinstance(spec, SampleRate):  # a wrong unit: kHz or MHz given as Hz
        return st.one_of(_number_invalid(spec, True), st.sampled_from([16, 22.05, 44.1, 48, 0.016, 0.0441]))
    if isinstance(spec, Int):
        return _number_invalid(spec, True)
    if isinstance(spec, Number):
        return _number_invalid(spec, False)
    if isinstance(spec, Choice):
        options = spec.values()
        return st.one_of(st.text(max_size=6), st.integers(-3, 300), st.floats(**FINITE), st.none(),
                         st.booleans()).filter(lambda v: not any(_same(o, v) for o in options))
    if isinstance(spec, Flag):
        return st.one_of(st.text(max_size=4), st.integers(), st.none(), st.floats(**FINITE))
    if isinstance(spec, Text):
        parts = [st.integers(), st.none(), st.floats(**FINITE), st.just(b"bytes")]
        if spec.nonempty:
            parts.append(st.sampled_from(["", "   "]))
        if spec.max_len is not None:
            parts.append(st.just("x" * (spec.max_len + 1)))
        if spec.validate is not None:
            key = _validator_key(spec)
            parts.append(st.sampled_from(TEXT_BAD[key]))
        return st.one_of(parts)
    if isinstance(spec, Items):
        parts = [st.integers(), st.text(max_size=3), st.none()]
        if spec.lo > 0:
            parts.append(st.just([]))
        if spec.hi is not None:
            item = like[0] if like else None
            parts.append(st.just([item] * (spec.hi + 1)))
        if like:
            parts.append(invalid(spec.inner, like[0]).map(lambda v: [v, *list(like)[1:]]))
        return st.one_of(parts)
    if isinstance(spec, Instance):
        if spec.types is object:
            return st.nothing()  # anything is an object
        return st.one_of(st.integers(), st.text(max_size=3), st.just(object())).filter(
            lambda v: not isinstance(v, spec.types))
    if isinstance(spec, Waveform):
        return _waveform_invalid()
    if isinstance(spec, Device):
        no_gpu = [] if torch.cuda.is_available() else ["cuda", torch.device("cuda", 0)]
        return st.sampled_from(["gpu9", "cuda:x", "", 3, None, *no_gpu, f"cuda:{torch.cuda.device_count()}"])
    if isinstance(spec, Image):
        return _image_invalid(spec, like)
    if isinstance(spec, Mask):
        return _mask_invalid(spec, like)
    if isinstance(spec, Tensor):
        return _tensor_invalid(spec, like)
    raise Unknown(f"no invalid-value strategy for {type(spec).__name__}")


def valid(spec: Spec, like: Any = None) -> st.SearchStrategy:
    """Edge and typical values ``spec`` must accept."""
    if isinstance(spec, Maybe):
        return st.one_of(st.none(), valid(spec.inner, like))
    if isinstance(spec, Tensor) and like is None:
        like = torch.zeros((2,) * spec.ndims[0])
    if isinstance(spec, Int):
        lo = spec.lo if spec.lo is not None else -(10**9)
        hi = spec.hi if spec.hi is not None else 10**12
        m = spec.multiple
        edges = [v for v in (lo, hi, -(-lo // m) * m, hi // m * m) if lo <= v <= hi and v % m == 0]
        inner = st.integers(-(-lo // m), hi // m).map(lambda k: k * m)
        exact = inner.filter(lambda v: abs(v) < 2**53)  # floats and numpy integers hold these exactly
        return st.one_of(st.sampled_from(edges), inner, exact.map(float), exact.map(np.int64))
    if isinstance(spec, Number):
        lo = spec.lo if spec.lo is not None else -1e30
        hi = spec.hi if spec.hi is not None else 1e30
        edges = [hi] + ([] if spec.above else [lo])
        return st.one_of(st.sampled_from(edges), st.floats(lo, hi, exclude_min=spec.above, **FINITE),
                         st.floats(lo, hi, exclude_min=spec.above, **FINITE).map(np.float32).filter(
                             lambda v: (v > lo if spec.above else v >= lo) and v <= hi))
    if isinstance(spec, Choice):
        return st.sampled_from(spec.values())
    if isinstance(spec, Flag):
        return st.booleans()
    if isinstance(spec, Text):
        if spec.validate is not None:
            key = _validator_key(spec)
            return st.sampled_from(TEXT_GOOD[key])
        text = st.text(min_size=1 if spec.nonempty else 0, max_size=min(spec.max_len or 20, 20))
        return text.filter(lambda t: t.strip()) if spec.nonempty else text
    if isinstance(spec, Items):
        inner = valid(spec.inner, like[0] if like else None)
        return st.lists(inner, min_size=spec.lo, max_size=max(spec.lo, min(spec.hi or 4, 4)))
    if isinstance(spec, Instance):
        return st.just(like)
    if isinstance(spec, Device):
        return st.sampled_from(["cpu", torch.device("cpu"), "cpu:0"])
    if isinstance(spec, Waveform):
        return st.sampled_from([torch.full((16000,), 0.5), torch.full((1, 2, 16000), -1.0),
                                torch.full((16000,), 300, dtype=torch.int16), np.full(16000, 0.25, np.float32)])
    if isinstance(spec, Image):
        one = like[:1] if like.dim() == 4 else like[None]
        return st.sampled_from([torch.zeros_like(one), torch.ones_like(one), one * (1 + TOLERANCE),
                                one[..., :3], torch.cat([one, one[..., :1]], -1)])
    if isinstance(spec, Mask):
        return st.sampled_from([torch.zeros_like(like, dtype=torch.float32), torch.ones_like(like, dtype=torch.float32),
                                torch.ones_like(like, dtype=torch.bool), like.float() * 0.5])
    if isinstance(spec, Tensor):
        out = [like]
        if like.is_floating_point() and spec.lo is None and spec.hi is None:
            out += [torch.zeros_like(like), like.to(torch.float16)]
        if spec.hi is not None:
            out.append(torch.full_like(like, spec.hi))
        if spec.lo is not None and not spec.above:
            out.append(torch.full_like(like, spec.lo))
        return st.sampled_from(out)
    raise Unknown(f"no valid-value strategy for {type(spec).__name__}")
