"""Per-run execution choices, passed to every forward (never stored on the shared model).

    out = model(x, t, **inputs, options=RunOptions(attention="sage", chunk_tokens=4096))

The model holds weights and fixed structure only; what may differ from one run (or one process of a
pool) to the next travels here. The load-time choices (weight format, offload, compile) are in
`avatar_core.runner.LoadSpec`; a runner holds the RunOptions it was loaded with.

| option | effect | numerics |
|---|---|---|
| attention | a kernel of model/attention.py's registry; "auto": FlashAttention-3 on Hopper if installed, else SDPA | fa3_fp8 / sage: quantised |
| chunk_tokens | tokens per chunk of the token-wise block work (default 16384; low memory: 4096) | rounding only |
| fused_kernels | Triton LayerNorm+modulate and qk-norm+RoPE on CUDA half precision | rounding only |
| sequence | Ulysses sequence parallelism of this process (distributed.ulysses.SequenceParallel) | ~1e-6 |
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..specs.concepts import CHUNK_TOKENS
from ..specs.fields import Choice, Flag, Instance, declared
from .attention import backends, resolve_backend
from .shard import SingleProcess

DEFAULT_CHUNK_TOKENS = 16384
LOW_MEMORY_CHUNK_TOKENS = 4096


# Every kernel name of the registry (read when checking: a kernel registered later is a choice too).
ATTENTION = Choice(backends, fix="auto picks the fastest kernel this machine runs; sdpa runs everywhere.")


@declared(attention=ATTENTION, chunk_tokens=CHUNK_TOKENS, fused_kernels=Flag(),
          sequence=Instance(object, fix="SingleProcess() or a worker's SequenceParallel."))
@dataclass(frozen=True)
class RunOptions:
    attention: str = "auto"
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS
    fused_kernels: bool = True
    # How this process shares a window's tokens: SingleProcess (all of them) or a SequenceParallel group.
    sequence: Any = field(default_factory=SingleProcess)

    def __post_init__(self) -> None:
        # The kernel this machine can run (falls back to SDPA with a one-line warning).
        object.__setattr__(self, "attention", resolve_backend(self.attention))
