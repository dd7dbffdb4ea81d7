"""GPU run of the whole sampler (13B, random weights): a 50-step, 2-window clip at 704x704, default schedule.

    python bench/bench_sampler.py --size 704x704 --audio-frames 130 --steps 50 --log run.jsonl
    python bench/bench_sampler.py --audio-frames 129 --preset fast --save-latents fast.safetensors  # one window

Prints one JSON line per step (wall time, cached or not) and a summary (total, per full / cached step, peak
memory). The numbers time the sampler end to end (every window, CFG batch, deep cache, Euler, fusion).
--preset: bf16 weights with the attention kernel the loader's `auto` picks (FA3 on Hopper when installed, else
cuDNN SDPA), bf16 with SDPA, or `fast` (fp8 weights + fp8 GEMMs + FA3 fp8 attention). --save-latents writes the
final latents; --reference compares them with an earlier run's (relative Frobenius error in the summary).
--runner times the same run through `runner.LocalRunner.sample` (RandomSpec, the same weights: the path the
nodes and every pool worker take); --solver picks the solver (euler, official, by default).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from avatar_core.config import AvatarConfig  # noqa: E402
from avatar_core.loading import build_random_transformer  # noqa: E402
from avatar_core.model.fp8 import enable_fp8_  # noqa: E402
from avatar_core.model.options import RunOptions  # noqa: E402
from avatar_core.runner import RandomSpec  # noqa: E402
from avatar_core.sampling import AvatarConditioning, SamplerCallbacks, SamplerConfig, TextConditioning, sample_avatar  # noqa: E402
from avatar_core.sampling.stepcache import StepCacheConfig  # noqa: E402
from bench.common import TEXT_LEN, TEXT_VALID, gib, parse_shape  # noqa: E402


def conditioning(cfg: AvatarConfig, height: int, width: int, audio_frames: int, device: str,
                 characters: int = 1) -> AvatarConditioning:
    g = torch.Generator(device).manual_seed(0)
    r = lambda *s, dt=torch.bfloat16: torch.randn(*s, generator=g, device=device, dtype=dt)  # noqa: E731
    H, W = height // 8, width // 8

    def text(valid: int) -> TextConditioning:
        mask = torch.zeros(1, TEXT_LEN, dtype=torch.int64, device=device)
        mask[:, :valid] = 1
        return TextConditioning(r(1, TEXT_LEN, cfg.text_dim), mask, r(1, cfg.text_pooled_dim))
    face = torch.zeros(1, characters, 1, H, W, device=device)
    for k in range(characters):  # side by side, the middle half of the height
        face[:, k, :, H // 4: 3 * H // 4, k * W // characters + W // (4 * characters): (k + 1) * W // characters - W // (4 * characters)] = 1
    audio = r(1, audio_frames, 10, 5, 384, dt=torch.float32) if characters == 1 else \
        r(1, characters, audio_frames, 10, 5, 384, dt=torch.float32)
    return AvatarConditioning(
        ref_latents=r(1, 16, 33, H, W), text=text(TEXT_VALID[1]), negative_text=text(TEXT_VALID[0]),
        audio=audio, face_mask=face,
        motion_exp=torch.full((1, 4), 30, device=device), motion_pose=torch.full((1, 4), 25, device=device),
        fps=torch.full((1,), 25.0, device=device))


PRESETS = {"bf16": (False, "auto"), "bf16_sdpa": (False, "sdpa"), "fast": (True, "fa3_fp8")}  # fp8 GEMMs, kernel


def _compare(latents: torch.Tensor, args: argparse.Namespace) -> dict:
    """Save the final latents and/or their relative error against a reference run's."""
    from safetensors.torch import load_file, save_file
    out = {}
    if args.save_latents:
        save_file({"latents": latents.float().cpu().contiguous()}, str(args.save_latents))
    if args.reference:
        ref = load_file(str(args.reference))["latents"]
        out["rel_err_vs_reference"] = ((latents.float().cpu() - ref).norm() / ref.norm()).item()
        out["reference"] = args.reference.name
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="704x704")
    ap.add_argument("--audio-frames", type=int, default=130, help="130 video frames -> a 65-frame ring, 2 windows")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--characters", type=int, default=1, help="speakers: one audio track and face mask each")
    ap.add_argument("--preset", choices=sorted(PRESETS), default="bf16")
    ap.add_argument("--step-cache", type=float, help="opt-in step cache threshold (default: off)")
    ap.add_argument("--save-latents", type=Path, help="write the final latents (safetensors)")
    ap.add_argument("--reference", type=Path, help="latents of an earlier run to compare with")
    ap.add_argument("--runner", action="store_true", help="sample through runner.LocalRunner.sample")
    ap.add_argument("--solver", default="euler", help="a key of avatar_core.sampling.solvers.SOLVERS")
    ap.add_argument("--log", type=Path)
    ap.add_argument("--tiny", action="store_true", help="tiny model on the CPU: checks the script, times nothing real")
    args = ap.parse_args()
    shape = parse_shape(args.size)
    cfg, device = (AvatarConfig.tiny(), "cpu") if args.tiny else (AvatarConfig.avatar_13b(), "cuda")
    fp8, attention = PRESETS[args.preset]
    runner = None
    if args.runner:  # the same weights (seed 0, bf16, fp8 quantised from them) and run options, as a LocalRunner
        runner = RandomSpec(config=cfg, weight_format="fast" if fp8 else "bf16", attention=attention).build(device)
        model = runner.diffusion_model
    else:
        model = build_random_transformer(cfg, dtype=torch.bfloat16, device=device, seed=0)
        if fp8:
            enable_fp8_(model, fast=True)
    denoise = partial(model, options=RunOptions(attention=attention))
    cond = conditioning(cfg, shape.height, shape.width, args.audio_frames, device, args.characters)
    if args.tiny:  # make the CUDA calls below harmless
        torch.cuda.synchronize = lambda: None
        torch.cuda.max_memory_allocated = torch.cuda.max_memory_reserved = lambda: 0
        torch.cuda.reset_peak_memory_stats = lambda: None
        torch.cuda.get_device_name = lambda: "cpu (tiny)"
    log = args.log.open("a") if args.log else None
    marks = {"t": time.perf_counter(), "cached": set()}

    def on_progress(p) -> None:
        if p.cached:
            marks["cached"].add(p.step)

    def on_preview(step: int, _latents) -> None:
        torch.cuda.synchronize()
        now = time.perf_counter()
        row = dict(step=step, seconds=now - marks["t"], cached=step in marks["cached"],
                   peak_gib=gib(torch.cuda.max_memory_allocated()))
        marks["t"] = now
        print(json.dumps(row), flush=True)
        if log:
            log.write(json.dumps(row) + "\n")
            log.flush()

    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    step_cache = None if args.step_cache is None else StepCacheConfig(args.step_cache)
    config = SamplerConfig(steps=args.steps, seed=0, step_cache=step_cache, solver=args.solver)
    callbacks = SamplerCallbacks(on_progress=on_progress, on_preview=on_preview)
    result = runner.sample(cond, config, callbacks=callbacks) if runner is not None else \
        sample_avatar(denoise, cond, config, callbacks=callbacks)
    torch.cuda.synchronize()
    total = time.perf_counter() - t0
    summary = dict(device=torch.cuda.get_device_name(), size=str(shape), audio_frames=args.audio_frames,
                   characters=args.characters, preset=args.preset, attention=attention, step_cache=args.step_cache,
                   runner=args.runner, solver=args.solver,
                   step_cache_calls=None if result.step_cache is None else result.step_cache.calls,
                   step_cache_skipped=None if result.step_cache is None else result.step_cache.skipped,
                   windows_per_step=result.plan.windows_per_step, ring=result.plan.ring_frames, steps=args.steps,
                   cached_steps=sorted(marks["cached"]), total_s=total, peak_alloc_gib=gib(torch.cuda.max_memory_allocated()),
                   peak_reserved_gib=gib(torch.cuda.max_memory_reserved()), finite=bool(torch.isfinite(result.latents).all()),
                   date=time.strftime("%Y-%m-%d"), **_compare(result.latents, args))
    print("SUMMARY " + json.dumps(summary), flush=True)
    if log:
        log.write("SUMMARY " + json.dumps(summary) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
