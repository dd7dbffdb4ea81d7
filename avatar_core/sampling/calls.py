"""One model call's inputs as a typed object: the CFG batch ``[uncond, cond]`` and its split, in one place.

The sampler builds a ``ModelCall`` per window; ``half`` is the one place that cuts the CFG batch (used by
``split_cfg`` and by CFG parallelism); ``kwargs`` is what the model's forward takes (docs/ARCHITECTURE.md,
"Model call contract").
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

import torch

# Inputs that are one entry per CFG-batch row (the rest is shared by the whole call).
_BATCHED = ("ref_latents", "text_states", "text_mask", "text_pooled", "motion_exp", "motion_pose", "fps",
            "audio", "face_mask", "emotion", "cached_tokens")


@dataclass(frozen=True)
class ModelCall:
    ref_latents: torch.Tensor            # [2B, C, W, H, W]
    text_states: torch.Tensor            # [2B, L, Dt]   (uncond rows first)
    text_mask: torch.Tensor              # [2B, L]
    text_pooled: torch.Tensor            # [2B, D2]
    motion_exp: torch.Tensor             # [2B, 4]
    motion_pose: torch.Tensor            # [2B, 4]
    fps: torch.Tensor                    # [2B]
    audio: torch.Tensor | None = None    # [2B, (N,) 4W-3, 10, 5, 384] (uncond rows: zeros)
    face_mask: torch.Tensor | None = None  # [2B, N, Tm, H, W]
    emotion: torch.Tensor | None = None  # [2B, 16, Te, He, We]
    freqs: tuple[torch.Tensor, torch.Tensor] | None = None
    cached_tokens: torch.Tensor | None = None  # [2B, Lref + Limg + Lt, D] deep-cache input
    return_cache: bool = False
    step_cache: Any = None               # the sampler's StepCache (or a view of it), None: off

    @classmethod
    def from_kwargs(cls, kwargs: dict[str, Any]) -> ModelCall:
        return cls(**kwargs)

    def half(self, index: int, cache_is_half: bool = False) -> ModelCall:
        """CFG half ``index`` (0 = uncond, 1 = cond). cache_is_half: ``cached_tokens`` already hold only this
        half (a CFG-parallel rank's own deep cache)."""
        b = self.text_states.shape[0] // 2
        part = slice(index * b, (index + 1) * b)
        cut = {k: getattr(self, k)[part] for k in _BATCHED
               if getattr(self, k) is not None and not (k == "cached_tokens" and cache_is_half)}
        return replace(self, **cut)

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the forward (``step_cache`` only when on, so simple denoisers need not take it)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        if out["step_cache"] is None:
            del out["step_cache"]
        return out
