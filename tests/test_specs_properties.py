"""Property tests of every declared spec: generated invalid values of every field and argument are refused with
InputError naming it (and the fix) before any model call; generated valid edge values are accepted.

The cases come from the registries (`DECLARED` dataclasses, `CHECKED` functions), the values from the spec
classes (tests/spec_strategies.py), so a newly declared field or argument is covered without touching this file;
a new config class or checked function needs one base example below (a test says which).
"""

from __future__ import annotations

import dataclasses
import inspect
import types
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from spec_strategies import Unknown, invalid, valid
from test_sampling_loop import small_cond

import avatar_core.conditioning.audio as audio_mod
import avatar_core.conditioning.emotion as emotion_mod
import avatar_core.conditioning.faces as faces_mod
import avatar_core.conditioning.image as image_mod
import avatar_core.conditioning.waveform as waveform_mod
import avatar_core.convert as convert_mod
import avatar_core.distributed.group as group_mod
import avatar_core.runner as runner_mod
import avatar_core.sampling as sampling
import avatar_core.sampling.schedule as schedule_mod
import avatar_core.train.prepare as prepare_mod
import avatar_core.train.trainer as trainer_mod
from avatar_core.config import AvatarConfig
from avatar_core.errors import InputError
from avatar_core.model.options import RunOptions
from avatar_core.sampling.resume import ResumeConfig
from avatar_core.specs.fields import CHECKED, DECLARED, Spec, declared
from avatar_core.train.data import ClipSample
from avatar_core.train.synthetic import synthetic_clip

SETTINGS = settings(max_examples=6, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def _never(*args: Any, **kwargs: Any) -> Any:
    pytest.fail("a model / encoder / detector was called before the bad input was refused")


class NeverModule(torch.nn.Module):
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        _never()


class NeverDetector:
    detect = staticmethod(_never)


def _loud(n: int = 16000) -> torch.Tensor:
    return torch.full((n,), 0.5)


def _image() -> torch.Tensor:
    return torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(0)) * 0.9 + 0.05


def _clip_fields() -> dict[str, Any]:
    clip = synthetic_clip(AvatarConfig.tiny(), 3, 4, 6, emotion=True)
    return {f.name: getattr(clip, f.name) for f in dataclasses.fields(clip)}


def _cond_fields() -> dict[str, Any]:
    cond = small_cond(100, emotion=True)
    return {f.name: getattr(cond, f.name) for f in dataclasses.fields(cond)}


# A valid instance of every declared dataclass (keyword arguments); fields left out take their defaults.
CLASS_BASES: dict[type, Any] = {
    sampling.SamplerConfig: dict, sampling.GuidanceConfig: dict, sampling.DeepCacheConfig: dict,
    sampling.WindowConfig: dict, sampling.stepcache.StepCacheConfig: dict,
    ResumeConfig: lambda: dict(directory="resume_dir"),
    runner_mod.RunChoices: dict, runner_mod.LoadSpec: lambda: dict(path="model.safetensors"),
    runner_mod.RandomSpec: lambda: dict(config=AvatarConfig.tiny()), RunOptions: dict,
    group_mod.ParallelConfig: dict,
    trainer_mod.TrainConfig: lambda: dict(data="clips", output="run", random_model="tiny", device="cpu"),
    prepare_mod.PrepareConfig: lambda: dict(videos="videos", output="dataset"),
    ClipSample: _clip_fields,
    sampling.TextConditioning: lambda: dict(states=torch.ones(1, 3, 2), mask=torch.ones(1, 3), pooled=torch.ones(1, 2)),
    sampling.AvatarConditioning: _cond_fields,
    audio_mod.CharacterAudio: lambda: dict(waveform=_loud(), sample_rate=16000, start_s=0.0, name="audio_1"),
}

# Valid arguments of every checked function; models / encoders / detectors are stand-ins that fail if called.
FUNCTION_BASES: dict[Any, Any] = {
    schedule_mod.flow_schedule: lambda: dict(steps=2, shift=5.0),
    audio_mod.window_features: lambda: dict(hidden=torch.zeros(20, 1, 1), fps=25.0, num_frames=3),
    audio_mod.encode_character_audio: lambda: dict(
        encoder=NeverModule(), characters=[audio_mod.CharacterAudio(_loud(), 16000, 0.0, "a")], fps=25.0, num_frames=None),
    audio_mod.encode_audio: lambda: dict(encoder=NeverModule(), waveform=_loud(), sample_rate=16000, fps=25.0,
                                         num_frames=None),
    waveform_mod.to_mono_16k: lambda: dict(waveform=_loud(), sample_rate=16000, name="audio"),
    faces_mod.character_masks: lambda: dict(image=_image(), num_characters=1, detector=NeverDetector(),
                                            user_masks=[torch.ones(64, 64)], area=3.0, latent_size=None,
                                            overlap="nearest"),
    emotion_mod.encode_emotion_image: lambda: dict(image=_image(), vae_encode=_never, scaling_factor=1.0, size=None),
    image_mod.official_video_size: lambda: dict(height=512, width=512, image_size=704),
    sampling.sample_avatar: lambda: dict(denoise=_never, cond=small_cond(100), config=sampling.SamplerConfig(steps=2),
                                         noise=None, callbacks=None, parallel=None, resume=None),
    group_mod.ParallelConfig.from_gpus: lambda: dict(cls=group_mod.ParallelConfig, gpus=2, mode="auto"),
    convert_mod.convert: lambda: dict(src="missing.pt", dst="out.safetensors", dtype="bf16"),
}

