"""Block swap's bookkeeping on the CPU "device" (model/offload.py: plain copies stand in for the GPU's): which
blocks stream, one copy per swapped block per forward (the next block's copy is made ahead and used), and nothing
left in flight after a block fails. Written after a mutation run of model/offload.py; the GPU paths (streams,
pinned memory, events) are checked by tests/test_gpu_offload.py on a GPU.
"""

from __future__ import annotations

import pytest
import torch
from test_model import call, tiny_inputs

from avatar_core.config import AvatarConfig
from avatar_core.runner import RandomSpec

CFG = AvatarConfig.tiny()
BLOCKS = CFG.depth_double + CFG.depth_single


def _swapped(blocks: int):
    runner = RandomSpec(config=CFG, offload="block_swap", swap_blocks=blocks).build("cpu")
    return runner.diffusion_model, runner.offload


def test_at_most_all_but_the_resident_block_stream():
    model, swap = _swapped(1000)
    order = list(model.double_blocks) + list(model.single_blocks)
    assert len(swap.swapped) == BLOCKS - 1
    assert all(swap.is_swapped(b) for b in order[:-1]) and not swap.is_swapped(order[-1])


def test_each_swapped_block_is_copied_once_per_forward_ahead_of_its_turn(monkeypatch):
    model, swap = _swapped(BLOCKS - 1)
    copies: list[tuple[int, int]] = []          # (the block entering, the block copied)
    entering = [-1]
    real_copy, real_enter = swap._copy, swap._enter

    def enter(i, ahead=1):
        entering[0] = i
        return real_enter(i, ahead)
    monkeypatch.setattr(swap, "_copy", lambda i: copies.append((entering[0], i)) or real_copy(i))
    monkeypatch.setattr(swap, "_enter", enter)  # the hooks look swap._enter up at each call
    call(model, tiny_inputs())
    # block 0 is copied on entering it; each next block once, while the one before it is entered (ahead)
    assert copies == [(0, 0)] + [(i - 1, i) for i in range(1, BLOCKS - 1)]
    assert swap._inflight == {}


def test_a_failed_block_leaves_nothing_staged_or_in_flight(monkeypatch):
    model, swap = _swapped(BLOCKS - 1)
    block = model.double_blocks[1]

    def boom(*args, **kwargs):
        raise RuntimeError("out of memory (injected)")
    monkeypatch.setattr(block, "forward", boom)
    with pytest.raises(RuntimeError, match="injected"):
        call(model, tiny_inputs())
    assert swap._inflight == {}
    assert all(m._home is None for members in swap._members for m in members)
    monkeypatch.undo()
    torch.testing.assert_close(call(model, tiny_inputs()), call(model, tiny_inputs()))
