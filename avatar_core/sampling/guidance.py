"""The official dynamic classifier-free guidance schedule, with every constant a parameter.

The CFG batch is always ``[uncond, cond]``. Before ``switch_step`` the uncond half gets the negative
text and zero audio and both halves see the face mask scaled by ``early_mask_scale``; the scale decays
linearly from ``cfg`` towards ``early_floor``. From ``switch_step`` on, the uncond half gets the POSITIVE
text too (guidance is then on audio alone), the face mask is scaled by ``late_mask_scale`` and the scale
decays from ``late_start`` towards ``late_end``. Defaults are the official values.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..specs.concepts import CFG, GUIDANCE_SCALE, MASK_SCALE, SWITCH_STEP
from ..specs.fields import declared


@declared(cfg=CFG, switch_step=SWITCH_STEP, early_floor=GUIDANCE_SCALE, late_start=GUIDANCE_SCALE,
          late_end=GUIDANCE_SCALE, early_mask_scale=MASK_SCALE, late_mask_scale=MASK_SCALE, prefix="guidance.")
@dataclass(frozen=True)
class GuidanceConfig:
    """Constants of the official CFG schedule (defaults = official HunyuanVideo-Avatar values)."""

    cfg: float = 7.5  # --cfg-scale: start of the early (text + audio) scale
    switch_step: int = 10  # first step of the audio-only phase
    early_floor: float = 2.0  # the early scale decays towards this value
    late_start: float = 6.5  # the late (audio-only) scale decays from this ...
    late_end: float = 3.5  # ... towards this
    early_mask_scale: float = 0.6  # face mask factor before the switch
    late_mask_scale: float = 1.0  # face mask factor from the switch on


@dataclass(frozen=True)
class StepGuidance:
    """What the CFG batch of one step looks like."""

    scale: float  # noise = uncond + scale * (cond - uncond)
    negative_text: bool  # uncond half uses the negative text (else the positive text)
    mask_scale: float  # factor applied to the face masks in both halves


def step_guidance(step: int, steps: int, config: GuidanceConfig = GuidanceConfig()) -> StepGuidance:
    """Guidance of ``step`` (0-based) in a run of ``steps`` steps.

    The scale is evaluated with the reference's exact Python-float expression
    ``(1 - i / N) * (hi - lo) + lo`` so that it matches it to the last bit.
    """
    if not 0 <= step < steps:
        raise ValueError(f"step {step} outside [0, {steps})")
    decay = 1 - step / steps
    if step < config.switch_step:
        scale = decay * (config.cfg - config.early_floor) + config.early_floor
        return StepGuidance(scale=scale, negative_text=True, mask_scale=config.early_mask_scale)
    scale = decay * (config.late_start - config.late_end) + config.late_end
    return StepGuidance(scale=scale, negative_text=False, mask_scale=config.late_mask_scale)


def combine(noise_pred: torch.Tensor, scale: float) -> torch.Tensor:
    """CFG combination of a ``[uncond, cond]`` batch: ``u + scale * (c - u)``  ([2B, ...] -> [B, ...])."""
    uncond, cond = noise_pred.chunk(2)
    return uncond + scale * (cond - uncond)