FIELDS = [(cls, name) for cls in DECLARED for name in cls.__specs__]
ARGS = [(fn, name) for fn in CHECKED for name in fn.__specs__]


def _id(case: tuple[Any, str]) -> str:
    return f"{case[0].__qualname__}.{case[1]}"


def _fix_in(message: str, spec: Spec) -> bool:
    """The message says how to fix the value: the spec's fix text, or what is expected."""
    fixes = []
    while spec is not None:  # an optional / list spec's message may carry its inner spec's fix
        fixes.append(spec.fix)
        spec = getattr(spec, "inner", None)
    if any(f and f in message for f in fixes):
        return True
    verbs = ("expected", "must", "give", "use", "connect", "check", "pass", "transpose", "divide", "load")
    return not any(fixes) and any(v in message.lower() for v in verbs)


def test_every_declared_class_and_checked_function_has_a_base_example() -> None:
    assert not [c.__qualname__ for c in DECLARED if c not in CLASS_BASES], "add a valid example to CLASS_BASES"
    known = {inspect.unwrap(f) for f in FUNCTION_BASES}
    assert not [f.__qualname__ for f in CHECKED if inspect.unwrap(f) not in known], "add valid arguments to FUNCTION_BASES"
    assert len(FIELDS) > 100 and len(ARGS) > 25  # the registries are filled (modules imported)


def test_a_field_without_a_spec_is_refused_when_the_class_is_defined() -> None:
    with pytest.raises(TypeError, match=r"Broken: declare a spec for every field.*missing \['b'\]"):
        @declared(a=Spec())
        @dataclasses.dataclass
        class Broken:
            a: int = 0
            b: int = 0


@pytest.mark.parametrize("case", FIELDS, ids=_id)
@SETTINGS
@given(data=st.data())
def test_invalid_field_values_are_refused_naming_the_field(case: tuple[type, str], data: st.DataObject) -> None:
    cls, name = case
    base = CLASS_BASES[cls]()
    spec = cls.__specs__[name]
    like = base.get(name, _default(cls, name))
    try:
        strategy = invalid(spec, like)
    except Unknown as e:
        pytest.fail(str(e))
    if strategy.is_empty:
        pytest.skip(f"{name}: any value is accepted ({spec})")
    value = data.draw(strategy, label=name)
    with pytest.raises(InputError) as err:
        cls(**{**base, name: value})
    message = str(err.value)
    assert name in message and _fix_in(message, spec), message


@pytest.mark.parametrize("case", FIELDS, ids=_id)
@SETTINGS
@given(data=st.data())
def test_valid_edge_values_are_accepted(case: tuple[type, str], data: st.DataObject) -> None:
    """Accepted by the spec; the object is made unless a declared rule between fields says otherwise, and then
    the error names the rule's fields."""
    cls, name = case
    base = CLASS_BASES[cls]()
    spec = cls.__specs__[name]
    like = base.get(name, _default(cls, name))
    value = data.draw(valid(spec, like), label=name)
    spec.check(name, value)
    fields = {f.name: _default(cls, f.name) for f in dataclasses.fields(cls)} | base | {name: value}
    plain = types.SimpleNamespace(**{n: spec_of.check(n, fields[n]) for n, spec_of in cls.__specs__.items()})
    broken = [r for r in cls.__rules__ if r.problem(plain)]
    if not broken:
        obj = cls(**{**base, name: value})
        assert getattr(obj, name) is not None or value is None
        return
    with pytest.raises(InputError, match=" / ".join(broken[0].fields)):
        cls(**{**base, name: value})


@pytest.mark.parametrize("case", ARGS, ids=_id)
@SETTINGS
@given(data=st.data())
def test_invalid_arguments_are_refused_before_any_model_call(case: tuple[Any, str], data: st.DataObject) -> None:
    fn, name = case
    base = _function_base(fn)
    spec = fn.__specs__[name]
    try:
        strategy = invalid(spec, base.get(name))
    except Unknown as e:
        pytest.fail(str(e))
    value = data.draw(strategy, label=name)
    with pytest.raises(InputError) as err:
        fn(**{**base, name: value})
    message = str(err.value)
    assert name in message and _fix_in(message, spec), message


@pytest.mark.parametrize("case", ARGS, ids=_id)
@SETTINGS
@given(data=st.data())
def test_valid_argument_values_pass_their_spec(case: tuple[Any, str], data: st.DataObject) -> None:
    fn, name = case
    base = _function_base(fn)
    spec = fn.__specs__[name]
    spec.check(name, data.draw(valid(spec, base.get(name)), label=name))


def _function_base(fn: Any) -> dict[str, Any]:
    return next(make for f, make in FUNCTION_BASES.items() if inspect.unwrap(f) is inspect.unwrap(fn))()


def _default(cls: type, name: str) -> Any:
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else None
