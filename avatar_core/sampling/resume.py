"""Resumable long renders: the ring state of a run, checkpointed to disk between steps.

A 90 s clip at 704 px is hours of GPU time denoised as one ring, so a crash, an out-of-memory or a restart
near the end would lose everything. Between steps the sampler's whole state is the ring latents, the step
index and the window shift, a multistep solver's per-frame history (saved beside the latents), plus the
deep-cache tokens, which is why a checkpoint is only written before a step that recomputes them. That state is written, at most once per ``interval_s``, to one safetensors file
whose name is a hash of everything that determines the result (conditioning, initial noise, every
SamplerConfig field (the solver included), the run options, a sample of the model weights). A rerun with the
same inputs finds the file and continues from it, bitwise the same as an uninterrupted run; a run with any
different input hashes to another name and never sees it. The file is removed when the run completes.
Written with safetensors + JSON metadata (never pickle), atomically (a process killed mid-write leaves the
previous checkpoint intact).

Trust: a checkpoint also stores a sha256 of its own content (latents, RNG state, every metadata field), and
every field is validated on load (format, version, fingerprint, step within the run, the shift that step
has, latents shape / dtype / finiteness, RNG state size / dtype). A file that fails any check is reported
(a warning naming it and why), removed, and the run starts afresh: never trusted, never a loop of failures.
The folder is checked before the first step (a folder, writable, room for one checkpoint); a write that
fails mid-run (disk full) warns and the render goes on without checkpoints.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from ..errors import InputError
from ..output_files import folder_problem
from ..specs.concepts import RESUME_INTERVAL
from ..specs.fields import Choice, Flag, Instance, Maybe, Text, declared
from ..weight_files import RESUME, WeightFileError, read_tensors
from .solvers import get_solver

FORMAT = "hyavatar-resume"
VERSION = 2  # 2: content hash, every field validated
UNWRITABLE = ("error", "warn")  # an unusable folder: stop before step 1, or render without checkpoints
_CHUNK = 1 << 24  # elements hashed per host copy: a 7 GB feature tensor is never copied whole
_SAMPLE = 256  # elements hashed from each end of every weight tensor (a cheap model identity)
log = logging.getLogger(__name__)


@declared(directory=Instance((str, os.PathLike), what="a folder path", fix="Give the folder for resume checkpoints."),
          interval_s=RESUME_INTERVAL, weights=Maybe(Instance(torch.nn.Module, fix="The runner fills this in.")),
          attention=Text(), writer=Flag(),
          on_unwritable=Choice(UNWRITABLE, fix="error: stop before the first step; warn: render without checkpoints."),
          folder_checked=Flag(), prefix="resume.")
@dataclass(frozen=True)
class ResumeConfig:
    """Where and how often to checkpoint. ``interval_s`` 0 writes before every step that allows it."""

    directory: str | Path
    interval_s: float = 600.0
    # What keys the checkpoint besides the inputs: the weights (both ends of every tensor) and the attention
    # kernel. The runner fills them in; a bare sample_avatar call finds the module behind `denoise` (a module,
    # a functools.partial of one, a bound method) or is refused: give weights= then.
    weights: torch.nn.Module | None = None
    attention: str = ""
    # On a multi-GPU pool every rank holds the same ring after each step: every rank reads the checkpoint, only
    # the writer (rank 0) writes and removes it (the pool sets this per rank).
    writer: bool = True
    # A folder that cannot hold a checkpoint (a file, read-only, full): "error" stops before the first step,
    # "warn" renders without checkpoints.
    on_unwritable: str = "error"
    folder_checked: bool = False  # set once the folder passed (the pool checks it once, in the parent)


# ---------------------------------------------------------------- the key of a run
def _hash_tensor(h: Any, name: str, t: torch.Tensor | None) -> None:
    if t is None:
        h.update(f"{name}:None;".encode())
        return
    h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
    flat = t.detach().reshape(-1)
    for i in range(0, flat.numel(), _CHUNK):
        part = flat[i : i + _CHUNK].contiguous().cpu()  # a view on the CPU; one chunk-sized copy from a GPU
        h.update(part.view(torch.uint8).numpy())  # hashed through the buffer protocol, no bytes copy


def _plain(value: Any) -> Any:
    """A setting as a JSON-able value (dataclasses by field, dtypes and devices by name)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def run_settings(config: Any, plan: Any) -> dict[str, Any]:
    """Every SamplerConfig field (a new field is keyed without a change here) + the clip plan."""
    return {**_plain(config), "ring_frames": plan.ring_frames, "video_frames": plan.video_frames}


