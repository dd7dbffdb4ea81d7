"""`python -m avatar_core.manifest`: the 13B preset's state dict (built on meta) as TSV.

Format of shared/reference/avatar_transformer_13b_keys.tsv: `key<TAB>[d0, d1, ...]<TAB>dtype`, in the
official bf16 build's dtypes (the official fp32 modules stay fp32).
"""

from __future__ import annotations

import argparse
import sys

import torch

from .config import AvatarConfig
from .model import AvatarTransformer


def manifest_lines(cfg: AvatarConfig, dtype: torch.dtype = torch.bfloat16) -> list[str]:
    with torch.device("meta"):
        model = AvatarTransformer(cfg)
    lines = ["key\tshape\tdtype"]
    for key, t in model.state_dict().items():
        keep32 = any(key.startswith(p + ".") for p in model.FP32_MODULES)
        dt = str(torch.float32 if keep32 else dtype).removeprefix("torch.")
        lines.append(f"{key}\t{list(t.shape)}\t{dt}")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", choices=["13b", "tiny"], default="13b")
    args = ap.parse_args(argv)
    cfg = AvatarConfig.avatar_13b() if args.preset == "13b" else AvatarConfig.tiny()
    sys.stdout.write("\n".join(manifest_lines(cfg)) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
