"""One validation layer: declared specs of every input (type, range, unit, finiteness, shape, dtype).

    from avatar_core.specs.concepts import STEPS             # a concept: one spec, used by core, CLIs and nodes
    from avatar_core.specs.fields import checked, declared   # the declaration decorators
    from avatar_core.specs.tensors import IMAGE, MASK        # tensor specs (need torch)

| module | what |
|---|---|
| fields.py | Spec, Number, Int, SampleRate, Choice, Flag, Text, Maybe, Instance, Items, Rule; ``declared`` (dataclasses), ``checked`` (functions) |
| concepts.py | the scalar concepts, each declared once (steps, shift, sample rate, frame count, training settings, ...) |
| tensors.py | Tensor, Image, Mask specs and the IMAGE / MASK concepts |
| audio.py | the waveform spec (layout, sample type, values) |
| conditioning.py | model conditioning tensors, their shape rules, the forward's checks, training clips |

Every refusal is an ``avatar_core.errors.InputError`` (a ValueError) naming the input, the value and the fix.
This package's __init__ and fields / concepts do not import torch (the CLIs and scripts use them without it).
"""

from ..errors import InputError

__all__ = ["InputError"]
