"""GPU benchmark of LoRA training on the 13B Avatar transformer (random weights): peak memory, seconds per step.

    python bench/train_13b.py                                   # 13B, 704x704, one 129-frame window, 3 steps
    python bench/train_13b.py --config tiny --size 64 --video-frames 9 --device cpu   # the CPU check

Real training setup: bf16 base, LoRA rank 32 on every linear of every block (musubi-tuner's default
HunyuanVideo network), AdamW, gradient checkpointing per block, one clip per step. The first step is
reported apart (cuDNN / allocator warm-up). Not a test: it prints what it measured (and --out JSON).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from avatar_core.config import AvatarConfig  # noqa: E402
from avatar_core.loading import build_random_transformer  # noqa: E402
from avatar_core.train import TrainConfig, train  # noqa: E402
from avatar_core.train.synthetic import write_synthetic_folder  # noqa: E402

GIB = 1024**3


def run(args: argparse.Namespace) -> dict:
    cfg = {"13b": AvatarConfig.avatar_13b, "tiny": AvatarConfig.tiny}[args.config]()
    device = torch.device(args.device)
    T = (args.video_frames - 1) // 4 + 1                        # latent frames of the clip (causal VAE)
    h = w = args.size // 8                                      # latent size
    t0 = time.perf_counter()
    model = build_random_transformer(cfg, dtype=torch.bfloat16, device=str(device), seed=0)
    build_s = time.perf_counter() - t0
    cuda = device.type == "cuda"
    weights_gib = torch.cuda.memory_allocated(device) / GIB if cuda else 0.0
    print(f"built {args.config} in {build_s:.1f} s, weights {weights_gib:.1f} GiB; training {args.steps} steps "
          f"of {T} latent frames at {args.size}x{args.size}", flush=True)
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    with tempfile.TemporaryDirectory() as tmp:
        data = write_synthetic_folder(Path(tmp) / "clips", cfg, clips=1, frames=T, h=h, w=w, text_len=args.text_len)
        result = train(TrainConfig(data=str(data), output=str(Path(tmp) / "run"), random_model=args.config,
                                   steps=args.steps, lora_rank=args.rank, lora_alpha=float(args.rank), dtype="bf16",
                                   device=str(device), attention=args.attention, save_every=10**9,
                                   gradient_checkpointing=not args.no_checkpointing, progress=True), model=model)
    timed = result.seconds[1:] or result.seconds
    tokens = T * (h // 2) * (w // 2) + (h // 2) * (w // 2) + args.text_len
    return {
        "device": torch.cuda.get_device_name(device) if cuda else "cpu", "torch": torch.__version__,
        "config": args.config, "size": f"{args.size}x{args.size}", "video_frames": args.video_frames,
        "latent_frames": T, "tokens": tokens, "lora_rank": args.rank,
        "gradient_checkpointing": not args.no_checkpointing, "build_s": round(build_s, 2),
        "weights_gib": round(weights_gib, 2),
        "peak_alloc_gib": round(torch.cuda.max_memory_allocated(device) / GIB, 2) if cuda else None,
        "peak_reserved_gib": round(torch.cuda.max_memory_reserved(device) / GIB, 2) if cuda else None,
        "first_step_s": round(result.seconds[0], 2), "s_per_step": round(sum(timed) / len(timed), 2),
        "step_s": [round(s, 2) for s in result.seconds], "losses": [round(v, 4) for v in result.losses],
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", choices=["13b", "tiny"], default="13b")
    p.add_argument("--size", type=int, default=704, help="square video size in pixels")
    p.add_argument("--video-frames", type=int, default=129, help="4k+1 video frames (129 = the official window)")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--rank", type=int, default=32)
    p.add_argument("--text-len", type=int, default=831, help="text tokens (the official layout has 831)")
    p.add_argument("--attention", default="sdpa")
    p.add_argument("--no-checkpointing", action="store_true")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", type=Path, help="also write the result as JSON here")
    args = p.parse_args(argv)
    row = run(args)
    print(json.dumps(row, indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(row, indent=1))
    return row


if __name__ == "__main__":
    main()
