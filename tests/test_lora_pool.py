"""LoRA on the multi-GPU worker pool (gloo on CPU): every worker applies the request's LoRA files, and a later
request without them gets the base weights back."""

from __future__ import annotations

import dataclasses

import torch
from safetensors.torch import save_file
from test_distributed import CFG, SHORT, SPEC, cond

from avatar_core.distributed import ParallelConfig, PooledRunner, WorkerPool
from avatar_core.lora import load_lora, set_loras
from avatar_core.sampling import sample_avatar

FRAMES = 100  # one window


def _lora_file(path) -> str:
    g = torch.Generator().manual_seed(4)
    D = CFG.hidden_size
    save_file({"lora_unet_double_blocks_1_img_attn_qkv.lora_down.weight": torch.randn(2, D, generator=g),
               "lora_unet_double_blocks_1_img_attn_qkv.lora_up.weight": torch.randn(3 * D, 2, generator=g),
               "lora_unet_single_blocks_0_linear2.lora_down.weight": torch.randn(2, D + CFG.mlp_hidden, generator=g),
               "lora_unet_single_blocks_0_linear2.lora_up.weight": torch.randn(D, 2, generator=g)}, str(path))
    return str(path)


def test_pool_workers_apply_the_requested_loras_and_restore(tmp_path):
    path = _lora_file(tmp_path / "l.safetensors")
    sampler = dataclasses.replace(SHORT, split_cfg=True)  # CFG-parallel runs each half as a batch-1 call
    single = SPEC.build(torch.device("cpu")).diffusion_model
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # like the workers: a bitwise comparison needs the same CPU reduction order
    try:
        base = sample_avatar(single, cond(FRAMES), sampler).ring_latents
        set_loras(single, [(load_lora(path, single), 0.8)])
        patched = sample_avatar(single, cond(FRAMES), sampler).ring_latents
    finally:
        torch.set_num_threads(threads)
    assert not torch.equal(base, patched)
    with WorkerPool(SPEC, ParallelConfig(cfg=2), device="cpu", threads=1) as pool:
        runner = PooledRunner(pool)
        assert torch.equal(runner.sample(cond(FRAMES), sampler, loras=((path, 0.8),)).ring_latents, patched)
        assert torch.equal(runner.sample(cond(FRAMES), sampler).ring_latents, base)
