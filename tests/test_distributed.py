"""Multi-process CFG / window / Ulysses parallelism on CPU (gloo, tiny fp32 model) == one process.

Process start-up is the slow part, so each launch runs several cases; rank results are written to files
and compared here with single-process runs of the same model (the reference).
"""

from __future__ import annotations

import socket
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from avatar_core.config import AvatarConfig
from avatar_core.distributed import (
    ParallelConfig,
    PooledRunner,
    WorkerPool,
    build_groups,
    rank_options,
    sample_on_rank,
)
from avatar_core.loading import build_random_transformer
from avatar_core.model.options import RunOptions
from avatar_core.parity.sampling import latent_check
from avatar_core.runner import LoadSpec, RandomSpec
from avatar_core.sampling import (
    AvatarConditioning,
    DeepCacheConfig,
    SamplerCallbacks,
    SamplerConfig,
    SamplingCancelled,
    TextConditioning,
    plan_clip,
    sample_avatar,
)

CFG = AvatarConfig(hidden_size=64, num_heads=4, depth_double=2, depth_single=2, rope_dims=(4, 6, 6), text_dim=32,
                   text_pooled_dim=16, audio_proj_dim=16, adapter_dim=32, adapter_after_double=(0, 1))
SPEC = RandomSpec(config=CFG, seed=0)
STEPS = SamplerConfig(steps=4, seed=3, deep_cache=DeepCacheConfig(cached_steps=(2, 3)))
SHORT = SamplerConfig(steps=3, seed=3, deep_cache=DeepCacheConfig(cached_steps=(2,)))
WINDOWS4 = 400  # audio frames -> ring 129 = 4 windows of 33 per step (the last wraps onto window 0)
WINDOWS3 = 300  # ring 97, 3 windows


def cond(frames: int = 100, chars: int = 1, window: int = 33, motion_exp: float = 30.0, motion_pose: float = 25.0,
         fps: float = 25.0, emotion: bool = False) -> AvatarConditioning:
    """Tiny conditioning for CFG; one character's audio in the official 5-D layout, several in the 6-D one."""
    g = torch.Generator().manual_seed(1)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731

    def text(valid: int) -> TextConditioning:
        mask = torch.zeros(1, 6, dtype=torch.int64)
        mask[:, :valid] = 1
        return TextConditioning(r(1, 6, CFG.text_dim), mask, r(1, CFG.text_pooled_dim))
    ref, pos, neg = r(1, 16, 33, 4, 6)[:, :, :window], text(4), text(2)
    audio = 0.3 * (r(1, frames, 10, 5, 384) if chars == 1 else r(1, chars, frames, 10, 5, 384))
    return AvatarConditioning(
        ref_latents=ref, text=pos, negative_text=neg, audio=audio,
        face_mask=torch.rand(1, chars, 1, 4, 6, generator=g), motion_exp=torch.full((1, 4), motion_exp),
        motion_pose=torch.full((1, 4), motion_pose), fps=torch.tensor([fps]),
        emotion=r(1, 16, 1, 4, 6) if emotion else None)


def forward_inputs(T: int = 6) -> dict[str, Any]:
    """Batch 2 with different valid text lengths, two characters: the segmented attention's hard case.
    7 token frames (ref + 6): uneven shards, 4 + 3 on 2 ranks and 2 + 2 + 2 + 1 on 4."""
    g = torch.Generator().manual_seed(2)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    mask = torch.zeros(2, 6, dtype=torch.int64)
    mask[0, :5], mask[1, :2] = 1, 1
    return dict(x=r(2, 16, T, 4, 6), t=torch.tensor([900.0, 300.0]), ref_latents=r(2, 16, T, 4, 6),
                text_states=r(2, 6, CFG.text_dim), text_mask=mask, text_pooled=r(2, CFG.text_pooled_dim),
                motion_exp=torch.full((2, 4), 30.), motion_pose=torch.full((2, 4), 25.), fps=torch.full((2,), 25.),
                audio=r(2, 2, 4 * T - 3, 10, 5, 384), face_mask=torch.rand(2, 2, 1, 4, 6, generator=g))


