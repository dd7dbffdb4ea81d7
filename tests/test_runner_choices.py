"""The loader's choices as the runner applies them: run options per weight format and offload, where a model is
put, the offload plan's swap count, the emotion module, and what `LocalRunner.sample` hands the sampler (CPU).

Written after a mutation run of avatar_core/runner.py (scripts/mutation.sh runner.py): each expectation is the
documented behaviour of `RunChoices` / `LocalRunner` (their docstrings and the loader node's tooltips).
"""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch

import avatar_core.distributed.parallel as parallel
import avatar_core.lora as lora_mod
import avatar_core.runner as runner_mod
from avatar_core.config import AvatarConfig
from avatar_core.loading import save_emotion_module, save_transformer
from avatar_core.model.attention import KERNELS
from avatar_core.model.emotion import AudioEmotionModule, EmotionConfig
from avatar_core.model.options import LOW_MEMORY_CHUNK_TOKENS, RunOptions
from avatar_core.runner import FAST_ATTENTION, LoadSpec, RandomSpec, RunChoices
from avatar_core.sampling.resume import ResumeConfig
from avatar_core.sampling.sampler import SamplerConfig

CFG = AvatarConfig.tiny()


# ---------------------------------------------------------------- run options
@pytest.mark.parametrize("weight_format, asked, runs", [
    ("bf16", "sdpa", "sdpa"), ("fp8_e4m3fn_fast", "sdpa", "sdpa"), ("bf16", "auto", "auto"),
    # the fast preset brings its own fp8 attention (where it cannot run, "auto" with a warning: RunOptions)
    ("fast", "sdpa", FAST_ATTENTION if KERNELS[FAST_ATTENTION].available() else "auto"),
])
def test_the_attention_asked_for_is_the_one_run(weight_format, asked, runs):
    assert RunChoices(weight_format=weight_format, attention=asked).run_options().attention == runs


@pytest.mark.parametrize("offload, chunk, tokens", [
    ("low_memory", None, LOW_MEMORY_CHUNK_TOKENS), ("none", None, RunOptions().chunk_tokens),
    ("block_swap", None, RunOptions().chunk_tokens), ("low_memory", 4096, 4096), ("none", 4096, 4096),
])
def test_low_memory_chunks_the_token_work_unless_told_otherwise(offload, chunk, tokens):
    assert RunChoices(offload=offload, chunk_tokens=chunk).run_options().chunk_tokens == tokens


def test_compiled_blocks_run_without_the_fused_kernels():
    assert RunChoices(compile=True).run_options().fused_kernels is False
    assert RunChoices().run_options().fused_kernels is True


# ---------------------------------------------------------------- where the model goes
def test_a_model_that_is_not_offloaded_goes_to_the_load_device():
    """ComfyUI loads onto its offload device and moves the model itself (the 'meta' device stands for it here)."""
    for offload in ("none", "auto"):   # auto on a CPU device without a budget: none
        runner = RandomSpec(config=CFG, offload=offload).build("cpu", load_device="meta")
        assert {p.device.type for p in runner.diffusion_model.parameters()} == {"meta"}
        assert runner.offload is None and runner.info.offload == "none" and runner.info.swapped_blocks == 0


def test_block_swap_streams_the_asked_blocks_from_a_file(tmp_path):
    path = tmp_path / "dit.safetensors"
    save_transformer(RandomSpec(config=CFG).build("cpu").diffusion_model, path)
    runner = LoadSpec(path=str(path), offload="block_swap", swap_blocks=2).build("cpu")
    assert runner.info.offload == "block_swap" and runner.info.swapped_blocks == 2 == len(runner.offload.swapped)


def test_auto_keeps_the_loaders_swap_count_when_it_streams_nothing():
    model = RandomSpec(config=CFG).build("cpu").diffusion_model
    chosen = RunChoices(offload="auto", vram_budget=2**40, swap_blocks=7).resolve_offload(model, "cpu")
    assert (chosen.offload, chosen.swap_blocks) == ("none", 7)


