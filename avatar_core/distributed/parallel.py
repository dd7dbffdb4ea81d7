"""CFG and window parallelism around the unchanged sampler, plus Ulysses set-up, on one rank.

* CFG: :class:`CFGParallel` wraps the denoiser. Rank ``c`` of the CFG group runs only half ``c`` of the
  ``[uncond, cond]`` batch and the halves are all-gathered after every call (one small latent-sized
  exchange), so every rank combines the guidance itself. Its deep cache holds only its own half.
* Window: :class:`WindowParallel` is the sampler's ``StepParallel`` hook. Window ``k`` of a step runs on
  window rank ``k mod degree``; after the step one all-reduce sums the fusion accumulators (sum, count),
  which is exact (every frame gets at most two windows, and adding a zero is exact).
  Deep cache: after a full step that precedes a cached step, every window's cache tokens are broadcast
  by the rank that computed it and stored by every rank IN WINDOW ORDER, so every rank holds exactly the
  per-frame cache a single process would (the shifted windows of the cached steps straddle windows of
  other ranks, so keeping frames where they were computed would not do). Cost: one transfer of the cache
  (about 0.8 GB per window at 704x704, bf16, CFG batch 2) before each run of cached steps.
* Sequence: :func:`rank_options` gives this rank's run options their Ulysses group.
* Step cache: the CFG halves of a call measure its change together (one all-reduce of two numbers), so
  the skip decisions are those of one process; window ranks keep each window's own history as one
  process does. Sequence parallelism splits frames but repeats the text tokens on every rank, so there
  the measure would differ: that combination is refused (``check_step_cache``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import Any

import torch
import torch.distributed as dist

from ..errors import InputError
from ..model.options import RunOptions
from ..sampling.calls import ModelCall
from ..sampling.deepcache import FrameTokenCache
from ..sampling.resume import ResumeConfig
from ..sampling.sampler import AvatarConditioning, SamplerCallbacks, SamplerConfig, SampleResult, sample_avatar
from ..sampling.stepcache import ReducedStepCache, StepCacheStats
from .group import ParallelConfig, ParallelGroups
from .ulysses import SequenceParallel

_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)


class CFGParallel:
    """Denoiser wrapper: this rank runs CFG half ``half`` (0 = uncond, 1 = cond); outputs are all-gathered."""

    def __init__(self, denoise: Callable[..., Any], group: Any, half: int):
        self.denoise, self.group, self.half = denoise, group, half

    def __call__(self, x: torch.Tensor, t: torch.Tensor, **kwargs: Any) -> Any:
        b = x.shape[0] // 2
        part = slice(self.half * b, (self.half + 1) * b)
        # cached_tokens come from this rank's own cache: already one half.
        mine = ModelCall.from_kwargs(kwargs).half(self.half, cache_is_half=True)
        if mine.step_cache is not None:  # decide on the whole call, as one process would
            mine = replace(mine, step_cache=ReducedStepCache(mine.step_cache, self._sum))
        res = self.denoise(x[part], t[part], **mine.kwargs())
        out, tokens = res if kwargs.get("return_cache") else (res, None)
        parts = [torch.empty_like(out) for _ in range(2)]
        dist.all_gather(parts, out.contiguous(), group=self.group)
        full = torch.cat(parts)                                                # (2B, C, T, H, W) [uncond, cond]
        return (full, tokens) if kwargs.get("return_cache") else full

    def _sum(self, t: torch.Tensor) -> torch.Tensor:
        dist.all_reduce(t, group=self.group)
        return t


class _SharedTokenCache(FrameTokenCache):
    """A FrameTokenCache that remembers this step's own windows so that :meth:`share` can broadcast them."""

    def __init__(self, owner: WindowParallel, ring_frames: int, storage_device: torch.device | None):
        super().__init__(ring_frames, storage_device)
        self.owner = owner
        self.pending: dict[int, tuple[list[int], torch.Tensor, int]] = {}

    def store(self, frames: list[int], tokens: torch.Tensor, tokens_per_frame: int) -> None:
        super().store(frames, tokens, tokens_per_frame)
        self.pending[self.owner.current] = (list(frames), tokens, tokens_per_frame)

    def share(self, windows: int, enabled: bool) -> None:
        """Every window of the step, in order, from its rank into every rank's cache (if ``enabled``)."""
        pending, self.pending = self.pending, {}
        if not enabled:
            return
        dev = self.owner.device
        for k in range(windows):
            src = dist.get_global_rank(self.owner.group, k % self.owner.degree)
            header = torch.zeros(6, dtype=torch.int64, device=dev)
            if k in pending:
                frames, tokens, per_frame = pending[k]
                header = torch.tensor([per_frame, *tokens.shape, len(frames), _DTYPES.index(tokens.dtype)],
                                      dtype=torch.int64, device=dev)
            dist.broadcast(header, src, group=self.owner.group)
            per_frame, b, n, d, w, dt = header.tolist()
            if k in pending:
                idx = torch.tensor(frames, dtype=torch.int64, device=dev)
                tokens = tokens.contiguous()
            else:
                idx = torch.empty(w, dtype=torch.int64, device=dev)
                tokens = torch.empty((b, n, d), dtype=_DTYPES[dt], device=dev)
            dist.broadcast(idx, src, group=self.owner.group)
            dist.broadcast(tokens, src, group=self.owner.group)
            FrameTokenCache.store(self, idx.tolist(), tokens, per_frame)


