"""Multi-GPU model loading for the model loader node: a worker pool (one process per GPU) behind a patcher."""

from __future__ import annotations

import comfy.model_management as mm
import comfy.model_patcher

from ..avatar_core.config import AvatarConfig
from ..avatar_core.distributed import ParallelConfig, check_degree, start_pool
from ..avatar_core.runner import LoadSpec

GPU_TOOLTIP = ("GPUs to sample on (one worker process per GPU, each holding the whole model; NCCL). 1: this "
               "process, as usual. The sampler node needs no change.")
PARALLEL_TOOLTIP = ("How the GPUs share the work. auto = cfg+sequence: the two CFG halves on different GPUs, then "
                    "Ulysses sequence parallelism inside each window (any clip length). window: the windows of a "
                    "long clip on different GPUs (only helps clips of several windows). All give the 1-GPU result; "
                    "the sampler's step_cache needs cfg, window or cfg+window.")


def load_pooled(spec: LoadSpec, gpus: int, mode: str) -> comfy.model_patcher.ModelPatcher:
    """Start ``gpus`` workers that each build ``spec``; errors (too few GPUs, bad degrees) come before any start."""
    config = ParallelConfig.from_gpus(gpus, mode)
    check_degree(AvatarConfig.avatar_13b().num_heads, config.sequence)  # the released model; workers re-check
    mm.unload_all_models()  # the workers need the GPUs' memory; this process keeps only VAE / encoders on demand
    runner = start_pool(spec, config, device="cuda")
    return comfy.model_patcher.CoreModelPatcher(runner, load_device=mm.get_torch_device(),
                                                offload_device=mm.unet_offload_device())
