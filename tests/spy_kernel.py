"""A spy attention kernel for the pool tests: a registry record ("spy") that computes SDPA and records, per
process, what each call ran with: the kernel, the RunOptions the forward received (chunking, fused kernels,
the sequence layout), the rank and the heads it saw. Worker processes are fresh interpreters: `boot_folder`
writes a sitecustomize that registers the record in every Python started with that folder on PYTHONPATH.
It also stands in for the per-block torch.compile (a CPU compile takes minutes and may lack a C compiler): the
stand-in records that a rank asked for it and compiles nothing, so the blocks run eagerly with the options the
compile choice gave them (fused_kernels off).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

NAME = "spy"
_seen: set[str] = set()

SITECUSTOMIZE = """import importlib.machinery, importlib.util, os, sys
sys.path[:0] = [os.environ["HYAVATAR_SPY_PACK"], os.environ["HYAVATAR_SPY_TESTS"]]
import spy_kernel
spy_kernel.register()
spy_kernel.stand_in_compile()
del sys.path[:2]
# keep another sitecustomize further on the path working (scripts/mutation.sh puts one there)
here = os.path.dirname(os.path.abspath(__file__))
spec = importlib.machinery.PathFinder.find_spec("sitecustomize", [p for p in sys.path if p and
                                                                  os.path.abspath(p) != here])
if spec is not None:
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
"""


def _options():
    """The RunOptions of the forward this attention call belongs to (a local of a calling frame)."""
    from avatar_core.model.options import RunOptions
    frame = sys._getframe(2)
    while frame is not None:
        for value in frame.f_locals.values():
            if isinstance(value, RunOptions):
                return value
        frame = frame.f_back
    return None


def _rank() -> int:
    import torch.distributed as dist
    return dist.get_rank() if dist.is_initialized() else -1


def _write(record: dict) -> None:
    line = json.dumps(record, sort_keys=True)
    if line not in _seen:  # one line per distinct record and process
        _seen.add(line)
        with open(Path(os.environ["HYAVATAR_SPY_DIR"]) / f"{os.getpid()}.jsonl", "a") as f:
            f.write(line + "\n")


def _dense(q, k, v):
    from avatar_core.model.attention import KERNELS
    opts = _options()
    _write({"pid": os.getpid(), "rank": _rank(), "call": "attention", "kernel": NAME, "heads": int(q.shape[2]),
            "chunk_tokens": None if opts is None else opts.chunk_tokens,
            "fused_kernels": None if opts is None else opts.fused_kernels,
            "sequence": None if opts is None else type(opts.sequence).__name__})
    return KERNELS["sdpa"].dense(q, k, v)


def _compile_blocks(model, **kwargs):
    _write({"pid": os.getpid(), "rank": _rank(), "call": "compile", "blocks": sum(len(getattr(model, name))
                                                                                  for name in model.REPEATED_BLOCKS)})
    return model


def stand_in_compile() -> None:
    """avatar_core.model.compile.compile_blocks records and compiles nothing (the runner imports it at use)."""
    import avatar_core.model.compile as compile_module
    compile_module.compile_blocks = _compile_blocks


def register() -> None:
    from avatar_core.model.attention import AttentionKernel
    from avatar_core.model.attention import register as add
    add(AttentionKernel(NAME, _dense, lambda q: True, note="test spy: SDPA that records its calls"))


def boot_folder(folder: Path, pack_root: Path, records: Path) -> dict[str, str]:
    """Write the sitecustomize into `folder`; return the environment that makes new Pythons load it."""
    folder.mkdir(parents=True, exist_ok=True)
    records.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE)
    path = os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")]))
    return {"PYTHONPATH": path, "HYAVATAR_SPY_PACK": str(pack_root), "HYAVATAR_SPY_TESTS": str(Path(__file__).parent),
            "HYAVATAR_SPY_DIR": str(records)}


def read(records: Path, call: str = "attention") -> list[dict]:
    """The records of one kind of call ("attention" or "compile") of every process so far."""
    lines = [json.loads(line) for f in sorted(records.glob("*.jsonl")) for line in f.read_text().splitlines()]
    return [r for r in lines if r["call"] == call]
