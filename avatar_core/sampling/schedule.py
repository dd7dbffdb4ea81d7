"""Flow-matching shift schedule, the Euler step of the official sampler and the solver registry.

The official scheduler (FlowMatchDiscreteScheduler, shift 5, euler) builds its sigmas in float32 from
``linspace(1, 0, N + 1)`` with the SD3 time shift and feeds ``1000 * sigma`` to the model. Every
operation here is done in the same dtype and order so that the values match the reference bitwise.
"""

from __future__ import annotations

from collections.abc import Callable
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


Solver = Callable[[torch.Tensor, torch.Tensor, FlowSchedule, int], torch.Tensor]


def euler(latents: torch.Tensor, velocity: torch.Tensor, schedule: FlowSchedule, step: int) -> torch.Tensor:
    """The official solver: one Euler step from sigma[step] to sigma[step + 1]."""
    return euler_step(latents, velocity, schedule.dt(step))


# How one window moves from sigma[step] to sigma[step + 1], given the guided velocity. A new solver (or a
# distilled model's few-step rule) is one function here; the sampler fuses the windows' results as usual.
SOLVERS: dict[str, Solver] = {"euler": euler}


def solver_step(name: str, latents: torch.Tensor, velocity: torch.Tensor, schedule: FlowSchedule,
                step: int) -> torch.Tensor:
    if name not in SOLVERS:
        raise ValueError(f"unknown solver {name!r}; choose one of {sorted(SOLVERS)}")
    return SOLVERS[name](latents, velocity, schedule, step)
