"""Training adapters on the frozen Avatar base: LoRA and the Audio Emotion Module (python -m avatar_core.train)."""

from .data import ClipFolder, ClipSample, read_clip, write_clip
from .trainer import TrainConfig, TrainResult, train

__all__ = ["ClipFolder", "ClipSample", "TrainConfig", "TrainResult", "read_clip", "train", "write_clip"]
