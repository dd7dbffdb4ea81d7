"""The pack's nodes on a GPU under ComfyUI's own memory management, started the way ComfyUI's main.py starts.

    python scripts/comfy_gpu_check.py --comfyui /path/to/ComfyUI [--model tiny|13b] [--offload none low_memory block_swap]

ComfyUI on an NVIDIA GPU enables DynamicVRAM (comfy-aimdo) by default: `CoreModelPatcher` is then
`ModelPatcherDynamic`, which our loader gets. This script does what main.py does before the first node runs
(aimdo init before torch touches CUDA, the device registration, the patcher swap), then runs, per offload
mode: model loader -> whisper loader + audio encode -> saved conditioning -> sampler -> VAE decode, with
random weights (tiny, or the full 13B shapes). After each mode it unloads everything as ComfyUI does and
reports the GPU memory still allocated; before that it cancels a run midway (ComfyUI's interrupt flag) and
runs again, which must give the same latents. One JSON line per mode and a summary; exit 1 if anything failed.
Weights are random: the video is noise; what is checked is that it runs, where memory goes, and that every
offload mode gives the same latents.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
from comfy_inprocess import start_comfy  # noqa: E402  (ComfyUI's startup, shared with bench/workflow_gpu.py)


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--comfyui", type=Path, default=os.environ.get("COMFYUI_PATH"), help="ComfyUI folder (or COMFYUI_PATH)")
    ap.add_argument("--model", choices=["tiny", "13b"], default="tiny")
    ap.add_argument("--offload", nargs="+", default=["none", "low_memory", "block_swap"])
    ap.add_argument("--dtype", default="bf16", help="loader weight_dtype (bf16, fp16, fp32, fp8_e4m3fn, ...)")
    ap.add_argument("--swap-blocks", type=int, default=20)
    ap.add_argument("--image-size", type=int, default=128, help="short side of the video")
    ap.add_argument("--seconds", type=float, default=1.2, help="speech length (1.2 s -> one 33-frame window)")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--no-dynamic-vram", action="store_true", help="ComfyUI's --disable-dynamic-vram")
    ap.add_argument("--no-interrupt", action="store_true", help="skip the cancel-then-rerun check")
    ap.add_argument("--vram-cap-gib", type=float, help="cap this process's GPU memory (a smaller GPU)")
    ap.add_argument("--expect-oom", nargs="*", default=[], help="offload modes that must fail with our out-of-memory "
                                                                 "advice under --vram-cap-gib (and leave nothing behind)")
    ap.add_argument("--cpu", action="store_true", help="ComfyUI's --cpu (checks this script without a GPU)")
    ap.add_argument("--base", type=Path, help="ComfyUI base folder for the random model files (default: a temp dir)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)
    if args.comfyui is None or not (args.comfyui / "comfy" / "model_patcher.py").is_file():
        ap.error("give --comfyui (or set COMFYUI_PATH) to a ComfyUI checkout")
    return args


def write_13b(path: Path, loading, config) -> None:
    import torch

    model = loading.build_random_transformer(config, dtype=torch.bfloat16, device="cuda", seed=0)
    loading.save_transformer(model, path)
    del model
    torch.cuda.empty_cache()


def main(argv=None) -> int:
    args = parse_args(argv)
    base = args.base or Path(tempfile.mkdtemp(prefix="hyavatar_gpu_check_"))
    for sub in ("custom_nodes", "models", "input", "output", "user"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    state = start_comfy(args.comfyui.resolve(), base, dynamic=not args.no_dynamic_vram, cpu=args.cpu)

    import comfy.model_management as mm
    import comfy.sd
    import numpy as np
    import smoke_assets
    import torch
    from PIL import Image
    from safetensors.torch import load_file
    imp = smoke_assets._pack()
    paths = imp("hyavatar_pack.nodes.paths")
    paths.register_folders()
    loaders, audio_n, text_n, sampler_n = (imp(f"hyavatar_pack.nodes.{m}") for m in ("loaders", "audio", "text", "sampler"))

    t = time.perf_counter()
    files = smoke_assets.write_models(base / "models")
    if args.model == "13b":
        files["dit"] = "avatar_13b_random.safetensors"
        big = imp("hyavatar_pack.avatar_core.config").AvatarConfig.avatar_13b()
        if not (base / "models" / "diffusion_models" / files["dit"]).is_file():
            write_13b(base / "models" / "diffusion_models" / files["dit"], imp("hyavatar_pack.avatar_core.loading"), big)
        files["conditioning"] = "random_13b_text.safetensors"  # random text states of the 13B widths
        smoke_assets.write_text_conditioning(base / "models" / "avatar_conditioning" / files["conditioning"], big)
    inputs = smoke_assets.write_inputs(base / "input", seconds=args.seconds)
    print(json.dumps({"setup_s": round(time.perf_counter() - t, 1), "base": str(base), **state,
                      "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"}), flush=True)

    image = torch.from_numpy(np.asarray(Image.open(base / "input" / inputs["image"]).convert("RGB"), dtype=np.float32) / 255)[None]
    samples, rate = smoke_assets.read_input_audio(base / "input" / inputs["audio"])
    audio = {"waveform": samples.reshape(1, 1, -1), "sample_rate": rate}
    vae = comfy.sd.VAE(sd=load_file(str(base / "models" / "vae" / files["vae"])))
    whisper = loaders.AvatarWhisperLoader.execute(files["whisper"]).result[0]
    feats = audio_n.AvatarAudioEncode.execute(whisper, {"audio_0": audio}, "0", "25", 0.0).result[0]
    positive, negative = text_n.AvatarConditioningLoad.execute(files["conditioning"]).result
    probe = vae.encode(image[:, :64, :64].expand(5, -1, -1, -1))
    print(json.dumps({"features_finite": bool(torch.isfinite(feats.features).all()),
                      "vae_encode_finite": bool(torch.isfinite(probe).all())}), flush=True)

    if args.vram_cap_gib:
        torch.cuda.set_per_process_memory_fraction(args.vram_cap_gib * 2**30 / torch.cuda.get_device_properties(0).total_memory)
    results, reference, failed = [], None, False
    for mode in args.offload:
        row = {"offload": mode}
        try:
            mm.unload_all_models()
            mm.soft_empty_cache()
            gpu = torch.cuda.is_available()
            if gpu:
                torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated() if gpu else 0
            t = time.perf_counter()
            model = loaders.AvatarModelLoader.execute(files["dit"], args.dtype, "sdpa", "none", mode, args.swap_blocks).result[0]
            row.update(patcher=type(model).__name__, load_s=round(time.perf_counter() - t, 2))
            t = time.perf_counter()
            latent = sampler_n.AvatarSampler.execute(model, positive, negative, image, vae, feats,
                                                     image_size=args.image_size, steps=args.steps, seed=0).result[0]
            if gpu:
                torch.cuda.synchronize()
            row.update(sample_s=round(time.perf_counter() - t, 2),
                       peak_alloc_gib=round(torch.cuda.max_memory_allocated() / 2**30, 2) if gpu else None)
            lat = latent["samples"]
            row.update(latent_shape=list(lat.shape), finite=bool(torch.isfinite(lat).all()))
            if reference is None:
                reference = lat
            row["max_abs_vs_first_mode"] = float((lat - reference).abs().max())
            frames = vae.decode(lat.to(vae.vae_dtype))
            row["decoded"] = list(frames.shape)
            del latent, frames
            if not args.no_interrupt:  # the user presses Cancel mid-run; then runs the graph again
                row["interrupt"] = interrupted_run(mm, lambda model=model: sampler_n.AvatarSampler.execute(
                    model, positive, negative, image, vae, feats, image_size=args.image_size, steps=args.steps, seed=0))
                again = sampler_n.AvatarSampler.execute(model, positive, negative, image, vae, feats,
                                                        image_size=args.image_size, steps=args.steps, seed=0).result[0]
                row["rerun_max_abs"] = float((again["samples"] - lat).abs().max())
                del again
            model = None  # noqa: F841  (drop our reference before ComfyUI unloads)
            mm.unload_all_models()
            mm.soft_empty_cache()
            if gpu:
                torch.cuda.synchronize()
            row["alloc_after_unload_gib"] = round((torch.cuda.memory_allocated() - before) / 2**30, 3) if gpu else None
            row["ok"] = row["finite"] and row["max_abs_vs_first_mode"] < 0.1 and (
                args.no_interrupt or (row["interrupt"].startswith("stopped") and row["rerun_max_abs"] == 0))
        except Exception as e:  # report and go on with the next mode
            import traceback
            traceback.print_exc()
            row.update(ok=False, error=f"{type(e).__name__}: {e}",
                       advised=isinstance(e, torch.OutOfMemoryError) and "set offload to low_memory" in str(e))
        if mode in args.expect_oom and "error" in row:  # ComfyUI on an OOM: unload everything; nothing may be left
            del model
            mm.unload_all_models()
            mm.soft_empty_cache()
            left = (torch.cuda.memory_allocated() - before) / 2**30
            row.update(alloc_after_unload_gib=round(left, 3), ok=row["advised"] and left < 0.01)
        elif mode in args.expect_oom:
            row["ok"] = False  # it was expected to run out of memory
        failed |= not row["ok"]
        results.append(row)
        print(json.dumps(row), flush=True)
    summary = {"summary": "ok" if not failed else "FAILED", **state, "model": args.model, "modes": results}
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))
    print(json.dumps({k: v for k, v in summary.items() if k != "modes"}), flush=True)
    return 1 if failed else 0


def interrupted_run(mm, run) -> str:
    """Run with ComfyUI's interrupt flag raised at the sampler's second cancellation check (after real GPU work)."""
    checks, real = [0], mm.processing_interrupted

    def flag() -> bool:
        checks[0] += 1
        return checks[0] >= 2
    mm.processing_interrupted = flag
    try:
        run()
        return "not stopped"
    except mm.InterruptProcessingException:
        return f"stopped at check {checks[0]}"
    finally:
        mm.processing_interrupted = real


if __name__ == "__main__":
    raise SystemExit(main())