def weights_of(denoise: Any) -> torch.nn.Module | None:
    """The module behind a denoise callable: itself, a functools.partial of it, or a bound method of it."""
    for _ in range(8):
        if isinstance(denoise, torch.nn.Module):
            return denoise
        if isinstance(denoise, functools.partial):
            denoise = denoise.func
        elif hasattr(denoise, "__self__"):
            denoise = denoise.__self__
        elif hasattr(denoise, "__wrapped__"):
            denoise = denoise.__wrapped__
        else:
            return None
    return None


def model_identity(config: ResumeConfig, denoise: Any) -> ResumeConfig:
    """`config` with the weights it keys on; a run whose weights cannot be found is refused (it could resume
    a checkpoint of other weights)."""
    if config.weights is not None:
        return config
    found = weights_of(denoise)
    if found is None:
        raise InputError(f"resume: cannot tell which weights the denoise callable ({type(denoise).__name__}) uses, "
                         "so a checkpoint of other weights could be resumed. Pass them: ResumeConfig(..., "
                         "weights=model), or sample through a runner (runner.sample(..., resume=...)).")
    return replace(config, weights=found)


def _options_of(denoise: Any) -> dict[str, Any]:
    """Plain run options bound into a partial (attention, chunking, fused kernels): they change the numbers."""
    options = denoise.keywords.get("options") if isinstance(denoise, functools.partial) else None
    if options is None or not dataclasses.is_dataclass(options):
        return {}
    return {f.name: getattr(options, f.name) for f in dataclasses.fields(options)
            if isinstance(getattr(options, f.name), (bool, int, float, str))}


def _hash_model(h: Any, config: ResumeConfig, options: dict[str, Any]) -> None:
    """Attention kernel, run options and both ends of every weight: tells checkpoints of different files
    apart without reading 26 GB."""
    h.update(f"attention:{config.attention};options:{json.dumps(options, sort_keys=True)};".encode())
    if config.weights is not None:
        for name, t in config.weights.state_dict().items():
            flat = t.detach().reshape(-1)
            _hash_tensor(h, name, flat if flat.numel() <= 2 * _SAMPLE else torch.cat([flat[:_SAMPLE], flat[-_SAMPLE:]]))


def fingerprint(config: ResumeConfig, cond: Any, settings: dict[str, Any], initial: torch.Tensor,
                options: dict[str, Any] | None = None) -> str:
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
    _hash_model(h, config, options or {})
    return h.hexdigest()


def content_hash(latents: torch.Tensor, rng: torch.Tensor, meta: dict[str, str],
                 history: torch.Tensor | None = None) -> str:
    """sha256 of a checkpoint's own content: its tensors and every metadata field but this hash."""
    h = hashlib.sha256(json.dumps({k: v for k, v in meta.items() if k != "content_sha256"}, sort_keys=True).encode())
    _hash_tensor(h, "latents", latents)
    _hash_tensor(h, "rng_cpu", rng)
    if history is not None:  # a multistep solver's state (none for Euler: its hash is what it was)
        _hash_tensor(h, "history", history)
    return h.hexdigest()


# ---------------------------------------------------------------- the folder
def checkpoint_bytes(cond: Any, plan: Any, solver: str = "euler") -> int:
    """Bytes of one checkpoint: the float32 ring [B, C, ring, H, W], and the solver's history beside it."""
    b, c, _, h, w = cond.ref_latents.shape
    return 4 * b * c * plan.ring_frames * h * w * (1 + get_solver(solver).history)


def check_folder(config: ResumeConfig | None, need_bytes: int) -> ResumeConfig | None:
    """Before the first step: the config (marked checked), None to render without checkpoints (on_unwritable
    "warn"), or an InputError naming the folder, why, and both fixes."""
    if config is None or config.folder_checked or not config.writer:
        return config
    problem = folder_problem(config.directory, need_bytes)  # a folder, a real write, room for one checkpoint
    if problem is None:
        return replace(config, folder_checked=True)
    if config.on_unwritable == "warn":
        log.warning("Avatar resume: %s; this render goes on WITHOUT checkpoints (a crash loses its progress)", problem)
        return None
    raise InputError(f"resume folder: {problem}, so this long render could not be checkpointed. Choose a writable "
                     "folder with room (Avatar Resume's folder, ResumeConfig.directory), free some space, or let the "
                     "render go on without checkpoints (Avatar Resume's if_unwritable = continue; "
                     "ResumeConfig(on_unwritable='warn')).")


