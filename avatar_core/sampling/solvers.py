"""Solvers: how one window moves from sigma[i] to sigma[i + 1], given the guided velocity. One registry.

The flow-matching path is ``x = (1 - sigma) x0 + sigma * noise``; the model predicts the velocity
``v = noise - x0``, so the data estimate (denoised) of a step is ``x0_hat = x - sigma * v``.

A solver is a record: a step function ``(latents, velocity, schedule, step, history) -> (latents, history)``
and how much history it keeps. A multistep solver's state is kept per latent frame (here the previous step's
denoised estimate, latent-sized: ``history=1``): the sampler keeps it as a ring like the latents, hands each window the rows of
its frames (``history``: None at the first step), averages what the windows return over the frames they
share exactly as it averages their latents (``windows.fuse``; the update is affine in the estimate with the
same coefficients for every window, so the fused latents are the step taken from the fused estimate), and
checkpoints it with the ring (resume.py). The state therefore follows the ring frames whatever the window
grid's shift, and window-parallel ranks exchange it with the latents.

* ``euler`` (official): ``x + v * dt`` in float32, the reference's arithmetic bit for bit.
* ``dpmpp_2m`` (not official): DPM-Solver++(2M), Lu et al. 2022 (arXiv:2211.01095, Algorithm 2), in the data
  prediction form for this path: ``alpha = 1 - sigma``, ``lambda = log(alpha / sigma)``, ``h = lambda_t -
  lambda_s``, ``r = h_prev / h``, ``D = x0_hat + (x0_hat - x0_hat_prev) / (2 r)``,
  ``x_t = (sigma_t / sigma_s) x_s + alpha_t (1 - e^-h) D`` with ``alpha_t (1 - e^-h) = alpha_t - alpha_s
  sigma_t / sigma_s``. First order (which is Euler here) where no finite-lambda history exists (the first two
  steps: lambda(sigma=1) = -inf) and on the last step to sigma = 0 (lambda = +inf): it lands on x0_hat.
  Second order: its error falls as 1/N^2 where Euler's falls as 1/N (tests/test_solvers.py measures both).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..errors import InputError
from .schedule import FlowSchedule, euler_step

# (latents [B, C, W, H, W], guided velocity, schedule, step, this window's history or None) -> (new latents, history)
SolverStep = Callable[[torch.Tensor, torch.Tensor, FlowSchedule, int, torch.Tensor | None],
                      tuple[torch.Tensor, torch.Tensor | None]]


@dataclass(frozen=True)
class Solver:
    name: str
    step: SolverStep
    history: int = 0          # latent-sized tensors kept between steps (0: none; None in, None out)
    official: bool = False    # the official sampler's rule
    note: str = ""


SOLVERS: dict[str, Solver] = {}


def register(solver: Solver) -> Solver:
    """Add a solver; it is a choice of SamplerConfig.solver and of the sampler node from then on."""
    SOLVERS[solver.name] = solver
    return solver


def get_solver(name: str) -> Solver:
    if name not in SOLVERS:
        raise InputError(f"solver: unknown solver {name!r}; choose one of {sorted(SOLVERS)} (euler is the official "
                         "one)")
    return SOLVERS[name]


def _euler(latents: torch.Tensor, velocity: torch.Tensor, schedule: FlowSchedule, step: int,
           history: torch.Tensor | None) -> tuple[torch.Tensor, None]:
    return euler_step(latents, velocity, schedule.dt(step)), None


def _lam(sigma: float) -> float:
    """Half log-SNR of the flow path, log((1 - sigma) / sigma): -inf at sigma = 1, +inf at 0."""
    if sigma >= 1.0:
        return -math.inf
    return math.inf if sigma <= 0.0 else math.log1p(-sigma) - math.log(sigma)


def _dpmpp_2m(latents: torch.Tensor, velocity: torch.Tensor, schedule: FlowSchedule, step: int,
              history: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    s, t = float(schedule.sigmas[step]), float(schedule.sigmas[step + 1])
    x = latents.to(torch.float32)
    denoised = x - s * velocity.float()                               # x0_hat = x - sigma * v
    if t <= 0.0:
        return denoised, denoised                                     # lambda(0) = inf: the step lands on x0_hat
    d = denoised
    if history is not None and step > 0:
        h, h_prev = _lam(t) - _lam(s), _lam(s) - _lam(float(schedule.sigmas[step - 1]))
        if math.isfinite(h_prev):                                     # else first order (the step after sigma = 1)
            d = denoised + (denoised - history.to(torch.float32)) * (h / (2.0 * h_prev))   # 1 / (2 r)
    return (t / s) * x + ((1.0 - t) - (1.0 - s) * t / s) * d, denoised


register(Solver("euler", _euler, official=True,
                note="Euler, the official sampler's rule (first order; the model was tuned with it at 50 steps)"))
register(Solver("dpmpp_2m", _dpmpp_2m, history=1,
                note="DPM-Solver++(2M), second order multistep (not official; compare with euler before relying "
                     "on it)"))
