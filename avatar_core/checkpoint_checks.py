"""Transformer-specific checks and fixes applied to a transformer state dict right after it is read (see loading.py).

Non-finite weights (weight_files.first_non_finite, with SMALL / SAMPLE there, run by weight_files.read_tensors
for the TRANSFORMER kind): a full ``isfinite`` pass over 13B CPU weights costs ~100 s on a 2-core CPU (measured:
0.5 s per 64M bf16 elements; tests/test_bad_inputs.py prints the number for the tiny file), which is too much
to add to every load. So every tensor is checked where that is cheap: whole, when it is small (norms, biases,
modulation, all under 1M elements) or already on a GPU; otherwise its first and last ``SAMPLE`` elements,
which catches the usual damage (a zero-filled / garbage tail, a NaN-filled tensor). A single NaN inside a big
CPU matrix is caught at first use instead: the first window then gives NaN latents and the sampler stops at
step 1 with a message that names the checkpoint as a possible cause (validation.check_step_latents).
"""

from __future__ import annotations

from pathlib import Path

import torch

from .weight_files import first_non_finite  # noqa: F401  (its home before weight_files)

COMFY_PREFIX = "model.diffusion_model."  # ComfyUI's key prefix in repackaged diffusion-model files


def strip_comfy_prefix(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Repackaged files store the transformer under ``model.diffusion_model.``: drop the prefix."""
    if not any(k.startswith(COMFY_PREFIX) for k in sd):
        return sd
    return {k[len(COMFY_PREFIX) :] if k.startswith(COMFY_PREFIX) else k: v for k, v in sd.items()}


def fp8_scales_missing(path: Path) -> str:
    """Message for an fp8 .safetensors without per-layer scales (a plain fp8 cast, not our format)."""
    return (f"{path.name} holds fp8 weights but no per-layer scales ('<layer>.scale_weight' tensors), so its "
            "weights cannot be restored correctly. Load the bf16 checkpoint (mp_rank_00_model_states.pt) with "
            "weight_dtype fp8_e4m3fn (quantised on load, with scales), or the official fp8 file "
            "mp_rank_00_model_states_fp8.pt together with its mp_rank_00_model_states_fp8_map.pt.")
