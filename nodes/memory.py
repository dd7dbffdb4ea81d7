"""GPU memory advice for the sampler node: a clear error that names the fix, early where it can be.

Pure functions (no ComfyUI imports) so that they are tested without ComfyUI. Numbers measured on an H100 with the
13B model in bf16 (24.2 GiB of weights): offload=none peaks at 26.9 GiB at 512x384 and 30.6 GiB at 896x704, so the
video being made needs at least ~3 GiB beyond the weights; offload=low_memory peaks at 8.3 GiB at 896x704.
The advice depends on what the model was loaded with: it never proposes the setting already in use.
"""

from __future__ import annotations

GIB = 2**30
MIN_WORK_BYTES = 3 * GIB  # the smallest activation + latent memory seen beside the weights (512x384, one window)
LOADER = "'Load HunyuanVideo-Avatar Model'"
FP8 = "weight_dtype to fp8_e4m3fn (half the weight memory)"


def fix(offload: str = "none", weight_format: str = "bf16") -> str:
    """What to change, for a model loaded with `offload` and `weight_format`."""
    fp8 = [] if weight_format.startswith("fp8") or weight_format == "fast" else [FP8]
    if offload == "none":
        steps = ["offload to low_memory (about 8 GiB at 704x704) or block_swap", *fp8]
    elif offload == "block_swap":
        steps = ["a larger swap_blocks (up to 59), or offload to low_memory (about 8 GiB at 704x704)", *fp8]
    elif offload == "low_memory":  # already the smallest plan: only the weights' format and the frame size are left
        steps = fp8
    else:
        raise ValueError(f"unknown offload mode {offload!r}")
    where = f"In {LOADER} set " + ", or ".join(steps) + "; or" if steps else "Lower image_size, or"
    tail = " lower image_size." if steps else " free the GPU of other programs."
    return where + tail


FIX = fix()


def does_not_fit(weight_bytes: int, total_bytes: int, weight_format: str = "bf16") -> str | None:
    """The error text when the whole model cannot sit on a GPU of `total_bytes` with room to work, else None."""
    if weight_bytes + MIN_WORK_BYTES <= total_bytes:
        return None
    return (f"Avatar Sampler: with offload=none the model's weights need {weight_bytes / GIB:.1f} GiB on the GPU, "
            f"plus at least {MIN_WORK_BYTES / GIB:.0f} GiB to make the video, but the GPU has "
            f"{total_bytes / GIB:.1f} GiB in all. {fix('none', weight_format)}")


def out_of_memory(height: int, width: int, frames: int, offload: str, weight_format: str = "bf16") -> str:
    """The error text for a CUDA out-of-memory while sampling."""
    return (f"Avatar Sampler: out of GPU memory making {width}x{height}, {frames} frames per window "
            f"(offload={offload}). {fix(offload, weight_format)} Other models left on the GPU by earlier nodes "
            "are unloaded now.")
