"""Resumable long renders: the ring state of a run, checkpointed to disk between steps.

A 90 s clip at 704 px is hours of GPU time denoised as one ring, so a crash, an out-of-memory or a restart
near the end would lose everything. Between steps the sampler's whole state is the ring latents, the step
index and the window shift (plus the deep-cache tokens, which is why a checkpoint is only written before a
step that recomputes them). That state is written, at most once per ``interval_s``, to one safetensors file
whose name is a hash of everything that determines the result (conditioning, initial noise, settings, a
sample of the model weights). A rerun with the same inputs finds the file and continues from it, bitwise the
same as an uninterrupted run; a run with any different input hashes to another name and never sees it. The
file is removed when the run completes. Written with safetensors + JSON metadata (never pickle), atomically
(a process killed mid-write leaves the previous checkpoint intact).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

FORMAT = "hyavatar-resume"
VERSION = 1
_CHUNK = 1 << 24  # elements hashed per host copy: a 7 GB feature tensor is never copied whole
_SAMPLE = 256  # elements hashed from each end of every weight tensor (a cheap model identity)
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ResumeConfig:
    """Where and how often to checkpoint. ``interval_s`` 0 writes before every step that allows it."""

    directory: str | Path
    interval_s: float = 600.0
    # What keys the checkpoint besides the inputs: the weights (both ends of every tensor) and the attention
    # kernel. The runner fills them in (runner.LocalRunner.sample); a bare sample_avatar call keys on inputs only.
    weights: torch.nn.Module | None = None
    attention: str = ""
    # On a multi-GPU pool every rank holds the same ring after each step: every rank reads the checkpoint, only
    # the writer (rank 0) writes and removes it (the pool sets this per rank).
    writer: bool = True

    def __post_init__(self) -> None:
        if not self.interval_s >= 0:  # also refuses NaN
            raise ValueError(f"resume interval_s must be >= 0 seconds, got {self.interval_s}")


def _hash_tensor(h: Any, name: str, t: torch.Tensor | None) -> None:
    if t is None:
        h.update(f"{name}:None;".encode())
        return
    h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
    flat = t.detach().reshape(-1)
    for i in range(0, flat.numel(), _CHUNK):
        part = flat[i : i + _CHUNK].contiguous().cpu()  # a view on the CPU; one chunk-sized copy from a GPU
        h.update(part.view(torch.uint8).numpy())  # hashed through the buffer protocol, no bytes copy


def _hash_model(h: Any, config: ResumeConfig) -> None:
    """Attention kernel and both ends of every weight: tells checkpoints of different files apart without
    reading 26 GB."""
    h.update(f"attention:{config.attention};".encode())
    if config.weights is not None:
        for name, t in config.weights.state_dict().items():
            flat = t.detach().reshape(-1)
            _hash_tensor(h, name, flat if flat.numel() <= 2 * _SAMPLE else torch.cat([flat[:_SAMPLE], flat[-_SAMPLE:]]))


def run_settings(config: Any, plan: Any) -> dict[str, Any]:
    """The settings a checkpoint must agree on, as JSON-able values (stored for people to read)."""
    return {
        "steps": config.steps, "shift": config.shift, "seed": config.seed, "split_cfg": config.split_cfg,
        "window_dtype": str(config.window_dtype), "guidance": dataclasses.asdict(config.guidance),
        "deep_cache": dataclasses.asdict(config.deep_cache), "windows": dataclasses.asdict(config.windows),
        "ring_frames": plan.ring_frames, "video_frames": plan.video_frames,
    }


def fingerprint(config: ResumeConfig, cond: Any, settings: dict[str, Any], initial: torch.Tensor) -> str:
    """sha256 of everything that decides the final latents of a run."""
    h = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for field in dataclasses.fields(cond):
        value = getattr(cond, field.name)
        if dataclasses.is_dataclass(value):  # text conditioning
            for sub in dataclasses.fields(value):
                _hash_tensor(h, f"{field.name}.{sub.name}", getattr(value, sub.name))
        elif isinstance(value, tuple):  # RoPE (cos, sin)
            for i, t in enumerate(value):
                _hash_tensor(h, f"{field.name}.{i}", t)
        else:
            _hash_tensor(h, field.name, value)
    _hash_tensor(h, "initial_latents", initial)
    _hash_model(h, config)
    return h.hexdigest()


class RingCheckpoint:
    """The checkpoint file of one run (see the module docstring)."""

    def __init__(self, config: ResumeConfig, key: str, settings: dict[str, Any]):
        self.config, self.key, self.settings = config, key, settings
        self.path = Path(config.directory) / f"hyavatar_resume_{key[:24]}.safetensors"
        self._last = time.monotonic()
        self.resumed_step: int | None = None

    def restore(self, latents: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        """(latents, first step to run, shift) from the checkpoint, or the fresh start when there is none."""
        if not self.path.is_file():
            return latents, 0, 0
        try:
            with safe_open(str(self.path), framework="pt") as f:
                meta = dict(f.metadata() or {})
                saved = f.get_tensor("latents")
                rng = f.get_tensor("rng_cpu")
        except Exception as e:  # noqa: BLE001 (a damaged file only costs the saved progress)
            log.warning("Avatar resume: %s is unreadable (%s); starting afresh", self.path.name, e)
            return latents, 0, 0
        if (meta.get("format"), meta.get("fingerprint")) != (FORMAT, self.key) or \
                saved.shape != latents.shape or saved.dtype != latents.dtype:
            log.warning("Avatar resume: %s belongs to another run; starting afresh", self.path.name)
            return latents, 0, 0
        torch.set_rng_state(rng)  # the global stream continues as in the uninterrupted run
        self.resumed_step = int(meta["next_step"])
        log.info("Avatar resume: continuing from step %d of %d (%s)", self.resumed_step + 1,
                 self.settings["steps"], self.path)
        return saved.to(latents.device), self.resumed_step, int(meta["shift"])

    def after_step(self, step: int, latents: torch.Tensor, shift: int, *, allowed: bool) -> None:
        """Write the state before step ``step + 1`` when the interval has passed (and the step allows it)."""
        if not self.config.writer or not allowed or step + 1 >= self.settings["steps"]:
            return
        if time.monotonic() - self._last < self.config.interval_s:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"format": FORMAT, "version": str(VERSION), "fingerprint": self.key, "next_step": str(step + 1),
                "shift": str(shift), "settings": json.dumps(self.settings, default=str)}
        tmp = self.path.with_name(self.path.name + ".partial")
        save_file({"latents": latents.detach().contiguous().cpu(), "rng_cpu": torch.get_rng_state()}, str(tmp),
                  metadata=meta)
        os.replace(tmp, self.path)  # atomic: a kill mid-write keeps the previous checkpoint
        self._last = time.monotonic()

    def finish(self) -> None:
        """The run completed: its checkpoint is no longer needed."""
        if not self.config.writer:
            return
        self.path.unlink(missing_ok=True)
        self.path.with_name(self.path.name + ".partial").unlink(missing_ok=True)


def open_checkpoint(config: ResumeConfig | None, cond: Any, sampler_config: Any, plan: Any,
                    initial: torch.Tensor) -> RingCheckpoint | None:
    """The run's checkpoint, or None when resuming is off or cannot be bitwise (opt-in step cache)."""
    if config is None:
        return None
    if sampler_config.step_cache is not None:
        log.warning("Avatar resume: off for this run, the step cache's history is not checkpointed (set "
                    "step_cache 0 to make long renders resumable)")
        return None
    settings = run_settings(sampler_config, plan)
    return RingCheckpoint(config, fingerprint(config, cond, settings, initial), settings)
