"""Saved text conditioning (Avatar Save / Load Conditioning): file layout, version check, never overwriting.

Version 2 holds the official layout: per prompt `states` [1, 831, D] (pad states included), `mask` [1, 831],
`pooled` [1, D2]. Version-1 files (before the official text path) held unpadded states without the pad
positions' LLM states, which cannot be rebuilt from the file: they are refused with the fix.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save

from .. import output_files
from ..errors import InputError
from ..weight_files import TEXT_CONDITIONING, read_tensors, refuse
from .text import check_official_conditioning

FORMAT, VERSION = "hyavatar-conditioning", "2"
Prompt = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # states [1, 831, D], mask [1, 831], pooled [1, D2]


def pack(positive: Prompt, negative: Prompt) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    tensors = {}
    for side, (states, mask, pooled) in (("pos", positive), ("neg", negative)):
        check_official_conditioning(states, mask, "positive" if side == "pos" else "negative")
        tensors |= {f"{side}.states": states, f"{side}.mask": mask.long(), f"{side}.pooled": pooled}
    tensors = {k: v.detach().cpu().clone() for k, v in tensors.items()}  # own, contiguous memory per key
    return tensors, {"format": FORMAT, "version": VERSION, "text_layout": "official-831"}


def next_free_path(folder: str | Path, name: str) -> Path:
    """`<folder>/<name>_NNNNN.safetensors` one above the highest number there (ComfyUI's savers' naming)."""
    return output_files.next_free_path(folder, name, ".safetensors")


def write_new(folder: str | Path, name: str, positive: Prompt, negative: Prompt) -> Path:
    """Write a new numbered file; never replaces an existing one (exclusive create, next number on a race)."""
    tensors, metadata = pack(positive, negative)
    return output_files.write_new(folder, name, save(tensors, metadata=metadata),
                                  pick=lambda f, n: next_free_path(f, n))


def read(path: str | Path) -> tuple[Prompt, Prompt]:
    """(positive, negative) from a file written by `write_new`; older or foreign files raise with the fix."""
    path = Path(path)
    tensors, meta = read_tensors(path, TEXT_CONDITIONING)  # format by content, metadata, dtypes, NaN/inf
    name = path.name
    if meta.get("version", "1").isdigit() and int(meta.get("version", "1")) > int(VERSION):
        raise refuse(TEXT_CONDITIONING, path, f"was saved by a newer version of this pack (format version "
                                              f"{meta['version']})", "Update this pack, or re-encode the prompt.")
    if meta.get("version") != VERSION:
        raise InputError(
            f"{name} was saved by an older version of this pack (format version {meta.get('version', '1')}): "
            "its text states lack the official pad states and cannot be upgraded exactly. Re-encode the prompt "
            "with Avatar Text Encode and save it again with Avatar Save Conditioning.")
    out = []
    for side in ("pos", "neg"):
        keys = [f"{side}.states", f"{side}.mask", f"{side}.pooled"]
        if not set(keys) <= set(tensors):
            raise refuse(TEXT_CONDITIONING, path, f"is incomplete (missing {sorted(set(keys) - set(tensors))})",
                         "Save it again with Avatar Save Conditioning.")
        states, mask, pooled = (tensors[k] for k in keys)
        check_official_conditioning(states, mask, f"{name} ({side})")
        out.append((states, mask, pooled))
    return out[0], out[1]
