"""A pool of worker processes, one per GPU, each holding the model and serving whole sampling runs.

    pool = WorkerPool(LoadSpec(path="model.pt"), ParallelConfig(cfg=2, sequence=2))
    result = pool.sample_avatar(cond, SamplerConfig(steps=50))   # same SampleResult as sample_avatar
    pool.close()

`PooledRunner` is the pool as a `runner.Runner` (what the loader node hands to the graph).

The parent (a ComfyUI session, a script) starts the workers with torch.multiprocessing (spawn); every
worker joins one torch.distributed group (NCCL on GPUs, gloo on CPU), builds its runner from the same
spec as a single process would (a checkpoint is memory-mapped, so the page cache is shared; weight
format, offload, attention and emotion module are the spec's), gives it its place in the pool
(``LocalRunner.rank_groups``) and waits for requests. A request is the arguments of ``Runner.sample``;
every rank serves it with the same ``LocalRunner.sample`` a single process runs (LoRAs, resume keying,
then its share of the run, :func:`parallel.sample_on_rank`) and rank 0 sends the latents back, progress
and previews as they come. Cancelling is collective (all ranks stop at the same
window). Any worker error tears the whole pool down (a rank stuck in a collective cannot be recovered)
and is raised in the parent with the worker's traceback.
"""

from __future__ import annotations

import datetime
import os
import queue
import runpy
import socket
import sys
import time
import traceback
import types
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import fields, is_dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ..errors import InputError
from ..lora import LoraFile, load_lora
from ..model import AvatarTransformer
from ..runner import LocalRunner, Loras, RunChoices, RunnerInfo
from ..sampling.resume import ResumeConfig, check_folder_for
from ..sampling.sampler import AvatarConditioning, SamplerCallbacks, SamplerConfig, SampleResult, SamplingCancelled
from .group import ParallelConfig, build_groups, check_devices
from .parallel import CollectiveCancel, check_step_cache
from .ulysses import check_degree
from .wire import decode, encode


