"""ComfyUI's HunyuanVideo VAE decode of one clip's latents: untiled vs tile sizes vs cuDNN / memory-format settings.

    python bench/bench_vae.py --comfyui /path/to/ComfyUI --base BASE --out OUT.jsonl [--size 704x704]
        [--latent-frames 33] [--budget-s 150] [--configs template untiled t512 t128 bench channels_last]

Loads models/vae/hunyuan_video_vae_bf16.safetensors with ComfyUI's VAELoader (as the workflows do; random weights
of the real shapes from bench/workflow_assets.py: the decode costs the same for any values) and decodes a
[1, 16, T, H/8, W/8] latent (33 latent frames = 129 video frames, one window) through ComfyUI's own nodes:
VAEDecodeTiled with the templates' settings and others, VAEDecode (untiled: ComfyUI falls back to its own tiling
when memory runs out, reported as `fell_back_to_tiled`). One JSON row per config: seconds (CUDA-synchronised),
torch's peak allocated / reserved GiB, the device's peak used GiB. Configs run in the order given until
--budget-s would be exceeded (judged by the longest decode so far); a config that changes a global setting (cuDNN autotuning, channels-last weights) runs after
the plain ones and reuses the fastest plain decode setting, twice (its first run includes the autotuning).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "scripts"), str(REPO / "bench")]
import comfy_inprocess  # noqa: E402
from workflow_assets import VAE  # noqa: E402
from workflow_probe import GIB, DevicePeak, sync  # noqa: E402

TEMPLATE = (256, 64, 64, 8)  # the example workflows' VAEDecodeTiled: tile, overlap, temporal size, temporal overlap
TILED = {"template": TEMPLATE, "t512": (512, 64, 64, 8), "t384": (384, 64, 64, 8), "t128": (256, 64, 128, 8),
         "t512_t128": (512, 64, 128, 8)}
GLOBAL = ("bench", "channels_last")  # settings applied on top of the fastest plain config


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--comfyui", type=Path, default=os.environ.get("COMFYUI_PATH"))
    ap.add_argument("--base", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--size", default="704x704", help="video HxW in pixels")
    ap.add_argument("--latent-frames", type=int, default=33)
    ap.add_argument("--budget-s", type=float, default=150.0, help="start no config after this many seconds")
    ap.add_argument("--configs", nargs="+", default=["template", "untiled", "t512", "t128", "bench", "channels_last"],
                    choices=list(TILED) + ["untiled", *GLOBAL])
    ap.add_argument("--cpu", action="store_true")
    return ap.parse_args(argv)


def decode(vae, latent, config: str) -> tuple[object, int]:
    """One decode through ComfyUI's node for `config`; returns (images, tiled passes ComfyUI made by itself)."""
    import nodes
    fallback = {"n": 0}
    original = vae.decode_tiled_3d

    def counted(*a, **k):
        fallback["n"] += 1
        return original(*a, **k)
    vae.decode_tiled_3d = counted
    try:
        if config == "untiled":
            return nodes.VAEDecode().decode(vae, {"samples": latent})[0], fallback["n"]
        tile, overlap, t_size, t_overlap = TILED[config]
        return nodes.VAEDecodeTiled().decode(vae, {"samples": latent}, tile, overlap, t_size, t_overlap)[0], 0
    finally:
        vae.decode_tiled_3d = original


def measure(vae, latent, config: str, label: str) -> dict:
    import torch
    gpu = torch.cuda.is_available()
    sync()
    if gpu:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    peak = DevicePeak()
    peak.start()
    t = time.perf_counter()
    row = {"config": label, "settings": config}
    try:
        with torch.inference_mode():  # as ComfyUI's executor runs every node
            images, fell_back = decode(vae, latent, config)
        sync()
        row.update(s=round(time.perf_counter() - t, 2), frames=int(images.shape[0]), shape=list(images.shape),
                   fell_back_to_tiled=bool(fell_back), finite=bool(torch.isfinite(images).all()))
        del images
    except Exception as e:  # an out-of-memory is a result too
        row.update(error=f"{type(e).__name__}: {str(e)[:300]}", s=round(time.perf_counter() - t, 2))
    used = peak.stop()
    if gpu:
        row.update(peak_alloc_gib=round(torch.cuda.max_memory_allocated() / GIB, 2),
                   peak_reserved_gib=round(torch.cuda.max_memory_reserved() / GIB, 2))
    if used is not None:
        row["device_used_peak_gib"] = round(used / GIB, 2)
    return row


def main(argv=None) -> int:
    args = parse_args(argv)
    comfy_inprocess.prepare_base(args.base)
    state = comfy_inprocess.start_comfy(args.comfyui.resolve(), args.base.resolve(), dynamic=True, cpu=args.cpu)
    import torch

    import nodes
    vae = nodes.VAELoader().load_vae(VAE)[0]
    h, w = (int(v) for v in args.size.split("x"))
    latent = torch.randn(1, 16, args.latent_frames, h // 8, w // 8, generator=torch.Generator().manual_seed(0))
    head = {"setup": True, "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
            "latent": list(latent.shape), "vae_dtype": str(vae.vae_dtype), **state}
    with args.out.open("a") as out:
        emit(out, head)
        run_configs(vae, latent, args.configs, args.budget_s, lambda row: emit(out, row))
    return 0


def run_configs(vae, latent, configs: list[str], budget_s: float, report) -> list[dict]:
    """Decode `latent` with each config (plain ones first) until `budget_s` is spent; `report(row)` each row."""
    start, rows, applied = time.perf_counter(), [], []
    plain = [c for c in configs if c not in GLOBAL]
    for config in plain + [c for c in configs if c in GLOBAL]:
        longest = max((r["s"] for r in rows), default=0.0)  # a config is not started unless it can end in time
        if time.perf_counter() - start + longest * (2 if config in GLOBAL else 1) > budget_s:
            report({"config": config, "skipped": f"budget of {budget_s:.0f} s"})
            continue
        if config not in GLOBAL:
            rows.append(measure(vae, latent, config, config))
            report(rows[-1])
            continue
        best = min((r for r in rows if "error" not in r and r["config"] in plain), key=lambda r: r["s"], default=None)
        if best is None:
            continue
        apply_global(vae, config)
        applied.append(config)  # settings stay on: a later row has every earlier one too
        for attempt in ("first", "second"):
            rows.append(measure(vae, latent, best["settings"], f"{'+'.join(applied)} ({attempt}) on {best['config']}"))
            report(rows[-1])
    return rows


def apply_global(vae, config: str) -> None:
    """cuDNN autotuning (ComfyUI's --fast autotune) or channels-last 3-D weights; they stay on for what follows."""
    import torch
    if config == "bench":
        torch.backends.cudnn.benchmark = True
    elif config == "channels_last":  # the 3-D conv weights only (a 4-D tensor has no channels_last_3d layout)
        for p in vae.first_stage_model.parameters():
            if p.dim() == 5:
                p.data = p.data.contiguous(memory_format=torch.channels_last_3d)


def emit(out, row: dict) -> None:
    out.write(json.dumps(row) + "\n")
    out.flush()
    print(json.dumps(row), flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
