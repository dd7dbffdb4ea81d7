"""Multi-GPU sampling over torch.distributed: CFG, window and Ulysses sequence parallelism (combinable)."""

from .group import MODES, ParallelConfig, ParallelGroups, build_groups, check_devices
from .parallel import CFGParallel, CollectiveCancel, WindowParallel, check_step_cache, rank_options, sample_on_rank
from .pool import PooledRunner, WorkerPool, start_pool
from .ulysses import SequenceParallel, check_degree, frame_shards

__all__ = ["MODES", "CFGParallel", "CollectiveCancel", "ParallelConfig", "ParallelGroups", "PooledRunner",
           "SequenceParallel", "WindowParallel", "WorkerPool", "build_groups", "check_degree", "check_devices",
           "check_step_cache", "frame_shards", "rank_options", "sample_on_rank", "start_pool"]
