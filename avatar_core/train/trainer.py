"""The training loop: adapters on the frozen base, flow-matching loss, checkpoints, samples, progress.

    result = train(TrainConfig(data="clips/", output="runs/me", checkpoint="mp_rank_00_model_states.pt"))
    result.lora   # runs/me/lora.safetensors (ComfyUI layout), result.aem: runs/me/aem.safetensors

The same as `python -m avatar_core.train --data clips/ --output runs/me --checkpoint ...`.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import torch
from safetensors.torch import save_file
from tqdm import tqdm

from ..errors import InputError
from ..loading import save_emotion_module
from ..model.fp8 import FP8_E4M3, FP8Linears
from ..model.linear import block_linear_names, store_blocks_
from ..model.offload import BlockSwap
from ..model.options import ATTENTION, RunOptions
from ..output_files import folder_problem, refuse_non_empty
from ..specs.concepts import (
    AEM_EVERY,
    BATCH_SIZE,
    EVERY,
    EVERY_OR_OFF,
    FLOW_SHIFT,
    GRAD_ACCUM,
    GRAD_NORM,
    LEARNING_RATE,
    LORA_ALPHA,
    LORA_BLOCKS,
    LORA_LAYERS,
    LORA_RANK,
    LR_SCHEDULE,
    LR_WARMUP,
    PATH,
    PROBABILITY,
    SEED,
    STEPS,
    TRAIN_BLOCK_SWAP,
    TRAIN_STEPS,
    WEIGHT_DECAY,
)
from ..specs.fields import Choice, Flag, Maybe, Rule, Text, check_fields, declared
from ..specs.tensors import DEVICE
from .adapters import add_lora, attach_new_aem, enable_gradient_checkpointing, lora_state_dict
from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from .data import ClipFolder
from .loss import draw_batch, flow_loss
from .lr import lr_factor
from .samples import write_sample

log = logging.getLogger(__name__)
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def _one_base(cfg: TrainConfig) -> str:
    return "" if (cfg.checkpoint is None) != (cfg.random_model is None) else "give exactly one of the two"


def _something(cfg: TrainConfig) -> str:
    return "" if cfg.train_lora or cfg.train_aem else "nothing to train: both are off"


def _warmup_fits(cfg: TrainConfig) -> str:
    return "" if cfg.lr_warmup < cfg.steps else (f"a warmup of {cfg.lr_warmup} steps never reaches the learning rate "
                                                  f"in a run of {cfg.steps}")


def _swap_recomputes(cfg: TrainConfig) -> str:
    return "" if not cfg.block_swap or cfg.gradient_checkpointing else (
        "block swap without gradient checkpointing saves nothing: backward would keep every block's weights on "
        "the GPU")


def _fp8_compute(cfg: TrainConfig) -> str:
    return "" if not cfg.fp8_base or cfg.dtype != "fp16" else "an fp8 base computes in bf16 or fp32, not fp16"


@declared(
    Rule(("train_lora", "train_aem"), _something, "Set train_lora and/or train_aem."),
    Rule(("checkpoint", "random_model"), _one_base, "Give the base model file (checkpoint), or random_model for tests."),
    Rule(("lr_warmup", "steps"), _warmup_fits, "Use fewer warmup steps."),
    Rule(("block_swap", "gradient_checkpointing"), _swap_recomputes, "Turn gradient_checkpointing on, or block_swap 0."),
    Rule(("fp8_base", "dtype"), _fp8_compute, "Use dtype bf16 (GPU) or fp32 (CPU)."),
    data=PATH, output=PATH, checkpoint=Maybe(PATH),
    random_model=Maybe(Choice(("tiny", "13b"), fix="Random weights for tests and benchmarks: tiny or 13b.")),
    train_lora=Flag(), lora_blocks=LORA_BLOCKS, lora_layers=LORA_LAYERS, lora_rank=LORA_RANK, lora_alpha=LORA_ALPHA,
    train_aem=Flag(), aem_every=AEM_EVERY, steps=TRAIN_STEPS, batch_size=BATCH_SIZE, lr=LEARNING_RATE,
    lr_warmup=LR_WARMUP, lr_schedule=LR_SCHEDULE, weight_decay=WEIGHT_DECAY, fp8_base=Flag(),
    block_swap=TRAIN_BLOCK_SWAP,
    optimizer=Choice(("adamw", "adamw8bit"), fix="Use adamw or adamw8bit (needs bitsandbytes)."),
    grad_accum=GRAD_ACCUM, max_grad_norm=GRAD_NORM, shift=FLOW_SHIFT, audio_dropout=PROBABILITY,
    dtype=Choice(DTYPES, fix="The base weights' dtype: bf16 on a GPU, fp32 on a CPU."),
    gradient_checkpointing=Flag(), attention=ATTENTION, seed=SEED, save_every=EVERY, sample_every=EVERY_OR_OFF,
    sample_steps=STEPS, resume=Maybe(Text(nonempty=True, paths=True, fix="'latest' or a checkpoint folder.")),
    device=DEVICE, progress=Flag())
@dataclass
class TrainConfig:
    """Every setting of a training run, checked when made (specs above): a bad value stops before any work."""

    data: str                                # folder of clip caches (train/data.py)
    output: str                              # lora.safetensors, aem.safetensors, checkpoints/, samples/
    checkpoint: str | None = None            # base Avatar transformer file (our loader's formats)
    random_model: str | None = None          # "tiny" / "13b": random weights instead (tests, benchmarks)
    train_lora: bool = True
    lora_blocks: str = "all"                 # all | double | single | double:0-9,single:20-39
    lora_layers: str = ".*"                  # regex on the linear's name inside a block (e.g. ".*attn.*|linear1")
    lora_rank: int = 32
    lora_alpha: float = 32.0
    train_aem: bool = False                  # train a new Audio Emotion Module (clips need `emotion`)
    aem_every: int = 2                       # one emotion layer after every n-th double block
    steps: int = 1000
    batch_size: int = 1                      # clips per micro-step, all of one aspect-ratio bucket
    lr: float = 2e-4
    lr_warmup: int = 0                       # steps of linear warmup to lr
    lr_schedule: str = "constant"            # constant | cosine (to zero at the last step), after the warmup
    weight_decay: float = 0.01
    optimizer: str = "adamw"                 # adamw | adamw8bit (bitsandbytes)
    grad_accum: int = 1
    max_grad_norm: float = 1.0
    shift: float = 7.0
    audio_dropout: float = 0.1
    dtype: str = "bf16"                      # base weights (the compute dtype with fp8_base)
    fp8_base: bool = False                   # frozen block linears stored in fp8 e4m3 (half of bf16's memory)
    block_swap: int = 0                      # blocks streamed from CPU memory (needs gradient_checkpointing)
    gradient_checkpointing: bool = True
    attention: str = "sdpa"
    seed: int = 0
    save_every: int = 250
    sample_every: int = 0                    # 0: no samples
    sample_steps: int = 20
    resume: str | None = None                # "latest" or a checkpoint folder
    device: str = field(default_factory=lambda: "cuda" if torch.cuda.is_available() else "cpu")
    progress: bool = True

    def check(self) -> None:
        """Check every setting again (after a field was changed in place)."""
        check_fields(self)


@dataclass
class TrainResult:
    lora: Path | None
    aem: Path | None
    losses: list[float]
    step: int
    seconds: list[float] = field(default_factory=list)   # wall time of each step of this call


def build_base(cfg: TrainConfig) -> torch.nn.Module:
    """The frozen base: on the CPU when blocks are swapped (BlockSwap moves the rest), in fp8 with fp8_base
    (an official fp8 file stays fp8; a bf16 file is quantised layer by layer)."""
    from ..config import AvatarConfig
    from ..loading import build_random_transformer, load_transformer
    dtype = DTYPES[cfg.dtype]
    device = "cpu" if cfg.block_swap else cfg.device
    if cfg.random_model is not None:
        size = {"tiny": AvatarConfig.tiny, "13b": AvatarConfig.avatar_13b}[cfg.random_model]()
        return build_random_transformer(size, dtype=dtype, device=device, seed=cfg.seed)
    return load_transformer(cfg.checkpoint, dtype=dtype, device=device, fp8="quantize" if cfg.fp8_base else "dequant")


def place_base(model: torch.nn.Module, cfg: TrainConfig) -> BlockSwap | None:
    """fp8 storage of the block linears (fp8_base; a no-op for a model loaded so) and the block swap."""
    if cfg.fp8_base and any(m.storage is not FP8_E4M3 for m in block_members(model)):
        store_blocks_(model, FP8Linears)          # one layer at a time: peak = the model + one fp8 layer
    if not cfg.block_swap:
        return None
    n = len(model.double_blocks) + len(model.single_blocks)
    if cfg.block_swap > n - 1:
        raise InputError(f"block_swap {cfg.block_swap}: this model has {n} blocks and the last one stays on the "
                         f"device; use at most {n - 1}")
    return BlockSwap(model, cfg.device, resident=1, blocks=cfg.block_swap)


def block_members(model: torch.nn.Module) -> list:
    return [model.get_submodule(n) for n in block_linear_names(model)]


def _optimizer(params: list[torch.nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adamw8bit":
        try:
            import bitsandbytes as bnb
        except ImportError as e:
            raise InputError("optimizer adamw8bit needs bitsandbytes (pip install bitsandbytes); or use adamw") from e
        return bnb.optim.AdamW8bit(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def prepare(model: torch.nn.Module, cfg: TrainConfig, data: ClipFolder, swap: BlockSwap | None = None):
    """Freeze the base, add the adapters -> (trainable parameters by name, LoRA adapters, AEM or None)."""
    model.requires_grad_(False)
    if cfg.train_aem and not data.has_emotion():
        raise InputError(f"train_aem needs clips with an `emotion` latent; {data.files[0].name} has none")
    with torch.random.fork_rng(devices=[]):  # adapter init from the run's seed: a rerun starts identically
        torch.manual_seed(cfg.seed)
        adapters = add_lora(model, cfg.lora_blocks, cfg.lora_rank, cfg.lora_alpha, cfg.lora_layers,
                            device=cfg.device) if cfg.train_lora else {}
        aem = attach_new_aem(model, cfg.aem_every) if cfg.train_aem else None
    params = {f"lora.{n}.{k}": p for n, d in adapters.items() for k, p in (("down", d.down), ("up", d.up))}
    if aem is not None:
        params.update({f"aem.{k}": p for k, p in aem.named_parameters()})
    for p in params.values():
        p.requires_grad_(True)
    if cfg.gradient_checkpointing:
        enable_gradient_checkpointing(model, swap)
    return params, adapters, aem


def train(cfg: TrainConfig, model: torch.nn.Module | None = None,
          decoder: Callable[[torch.Tensor], torch.Tensor] | None = None,
          before_steps: Callable[[torch.nn.Module], None] | None = None) -> TrainResult:
    """Run (or resume) a training; `model`: a prebuilt base (else built from cfg; it keeps the trained
    adapters and its block swap afterwards); `decoder`: latents -> frames [F, H, W, 3] in 0..1 for sample
    videos (else samples are saved as latents); `before_steps(model)`: called once the base is placed (fp8,
    block swap) and the adapters exist, before step 1 (bench/train_13b.py caps the GPU memory there)."""
    cfg.check()
    out = Path(cfg.output)
    check_output(out, cfg.resume)  # before any clip or weight is read: never over another run, never a late error
    resume = _resume_point(out, cfg.resume)
    data = ClipFolder(cfg.data)  # every clip read and checked, before any weight is loaded
    data.check_run(need_emotion=cfg.train_aem, sampled=cfg.sample_every > 0)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(cfg.device)
    model = build_base(cfg) if model is None else model
    for shape in data.shapes:  # the clips' sizes against the model's, before step 1
        shape.check_fits(model.cfg)
    swap = place_base(model, cfg)  # the model keeps its block swap afterwards (removing it would fill the GPU)
    params, adapters, aem = prepare(model, cfg, data, swap)
    # room for one checkpoint (parameters + two fp32 AdamW moments) and the adapter files, before step 1
    check_room(out, 4 * sum(p.numel() for p in params.values()) * 4)
    opt = _optimizer(list(params.values()), cfg)
    step, losses = 0, []
    if resume is not None:
        state = load_checkpoint(resume, params, opt)
        step, losses = state["step"], state["losses"]
        log.info("resumed from %s at step %d", resume, step)
    if before_steps is not None:
        before_steps(model)
    bar = tqdm(total=cfg.steps, initial=step, disable=not cfg.progress, desc="train", dynamic_ncols=True)
    seconds = []
    while step < cfg.steps:
        t0 = time.perf_counter()
        loss = _optimizer_step(model, data, params, opt, cfg, step, device, aem is not None)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds.append(time.perf_counter() - t0)
        step += 1
        losses.append(loss)
        bar.set_postfix(loss=f"{loss:.4f}")
        bar.update(1)
        if step % cfg.save_every == 0 or step == cfg.steps:
            save_checkpoint(out / "checkpoints", step, params, opt, {"losses": losses, "config": asdict(cfg)})
            _save_adapters(out, adapters, aem, cfg)
        if cfg.sample_every and step % cfg.sample_every == 0:
            write_sample(model, data[0], out / "samples", step, cfg, decoder, aem is not None)
    bar.close()
    lora_path, aem_path = _save_adapters(out, adapters, aem, cfg)
    return TrainResult(lora_path, aem_path, losses, step, seconds)


def _resumes_from(out: Path, resume: str | None) -> bool:
    """True when this run continues a checkpoint of `out` itself."""
    if resume == "latest":
        return latest_checkpoint(out / "checkpoints") is not None
    return bool(resume) and (out / "checkpoints").resolve() in Path(resume).resolve().parents


def check_output(out: Path, resume: str | None) -> None:
    """The output folder: a new run refuses one that holds files (it would overwrite its lora.safetensors,
    aem.safetensors and checkpoints) unless it resumes from it; and it must take files."""
    if not _resumes_from(out, resume):
        refuse_non_empty(out, "output folder", "Give a new or empty folder (--output), or continue the training "
                                                "that wrote it with --resume latest.")
    check_room(out, 0)


def check_room(out: Path, need_bytes: int) -> None:
    """Writable with room for `need_bytes`: checked before step 1, not at the first save after hours of steps."""
    problem = folder_problem(out, need_bytes)
    if problem is not None:
        raise InputError(f"output folder: {problem}, so no checkpoint or adapter could be saved. Choose another "
                         "folder (--output) or free some space.")


def _resume_point(out: Path, resume: str | None) -> Path | None:
    if not resume:
        return None
    if resume == "latest":
        found = latest_checkpoint(out / "checkpoints")
        if found is None:
            log.info("resume=latest: no checkpoint in %s yet, starting at step 0", out / "checkpoints")
        return found
    path = Path(resume)
    if not (path / "state.json").is_file():
        raise InputError(f"resume: {path} is not a checkpoint folder (no state.json); use 'latest' or a "
                         f"{out / 'checkpoints'}/step-NNNNNN folder")
    return path


def _optimizer_step(model, data, params, opt, cfg: TrainConfig, step: int, device, use_emotion: bool) -> float:
    total = 0.0
    for group in opt.param_groups:
        group["lr"] = cfg.lr * lr_factor(step, cfg.steps, cfg.lr_warmup, cfg.lr_schedule)
    for micro in range(cfg.grad_accum):
        draws = draw_batch(cfg.seed, step * cfg.grad_accum + micro, data.buckets, data.bucket_of, cfg.batch_size,
                           cfg.shift, cfg.audio_dropout)
        forward = partial(model, options=RunOptions(attention=cfg.attention))  # the run's kernel, not the model's
        loss = flow_loss(forward, [data[d.clip] for d in draws], draws, device, use_emotion) / cfg.grad_accum
        loss.backward()
        total += float(loss.detach())
    if not math.isfinite(total):
        raise FloatingPointError(f"loss is {total} at step {step + 1}; lower lr ({cfg.lr}) or check the clip caches")
    if cfg.max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(list(params.values()), cfg.max_grad_norm)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return total


def _save_adapters(out: Path, adapters, aem, cfg: TrainConfig) -> tuple[Path | None, Path | None]:
    lora_path = aem_path = None
    if adapters:
        lora_path = out / "lora.safetensors"
        meta = {"format": "comfyui-lora", "trainer": "avatar_core.train", "rank": str(cfg.lora_rank),
                "alpha": str(cfg.lora_alpha), "blocks": cfg.lora_blocks, "layers": cfg.lora_layers}
        save_file(lora_state_dict(adapters), str(lora_path), metadata=meta)
    if aem is not None:
        aem_path = out / "aem.safetensors"
        save_emotion_module(aem, aem_path)
    (out / "train_config.json").write_text(json.dumps(asdict(cfg), indent=1))
    return lora_path, aem_path