def check_folder_for(config: ResumeConfig | None, cond: Any, sampler_config: Any) -> ResumeConfig | None:
    """check_folder for a run that has not started (a pool's parent, before it sends the request)."""
    from .windows import plan_clip
    if config is None:
        return None
    plan = plan_clip(cond.audio.shape[cond.audio_frame_dim], sampler_config.windows)
    return check_folder(config, checkpoint_bytes(cond, plan, sampler_config.solver))


class _Damaged(Exception):
    """A checkpoint file that must not be trusted (the message says why)."""


class RingCheckpoint:
    """The checkpoint file of one run (see the module docstring)."""

    def __init__(self, config: ResumeConfig, key: str, settings: dict[str, Any], plan: Any,
                 cached: frozenset[int] = frozenset()):
        self.config, self.key, self.settings, self.plan, self.cached = config, key, settings, plan, cached
        self.path = Path(config.directory) / f"hyavatar_resume_{key[:24]}.safetensors"
        self._last = time.monotonic()
        self.resumed_step: int | None = None
        self.writing = config.writer  # turned off by a failed write: the render goes on without checkpoints
        # A multistep solver's per-frame state [B, C * parts, ring, H, W] (sampling/solvers.py): saved beside the
        # latents, restored with them.
        self.history_parts = get_solver(settings.get("solver", "euler")).history
        self.history: torch.Tensor | None = None

    def _load(self, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int, int]:
        """(latents, rng state, next step, shift) of a checkpoint that passes every check, else _Damaged; the
        solver's history goes to ``self.history``."""
        try:
            tensors, meta = read_tensors(self.path, RESUME)  # format, metadata format, dtypes, NaN/inf
        except WeightFileError as e:
            raise _Damaged(str(e).split(": ", 1)[-1].split(". It is removed")[0]) from e
        want = {"latents", "rng_cpu"} | ({"history"} if self.history_parts else set())
        if set(tensors) != want:
            raise _Damaged(f"holds {sorted(tensors)}, not {' + '.join(sorted(want))}")
        saved, rng, history = tensors["latents"], tensors["rng_cpu"], tensors.get("history")
        if meta.get("version") != str(VERSION):
            raise _Damaged(f"written by format version {meta.get('version')!r}, this pack writes {VERSION}")
        if meta.get("fingerprint") != self.key:
            raise _Damaged("its fingerprint is not this run's (a name clash or an edited file)")
        if meta.get("content_sha256") != content_hash(saved, rng, meta, history):
            raise _Damaged("its content does not match its stored hash (damaged or edited after it was written)")
        if saved.shape != latents.shape or saved.dtype != latents.dtype:
            raise _Damaged(f"latents {tuple(saved.shape)} {saved.dtype}, the run has {tuple(latents.shape)} "
                           f"{latents.dtype}")
        if history is not None:
            b, c, *rest = latents.shape
            if history.shape != (b, c * self.history_parts, *rest) or history.dtype != latents.dtype:
                raise _Damaged(f"solver history {tuple(history.shape)} {history.dtype}, the run's solver keeps "
                               f"{(b, c * self.history_parts, *rest)} {latents.dtype}")
        self.history = history
        want_rng = torch.get_rng_state()
        if rng.dtype != want_rng.dtype or rng.shape != want_rng.shape:
            raise _Damaged(f"RNG state {tuple(rng.shape)} {rng.dtype}, not {tuple(want_rng.shape)} {want_rng.dtype}")
        try:
            step, shift = int(meta["next_step"]), int(meta["shift"])
            settings = json.loads(meta["settings"])
        except (KeyError, ValueError) as e:
            raise _Damaged(f"a metadata field is missing or not a number ({e})") from e
        steps = self.settings["steps"]
        if not 1 <= step <= steps - 1 or step in self.cached:
            raise _Damaged(f"next step {step} is not a step this run of {steps} steps checkpoints before")
        if shift != (step * self.plan.offset) % self.plan.window:
            raise _Damaged(f"window shift {shift} is not the shift of step {step} "
                           f"({(step * self.plan.offset) % self.plan.window})")
        if settings != json.loads(json.dumps(self.settings, default=str)):
            raise _Damaged("its settings are not this run's")
        return saved, rng, step, shift

    def restore(self, latents: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        """(latents, first step to run, shift) from the checkpoint, or the fresh start when there is none or
        it fails a check (then it is reported and removed)."""
        if not self.path.exists():
            return latents, 0, 0
        try:
            saved, rng, step, shift = self._load(latents)
        except _Damaged as e:
            self.history = None
            log.warning("Avatar resume: %s cannot be trusted (%s); it is removed and the render starts afresh",
                        self.path, e)
            self._remove()
            return latents, 0, 0
        torch.set_rng_state(rng)  # the global stream continues as in the uninterrupted run
        self.resumed_step = step
        self.history = None if self.history is None else self.history.to(latents.device)
        log.info("Avatar resume: continuing from step %d of %d (%s)", step + 1, self.settings["steps"], self.path)
        return saved.to(latents.device), step, shift

    def after_step(self, step: int, latents: torch.Tensor, shift: int, *, allowed: bool,
                   history: torch.Tensor | None = None) -> None:
        """Write the state before step ``step + 1`` when the interval has passed (and the step allows it).
        ``history``: a multistep solver's per-frame state (sampling/solvers.py), saved beside the latents."""
        if not self.writing or not allowed or step + 1 >= self.settings["steps"]:
            return
        if time.monotonic() - self._last < self.config.interval_s:
            return
        tmp = self.path.with_name(self.path.name + ".partial")
        try:
            self._write(tmp, step + 1, latents, shift, history)
        except Exception as e:  # noqa: BLE001 (disk full, folder gone: the render matters more than the file)
            self.writing = False
            log.warning("Avatar resume: writing %s failed (%s: %s); the render goes on WITHOUT checkpoints",
                        self.path, type(e).__name__, e)
            tmp.unlink(missing_ok=True)
        self._last = time.monotonic()

    def _write(self, tmp: Path, next_step: int, latents: torch.Tensor, shift: int,
               history: torch.Tensor | None = None) -> None:
        saved, rng = latents.detach().contiguous().cpu(), torch.get_rng_state()
        kept = None if history is None else history.detach().contiguous().cpu()
        meta = {"format": FORMAT, "version": str(VERSION), "fingerprint": self.key, "next_step": str(next_step),
                "shift": str(shift), "settings": json.dumps(self.settings, default=str)}
        meta["content_sha256"] = content_hash(saved, rng, meta, kept)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        save_file({"latents": saved, "rng_cpu": rng} | ({} if kept is None else {"history": kept}), str(tmp),
                  metadata=meta)
        os.replace(tmp, self.path)  # atomic: a kill mid-write keeps the previous checkpoint

    def _remove(self) -> None:
        if not self.config.writer:  # rank 0 removes; the others only read
            return
        for p in (self.path, self.path.with_name(self.path.name + ".partial")):
            try:
                p.unlink(missing_ok=True)
            except OSError as e:
                log.warning("Avatar resume: could not remove %s (%s)", p, e)

    def finish(self) -> None:
        """The run completed: its checkpoint is no longer needed."""
        self._remove()


def open_checkpoint(config: ResumeConfig | None, cond: Any, sampler_config: Any, plan: Any,
                    initial: torch.Tensor, denoise: Any = None,
                    cached: frozenset[int] = frozenset()) -> RingCheckpoint | None:
    """The run's checkpoint, or None when resuming is off or cannot be bitwise (opt-in step cache). Checks the
    folder before the first step and keys on the weights behind `denoise` (refused when none can be found)."""
    if config is None:
        return None
    if sampler_config.step_cache is not None:
        log.warning("Avatar resume: off for this run, the step cache's history is not checkpointed (set "
                    "step_cache 0 to make long renders resumable)")
        return None
    config = check_folder(model_identity(config, denoise), checkpoint_bytes(cond, plan, sampler_config.solver))
    if config is None:
        return None
    settings = run_settings(sampler_config, plan)
    key = fingerprint(config, cond, settings, initial, _options_of(denoise))
    return RingCheckpoint(config, key, settings, plan, cached)
