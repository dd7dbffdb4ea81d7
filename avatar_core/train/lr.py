"""Learning-rate schedule: linear warmup, then constant or cosine decay to zero at the last step.

A pure function of the optimizer step, written into the optimizer before each step: a resumed run continues
on the same curve with no scheduler state to save.

    factor(s) = (s + 1) / W                                  for s < W (warmup: W steps up to the full lr)
    factor(s) = 1                                            constant, s >= W
    factor(s) = (1 + cos(pi * (s - W) / (S - W))) / 2        cosine, s >= W (S: the run's steps)
"""

from __future__ import annotations

import math

from ..specs.concepts import LR_SCHEDULE

SCHEDULES = LR_SCHEDULE.values()


def lr_factor(step: int, steps: int, warmup: int = 0, schedule: str = "constant") -> float:
    """Multiplier of the base learning rate for optimizer step `step` (0-based) of a run of `steps`."""
    if schedule not in SCHEDULES:
        raise ValueError(f"lr_schedule must be one of {list(SCHEDULES)}, got {schedule!r}")
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(steps - warmup, 1)))
