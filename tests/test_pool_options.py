"""What every pool rank ran with, seen from inside: a spy attention kernel (tests/spy_kernel.py, a registry record
that computes SDPA) records per call the kernel, the RunOptions the forward received and the heads; a stand-in for
the per-block compile records which ranks asked for it. Equal outputs cannot show this: on the CPU every kernel,
chunking and fused / unfused path gives the same latents, so a rank that ignored its run options would pass every
equality test of the pool. Every option here is set away from its default, so a rank falling back to the default
is seen."""

from __future__ import annotations

from pathlib import Path

import pytest
import spy_kernel
from test_distributed import CFG
from test_distributed import cond as conditioning

import avatar_core
import avatar_core.model.compile
from avatar_core.distributed import ParallelConfig, WorkerPool
from avatar_core.model.attention import KERNELS
from avatar_core.parity.sampling import latent_check
from avatar_core.runner import RandomSpec
from avatar_core.sampling import DeepCacheConfig, SamplerConfig

SAMPLER = SamplerConfig(steps=2, seed=3, deep_cache=DeepCacheConfig(enabled=False))
CHUNK = 7   # tokens per chunk: not a default anywhere
BLOCKS = CFG.depth_double + CFG.depth_single


@pytest.fixture()
def spy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The spy registered here and in every Python started from now on (the pool's workers); its records."""
    records = tmp_path / "records"
    env = spy_kernel.boot_folder(tmp_path / "boot", Path(avatar_core.__file__).resolve().parents[1], records)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(avatar_core.model.compile, "compile_blocks", spy_kernel._compile_blocks)
    spy_kernel.register()
    yield records
    KERNELS.pop(spy_kernel.NAME, None)


def test_every_pool_rank_runs_with_the_loaders_kernel_and_options(spy: Path) -> None:
    # compile=True: the blocks are compiled (here: the stand-in) and the forward runs without the fused kernels
    spec = RandomSpec(config=CFG, seed=0, attention=spy_kernel.NAME, chunk_tokens=CHUNK, compile=True)
    local = spec.build("cpu")
    local.sample(conditioning(), SAMPLER)
    single = spy_kernel.read(spy)
    assert single and {(r["rank"], r["heads"], r["chunk_tokens"], r["fused_kernels"], r["sequence"])
                       for r in single} == {(-1, CFG.num_heads, CHUNK, False, "SingleProcess")}
    assert [(r["rank"], r["blocks"]) for r in spy_kernel.read(spy, "compile")] == [(-1, BLOCKS)]
    for f in spy.glob("*.jsonl"):
        f.unlink()
    with WorkerPool(spec, ParallelConfig(sequence=2), device="cpu", threads=1) as pool:
        pooled = pool.sample_avatar(conditioning(), SAMPLER)
    records = spy_kernel.read(spy)
    assert {r["rank"] for r in records} == {0, 1}, records            # both ranks ran the spy ...
    for r in records:                                                 # ... with the loader's options
        assert (r["kernel"], r["chunk_tokens"], r["fused_kernels"]) == (spy_kernel.NAME, CHUNK, False), r
        assert r["sequence"] != "SingleProcess" and r["heads"] == CFG.num_heads // 2, r   # Ulysses: half the heads
    assert sorted((r["rank"], r["blocks"]) for r in spy_kernel.read(spy, "compile")) == [(0, BLOCKS), (1, BLOCKS)]
    # Ulysses sums in another order and the official loop rounds each window to bf16: one bf16 step apart at most
    assert latent_check("pool", pooled.latents, local.sample(conditioning(), SAMPLER).latents).ok
