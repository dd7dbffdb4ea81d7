"""Performance options of a loaded transformer, in one place (all opt-in; defaults = the official numerics).

    model = load_transformer(path, device="cuda", perf=PerfOptions(low_memory=True))
    apply_perf_options(model, PerfOptions(fp8_fast=True), "cuda")        # or on a model already loaded

| option | effect | numerics |
|---|---|---|
| attention_backend | "sdpa" (cuDNN on H100), "sage" (8-bit QK, Triton), "flash_attn" | sage: ~1e-2 rel. per call |
| fp8_fast | block linears stored in fp8 (per-tensor weight scale), `torch._scaled_mm` with per-token activation scales | ~3e-2 rel. per linear |
| block_swap | the first N blocks (run order) live in pinned CPU memory, streamed one block ahead; -1: all but the last | exact |
| low_memory | block_swap=-1 and 4096-token chunks (< 10 GiB at 704x704 with bf16 weights) | exact (chunking changes rounding only) |
| chunk_tokens | tokens per chunk of the token-wise block work (default 16384) | rounding only |
| compile | per-block torch.compile (PyTorch reference elementwise ops fused by inductor) | rounding only |
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn as nn

from .attention import resolve_backend


@dataclass(frozen=True)
class PerfOptions:
    attention_backend: str | None = None
    fp8_fast: bool = False
    block_swap: int = 0
    low_memory: bool = False
    chunk_tokens: int | None = None
    compile: bool = False

    @property
    def swaps(self) -> bool:
        return self.low_memory or self.block_swap != 0


def apply_perf_options(model: nn.Module, opts: PerfOptions, device: str = "cuda") -> nn.Module:
    """Apply `opts` to a loaded AvatarTransformer (moves it to `device`; swapped blocks stay in CPU memory)."""
    from .compile import compile_blocks
    from .fp8 import enable_fp8_
    from .offload import BlockSwap
    if opts.attention_backend is not None:
        model.attention_backend = resolve_backend(opts.attention_backend)
    if opts.fp8_fast:
        enable_fp8_(model, fast=True)
    if opts.chunk_tokens is not None:
        model.chunk_tokens = opts.chunk_tokens
    elif opts.low_memory:
        model.chunk_tokens = 4096
    if opts.swaps:
        n = None if opts.low_memory or opts.block_swap < 0 else opts.block_swap
        model.block_swap = BlockSwap(model, device, resident=1, blocks=n)
    else:
        model.to(device)
    if opts.compile:
        compile_blocks(model)
    return model
