"""Block swap: keep the linear weights of the repeated blocks in pinned CPU memory, stream them one block ahead.

    swap = BlockSwap(model, device="cuda", resident=1)   # everything else moved to the GPU
    ...
    swap.remove()                                        # all blocks back on the GPU

Run order is double_blocks then single_blocks. Before block i runs, its members' device copies are waited
for (copied on a side stream while block i - 1 computed) and staged (`stage`, model/linear.py), and block
i + 1's copy starts; after block i, also when its forward fails, they are unstaged and dropped (the
caching allocator reuses them once the compute stream is done). The last `resident` blocks stay on the
GPU: the deep-cache step runs only the last single block. Tensors outside the linear members (qk-norm
weights, a few KB a block) stay on the GPU.

Every weight write (a LoRA patch, a restore) goes to the member's stored tensors, never to a copy, and
bumps its `weight_version`: a copy taken before a write is never staged after it, and a failed or
shortened forward (an error, a step-cache skip) leaves no copy that a later forward could use.

Training (gradient checkpointing): backward recomputes a block's forward without the module's hooks, so
the recomputation stages the block itself (`recomputing(block)`, torch.utils.checkpoint's context_fn) and
prefetches the block before it, the one backward reaches next. Without checkpointing, backward would keep
every block's device copies alive (autograd saves the weights), so training swaps only with it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.utils.checkpoint

from .linear import Snapshot, WeightOwner

_STOP_RECOMPUTATION = getattr(torch.utils.checkpoint, "_StopRecomputationError", ())


@dataclass
class _Copy:
    tensors: list[Snapshot]           # per member: device copies of its stored tensors
    versions: list[int]               # the members' weight_version when copied
    ready: torch.cuda.Event | None    # recorded on the copy stream (None on a CPU "device": tests)


def _members(block: nn.Module) -> list[WeightOwner]:
    return [m for m in block.modules() if isinstance(m, WeightOwner)]


def _keep_resident(block: nn.Module, device: torch.device) -> None:
    """Move the block's tensors outside its linear members to `device` (module by module, as .to does)."""
    for mod in block.modules():
        if isinstance(mod, WeightOwner) or not (list(mod.parameters(False)) or list(mod.buffers(False))):
            continue
        if any(isinstance(m, WeightOwner) for m in mod.modules()):
            raise TypeError(f"BlockSwap: {type(mod).__name__} holds tensors beside linear members; move them into "
                            "a submodule of their own")
        mod.to(device)


class BlockSwap:
    def __init__(self, model: nn.Module, device: str | torch.device = "cuda", resident: int = 1,
                 blocks: int | None = None):
        """Swap the first `blocks` blocks in run order (default: all but the last `resident`)."""
        self.device = torch.device(device)
        order = [b for name in model.REPEATED_BLOCKS for b in getattr(model, name)]
        n = len(order) - resident if blocks is None else min(blocks, len(order) - resident)
        self.swapped = order[:max(n, 0)]
        for b in order[len(self.swapped):]:
            b.to(self.device)
        self.cuda = self.device.type == "cuda"
        self._members = [_members(b) for b in self.swapped]
        self._index = {id(b): i for i, b in enumerate(self.swapped)}
        for blk, members in zip(self.swapped, self._members):
            _keep_resident(blk, self.device)
            for m in members:
                m.relocate(lambda t: t.to("cpu").pin_memory() if self.cuda else t.to("cpu"))
        for name, mod in model.named_children():          # everything that is not a swapped block
            if name not in model.REPEATED_BLOCKS:
                mod.to(self.device)
        if self.cuda:
            torch.cuda.empty_cache()
        self.stream = torch.cuda.Stream(self.device) if self.cuda else None
        self._inflight: dict[int, _Copy] = {}
        self._hooks = []
        for i, blk in enumerate(self.swapped):
            self._hooks.append(blk.register_forward_pre_hook(lambda m, a, i=i: self._enter(i)))
            # always_call: also after a failed forward (out of memory ...), so no block stays staged
            self._hooks.append(blk.register_forward_hook(lambda m, a, o, i=i: self._leave(i, o is None),
                                                         always_call=True))

    def _copy(self, i: int) -> _Copy:
        members = self._members[i]
        versions = [m.weight_version for m in members]
        if not self.cuda:  # (CPU "device": plain copies; used by the tests)
            return _Copy([{k: t.to(self.device, copy=True) for k, t in m.stored().items()} for m in members],
                         versions, None)
        with torch.cuda.stream(self.stream):
            tensors = [{k: t.to(self.device, non_blocking=True) for k, t in m.stored().items()} for m in members]
            ready = torch.cuda.Event()
            ready.record(self.stream)
        return _Copy(tensors, versions, ready)

    def _prefetch(self, i: int) -> None:
        if 0 <= i < len(self.swapped) and i not in self._inflight:
            self._inflight[i] = self._copy(i)

    def _enter(self, i: int, ahead: int = 1) -> None:
        copy = self._inflight.pop(i, None)
        if copy is None or copy.versions != [m.weight_version for m in self._members[i]]:
            copy = self._copy(i)  # (written since it was copied: e.g. a LoRA change after a step-cache skip)
        if copy.ready is not None:
            compute = torch.cuda.current_stream(self.device)
            compute.wait_event(copy.ready)
            for tensors in copy.tensors:
                for t in tensors.values():
                    t.record_stream(compute)              # freed only after the compute stream used it
        for m, tensors in zip(self._members[i], copy.tensors):
            m.stage(tensors)
        self._prefetch(i + ahead)

    def _leave(self, i: int, failed: bool) -> None:
        for m in self._members[i]:
            m.unstage()
        if failed:  # the block's forward failed: drop the next block's copy too (device memory)
            self._inflight.clear()

    def is_swapped(self, block: nn.Module) -> bool:
        return id(block) in self._index

    @contextlib.contextmanager
    def recomputing(self, block: nn.Module) -> Iterator[None]:
        """Stage a swapped block for its recomputation in backward (checkpointing calls its forward again
        without the hooks); backward runs the blocks in reverse, so the block before it is prefetched."""
        i = self._index[id(block)]
        self._enter(i, ahead=-1)
        failed = False
        try:
            yield
        except BaseException as e:
            # checkpointing stops a recomputation early (once it has what backward needs) by raising
            # this: not a failure, the prefetched copy of the block before is still wanted
            failed = not isinstance(e, _STOP_RECOMPUTATION)
            raise
        finally:
            self._leave(i, failed)

    def remove(self) -> None:
        """Put every swapped block back on the device and drop the hooks."""
        for h in self._hooks:
            h.remove()
        self._inflight.clear()
        for members in self._members:
            for m in members:
                m.unstage()
                m.relocate(lambda t: t.to(self.device))
