"""Per-block torch.compile (opt-in, at load). Every double block shares one compiled graph, every single block
another.

Compiled blocks use the PyTorch reference elementwise ops (inductor fuses those itself) instead of the
hand-written Triton kernels: the forward asks `is_compiled`. `uncompile_blocks` restores eager execution.
"""

from __future__ import annotations

import torch.nn as nn


def compile_blocks(model: nn.Module, **compile_kwargs) -> nn.Module:
    """Compile each repeated block in place (`torch.compile(block, dynamic=False, **compile_kwargs)`)."""
    kwargs = dict(dynamic=False, **compile_kwargs)
    for name in model.REPEATED_BLOCKS:
        for block in getattr(model, name):
            block.compile(**kwargs)
    return model


def uncompile_blocks(model: nn.Module) -> nn.Module:
    for name in model.REPEATED_BLOCKS:
        for block in getattr(model, name):
            block._compiled_call_impl = None
    return model


def is_compiled(model: nn.Module) -> bool:
    """Whether `compile_blocks` compiled the model's blocks (nn.Module.compile keeps the compiled call here)."""
    blocks = getattr(model, model.REPEATED_BLOCKS[0])
    return len(blocks) > 0 and blocks[0]._compiled_call_impl is not None
