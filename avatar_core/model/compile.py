"""Per-block torch.compile (opt-in). Every double block shares one compiled graph, every single block another.

The blocks then use the PyTorch reference elementwise ops (inductor fuses those itself) instead of the
hand-written Triton kernels. `uncompile_blocks` restores eager execution.
"""

from __future__ import annotations

import torch.nn as nn


def compile_blocks(model: nn.Module, **compile_kwargs) -> nn.Module:
    """Compile each repeated block in place (`torch.compile(block, dynamic=False, **compile_kwargs)`)."""
    model.fused_kernels = False
    kwargs = dict(dynamic=False, **compile_kwargs)
    for name in model.REPEATED_BLOCKS:
        for block in getattr(model, name):
            block.compile(**kwargs)
    return model


def uncompile_blocks(model: nn.Module) -> nn.Module:
    for name in model.REPEATED_BLOCKS:
        for block in getattr(model, name):
            block._compiled_call_impl = None
    model.fused_kernels = True
    return model
