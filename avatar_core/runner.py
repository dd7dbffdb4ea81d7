"""What the nodes hold: a runner, one protocol for one process and for a pool of GPU workers.

    runner = LoadSpec("model.pt", weight_format="fp8_e4m3fn", offload="low_memory").build("cuda")
    result = runner.sample(cond, SamplerConfig(steps=50))          # or a PooledRunner, the same call
    runner.info                                                     # emotion module, offload, weights, GPUs

The load choices live in one spec (`LoadSpec`, or `RandomSpec` for random weights) that a local
runner and every worker of a pool build from, so an input has the same effect with one GPU and many.
The runner holds the per-run options the model is called with (`model.options.RunOptions`) and the
offload plan; the model itself holds weights only.

There is one runner path: a pool worker holds a LocalRunner that knows its place in the pool
(`LocalRunner.rank_groups`) and serves each request with the same `LocalRunner.sample` (LoRAs, resume
keying, the sampler call). LoRAs always travel through `sample(loras=...)`: the weights are made to match
that list (none: the base weights, bit for bit) before every run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import torch
import torch.nn as nn

from .config import AvatarConfig
from .errors import InputError
from .model import AvatarTransformer
from .model.formats import WEIGHT_FORMATS
from .model.offload import BlockSwap
from .model.options import ATTENTION, LOW_MEMORY_CHUNK_TOKENS, RunOptions
from .sampling.resume import ResumeConfig
from .sampling.sampler import AvatarConditioning, SamplerCallbacks, SamplerConfig, SampleResult, sample_avatar
from .specs.concepts import CHUNK_TOKENS, PATH, SEED, SWAP_BLOCKS
from .specs.fields import Choice, Flag, Instance, Int, Maybe, Text, declared

if TYPE_CHECKING:
    from .distributed.group import ParallelGroups
    from .lora import LoraFile

# (LoRA, strength) pairs of one run: LoraFile objects (read and checked by `Runner.load_lora`) or file paths.
Loras = Sequence[tuple["LoraFile | str | Path", float]]

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
    config: AvatarConfig | None = None  # the model's sizes (a pool checks a LoRA file against them)


class Runner(Protocol):
    info: RunnerInfo

    def load_lora(self, path: str | Path) -> LoraFile:
        """Read a LoRA file and check its keys and shapes against this runner's model, before any run."""
        ...

    def sample(self, cond: AvatarConditioning, config: SamplerConfig | None = None, *,
               noise: torch.Tensor | None = None, callbacks: SamplerCallbacks | None = None,
               loras: Loras = (), resume: ResumeConfig | None = None) -> SampleResult: ...


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
                          attention=options.attention, swapped_blocks=0 if swap is None else len(swap.swapped),
                          config=model.cfg)
        return LocalRunner(model, options, info, swap, compute_device=device)

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
    manages lands here, not on the transformer (it writes `device`, hence `compute_device`)."""

    def __init__(self, model: AvatarTransformer, options: RunOptions, info: RunnerInfo,
                 offload: BlockSwap | None = None, compute_device: str | torch.device | None = None):
        super().__init__()
        self.diffusion_model = model
        self.options, self.info, self.offload = options, info, offload
        # Where the model runs and LoRA merges are computed (None: where each weight is).
        self.compute_device = None if compute_device is None else torch.device(compute_device)
        # A pool worker's place in the pool (distributed.group.ParallelGroups); None: the whole run is here.
        self.rank_groups: ParallelGroups | None = None

    def denoiser(self, options: RunOptions | None = None) -> partial:
        """The model bound to this runner's options: the sampler's `denoise` callable."""
        return partial(self.diffusion_model, options=options or self.options)

    def load_lora(self, path: str | Path) -> LoraFile:
        from .lora import load_lora
        return load_lora(path, self.diffusion_model)

    def use_loras(self, loras: Loras) -> None:
        """Make the weights carry exactly `loras` (none: the base weights, restored bit for bit). Loaded
        LoraFile objects are applied as they are; paths are read once per runner (a pool worker's request)."""
        from .lora import LoraFile, set_lora_files, set_loras
        loaded = [isinstance(lora, LoraFile) for lora, _ in loras]
        if any(loaded) and not all(loaded):
            raise InputError(f"loras: {[(getattr(lo, 'name', lo), s) for lo, s in loras]} mixes loaded LoRAs "
                             "(LoraFile) and file paths; give all of them one way (Runner.load_lora reads a path)")
        device = self.offload.device if self.offload is not None else self.compute_device
        if all(loaded):  # also no LoRA at all
            set_loras(self.diffusion_model, [(lora, float(s)) for lora, s in loras], device)
        else:
            set_lora_files(self.diffusion_model, [(str(lora), float(s)) for lora, s in loras], device)

    def sample(self, cond: AvatarConditioning, config: SamplerConfig | None = None, *,
               noise: torch.Tensor | None = None, callbacks: SamplerCallbacks | None = None,
               loras: Loras = (), resume: ResumeConfig | None = None) -> SampleResult:
        """``loras``: (LoRA, strength) pairs the weights carry for this run (`use_loras`); () = base weights.
        ``resume``: checkpoint long renders and continue a matching earlier one (sampling/resume.py).
        In a pool worker (`rank_groups` set) the run is this rank's share (distributed.parallel.sample_on_rank)."""
        self.use_loras(loras)
        groups = self.rank_groups
        if resume is not None:  # keyed by these weights and this kernel too; in a pool only rank 0 writes
            resume = replace(resume, weights=self.diffusion_model, attention=self.options.attention,
                             writer=resume.writer and (groups is None or groups.rank == 0))
        if groups is None:
            return sample_avatar(self.denoiser(), cond, config, noise=noise, callbacks=callbacks, resume=resume)
        from .distributed.parallel import sample_on_rank
        device = self.compute_device or cond.ref_latents.device  # where the ranks' exchanges run
        return sample_on_rank(self.diffusion_model, groups, cond, config or SamplerConfig(), device,
                              options=self.options, noise=noise, callbacks=callbacks, resume=resume)
