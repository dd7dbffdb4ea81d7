"""Every loader and sampler input has the same effect in a 2-process CPU (gloo) pool as in one process.

The loader inputs reach the workers as one LoadSpec (weight format, attention, emotion module, offload,
swap blocks), the sampler inputs as the conditioning + SamplerConfig. Each rank of a launch builds a
runner from each spec, as a pool worker does, and samples each case with its share of the work (CFG
halves on the two ranks, or windows); the results are compared with a single process running the
same spec and config. One real WorkerPool run covers the pool's own plumbing (info, step-cache stats).
Each case also shows that its input changed something, so the equality is not vacuous.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from test_distributed import CFG, _port
from test_distributed import cond as conditioning

from avatar_core.distributed import ParallelConfig, WorkerPool, build_groups, check_step_cache
from avatar_core.distributed.pool import PooledRunner
from avatar_core.loading import build_random_transformer, init_random_, save_emotion_module, save_transformer
from avatar_core.model.emotion import AudioEmotionModule, EmotionConfig
from avatar_core.parity.sampling import latent_check
from avatar_core.runner import LoadSpec
from avatar_core.sampling import DeepCacheConfig, GuidanceConfig, SamplerConfig
from avatar_core.sampling.stepcache import StepCacheConfig
from avatar_core.sampling.windows import WindowConfig

BASE = SamplerConfig(steps=2, seed=3, deep_cache=DeepCacheConfig(enabled=False))
CFG2, WINDOW2 = ParallelConfig(cfg=2), ParallelConfig(window=2)

# loader cases: name -> LoadSpec fields (path and emotion file filled in per test run)
LOADER = {
    "fp32": {"weight_format": "fp32"},
    "bf16+low_memory": {"weight_format": "bf16", "offload": "low_memory"},
    "fp16": {"weight_format": "fp16"},
    "fp8+block_swap+attention": {"weight_format": "fp8_e4m3fn", "offload": "block_swap", "swap_blocks": 2,
                                 "attention": "flash_attn"},
    "fp8_fast+emotion": {"weight_format": "fp8_e4m3fn_fast", "emotion": True},
}
# sampler cases: name -> (loader case, parallel, conditioning changes, sampler config)
SAMPLER = {
    "loader:" + name: (name, CFG2, {}, BASE) for name in LOADER
} | {
    "steps+shift+seed+cfg": ("fp32", CFG2, {}, replace(BASE, steps=3, shift=3.0, seed=9,
                                                       guidance=GuidanceConfig(cfg=4.0))),
    "motion+fps": ("fp32", CFG2, {"motion_exp": 5.0, "motion_pose": 60.0, "fps": 12.5}, BASE),
    "two_characters": ("fp32", CFG2, {"chars": 2}, BASE),
    "emotion_input": ("fp8_fast+emotion", CFG2, {"emotion": True}, BASE),
    "long_video": ("fp32", WINDOW2, {"window": 9, "frames": 120},
                   replace(BASE, steps=3, windows=WindowConfig(9, 3))),
    "deep_cache": ("fp32", WINDOW2, {"window": 9, "frames": 120},
                   replace(BASE, steps=3, windows=WindowConfig(9, 3), deep_cache=DeepCacheConfig(cached_steps=(2,)))),
    # a multistep solver: its per-frame state is fused with the latents, so window ranks exchange it too (4 steps:
    # 2M's first two steps and its last are first order, the same as Euler's; step 3 is second order)
    "solver_euler": ("fp32", WINDOW2, {"window": 9, "frames": 120}, replace(BASE, steps=4, windows=WindowConfig(9, 3))),
    "solver_2m": ("fp32", WINDOW2, {"window": 9, "frames": 120},
                  replace(BASE, steps=4, windows=WindowConfig(9, 3), solver="dpmpp_2m")),
    # thresholds inside the measured changes (0.36..0.46, 0.72..0.87): some calls skip, some do not
    "step_cache_cfg": ("fp32", CFG2, {}, replace(BASE, steps=4, step_cache=StepCacheConfig(0.38, 1))),
    "step_cache_window": ("fp32", WINDOW2, {"window": 9, "frames": 120},
                          replace(BASE, steps=4, windows=WindowConfig(9, 3), step_cache=StepCacheConfig(0.77, 1))),
}


def spec(name: str, files: dict[str, str]) -> LoadSpec:
    fields = dict(LOADER[name])
    fields["emotion"] = files["aem"] if fields.get("emotion") else None
    return LoadSpec(path=files["dit"], **fields)


def write_files(folder: Path) -> dict[str, str]:
    save_transformer(build_random_transformer(CFG, seed=0), folder / "dit.safetensors")
    aem = AudioEmotionModule(EmotionConfig(hidden_size=CFG.hidden_size, num_heads=CFG.num_heads, after_double=(0, 1)))
    save_emotion_module(init_random_(aem, seed=5), folder / "aem.safetensors")  # non-zero gates: it has an effect
    return {"dit": str(folder / "dit.safetensors"), "aem": str(folder / "aem.safetensors")}


def _run_case(runner, name: str, groups=None) -> dict[str, Any]:
    loader, parallel, changes, sampler = SAMPLER[name]
    cond = conditioning(**changes)
    if groups is None:  # the single process: CFG-parallel ranks run each half as a batch-1 call, so does this
        split = parallel.cfg > 1 and sampler.step_cache is None
        res = runner.sample(cond, replace(sampler, split_cfg=split))
    else:  # as a pool worker serves a request: the same LocalRunner.sample, given its place in the pool
        runner.rank_groups = groups
        res = runner.sample(cond, sampler)
    return {"latents": res.ring_latents, "stats": res.step_cache}


def _rank_main(rank: int, init: str, files: dict[str, str], out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    groups = {p: build_groups(p) for p in (CFG2, WINDOW2)}
    runners = {name: spec(name, files).build("cpu") for name in LOADER}
    results = {name: _run_case(runners[case[0]], name, groups[case[1]]) for name, case in SAMPLER.items()}
    torch.save(results, Path(out) / f"rank{rank}.pt")
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return write_files(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def launched(files: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    out = tmp_path_factory.mktemp("ranks")
    mp.spawn(_rank_main, args=(f"tcp://127.0.0.1:{_port()}", files, str(out)), nprocs=2, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]


@pytest.fixture(scope="module")
def single(files: dict[str, str]) -> dict[str, dict[str, Any]]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # like the ranks
    try:
        runners = {name: spec(name, files).build("cpu") for name in LOADER}
        return {name: _run_case(runners[case[0]], name) for name, case in SAMPLER.items()}
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("name", list(SAMPLER))
def test_pool_equals_single_process(launched: list, single: dict, name: str) -> None:
    ref = single[name]
    for rank, res in enumerate(launched):
        got = res[name]
        if ref["stats"] is None:
            assert torch.equal(got["latents"], ref["latents"]), f"{name} rank {rank}"
        else:  # the step cache: the same skip decisions; the whole CFG batch vs its halves differ by round-off
            assert (got["stats"].calls, got["stats"].skipped) == (ref["stats"].calls, ref["stats"].skipped)
            assert latent_check(name, got["latents"], ref["latents"]).ok, f"{name} rank {rank}"


# case -> the case that differs from it only by that input's default. fp8 fast matmuls, attention kernels
# and block swap are CUDA features or exact: on CPU their effect is what the workers built (runner info,
# compared in the pool test below), not a different result.
EFFECT = {"loader:bf16+low_memory": "loader:fp32", "loader:fp16": "loader:fp32",
          "loader:fp8+block_swap+attention": "loader:fp32", "loader:fp8_fast+emotion": "loader:fp32",
          "steps+shift+seed+cfg": "loader:fp32", "motion+fps": "loader:fp32", "two_characters": "loader:fp32",
          "emotion_input": "loader:fp8_fast+emotion", "long_video": "loader:fp32", "deep_cache": "long_video", "solver_2m": "solver_euler"}


@pytest.mark.parametrize("name", list(EFFECT) + ["step_cache_cfg", "step_cache_window"])
def test_every_input_has_an_effect(single: dict, name: str) -> None:
    """So that the equality above compares something the input changed."""
    if name.startswith("step_cache"):
        assert single[name]["stats"].skipped > 0
        return
    got, ref = single[name]["latents"], single[EFFECT[name]]["latents"]
    assert got.shape != ref.shape or not torch.equal(got, ref), name


def test_worker_pool_builds_the_spec_and_reports_it(files: dict[str, str]) -> None:
    """The real pool: every loader input arrives in the workers (info from rank 0), step-cache stats come back."""
    loader = spec("fp8+block_swap+attention", files)
    with WorkerPool(loader, WINDOW2, device="cpu", threads=1) as pool:
        runner = PooledRunner(pool)
        assert runner.info == replace(loader.build("cpu").info, gpus=2)
        assert runner.info.swapped_blocks == 2 and runner.info.offload == "block_swap"
        assert runner.info.weight_format == "fp8_e4m3fn" and runner.info.attention == loader.run_options().attention
        _, _, changes, sampler = SAMPLER["step_cache_window"]
        res = runner.sample(conditioning(**changes), sampler)
    assert res.step_cache is not None and res.step_cache.skipped > 0
    local = loader.build("cpu").sample(conditioning(**changes), sampler)
    assert torch.equal(res.ring_latents, local.ring_latents) and res.step_cache.skipped == local.step_cache.skipped


def test_step_cache_with_sequence_parallelism_is_refused_before_any_work() -> None:
    with pytest.raises(ValueError, match="step_cache > 0 cannot be combined with sequence parallelism.*parallel"):
        check_step_cache(ParallelConfig(cfg=2, sequence=2), replace(BASE, step_cache=StepCacheConfig()))
    pool = object.__new__(WorkerPool)  # the parent checks before it sends anything to a worker
    pool.config = ParallelConfig(sequence=2)
    with pytest.raises(ValueError, match="step_cache"):
        pool.sample_avatar(conditioning(), replace(BASE, step_cache=StepCacheConfig()))
    check_step_cache(ParallelConfig(cfg=2, window=2), replace(BASE, step_cache=StepCacheConfig()))  # fine


def test_a_bad_loader_input_is_named() -> None:
    with pytest.raises(ValueError, match="weight_dtype"):
        LoadSpec(path="x", weight_format="int4")
    with pytest.raises(ValueError, match="offload"):
        LoadSpec(path="x", offload="disk")
    with pytest.raises(ValueError, match="swap_blocks"):
        LoadSpec(path="x", offload="block_swap", swap_blocks=0)


def test_the_fast_preset_is_fp8_matmuls_plus_fp8_attention() -> None:
    from avatar_core.model.attention import resolve_backend
    from avatar_core.runner import WEIGHT_FORMATS
    fast, fp8 = WEIGHT_FORMATS["fast"], WEIGHT_FORMATS["fp8_e4m3fn_fast"]
    # fp8_e4m3fn_fast's storage and matmul, but the modulation linears kept in bf16 (tests/test_fast_format.py)
    assert (fast.compute, fast.storage, fast.operations.fast) == (fp8.compute, fp8.storage, fp8.operations.fast)
    assert fast.operations.keeps_plain("double_blocks.0.img_mod.linear") and not fp8.operations.keeps_plain(
        "double_blocks.0.img_mod.linear")
    assert LoadSpec(path="x", weight_format="fast", attention="sdpa").run_options().attention == resolve_backend("fa3_fp8")
