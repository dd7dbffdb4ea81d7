"""Every loader preset at 13B against the OFFICIAL forward: `parity13b.py` with one row per weight format.

    python bench/presets13b.py --tools ../shared/tools/official13b --hva HVA --pack . --out presets13b.json \
        [--configs bf16 fp16 fp32 fp8_e4m3fn fp8_e4m3fn_fast fast] [--warmup 0] [--floor-attn '']

`parity13b.py` (shared tools; never copied here) builds the official 13B transformer with random weights, runs the
official forward on one 704x704 window (bf16 autocast, CFG batch 2), writes its weights as an official checkpoint
and loads that file per config through `avatar_core.runner.LoadSpec` (the path a user's file takes), reporting
relative L2 against the official output, time and peak memory of each, one model on the GPU at a time. Its own
config table holds three rows; this script adds one per weight format of `avatar_core.model.formats` with the
kernel the loader's attention "auto" picks for it (FlashAttention-3 for 16-bit compute, SDPA for fp32; `fast`
always runs its fp8 attention), then runs it. Every other argument is parity13b's.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from avatar_core.model.attention import AUTO, KERNELS  # noqa: E402
from avatar_core.model.formats import WEIGHT_FORMATS  # noqa: E402
from avatar_core.runner import FAST_ATTENTION  # noqa: E402


def auto_kernel(weight_format: str) -> str:
    """The kernel a loader left at attention "auto" runs for this format on a CUDA GPU (model/attention.py AUTO)."""
    if weight_format == "fast":
        return FAST_ATTENTION
    if WEIGHT_FORMATS[weight_format].compute.itemsize > 2:   # FlashAttention-3 takes 16-bit inputs only
        return AUTO[-1]
    return AUTO[0]


def preset_configs() -> dict[str, tuple[str, str]]:
    """parity13b CONFIGS rows: name -> (weight format, attention kernel), one per loader weight format."""
    rows = {name: (name, auto_kernel(name)) for name in WEIGHT_FORMATS}
    assert all(kernel in KERNELS for _, kernel in rows.values()), rows
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("--tools", required=True, help="folder of parity13b.py and bench_official.py")
    opt, rest = ap.parse_known_args()
    sys.path.insert(0, os.path.abspath(opt.tools))
    import parity13b  # noqa: E402  (the shared tool; its main() parses the rest of argv)

    parity13b.CONFIGS.update(preset_configs())
    sys.argv = [sys.argv[0], *rest]
    if "--pack" not in rest:
        sys.argv += ["--pack", str(REPO)]
    return parity13b.main()


if __name__ == "__main__":
    sys.exit(main())