def test_the_emotion_module_named_is_attached(tmp_path):
    aem = AudioEmotionModule(EmotionConfig(hidden_size=CFG.hidden_size, num_heads=2, after_double=(0,)))
    save_emotion_module(aem, tmp_path / "aem.safetensors")
    runner = RandomSpec(config=CFG, emotion=str(tmp_path / "aem.safetensors")).build("cpu")
    assert runner.info.emotion and runner.diffusion_model.aem is not None


# ---------------------------------------------------------------- what the sampler gets
@pytest.fixture(scope="module")
def runner():
    return RandomSpec(config=CFG).build("cpu")


def test_the_denoiser_carries_the_runners_options_unless_given_others(runner):
    assert runner.denoiser().keywords["options"] is runner.options
    other = replace(runner.options, chunk_tokens=77)
    assert runner.denoiser(other).keywords["options"] is other


def _capture(monkeypatch, module, name):
    seen = {}

    def fake(*args, **kwargs):
        seen.update(args=args, **kwargs)
        return "result"
    monkeypatch.setattr(module, name, fake)
    return seen


@pytest.mark.parametrize("writer", [True, False])
def test_a_single_process_run_hands_on_callbacks_and_a_keyed_resume(runner, monkeypatch, tmp_path, writer):
    seen = _capture(monkeypatch, runner_mod, "sample_avatar")
    callbacks, cond = object(), SimpleNamespace(ref_latents=torch.zeros(1))
    assert runner.sample(cond, callbacks=callbacks, resume=ResumeConfig(tmp_path, writer=writer)) == "result"
    assert seen["callbacks"] is callbacks and seen["args"][1] is cond
    resume = seen["resume"]
    assert resume.weights is runner.diffusion_model and resume.attention == runner.options.attention
    assert resume.writer is writer


@pytest.mark.parametrize("rank, writes", [(0, True), (1, False)])
def test_in_a_pool_only_rank_0_writes_checkpoints(runner, monkeypatch, tmp_path, rank, writes):
    seen = _capture(monkeypatch, parallel, "sample_on_rank")
    monkeypatch.setattr(runner, "rank_groups", SimpleNamespace(rank=rank))
    cond = SimpleNamespace(ref_latents=torch.zeros(1))
    runner.sample(cond, resume=ResumeConfig(tmp_path))
    model, groups, got_cond, config, device = seen["args"]
    assert model is runner.diffusion_model and groups.rank == rank and got_cond is cond
    assert config == SamplerConfig() and device == torch.device("cpu")   # the runner's compute device
    assert seen["resume"].writer is writes and seen["options"] is runner.options


def test_loras_are_merged_on_the_compute_device(runner, monkeypatch):
    seen = _capture(monkeypatch, lora_mod, "set_loras")
    runner.use_loras([])
    assert seen["args"][0] is runner.diffusion_model and seen["args"][2] == torch.device("cpu")


@pytest.mark.parametrize("fraction, plan", [(1.0, "none"), (0.05, "low_memory")])
def test_auto_on_a_gpu_budgets_the_share_of_its_memory_this_process_may_use(monkeypatch, fraction, plan):
    """budget = total memory x torch.cuda's per-process fraction of THIS device (a capped 100 GiB card here: 5 GiB
    is below the 7 GiB of work + margin alone). The CUDA queries are stood in for: no GPU needed."""
    gpu = torch.device("cuda", 1)
    asked = []

    def memory_fraction(device):
        asked.append(device)
        return fraction
    monkeypatch.setattr(torch.cuda, "get_per_process_memory_fraction", memory_fraction, raising=False)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: SimpleNamespace(total_memory=100 * 2**30))
    model = RandomSpec(config=CFG).build("cpu").diffusion_model
    assert RunChoices(offload="auto").resolve_offload(model, gpu).offload == plan
    assert asked == [gpu]
