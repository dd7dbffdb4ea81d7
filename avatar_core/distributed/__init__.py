"""Multi-GPU sampling over torch.distributed: CFG, window and Ulysses sequence parallelism (combinable)."""

from .group import MODES, ParallelConfig, ParallelGroups, build_groups, check_devices
from .parallel import CFGParallel, CollectiveCancel, WindowParallel, attach_sequence_parallel, sample_on_rank
from .pool import CheckpointSpec, PooledAvatarModel, RandomSpec, WorkerPool
from .ulysses import SequenceParallel, check_degree, frame_shards

__all__ = ["MODES", "CFGParallel", "CheckpointSpec", "CollectiveCancel", "ParallelConfig", "ParallelGroups", "PooledAvatarModel",
           "RandomSpec", "SequenceParallel", "WindowParallel", "WorkerPool", "attach_sequence_parallel",
           "build_groups", "check_degree", "check_devices", "frame_shards", "sample_on_rank"]
