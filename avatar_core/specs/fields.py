"""Declared input specs: what a value must be (type, range, unit, choice), checked in one place.

A spec checks one value and returns it normalised (an integral float becomes an int, a numpy scalar a
Python number), or raises :class:`InputError` that names the input, the bad value and the fix:

    STEPS = Int(1, 10_000, unit="steps", fix="Use 50 (official) or fewer for drafts.")
    STEPS.check("steps", 0)   # InputError: steps: 0 is out of range; it must be between 1 and 10000 steps. Use 50 ...

Dataclass configs declare a spec for EVERY field with :func:`declared` (a field without one is refused when
the class is defined) and are checked in ``__post_init__``; functions declare their arguments with
:func:`checked`. Both register themselves (``DECLARED``, ``CHECKED``), so tests can generate bad values for
every declared field and argument. ComfyUI's own widget check is ``value < min`` / ``value > max``, which is
False for NaN, so nodes call the same specs again; a node widget's min/max are read from the spec
(``ui_min`` / ``ui_max``: the ``widget`` range where the UI offers less than the core accepts).
No torch import here: the CLIs and scripts/run_avatar.py use these specs without loading torch.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import numbers
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import InputError

DECLARED: list[type] = []  # dataclasses checked through their declared field specs
CHECKED: list[Callable] = []  # functions whose arguments are checked through declared specs


@dataclass(frozen=True)
class Spec:
    """What one input must be; ``fix`` says how to correct a refused value (appended to every message)."""

    fix: str = field(default="", kw_only=True)

    def check(self, name: str, value: Any, hint: str = "") -> Any:
        """``value`` normalised, or an InputError naming ``name``; ``hint`` (e.g. which widget) is appended."""
        raise NotImplementedError

    def fail(self, name: str, problem: str, hint: str = "") -> InputError:
        tail = " ".join(t for t in (self.fix, hint) if t)
        return InputError(f"{name}: {problem}. {tail}".rstrip())

    def describe(self) -> str:
        """What a valid value is, in a few words (CLI help); '' where the name says it."""
        return ""


def span(lo: float | None, hi: float | None, unit: str, above: bool = False) -> str:
    u = f" {unit}" if unit else ""
    low = f"> {lo}" if above else f">= {lo}"
    if lo is not None and hi is not None:
        return f"{low} and <= {hi}{u}" if above else f"between {lo} and {hi}{u}"
    return f"{low}{u}" if lo is not None else f"<= {hi}{u}"


@dataclass(frozen=True)
class Number(Spec):
    """A finite real number in [lo, hi] (``above``: lo itself excluded); ``unit`` is said in messages."""

    lo: float | None = None
    hi: float | None = None
    unit: str = ""
    above: bool = False
    widget: tuple[float, float] | None = None  # the range a node widget offers (inside [lo, hi])

    def check(self, name: str, value: Any, hint: str = "") -> float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise self.fail(name, f"expected a number, got {type(value).__name__} {value!r}", hint)
        value = float(value)
        if not math.isfinite(value):
            raise self.fail(name, f"got {value}, which is not a finite number", hint)
        low = self.lo is not None and (value <= self.lo if self.above else value < self.lo)
        if low or (self.hi is not None and value > self.hi):
            raise self.fail(name, self.explain(value) or
                            f"{value} is out of range; it must be {span(self.lo, self.hi, self.unit, self.above)}", hint)
        return value

    def explain(self, value: float) -> str:
        """A more telling reason for an out-of-range value (subclasses: a unit mix-up); '' for the plain one."""
        return ""

    @property
    def ui_min(self) -> float:
        return self.widget[0] if self.widget else self.lo

    @property
    def ui_max(self) -> float:
        return self.widget[1] if self.widget else self.hi

    def describe(self) -> str:
        return span(self.lo, self.hi, self.unit, self.above)


@dataclass(frozen=True)
class Int(Spec):
    """A whole number in [lo, hi] (an integral float such as 50.0 is accepted as 50), optionally a multiple."""

    lo: int | None = None
    hi: int | None = None
    unit: str = ""
    multiple: int = 1
    widget: tuple[int, int] | None = None

    def check(self, name: str, value: Any, hint: str = "") -> int:
        if isinstance(value, numbers.Real) and not isinstance(value, (bool, numbers.Integral)):
            if math.isfinite(value) and float(value).is_integer():
                value = int(value)
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise self.fail(name, self.explain(value) or f"expected a whole number, got {value!r}", hint)
        value = int(value)
        if (self.lo is not None and value < self.lo) or (self.hi is not None and value > self.hi):
            raise self.fail(name, self.explain(value) or
                            f"{value} is out of range; it must be {span(self.lo, self.hi, self.unit)}", hint)
        if value % self.multiple:
            raise self.fail(name, f"{value} is not a multiple of {self.multiple}", hint)
        return value

    def explain(self, value: Any) -> str:
        return ""

    @property
    def ui_min(self) -> int:
        return self.widget[0] if self.widget else self.lo

    @property
    def ui_max(self) -> int:
        return self.widget[1] if self.widget else self.hi

    def describe(self) -> str:
        multiple = f", a multiple of {self.multiple}" if self.multiple > 1 else ""
        return f"a whole number {span(self.lo, self.hi, self.unit)}{multiple}"


@dataclass(frozen=True)
class SampleRate(Int):
    """Audio samples per second, in Hz: a rate that looks like kHz (16, 44.1, 48) or MHz is named as such."""

    def explain(self, value: Any) -> str:
        if isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value) and value > 0:
            for factor, unit in ((1e3, "kHz"), (1e6, "MHz")):
                hz = value * factor
                if (self.lo or 0) <= hz <= (self.hi or math.inf) and float(hz).is_integer():
                    return f"{value!r} looks like {unit}, but the rate is in Hz ({value!r} {unit} = {hz:.0f} Hz)"
        return ""


def _same(option: Any, value: Any) -> bool:
    if option is value:
        return True
    if isinstance(option, bool) != isinstance(value, bool):
        return False
    try:
        equal = option == value
    except Exception:  # noqa: BLE001 (an object whose == raises is simply not this option)
        return False
    return equal is True or (type(equal).__name__ == "bool_" and bool(equal))


@dataclass(frozen=True)
class Choice(Spec):
    """One of a fixed set of values; ``options`` may be a callable (a registry read when checking)."""

    options: Sequence[Any] | Callable[[], Sequence[Any]] = ()

    def values(self) -> tuple[Any, ...]:
        return tuple(self.options() if callable(self.options) else self.options)

    def check(self, name: str, value: Any, hint: str = "") -> Any:
        options = self.values()
        for option in options:  # a bool never stands for 1 / 0 here; 25 matches 25.0 and returns the option
            if _same(option, value):
                return option
        raise self.fail(name, f"{value!r} is not one of {list(options)}", hint)

    def describe(self) -> str:
        return f"one of {list(self.values())}"


@dataclass(frozen=True)
class Flag(Spec):
    """True or False (a string such as 'yes' or a number is refused: its meaning would be a guess)."""

    def check(self, name: str, value: Any, hint: str = "") -> bool:
        if type(value).__name__ == "bool_":  # numpy
            value = bool(value)
        if not isinstance(value, bool):
            raise self.fail(name, f"expected True or False, got {type(value).__name__} {value!r}", hint)
        return value


@dataclass(frozen=True)
class Text(Spec):
    """A string (``nonempty``: with something besides spaces; ``max_len``: at most that many characters)."""

    nonempty: bool = False
    max_len: int | None = None
    validate: Callable[[str], str] | None = None  # returns a problem ('' when fine): regexes, device names
    paths: bool = False  # a pathlib.Path (any os.PathLike) is accepted and returned as a string

    def check(self, name: str, value: Any, hint: str = "") -> str:
        if self.paths and isinstance(value, os.PathLike):
            value = os.fspath(value)
        if not isinstance(value, str):
            raise self.fail(name, f"expected text, got {type(value).__name__} {value!r}", hint)
        if self.nonempty and not value.strip():
            raise self.fail(name, "is empty", hint)
        if self.max_len is not None and len(value) > self.max_len:
            raise self.fail(name, f"has {len(value)} characters, more than {self.max_len}", hint)
        problem = self.validate(value) if self.validate else ""
        if problem:
            raise self.fail(name, problem, hint)
        return value


@dataclass(frozen=True)
class Maybe(Spec):
    """None, or a value of ``inner`` (messages and fix are the inner spec's)."""

    inner: Spec = field(default_factory=Spec)

    def check(self, name: str, value: Any, hint: str = "") -> Any:
        return None if value is None else self.inner.check(name, value, hint)

    def describe(self) -> str:
        return self.inner.describe()


def _pack_name(cls: type) -> str:
    """A class's name inside this package, the same whether it was imported as ``avatar_core`` or as
    ``<ComfyUI pack folder>.avatar_core`` (a host may hold both copies; distributed/wire.py does the same)."""
    module = cls.__module__
    return f"{module.split('avatar_core.', 1)[1]}.{cls.__qualname__}" if "avatar_core." in module else ""


def _is_instance(value: Any, types: type | tuple[type, ...]) -> bool:
    if isinstance(value, types):
        return True
    wanted = {_pack_name(t) for t in (types if isinstance(types, tuple) else (types,))} - {""}
    return bool(wanted) and any(_pack_name(c) in wanted for c in type(value).__mro__)


@dataclass(frozen=True)
class Instance(Spec):
    """An object of one of ``types`` (a nested config, a module, a callable): checked for its type only."""

    types: type | tuple[type, ...] = object
    what: str = ""

    def check(self, name: str, value: Any, hint: str = "") -> Any:
        if not _is_instance(value, self.types):
            raise self.fail(name, f"expected {self.what or self.types}, got {type(value).__name__}", hint)
        if hasattr(type(value), "__specs__"):  # a declared dataclass: checked again (it may have been changed)
            label = _label(value)
            check_fields(value, label, "" if label else f"{name}.")
        return value


@dataclass(frozen=True)
class Items(Spec):
    """A list or tuple of ``lo``..``hi`` values of ``inner`` (returned as a tuple)."""

    inner: Spec = field(default_factory=Spec)
    lo: int = 0
    hi: int | None = None

    def check(self, name: str, value: Any, hint: str = "") -> tuple:
        if not isinstance(value, (list, tuple)):
            raise self.fail(name, f"expected a list, got {type(value).__name__}", hint)
        if len(value) < self.lo or (self.hi is not None and len(value) > self.hi):
            raise self.fail(name, f"has {len(value)} items; give {span(self.lo, self.hi, 'items')}", hint)
        return tuple(self.inner.check(f"{name}[{i}]", v, hint) for i, v in enumerate(value))


@dataclass(frozen=True)
class Rule:
    """A rule between fields of one dataclass: ``problem(obj)`` returns what is wrong ('' when it holds).
    ``fields`` are named in the message so that the user knows which inputs to change."""

    fields: tuple[str, ...]
    problem: Callable[[Any], str]
    fix: str = ""

    def check(self, obj: Any, label: str = "", prefix: str = "") -> None:
        problem = self.problem(obj)
        if problem:
            names = " / ".join(prefix + f for f in self.fields)
            raise InputError(f"{label}{names}: {problem}. {self.fix}".rstrip())


def _label(obj: Any) -> str:
    label_of = getattr(type(obj), "__spec_label__", None)
    label = label_of(obj) if label_of else ""
    return f"{label}: " if label else ""


def check_fields(obj: Any, label: str | None = None, prefix: str | None = None) -> None:
    """Check (and normalise, in place) every field of a :func:`declared` dataclass, then its rules.

    A field holding another declared dataclass (an ``Instance`` spec) is checked again too, its fields named
    ``parent.field``. ``label`` / ``prefix``: what goes before messages / field names (default: the class's own)."""
    cls = type(obj)
    label = _label(obj) if label is None else label
    prefix = getattr(cls, "__spec_prefix__", "") if prefix is None else prefix
    for name, spec in cls.__specs__.items():
        value = spec.check(f"{label}{prefix}{name}", getattr(obj, name))
        object.__setattr__(obj, name, value)  # frozen dataclasses too
    for rule in cls.__rules__:
        rule.check(obj, label, prefix)


def declared(*rules: Rule, label: Callable[[Any], str] | None = None, prefix: str = "",
             **specs: Spec) -> Callable[[type], type]:
    """Class decorator (outside ``@dataclass``): every field gets a spec, checked in ``__post_init__``.

    A subclass declares its new fields only; it inherits the parent's specs and rules. ``label(obj)`` is put
    before messages (e.g. which character's audio); ``prefix`` before field names (``guidance.``)."""

    def wrap(cls: type) -> type:
        inherited = dict(getattr(cls, "__specs__", {}))
        merged = {**inherited, **specs}
        names = [f.name for f in dataclasses.fields(cls)]
        missing, unknown = [n for n in names if n not in merged], [n for n in merged if n not in names]
        if missing or unknown:
            raise TypeError(f"{cls.__name__}: declare a spec for every field (avatar_core/specs): "
                            f"missing {missing}, unknown {unknown}")
        own = cls.__dict__.get("__post_init__")

        def __post_init__(self: Any) -> None:
            check_fields(self)
            if own is not None:
                own(self)

        cls.__specs__ = {n: merged[n] for n in names}
        cls.__rules__ = tuple(getattr(cls, "__rules__", ())) + rules
        if label is not None:
            cls.__spec_label__ = label
        if prefix:
            cls.__spec_prefix__ = prefix
        if not hasattr(cls, "__post_init__"):  # then @dataclass's __init__ does not call one: call it after it
            init = cls.__init__

            @functools.wraps(init)
            def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
                init(self, *args, **kwargs)
                self.__post_init__()

            cls.__init__ = __init__
        cls.__post_init__ = __post_init__
        DECLARED.append(cls)
        return cls

    return wrap


def checked(label: str | None = None, **specs: Spec) -> Callable[[Callable], Callable]:
    """Function decorator: the named arguments are checked (and normalised) before the body runs.
    ``label``: an argument whose value (e.g. a clip's name) goes before every message."""

    def wrap(fn: Callable) -> Callable:
        sig = inspect.signature(fn)
        unknown = [n for n in (*specs, *([label] if label else [])) if n not in sig.parameters]
        if unknown:
            raise TypeError(f"{fn.__qualname__}: no arguments {unknown}")

        @functools.wraps(fn)
        def inner(*args: Any, **kwargs: Any) -> Any:
            bound = sig.bind(*args, **kwargs)
            lead = ""
            if label:
                bound.apply_defaults()
                lead = f"{bound.arguments[label]}: " if bound.arguments[label] else ""
            for name, spec in specs.items():
                if name in bound.arguments:
                    bound.arguments[name] = spec.check(f"{lead}{name}", bound.arguments[name])
            return fn(*bound.args, **bound.kwargs)

        inner.__specs__ = specs
        CHECKED.append(inner)
        return inner

    return wrap
