"""Flow-matching shift schedule and the Euler step of the official sampler (solvers.py: the solver registry).

The official scheduler (FlowMatchDiscreteScheduler, shift 5, euler) builds its sigmas in float32 from
``linspace(1, 0, N + 1)`` with the SD3 time shift and feeds ``1000 * sigma`` to the model. Every
operation here is done in the same dtype and order so that the values match the reference bitwise.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..specs.concepts import FLOW_SHIFT, STEPS
from ..specs.fields import checked

OFFICIAL_SHIFT = 5.0
NUM_TRAIN_TIMESTEPS = 1000


@dataclass(frozen=True)
class FlowSchedule:
    """Sigmas (``[N + 1]``, from 1 down to 0) and model timesteps (``[N]`` = 1000 * sigma)."""

    sigmas: torch.Tensor
    timesteps: torch.Tensor

    @property
    def steps(self) -> int:
        return int(self.timesteps.shape[0])

    def dt(self, step: int) -> torch.Tensor:
        """0-d float32 ``sigma[i + 1] - sigma[i]`` (negative): kept a tensor so the Euler product is
        computed exactly as the reference does (tensor * 0-d tensor, not a Python double)."""
        return self.sigmas[step + 1] - self.sigmas[step]


def shift_sigmas(sigmas: torch.Tensor, shift: float) -> torch.Tensor:
    """SD3 time shift ``shift * s / (1 + (shift - 1) * s)``; shift 1 leaves the sigmas unchanged."""
    return (shift * sigmas) / (1 + (shift - 1) * sigmas)


@checked(steps=STEPS, shift=FLOW_SHIFT)
def flow_schedule(steps: int, shift: float = OFFICIAL_SHIFT) -> FlowSchedule:
    """The official shift schedule for ``steps`` denoising steps (float32, CPU)."""
    sigmas = shift_sigmas(torch.linspace(1, 0, steps + 1), shift)  # [N+1] float32
    timesteps = (sigmas[:-1] * NUM_TRAIN_TIMESTEPS).to(torch.float32)  # [N]
    return FlowSchedule(sigmas=sigmas, timesteps=timesteps)


def euler_step(latents: torch.Tensor, velocity: torch.Tensor, dt: torch.Tensor) -> torch.Tensor:
    """One flow-matching Euler step ``x + v * dt`` computed in float32 (the reference upcasts both)."""
    return latents.to(torch.float32) + velocity.float() * dt
