"""Block swap: keep the repeated blocks in pinned CPU memory and stream them to the GPU one ahead.

    swap = BlockSwap(model, device="cuda", resident=1)   # everything else moved to the GPU
    ...
    swap.remove()                                        # all blocks back on the GPU

Run order is double_blocks then single_blocks. Before block i runs, its weights are waited for (they were
copied on a side stream while block i - 1 computed) and block i + 1's copy starts; after block i its GPU
copy is dropped (the caching allocator reuses it once the compute stream is done with it). The last
`resident` blocks stay on the GPU: the deep-cache step runs only the last single block.
"""

from __future__ import annotations

import torch
import torch.nn as nn


def _tensors(block: nn.Module) -> list[tuple[nn.Module, str, torch.Tensor]]:
    out = []
    for mod in block.modules():
        for name, t in list(mod.named_parameters(recurse=False)) + list(mod.named_buffers(recurse=False)):
            out.append((mod, name, t))
    return out


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
        self._host = {}                                   # block index -> pinned CPU tensors
        for i, blk in enumerate(self.swapped):
            self._host[i] = [self._pin(t.detach().to("cpu")) for _, _, t in _tensors(blk)]
            self._assign(i, self._host[i])
        for name, mod in model.named_children():          # everything that is not a swapped block
            if name not in model.REPEATED_BLOCKS:
                mod.to(self.device)
        self.cuda = self.device.type == "cuda"
        if self.cuda:
            torch.cuda.empty_cache()
        self.stream = torch.cuda.Stream(self.device) if self.cuda else None
        self._inflight: dict[int, tuple[list[torch.Tensor], torch.cuda.Event]] = {}
        self._hooks = []
        for i, blk in enumerate(self.swapped):
            self._hooks.append(blk.register_forward_pre_hook(lambda m, a, i=i: self._enter(i)))
            self._hooks.append(blk.register_forward_hook(lambda m, a, o, i=i: self._leave(i)))

    def _pin(self, t: torch.Tensor) -> torch.Tensor:
        return t.pin_memory() if self.device.type == "cuda" else t.clone()

    def _assign(self, i: int, tensors: list[torch.Tensor]) -> None:
        for (mod, name, _), t in zip(_tensors(self.swapped[i]), tensors):
            getattr(mod, name).data = t

    def _prefetch(self, i: int) -> None:
        if i >= len(self.swapped) or i in self._inflight:
            return
        if not self.cuda:  # (CPU "device": plain copies; used by the tests)
            self._inflight[i] = ([t.to(self.device, copy=True) for t in self._host[i]], None)
            return
        with torch.cuda.stream(self.stream):
            gpu = [t.to(self.device, non_blocking=True) for t in self._host[i]]
            ev = torch.cuda.Event()
            ev.record(self.stream)
        self._inflight[i] = (gpu, ev)

    def _enter(self, i: int) -> None:
        self._prefetch(i)
        gpu, ev = self._inflight[i]
        if ev is not None:
            compute = torch.cuda.current_stream(self.device)
            compute.wait_event(ev)
            for t in gpu:
                t.record_stream(compute)                  # freed only after the compute stream used it
        self._assign(i, gpu)
        self._prefetch(i + 1)

    def _leave(self, i: int) -> None:
        self._assign(i, self._host[i])
        self._inflight.pop(i, None)

    def remove(self) -> None:
        """Put every swapped block back on the GPU and drop the hooks."""
        for h in self._hooks:
            h.remove()
        for i in range(len(self.swapped)):
            self._assign(i, [t.to(self.device) for t in self._host[i]])
        self._host.clear()
        self._inflight.clear()
