"""Dataclasses <-> plain data for messages between the host and its worker processes.

A host such as ComfyUI imports this pack under its folder name (``<pack>.avatar_core...``) while a
worker imports ``avatar_core`` by path, so pickled class references would not resolve on the other
side. Messages therefore carry dataclasses as ``{"__dc__": "sampling.sampler.SamplerProgress", ...}``
(names relative to ``avatar_core``), rebuilt with the receiver's own classes. Tensors, dtypes and
devices pass through pickle as they are.
"""

from __future__ import annotations

import importlib
from dataclasses import fields, is_dataclass
from typing import Any

_ROOT = __name__.rsplit(".distributed.", 1)[0]  # "avatar_core" or "<pack>.avatar_core"


def encode(obj: Any) -> Any:
    """Replace every dataclass inside ``obj`` (also in tuples / lists / dicts) by a tagged dict."""
    if is_dataclass(obj) and not isinstance(obj, type):
        module = type(obj).__module__
        if "avatar_core." not in module:
            raise TypeError(f"cannot send {type(obj).__name__} to a worker: not an avatar_core dataclass")
        tag = f"{module.split('avatar_core.', 1)[1]}.{type(obj).__qualname__}"  # either import name
        return {"__dc__": tag, **{f.name: encode(getattr(obj, f.name)) for f in fields(obj)}}
    if isinstance(obj, (list, tuple)):
        return type(obj)(encode(o) for o in obj)
    if isinstance(obj, dict):
        return {k: encode(v) for k, v in obj.items()}
    return obj


def decode(obj: Any) -> Any:
    """Inverse of :func:`encode`, with this side's classes."""
    if isinstance(obj, dict) and "__dc__" in obj:
        module, name = obj["__dc__"].rsplit(".", 1)
        cls = getattr(importlib.import_module(f"{_ROOT}.{module}"), name)
        return cls(**{k: decode(v) for k, v in obj.items() if k != "__dc__"})
    if isinstance(obj, (list, tuple)):
        return type(obj)(decode(o) for o in obj)
    if isinstance(obj, dict):
        return {k: decode(v) for k, v in obj.items()}
    return obj
