"""GPU benchmark of LoRA training on the 13B Avatar transformer (random weights): peak memory, seconds per step.

    python bench/train_13b.py                                   # 13B, 704x704, one 129-frame window, 3 steps
    python bench/train_13b.py --preset 24gb                     # fp8 base + block swap + checkpointing, GPU capped
    python bench/train_13b.py --preset unconstrained            # bf16 base, everything on the GPU, same clip
    python bench/train_13b.py --config tiny --size 64 --video-frames 9 --device cpu   # the CPU check

Real training setup: LoRA rank 32 on every linear of every block (musubi-tuner's default HunyuanVideo network),
AdamW, gradient checkpointing per block, one clip per step. --memory-gib G caps this process's CUDA caching
allocator at G GiB (torch.cuda.set_per_process_memory_fraction) from step 1 on: the model is built in bf16 on
the GPU first (fast random init), then stored in fp8 and its swapped blocks moved to pinned CPU memory, then
the cap applies. The cap covers PyTorch's tensors, not the CUDA context (~0.5 GB), so --memory-gib 23 stands
for a 24 GB card. The first step is reported apart (cuDNN / allocator warm-up). Not a test: it prints what it
measured (and --out JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

# As the training CLI does (avatar_core/train/__main__.py ALLOCATOR): the 24gb preset ran out of memory without it.
os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
import torch  # noqa: E402

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
    placed = {}

    def before_steps(_model) -> None:  # fp8 and block swap are in place: what stays on the GPU, then the cap
        if cuda:
            torch.cuda.synchronize(device)
            placed["resident_gib"] = torch.cuda.memory_allocated(device) / GIB
            if args.memory_gib:
                total = torch.cuda.get_device_properties(device).total_memory
                cap_device = device if device.index is not None else torch.device("cuda", torch.cuda.current_device())
                torch.cuda.set_per_process_memory_fraction(min(args.memory_gib * GIB / total, 1.0), cap_device)
            torch.cuda.reset_peak_memory_stats(device)
    with tempfile.TemporaryDirectory() as tmp:
        data = write_synthetic_folder(Path(tmp) / "clips", cfg, clips=1, frames=T, h=h, w=w, text_len=args.text_len)
        result = train(TrainConfig(data=str(data), output=str(Path(tmp) / "run"), random_model=args.config,
                                   steps=args.steps, lora_rank=args.rank, lora_alpha=float(args.rank), dtype="bf16",
                                   device=str(device), attention=args.attention, save_every=10**9,
                                   fp8_base=args.fp8_base, block_swap=args.block_swap,
                                   gradient_checkpointing=not args.no_checkpointing, progress=True), model=model,
                       before_steps=before_steps)
    timed = result.seconds[1:] or result.seconds
    tokens = T * (h // 2) * (w // 2) + (h // 2) * (w // 2) + args.text_len
    return {
        "device": torch.cuda.get_device_name(device) if cuda else "cpu", "torch": torch.__version__,
        "config": args.config, "size": f"{args.size}x{args.size}", "video_frames": args.video_frames,
        "latent_frames": T, "tokens": tokens, "lora_rank": args.rank, "fp8_base": args.fp8_base,
        "block_swap": args.block_swap, "memory_cap_gib": args.memory_gib or None,
        "gradient_checkpointing": not args.no_checkpointing, "build_s": round(build_s, 2),
        "weights_gib": round(weights_gib, 2), "resident_gib": round(placed.get("resident_gib", 0.0), 2),
        "peak_alloc_gib": round(torch.cuda.max_memory_allocated(device) / GIB, 2) if cuda else None,
        "peak_reserved_gib": round(torch.cuda.max_memory_reserved(device) / GIB, 2) if cuda else None,
        "first_step_s": round(result.seconds[0], 2), "s_per_step": round(sum(timed) / len(timed), 2),
        "step_s": [round(s, 2) for s in result.seconds], "losses": [round(v, 4) for v in result.losses],
    }


# The two settings of the README's table: the same clip (704x704, 33 frames = 1.3 s at 25 fps, 20k tokens),
# three steps each (the first is warm-up), on a card capped at 24 GB and on the whole GPU.
PRESETS = {
    "24gb": dict(fp8_base=True, block_swap=40, memory_gib=23.0, video_frames=33, size=704, steps=3),
    "unconstrained": dict(fp8_base=False, block_swap=0, memory_gib=0.0, video_frames=33, size=704, steps=3),
}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), help="a README setting (its values replace the defaults)")
    p.add_argument("--fp8-base", action="store_true", help="store the frozen block linears in fp8 e4m3")
    p.add_argument("--block-swap", type=int, default=0, help="blocks streamed from pinned CPU memory")
    p.add_argument("--memory-gib", type=float, default=0.0, help="cap this process's GPU memory (0: no cap)")
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
    if args.preset:
        p.set_defaults(**PRESETS[args.preset])
        args = p.parse_args(argv)      # the preset's values, then any option given explicitly wins
    row = run(args)
    print(json.dumps(row, indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(row, indent=1))
    return row


if __name__ == "__main__":
    main()