def model_forward(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    inp = forward_inputs()
    x, t = inp.pop("x"), inp.pop("t")
    with torch.no_grad():
        out, cache = model(x, t, **inp, return_cache=True)
        cached = model(x, t, **inp, cached_tokens=cache)
    return {"out": out, "cache": cache, "cached": cached}


# ---------------------------------------------------------------- the cases each rank runs
RUNS = {  # name -> (parallel degrees, clip audio frames, sampler config)
    "cfg": (ParallelConfig(cfg=2), WINDOWS3, STEPS),
    "window": (ParallelConfig(window=2), WINDOWS4, STEPS),
    "sequence": (ParallelConfig(sequence=2), 100, SHORT),
    "cfg2_window2": (ParallelConfig(cfg=2, window=2), WINDOWS4, STEPS),
    "cfg2_sequence2": (ParallelConfig(cfg=2, sequence=2), WINDOWS3, SHORT),
}
LAUNCHES = {2: ["sp_forward2", "cfg", "window", "sequence"], 4: ["sp_forward4", "cfg2_window2", "cfg2_sequence2"]}


def _rank_main(rank: int, world: int, init: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    model = build_random_transformer(CFG, seed=0)
    results: dict[str, Any] = {}
    for name in LAUNCHES[world]:
        if name.startswith("sp_forward"):
            groups = build_groups(ParallelConfig(sequence=world))
            results[name] = model_forward(partial(model, options=rank_options(RunOptions(), groups, CFG.num_heads)))
            continue
        config, frames, sampler = RUNS[name]
        groups = build_groups(config)
        calls: list[tuple[int, int]] = []
        cb = SamplerCallbacks(on_progress=lambda p, calls=calls: calls.append((p.step, p.window)))
        res = sample_on_rank(model, groups, cond(frames), sampler, torch.device("cpu"), callbacks=cb)
        results[name] = {"latents": res.ring_latents, "calls": calls}
    torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    dist.destroy_process_group()


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def launched(tmp_path_factory: pytest.TempPathFactory) -> dict[int, list[dict[str, Any]]]:
    out = {}
    for world in LAUNCHES:
        d = tmp_path_factory.mktemp(f"world{world}")
        mp.spawn(_rank_main, args=(world, f"tcp://127.0.0.1:{_port()}", str(d)), nprocs=world, join=True)
        out[world] = [torch.load(d / f"rank{r}.pt") for r in range(world)]
    return out


def single(sampler: SamplerConfig, frames: int, **change: Any) -> torch.Tensor:
    """The reference: one process, the plain sampler (one thread, like the workers)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return sample_avatar(build_random_transformer(CFG, seed=0), cond(frames), replace(sampler, **change)).ring_latents
    finally:
        torch.set_num_threads(threads)


# ---------------------------------------------------------------- tests
@pytest.mark.parametrize("world", [2, 4])
def test_ulysses_forward_equals_single(launched: dict, world: int) -> None:
    ref = model_forward(build_random_transformer(CFG, seed=0))
    for rank, res in enumerate(launched[world]):
        got = res[f"sp_forward{world}"]
        for key in ("out", "cache", "cached"):
            torch.testing.assert_close(got[key], ref[key], rtol=1e-5, atol=1e-5, msg=f"rank {rank} {key}")


@pytest.mark.parametrize("name", ["cfg", "window", "sequence", "cfg2_window2", "cfg2_sequence2"])
def test_parallel_sampling_equals_single(launched: dict, name: str) -> None:
    config, frames, sampler = RUNS[name]
    ranks = launched[config.world]
    # CFG-parallel runs each half as a batch-1 call: the single run with split_cfg does exactly that.
    ref = single(sampler, frames, split_cfg=config.cfg > 1)
    for rank, res in enumerate(ranks):
        got = res[name]["latents"]
        if config.sequence == 1:
            assert torch.equal(got, ref), f"{name} rank {rank}: max diff {(got - ref).abs().max():.3g}"
        else:
            torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5, msg=f"{name} rank {rank}")
    if config.cfg > 1:  # and the batched single run: batch-1 vs batch-2 round-off may flip a bf16 window rounding
        assert latent_check(name, ranks[0][name]["latents"], single(sampler, frames)).ok
    plan = plan_clip(frames)
    done = sorted({c for res in ranks for c in res[name]["calls"]})
    assert done == [(s, w) for s in range(sampler.steps) for w in range(plan.windows_per_step)]
    if config.window > 1:  # really split: each window rank denoised only its share
        assert len(ranks[0][name]["calls"]) < sampler.steps * plan.windows_per_step


def test_deep_cache_is_used_by_the_window_parallel_run() -> None:
    """Guard for the window case: with the cache off the single result differs, so the match above needed it."""
    _, frames, sampler = RUNS["window"]
    assert not torch.equal(single(sampler, frames), single(sampler, frames, deep_cache=DeepCacheConfig(enabled=False)))


def test_worker_pool_sample_cancel_and_clean_shutdown() -> None:
    frames, sampler = WINDOWS3, SHORT
    ref = single(sampler, frames)
    pool = WorkerPool(SPEC, ParallelConfig(window=2), device="cpu", threads=1)
    try:
        progress: list = []
        # through the runner, as the sampler node calls it
        res = PooledRunner(pool).sample(cond(frames), sampler, callbacks=SamplerCallbacks(on_progress=progress.append))
        assert torch.equal(res.ring_latents, ref)
        assert progress and all(p.window % 2 == 0 for p in progress)  # rank 0 reports its windows
        seen: list = []
        stop = SamplerCallbacks(on_progress=seen.append, should_cancel=lambda: len(seen) >= 2)
        with pytest.raises(SamplingCancelled):  # 20 steps x 3 windows: far longer than the parent needs to react
            pool.sample_avatar(cond(frames), SamplerConfig(steps=20), callbacks=stop)
        assert 2 <= len(seen) < 30
        again = pool.sample_avatar(cond(frames), sampler)  # the pool survives a cancel
        assert torch.equal(again.ring_latents, ref)
    finally:
        procs = list(pool._procs)
        pool.close()
    assert [p.exitcode for p in procs] == [0, 0]  # stopped politely, not terminated
    with pytest.raises(RuntimeError, match="closed"):
        pool.sample_avatar(cond(frames), sampler)


@pytest.mark.parametrize("parallel", [ParallelConfig(window=2), ParallelConfig(cfg=2)], ids=["window", "cfg"])
def test_pool_render_resumes_bitwise_from_rank0s_checkpoint(parallel: ParallelConfig, tmp_path: Path) -> None:
    """Cancelled on a pool, queued again: every worker restores the checkpoint rank 0 wrote, the result equals the
    uninterrupted pool run bitwise, and the file is gone afterwards."""
    from avatar_core.sampling.resume import ResumeConfig
    frames, sampler = WINDOWS3, SamplerConfig(steps=8, seed=3, deep_cache=DeepCacheConfig(cached_steps=(3, 5)))
    resume = ResumeConfig(tmp_path, interval_s=0)
    with WorkerPool(SPEC, parallel, device="cpu", threads=1) as pool:
        runner = PooledRunner(pool)
        ref = runner.sample(cond(frames), sampler).ring_latents
        seen: list = []
        stop = SamplerCallbacks(on_progress=seen.append, should_cancel=lambda: any(p.step >= 4 for p in seen))
        with pytest.raises(SamplingCancelled):
            runner.sample(cond(frames), sampler, callbacks=stop, resume=resume)
        assert [p.suffix for p in tmp_path.iterdir()] == [".safetensors"]   # one file, no partial write left
        resumed: list = []
        res = runner.sample(cond(frames), sampler, callbacks=SamplerCallbacks(on_progress=resumed.append),
                            resume=resume)
    assert min(p.step for p in resumed) >= 3, "the workers restarted from step 1 instead of resuming"
    assert torch.equal(res.ring_latents, ref)
    assert list(tmp_path.iterdir()) == []


def test_worker_error_is_raised_in_the_parent() -> None:
    with pytest.raises(RuntimeError, match="rank \\d failed(.|\n)*does not divide the model's 4 attention heads"):
        WorkerPool(SPEC, ParallelConfig(sequence=3), device="cpu", threads=1)  # Ulysses degree 3 vs 4 heads


def test_clear_error_when_gpus_are_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(RuntimeError, match="2 GPUs were asked for but only 1 CUDA device"):
        WorkerPool(SPEC, ParallelConfig(cfg=2), device="cuda")


def test_parallel_config_from_gpus() -> None:
    assert ParallelConfig.from_gpus(8) == ParallelConfig(cfg=2, sequence=4)
    assert ParallelConfig.from_gpus(4, "cfg+window") == ParallelConfig(cfg=2, window=2)
    assert ParallelConfig.from_gpus(3, "auto") == ParallelConfig(sequence=3)
    assert ParallelConfig.from_gpus(2, "window") == ParallelConfig(window=2)
    with pytest.raises(ValueError, match="even number"):
        ParallelConfig.from_gpus(3, "cfg+sequence")
    cfg = ParallelConfig(cfg=2, window=3, sequence=2)
    assert [cfg.coords(r) for r in (0, 1, 2, 11)] == [(0, 0, 0), (0, 0, 1), (0, 1, 0), (1, 2, 1)]


def test_loader_node_side_errors_before_starting_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    """nodes/distributed.py with ComfyUI stubbed out: bad degrees and missing GPUs fail before any process starts."""
    import sys
    import types

    from conftest import PACK_NAME, load_pack
    comfy = types.ModuleType("comfy")
    comfy.model_management = types.SimpleNamespace(unload_all_models=lambda: None)  # type: ignore[attr-defined]
    comfy.model_patcher = types.SimpleNamespace()  # type: ignore[attr-defined]
    for name, mod in {"comfy": comfy, "comfy.model_management": comfy.model_management,
                      "comfy.model_patcher": comfy.model_patcher}.items():
        monkeypatch.setitem(sys.modules, name, mod)
    monkeypatch.delitem(sys.modules, f"{PACK_NAME}.nodes.distributed", raising=False)
    node = load_pack("nodes.distributed")
    monkeypatch.delitem(sys.modules, f"{PACK_NAME}.nodes.distributed")
    with pytest.raises(ValueError, match="degree 5 does not divide the model's 24 attention heads"):
        node.load_pooled(LoadSpec(path="x.pt"), 5, "sequence")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(RuntimeError, match="4 GPUs were asked for but only 2"):
        node.load_pooled(LoadSpec(path="x.pt"), 4, "auto")


def test_pool_works_when_the_pack_is_imported_under_its_folder_name() -> None:
    """ComfyUI imports the pack as ``<folder>.avatar_core``; workers import ``avatar_core`` by path, and the
    messages are rebuilt with each side's own classes."""
    from conftest import load_pack
    pack = load_pack("avatar_core.distributed")
    sampling = load_pack("avatar_core.sampling")
    ours = cond(WINDOWS3)
    theirs = sampling.AvatarConditioning(**{k: getattr(ours, k) for k in ("ref_latents", "audio", "face_mask",
                                                                          "motion_exp", "motion_pose", "fps")},
                                         text=sampling.TextConditioning(*vars(ours.text).values()),
                                         negative_text=sampling.TextConditioning(*vars(ours.negative_text).values()))
    spec = load_pack("avatar_core.runner").RandomSpec(config=load_pack("avatar_core.config").AvatarConfig(**CFG.to_dict()),
                                                      seed=0)
    seen: list = []
    with pack.WorkerPool(spec, pack.ParallelConfig(cfg=2), device="cpu", threads=1) as pool:
        res = pack.PooledRunner(pool).sample(theirs, sampling.SamplerConfig(**vars(SHORT)),
                                             callbacks=sampling.SamplerCallbacks(on_progress=seen.append))
    assert type(res.plan).__module__.startswith("hyavatar_pack.") and type(seen[0]).__module__.startswith("hyavatar_pack.")
    assert torch.equal(res.ring_latents, single(SHORT, WINDOWS3, split_cfg=True))


def test_pool_started_from_an_unguarded_host_script(tmp_path: Path) -> None:
    """A host whose main script has no ``if __name__ == "__main__"`` guard (ComfyUI's main.py does work at
    import time): spawned workers must not re-run it (that would start pools recursively)."""
    import subprocess
    import sys
    script = tmp_path / "host.py"
    script.write_text(
        "import sys, torch\n"
        f"sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})\n"
        "from avatar_core.config import AvatarConfig\n"
        "from avatar_core.distributed import ParallelConfig, WorkerPool\n"
        "from avatar_core.runner import RandomSpec\n"
        "print('host main ran', flush=True)\n"
        "pool = WorkerPool(RandomSpec(config=AvatarConfig.tiny()), ParallelConfig(), device='cpu', threads=1)\n"
        "pool.close()\n"
        "print('ok', flush=True)\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["host", "main", "ran", "ok"]  # printed once: the worker did not re-run it
