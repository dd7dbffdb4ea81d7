"""`python -m avatar_core.convert SRC DST`: official .pt (bf16, or fp8 + _map.pt) -> our .safetensors.

--dtype bf16 writes bf16 weights (fp32 where the official build keeps fp32); --dtype fp8 stores the
double/single-block linears as e4m3 with a per-tensor `.scale_weight` (official fp8 files keep theirs).
Safetensors loads without unpickling anything and memory-maps, so it is what the node pack prefers.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from .config import AvatarConfig
from .errors import InputError
from .loading import load_transformer, save_transformer
from .specs.fields import Choice, checked

DTYPE = Choice(("bf16", "fp8"), fix="Use 'bf16' (official precision) or 'fp8' (block linears in e4m3).")


@checked(dtype=DTYPE)
def convert(src: str | Path, dst: str | Path, dtype: str = "bf16", config: AvatarConfig | None = None,
            overwrite: bool = False) -> Path:
    dst = Path(dst)
    if dst.suffix != ".safetensors":
        raise InputError(f"output {dst}: must end in .safetensors; give a name like {dst.stem}.safetensors")
    if dst.exists() and not overwrite:  # never replace a user's file by accident
        raise FileExistsError(f"output {dst} already exists; choose another name or pass --overwrite")
    fp8 = "quantize" if dtype == "fp8" else "dequant"
    model = load_transformer(src, config=config, dtype=torch.bfloat16, device="cpu", fp8=fp8)
    save_transformer(model, dst)
    return dst


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", type=Path, help="mp_rank_00_model_states.pt (or the _fp8.pt with its _map.pt beside it)")
    ap.add_argument("dst", type=Path, help="output .safetensors")
    ap.add_argument("--dtype", choices=DTYPE.values(), default="bf16")
    ap.add_argument("--overwrite", action="store_true", help="replace DST if it exists")
    args = ap.parse_args(argv)
    try:
        out = convert(args.src, args.dst, args.dtype, overwrite=args.overwrite)
    except InputError as e:  # the message, no traceback; exit status 2 as argparse does
        ap.error(str(e))
    print(f"wrote {out} ({out.stat().st_size / 2**30:.2f} GiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