class WindowParallel:
    """The sampler's StepParallel hook for one rank of a window group."""

    def __init__(self, group: Any, device: torch.device):
        self.group, self.device = group, torch.device(device)
        self.degree, self.rank = dist.get_world_size(group), dist.get_rank(group)
        self.current = -1
        self.windows = 0
        self.cache: _SharedTokenCache | None = None

    def owns(self, window: int, windows: int) -> bool:
        self.windows = windows
        if window % self.degree != self.rank:
            return False
        self.current = window
        return True

    def new_cache(self, ring_frames: int, storage_device: torch.device | None) -> FrameTokenCache:
        self.cache = _SharedTokenCache(self, ring_frames, storage_device)
        return self.cache

    def exchange(self, total: torch.Tensor, count: torch.Tensor, share_cache: bool) -> None:
        """One all-reduce of [sums, counts]; then the deep cache, if the next step reads it."""
        buf = torch.cat([total.flatten(), count.to(total.dtype)]).to(self.device)
        dist.all_reduce(buf, group=self.group)
        total.copy_(buf[:total.numel()].view_as(total))
        count.copy_(buf[total.numel():])
        if self.cache is not None:
            self.cache.share(self.windows, share_cache)


class CollectiveCancel:
    """should_cancel that every rank answers the same (any rank's request cancels all, at the same window)."""

    def __init__(self, local: Callable[[], bool] | None, device: torch.device):
        self.local, self.device = local, torch.device(device)

    def __call__(self) -> bool:
        flag = torch.tensor([1 if self.local is not None and self.local() else 0], device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())


def check_step_cache(config: ParallelConfig, sampler: SamplerConfig) -> None:
    """Clear early error for the one combination that cannot give the single-process result."""
    if sampler.step_cache is not None and config.sequence > 1:
        raise InputError(f"step_cache > 0 cannot be combined with sequence parallelism ({config.describe()}): "
                         "set the sampler's step_cache to 0, or the loader's parallel to cfg, window or cfg+window")


def rank_options(options: RunOptions, groups: ParallelGroups, heads: int) -> RunOptions:
    """This rank's run options: its Ulysses group when the sequence degree is > 1."""
    if groups.config.sequence == 1:
        return options
    return replace(options, sequence=SequenceParallel(groups.sequence_group, heads))


def sample_on_rank(model: Callable[..., Any], groups: ParallelGroups, cond: AvatarConditioning,
                   config: SamplerConfig, device: torch.device, *, options: RunOptions | None = None,
                   noise: torch.Tensor | None = None, callbacks: SamplerCallbacks | None = None,
                   resume: ResumeConfig | None = None) -> SampleResult:
    """Run the sampler on this rank with its share of the work; every rank returns the same latents.

    ``model``: an AvatarTransformer; it is called with ``options`` plus this rank's Ulysses group.
    With CFG parallelism each call is one half, so ``split_cfg`` is turned off (it would split again).
    ``resume``: every rank holds the whole ring after each step, so every rank restores the same checkpoint;
    only ``resume.writer`` (rank 0, set by the pool) writes it. The ranks meet in a collective before the
    first window (the cancel check, the CFG exchange), so no rank reads a file rank 0 has begun to replace.
    """
    check_step_cache(groups.config, config)
    denoise: Callable[..., Any] = partial(model, options=rank_options(options or RunOptions(), groups,
                                                                      model.cfg.num_heads))
    if groups.config.cfg > 1:
        denoise = CFGParallel(denoise, groups.cfg_group, groups.coords[0])
        config = replace(config, split_cfg=False)
    parallel = WindowParallel(groups.window_group, device) if groups.config.window > 1 else None
    result = sample_avatar(denoise, cond, config, noise=noise, callbacks=callbacks, parallel=parallel, resume=resume)
    if result.step_cache is not None and parallel is not None:  # each window rank counted its own windows
        result = replace(result, step_cache=_whole_run_stats(result.step_cache, groups.window_group))
    return result


def _whole_run_stats(stats: StepCacheStats, group: Any) -> StepCacheStats:
    parts: list[Any] = [None] * dist.get_world_size(group)
    dist.all_gather_object(parts, stats, group=group)
    return StepCacheStats(sum(p.calls for p in parts), sum(p.skipped for p in parts),
                          sum(p.histories for p in parts), tuple(c for p in parts for c in p.changes))