def _move(obj: Any, device: torch.device) -> Any:
    """Tensors inside (nested) dataclasses / tuples -> device."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if is_dataclass(obj) and not isinstance(obj, type):
        return type(obj)(**{f.name: _move(getattr(obj, f.name), device) for f in fields(obj)})
    if isinstance(obj, tuple):
        return tuple(_move(o, device) for o in obj)
    return obj


def worker_main(rank: int, config: Any, spec: Any, device_kind: str, init_method: str, threads: int,
                requests: Any, results: Any, cancel: Any) -> None:
    """Body of one worker process (started through ``_worker_main.py``); config / spec arrive encoded."""
    try:
        config, spec = decode(config), decode(spec)
        if threads:
            torch.set_num_threads(threads)
        device = torch.device(f"cuda:{rank}" if device_kind == "cuda" else "cpu")
        if device.type == "cuda":
            torch.cuda.set_device(device)
        # Long timeout: ranks wait in the first collective for the slowest rank's checkpoint load.
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", init_method=init_method, rank=rank,
                                world_size=config.world, timeout=datetime.timedelta(hours=1))
        runner = spec.build(device)
        runner.rank_groups = build_groups(config)  # LocalRunner.sample now runs this rank's share
        if config.sequence > 1:  # a clear error now (heads vs degree), not at the first request
            check_degree(runner.diffusion_model.cfg.num_heads, config.sequence)
    except Exception:
        results.put(("error", rank, traceback.format_exc()))
        return
    results.put(("ready", rank, encode(runner.info)))
    parent = os.getppid()
    while True:
        try:
            req = requests.get(timeout=1.0)
        except queue.Empty:
            if os.getppid() != parent:  # the parent died: do not linger
                break
            continue
        if req is None:
            break
        if not _serve(rank, runner, device, req, results, cancel):
            break
    dist.destroy_process_group()


def _serve(rank: int, runner: LocalRunner, device: torch.device, req: tuple, results: Any, cancel: Any) -> bool:
    """One sampling request, run by ``runner.sample`` (as in one process). Returns False after an error (the
    pool is then torn down)."""
    cond, config, noise, want_preview, loras, resume = decode(req)
    lead = rank == 0
    callbacks = SamplerCallbacks(
        on_progress=(lambda p: results.put(("progress", rank, encode(p)))) if lead else None,
        on_preview=(lambda s, x: results.put(("preview", rank, (s, x.cpu())))) if lead and want_preview else None,
        should_cancel=CollectiveCancel(cancel.is_set, device))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    try:
        res = runner.sample(_move(cond, device), config, noise=None if noise is None else noise.to(device),
                            callbacks=callbacks, loras=loras, resume=resume)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0
        payload = (res.latents.cpu(), res.ring_latents.cpu(), encode(res.plan), encode(res.step_cache)) if lead else None
        results.put(("done", rank, (payload, peak, time.perf_counter() - t0)))
        return True
    except SamplingCancelled:
        results.put(("cancelled", rank, None))
        return True
    except Exception:
        results.put(("error", rank, traceback.format_exc()))
        return False


_ENTRY = Path(__file__).with_name("_worker_main.py")
_PACK_ROOT = Path(__file__).resolve().parents[2]  # the folder that holds avatar_core/


@contextmanager
def _host_main_hidden() -> Iterator[None]:
    """Spawned children re-run the parent's __main__ script (ComfyUI's main.py) unless it has no file;
    the workers need nothing from it, so it is hidden while they start."""
    main = sys.modules.get("__main__")
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        if main is not None:
            sys.modules["__main__"] = main


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _shutdown(procs: list, requests: list, timeout: float) -> None:
    for q in requests:
        try:
            q.put(None)
        except (ValueError, OSError):
            pass
    deadline = time.monotonic() + timeout
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
    for p in procs:
        if p.is_alive():
            p.terminate()
            p.join(5)


class WorkerPool:
    """``world`` worker processes holding the model; :meth:`sample_avatar` runs one clip on all of them."""

    def __init__(self, spec: Any, config: ParallelConfig, *, device: str = "cuda", threads: int = 0,
                 start_timeout: float = 1800.0):
        check_devices(config.world, device)
        self.config, self.device = config, device
        ctx = mp.get_context("spawn")
        init = f"tcp://127.0.0.1:{_free_port()}"
        self._requests = [ctx.Queue() for _ in range(config.world)]
        self._results = ctx.Queue()
        self._cancel = ctx.Event()
        self._procs = []
        for r in range(config.world):
            args = dict(rank=r, config=encode(config), spec=encode(spec), device_kind=device, init_method=init,
                        threads=threads, requests=self._requests[r], results=self._results, cancel=self._cancel)
            self._procs.append(ctx.Process(target=runpy.run_path, name=f"avatar-worker-{r}", args=(str(_ENTRY),),
                                           kwargs=dict(init_globals=dict(PACK_ROOT=str(_PACK_ROOT), WORKER_ARGS=args),
                                                       run_name="__avatar_worker__")))
        with _host_main_hidden():
            for p in self._procs:
                p.start()
        self._finalizer = weakref.finalize(self, _shutdown, self._procs, self._requests, 30.0)
        self.last_peaks: list[int] = []   # peak allocated bytes per rank, last run (CUDA)
        self.last_seconds: list[float] = []
        ready = self._collect("ready", start_timeout)
        if len(ready) != config.world:
            self.close()
            raise RuntimeError(f"worker pool did not start within {start_timeout:.0f} s")
        self.info: RunnerInfo = replace(decode(ready[0]), gpus=config.world)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs]

    @property
    def alive(self) -> bool:
        return self._finalizer.alive and all(p.is_alive() for p in self._procs)

    def sample_avatar(self, cond: AvatarConditioning, config: SamplerConfig | None = None, *,
                      noise: torch.Tensor | None = None, callbacks: SamplerCallbacks | None = None,
                      loras: tuple[tuple[str, float], ...] = (), resume: ResumeConfig | None = None) -> SampleResult:
        """Same contract as :func:`avatar_core.sampling.sample_avatar`; the latents come back on ``cond``'s device.
        ``loras``: (LoRA file path, strength) pairs every worker's runner carries for the run (none: base weights).
        ``resume``: checkpoint the ring (rank 0 writes, every rank restores; see parallel.sample_on_rank)."""
        config = config or SamplerConfig()
        check_step_cache(self.config, config)
        if not self.alive:
            raise RuntimeError("the worker pool is closed (a worker failed or close() was called); load the model again")
        callbacks = callbacks or SamplerCallbacks()
        resume = check_folder_for(resume, cond, config)  # once, before any worker starts (checked: they skip it)
        out_device = cond.ref_latents.device
        req = encode((_move(cond, torch.device("cpu")), config, None if noise is None else noise.cpu(),
                      callbacks.on_preview is not None, tuple(loras),
                      None if resume is None else replace(resume, weights=None)))
        self._cancel.clear()
        for q in self._requests:
            q.put(req)
        done = self._collect("done", None, callbacks)
        if any(v is None for v in done.values()):
            raise SamplingCancelled("sampling cancelled")
        payload = done[0][0]
        self.last_peaks = [done[r][1] for r in sorted(done)]
        self.last_seconds = [done[r][2] for r in sorted(done)]
        latents, ring, plan, stats = payload
        return SampleResult(latents=latents.to(out_device), ring_latents=ring.to(out_device), plan=decode(plan),
                            step_cache=decode(stats))

    def _collect(self, kind: str, timeout: float | None, callbacks: SamplerCallbacks | None = None) -> dict:
        """Wait for a ``kind`` (or 'cancelled') message from every rank, forwarding progress / previews."""
        got: dict[int, Any] = {}
        deadline = None if timeout is None else time.monotonic() + timeout
        while len(got) < self.config.world:
            if deadline is not None and time.monotonic() > deadline:
                return got
            if callbacks is not None and callbacks.should_cancel is not None and callbacks.should_cancel():
                self._cancel.set()  # the workers agree on it at their next window
            try:
                msg, rank, data = self._results.get(timeout=0.2)
            except queue.Empty:
                self._check_alive()
                continue
            if msg == "error":
                self.close()
                raise RuntimeError(f"avatar worker rank {rank} failed; the worker pool was shut down:\n{data}")
            if msg == "progress" and callbacks and callbacks.on_progress:
                callbacks.on_progress(decode(data))
            elif msg == "preview" and callbacks and callbacks.on_preview:
                callbacks.on_preview(*data)
            elif msg in (kind, "cancelled"):
                got[rank] = data if msg == kind else None
        return got

    def _check_alive(self) -> None:
        dead = [(i, p.exitcode) for i, p in enumerate(self._procs) if not p.is_alive()]
        if dead:
            self.close()
            raise RuntimeError(f"avatar worker(s) exited unexpectedly (rank, exit code): {dead}; pool shut down")

    def close(self, timeout: float = 30.0) -> None:
        """Stop every worker (idempotent): a polite stop request, then terminate after ``timeout``."""
        if self._finalizer.alive:
            self._finalizer.detach()
            _shutdown(self._procs, self._requests, timeout)

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class PooledRunner(torch.nn.Module):
    """A worker pool as a runner (``runner.Runner``): the same ``sample()`` and ``info`` as a LocalRunner.

    An nn.Module without weights, so that ComfyUI's ModelPatcher can hold it; dropping the last reference
    shuts the workers down."""

    def __init__(self, pool: WorkerPool):
        super().__init__()
        self.pool = pool
        self.info: RunnerInfo = pool.info

    def load_lora(self, path: str | Path) -> LoraFile:
        """Checked against the layout of the workers' model (their sizes, on the meta device: no weights here);
        every worker reads the file again at the run."""
        if self.info.config is None:
            raise RuntimeError("this pool did not report its model's sizes (RunnerInfo.config); load the model again")
        with torch.device("meta"):
            layout = AvatarTransformer(self.info.config)
        return load_lora(path, layout)

    def sample(self, cond: AvatarConditioning, config: SamplerConfig | None = None, *,
               noise: torch.Tensor | None = None, callbacks: SamplerCallbacks | None = None,
               loras: Loras = (), resume: ResumeConfig | None = None) -> SampleResult:
        """``loras``: (LoRA, strength) pairs every worker's runner carries for the run (none: base weights);
        they reach the workers as file paths.
        ``resume``: checkpoints written by rank 0 and restored by every worker (keyed by the workers' weights)."""
        return self.pool.sample_avatar(cond, config, noise=noise, callbacks=callbacks,
                                       loras=tuple((_lora_path(lora), float(s)) for lora, s in loras), resume=resume)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("this Avatar model runs in worker processes (multi-GPU): sample it with the Avatar "
                           "Sampler / runner.sample(), it cannot be called per window")

    def close(self) -> None:
        self.pool.close()


def _lora_path(lora: LoraFile | str | Path) -> str:
    """What a worker process can receive: the file a LoRA was read from."""
    if not isinstance(lora, LoraFile):
        return str(lora)
    if lora.path is None:
        raise InputError(f"loras: {lora.name} was read from a state dict, which cannot reach the pool's worker "
                         "processes; save it as a .safetensors file and load that (Runner.load_lora)")
    return lora.path


def start_pool(spec: RunChoices, config: ParallelConfig, *, device: str = "cuda", threads: int = 0) -> PooledRunner:
    """A pool of ``config.world`` workers that each build ``spec`` (LoadSpec / RandomSpec), as a runner."""
    return PooledRunner(WorkerPool(spec, config, device=device, threads=threads))
