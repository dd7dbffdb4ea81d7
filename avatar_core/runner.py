"""What the nodes hold: a runner, one protocol for one process and for a pool of GPU workers.

    runner = LoadSpec("model.pt", weight_format="fp8_e4m3fn", offload="low_memory").build("cuda")
    result = runner.sample(cond, SamplerConfig(steps=50))          # or a PooledRunner, the same call
    runner.info                                                     # emotion module, offload, weights, GPUs

The load choices live in one spec (`LoadSpec`, or `RandomSpec` for random weights) that a local
runner and every worker of a pool build from, so an input has the same effect with one GPU and many.
The runner holds the per-run options the model is called with (`model.options.RunOptions`) and the
offload plan; the model itself holds weights only.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial
from typing import Protocol

import torch
import torch.nn as nn

from .config import AvatarConfig
from .model import AvatarTransformer
from .model.formats import WEIGHT_FORMATS
from .model.offload import BlockSwap
from .model.options import ATTENTION, LOW_MEMORY_CHUNK_TOKENS, RunOptions
from .sampling.resume import ResumeConfig
from .sampling.sampler import AvatarConditioning, SamplerCallbacks, SamplerConfig, SampleResult, sample_avatar
from .specs.concepts import CHUNK_TOKENS, PATH, SEED, SWAP_BLOCKS
from .specs.fields import Choice, Flag, Instance, Int, Maybe, Text, declared

FAST_ATTENTION = "fa3_fp8"  # the "fast" weight format (model/formats.py) also picks this attention kernel
OFFLOAD_MODES = ("none", "block_swap", "low_memory")
AUTO_OFFLOAD = "auto"  # resolved to one of OFFLOAD_MODES once the weights are loaded (offload_plan.py)


@dataclass(frozen=True)
class RunnerInfo:
    """What a node may need to know about the loaded model (no probing of the model object)."""

    emotion: bool               # an Audio Emotion Module is loaded (an emotion input has an effect)
    offload: str                # one of OFFLOAD_MODES
    weight_format: str          # a key of WEIGHT_FORMATS
    attention: str = "sdpa"     # the attention kernel that runs (after a fallback to SDPA, if any)
    gpus: int = 1               # processes (GPUs) that sample
    swapped_blocks: int = 0     # blocks streamed from CPU memory (per process)


class Runner(Protocol):
    info: RunnerInfo

    def sample(self, cond: AvatarConditioning, config: SamplerConfig | None = None, *,
               noise: torch.Tensor | None = None, callbacks: SamplerCallbacks | None = None,
               loras: tuple[tuple[str, float], ...] = (), resume: ResumeConfig | None = None) -> SampleResult: ...


@declared(weight_format=Choice(WEIGHT_FORMATS, fix="The loader's weight_dtype: bf16 is the official precision, "
                                                   "fp8_e4m3fn takes half the memory."),
          attention=ATTENTION,
          emotion=Maybe(Text(nonempty=True, fix="Give the Audio Emotion Module weights file, or None.")),
          offload=Choice(OFFLOAD_MODES + (AUTO_OFFLOAD,), fix="none: the whole model on the GPU; low_memory: every "
                                                              "block streams; auto: the first that fits the GPU."),
          swap_blocks=SWAP_BLOCKS, chunk_tokens=Maybe(CHUNK_TOKENS), compile=Flag(),
          vram_budget=Maybe(Int(1, 2**50, unit="bytes", fix="GPU bytes the model may use with offload = auto, or "
                                                            "None for the device's total.")))
@dataclass(frozen=True, kw_only=True)
class RunChoices:
    """The load choices shared by every spec (node inputs of 'Load HunyuanVideo-Avatar Model')."""

    weight_format: str = "bf16"
    attention: str = "auto"
    emotion: str | None = None        # Audio Emotion Module weights file
    offload: str = "none"             # one of OFFLOAD_MODES, or AUTO_OFFLOAD
    swap_blocks: int = 20             # with offload = block_swap: blocks streamed from CPU memory
    vram_budget: int | None = None    # offload = auto: GPU bytes the model may use (None: the device's total)
    chunk_tokens: int | None = None   # None: the offload mode's default
    compile: bool = False             # per-block torch.compile

    def run_options(self) -> RunOptions:
        chunk = self.chunk_tokens or (LOW_MEMORY_CHUNK_TOKENS if self.offload == "low_memory" else None)
        extra = {} if chunk is None else {"chunk_tokens": chunk}
        attention = FAST_ATTENTION if self.weight_format == "fast" else self.attention  # the preset's fp8 attention
        return RunOptions(attention=attention, fused_kernels=not self.compile, **extra)

    def finish(self, model: AvatarTransformer, device: str | torch.device,
               load_device: str | torch.device | None = None) -> LocalRunner:
        """Emotion module, offload plan and compile on a loaded model -> its runner.
        load_device: where a model that is not offloaded is put (default `device`; ComfyUI moves it itself)."""
        from .loading import load_emotion_module
        from .model.compile import compile_blocks
        if self.offload == AUTO_OFFLOAD:  # the weights are loaded (on the CPU): now their size is known
            return self.resolve_offload(model, device).finish(model, device, load_device)
        if self.emotion:
            load_emotion_module(model, self.emotion)
        swap = None
        if self.offload == "none":
            model.to(load_device or device)
        else:  # the resident part goes to `device`, the swapped blocks stay in (pinned) CPU memory
            swap = BlockSwap(model, device, resident=1, blocks=self.swap_blocks if self.offload == "block_swap" else None)
        if self.compile:
            compile_blocks(model)
        options = self.run_options()
        info = RunnerInfo(emotion=model.aem is not None, offload=self.offload, weight_format=self.weight_format,
                          attention=options.attention, swapped_blocks=0 if swap is None else len(swap.swapped))
        return LocalRunner(model, options, info, swap)

    def resolve_offload(self, model: AvatarTransformer, device: str | torch.device) -> RunChoices:
        """offload=auto -> these choices with the plan that fits the budget (none on a CPU device)."""
        import logging

        from .offload_plan import choose_offload, model_bytes
        device = torch.device(device)
        budget = self.vram_budget
        if budget is None and device.type == "cuda":
            fraction = getattr(torch.cuda, "get_per_process_memory_fraction", lambda d: 1.0)(device)
            budget = int(torch.cuda.get_device_properties(device).total_memory * fraction)
        if budget is None:
            return replace(self, offload="none")
        choice = choose_offload(*model_bytes(model), budget_bytes=budget, default_swap=self.swap_blocks)
        logging.info("Avatar model: offload=auto chose %s: %s", choice.offload, choice.reason)
        return replace(self, offload=choice.offload, swap_blocks=choice.swap_blocks)


@declared(path=PATH)
@dataclass(frozen=True, kw_only=True)
class LoadSpec(RunChoices):
    """A checkpoint file (every worker of a pool reads the same file; it is memory-mapped)."""

    path: str

    def build(self, device: str | torch.device, load_device: str | torch.device | None = None) -> LocalRunner:
        from .loading import load_transformer
        fmt = WEIGHT_FORMATS[self.weight_format]
        at = "cpu" if self.offload != "none" else (load_device or device)
        model = load_transformer(self.path, dtype=fmt.compute, device=at, operations=fmt.operations)
        return self.finish(model, device, load_device)


@declared(config=Instance(AvatarConfig, fix="Give an AvatarConfig (e.g. AvatarConfig.tiny())."), seed=SEED)
@dataclass(frozen=True, kw_only=True)
class RandomSpec(RunChoices):
    """Random weights (benchmarks, tests): the same seed gives the same weights in every process.
    weight_format "fp32" / "bf16" / "fp16" is the dtype of the weights; fp8 formats quantise bf16 ones."""

    config: AvatarConfig
    seed: int = 0
    weight_format: str = "fp32"

    def build(self, device: str | torch.device, load_device: str | torch.device | None = None) -> LocalRunner:
        from .loading import build_random_transformer
        from .model.linear import store_blocks_
        fmt = WEIGHT_FORMATS[self.weight_format]
        at = "cpu" if self.offload != "none" else str(load_device or device)  # (a CUDA generator on a GPU)
        model = build_random_transformer(self.config, dtype=fmt.compute, device=at, seed=self.seed)
        if fmt.stored:
            store_blocks_(model, fmt.operations)
        return self.finish(model, device, load_device)


class LocalRunner(nn.Module):
    """One process: the model, the run options it is called with and its offload plan.

    An nn.Module whose one child is `diffusion_model` (ComfyUI's convention), so that ComfyUI's
    ModelPatcher can measure, move and patch the weights; whatever the patcher writes onto the module it
    manages lands here, not on the transformer."""

    def __init__(self, model: AvatarTransformer, options: RunOptions, info: RunnerInfo,
                 offload: BlockSwap | None = None):
        super().__init__()
        self.diffusion_model = model
        self.options, self.info, self.offload = options, info, offload

    def denoiser(self, options: RunOptions | None = None) -> partial:
        """The model bound to this runner's options: the sampler's `denoise` callable."""
        return partial(self.diffusion_model, options=options or self.options)

    def sample(self, cond: AvatarConditioning, config: SamplerConfig | None = None, *,
               noise: torch.Tensor | None = None, callbacks: SamplerCallbacks | None = None,
               loras: tuple[tuple[str, float], ...] = (), resume: ResumeConfig | None = None) -> SampleResult:
        """``loras``: (file, strength) pairs to apply first; () leaves the weights as they are (the LoRA
        node applies its own LoRA objects to `diffusion_model` itself, avatar_core.lora.set_loras).
        ``resume``: checkpoint long renders and continue a matching earlier one (sampling/resume.py)."""
        if loras:
            from .lora import set_lora_files
            set_lora_files(self.diffusion_model, loras, None if self.offload is None else self.offload.device)
        if resume is not None:  # the checkpoint is keyed by these weights and this kernel too
            resume = replace(resume, weights=self.diffusion_model, attention=self.options.attention)
        return sample_avatar(self.denoiser(), cond, config, noise=noise, callbacks=callbacks, resume=resume)

