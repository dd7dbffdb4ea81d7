"""offload="auto": the offload plan picked from the GPU memory the model may use, once its weights are loaded.

    choice = choose_offload(*model_bytes(model), budget_bytes=23 * 2**30)   # -> OffloadChoice(offload, swap_blocks, reason)

The rule, in run order of the 60 blocks (BlockSwap streams the first k, the last one always stays):
  none          the whole model + WORK_BYTES + MARGIN_BYTES fit;
  block_swap k  the fewest streamed blocks such that the rest + the two blocks in flight (the one running, the
                one prefetched) + WORK_BYTES + MARGIN_BYTES fit;
  low_memory    otherwise (every block streamed and the token work chunked: ~7.6 GiB at 704x704 in bf16).
WORK_BYTES is what a 704x704 one-window clip needs beside the weights (measured: 29.96 GiB peak with 24.2 GiB of
bf16 weights, offload none, H100 and H200); larger frames need more, and the sampler's out-of-memory advice then
names the next setting. Pure arithmetic: tested without a GPU (tests/test_offload_plan.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch.nn as nn

GIB = 2**30
WORK_BYTES = 6 * GIB    # activations, latents, conditioning, attention workspace at 704x704 (measured 5.8 GiB)
MARGIN_BYTES = 1 * GIB  # ComfyUI's VAE and other small models, allocator slack
IN_FLIGHT = 2           # swapped blocks on the GPU at once: the running one and the prefetched next one


@dataclass(frozen=True)
class OffloadChoice:
    offload: str        # none | block_swap | low_memory
    swap_blocks: int    # with block_swap: blocks streamed from pinned CPU memory (else the loader's default)
    reason: str         # one line for the log: what was compared


def _tensor_bytes(module: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in list(module.parameters()) + list(module.buffers()))


def model_bytes(model: nn.Module) -> tuple[int, list[int]]:
    """(bytes outside the repeated blocks, bytes of each block in run order) of a loaded transformer."""
    blocks = [b for name in model.REPEATED_BLOCKS for b in getattr(model, name)]
    sizes = [_tensor_bytes(b) for b in blocks]
    return _tensor_bytes(model) - sum(sizes), sizes


def choose_offload(resident_bytes: int, block_bytes: Sequence[int], budget_bytes: int,
                   work_bytes: int = WORK_BYTES, margin_bytes: int = MARGIN_BYTES,
                   default_swap: int = 20) -> OffloadChoice:
    """The plan that fits `budget_bytes` with the least streaming (see the module docstring)."""
    if not block_bytes:
        raise ValueError("choose_offload: the model has no repeated blocks to stream")
    extra = work_bytes + margin_bytes
    whole = resident_bytes + sum(block_bytes)
    have = f"{budget_bytes / GIB:.1f} GiB usable"
    if whole + extra <= budget_bytes:
        return OffloadChoice("none", default_swap, f"{whole / GIB:.1f} GiB of weights + {extra / GIB:.0f} GiB to "
                                                   f"work fit in {have}")
    for k in range(1, len(block_bytes)):  # the last block always stays (the deep-cache step runs it alone)
        on_gpu = whole - sum(block_bytes[:k]) + IN_FLIGHT * max(block_bytes[:k])
        if on_gpu + extra <= budget_bytes:
            return OffloadChoice("block_swap", k, f"{whole / GIB:.1f} GiB of weights + {extra / GIB:.0f} GiB to work "
                                                  f"exceed {have}: {k} blocks streamed, {on_gpu / GIB:.1f} GiB stay")
    return OffloadChoice("low_memory", default_swap, f"even with {len(block_bytes) - 1} blocks streamed the model "
                                                     f"needs more than {have}: every block streamed, work chunked")
