"""An example workflow through the real ComfyUI, measured node by node: a cold run, a warm rerun, a new seed.

    python bench/workflow_gpu.py --comfyui /path/to/ComfyUI --base BASE --out OUT.jsonl \
        [--workflow avatar_single_portrait] [--preset fast] [--steps 2] [--image-size 704] [--windows 1] \
        [--offload none|auto|...] [--card-gib 24] [--runs cold same new_seed] [--tag NAME] [--scale full|tiny --cpu]

BASE is a ComfyUI base folder with the model files (bench/workflow_assets.py). ComfyUI starts in this process
as its main.py starts it (scripts/comfy_inprocess.py: DynamicVRAM on NVIDIA, its default RAM-pressure cache),
the pack loads from custom_nodes/, the UI workflow becomes an API prompt (scripts/ui_to_api.py) and is queued
as a browser would queue it:
  cold      the first run of this process: every model is read from its file and every node runs;
  same      the same prompt again: ComfyUI's cache answers every node whose inputs did not change;
  new_seed  another seed: the sampler, decode and video nodes run again, loaders and encoders come from the cache.
One JSON row per node that ran (stage, seconds, GPU/host memory peaks, the sampler's seconds per model call,
sub-stages such as the reference VAE encode), then one summary row per run. Weights are random: the video
is noise, the time and memory are what they are for the real files of the same shapes. --card-gib N makes
this process see an N GiB card (torch's per-process memory fraction + ComfyUI's --reserve-vram for the rest of
the GPU), so the loader's offload=auto and ComfyUI's own memory management choose as they
would there.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "scripts"), str(REPO / "bench")]
import comfy_inprocess  # noqa: E402
from workflow_assets import TINY_LLAMA, write_speech  # noqa: E402
from workflow_probe import GIB, NodeProbe, call_times  # noqa: E402
from workflow_prompt import FPS, SAMPLER, api_prompt, apply_overrides, by_class, frames_for, pack_module  # noqa: E402

STAGES = {"AvatarModelLoader": "load transformer", "DualCLIPLoader": "load text encoders",
          "CLIPVisionLoader": "load CLIP vision", "VAELoader": "load VAE", "AvatarWhisperLoader": "load whisper",
          "AvatarInsightFaceLoader": "load face detector", "LoadImage": "read inputs", "LoadImageMask": "read inputs",
          "LoadAudio": "read inputs", "AudioMerge": "read inputs", "AvatarAudioEncode": "audio encode (whisper)",
          "AvatarFaceMasks": "face detection + masks", "AvatarTextEncode": "text encode (LLaVA + CLIP-L)",
          "AvatarEmotionEncode": "emotion encode", "AvatarLongVideo": "settings",
          "AvatarSampler": "sampler", "VAEDecodeTiled": "VAE decode", "VAEDecode": "VAE decode",
          "ImageFromBatch": "video assembly", "CreateVideo": "video assembly", "SaveVideo": "mp4 encode + write"}


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--comfyui", type=Path, default=os.environ.get("COMFYUI_PATH"), required=False)
    ap.add_argument("--base", type=Path, required=True, help="ComfyUI base folder holding models/ (workflow_assets.py)")
    ap.add_argument("--out", type=Path, required=True, help="JSON lines written here (appended)")
    ap.add_argument("--workflow", default="avatar_single_portrait", help="example_workflows/<name>.json")
    ap.add_argument("--tag", default="", help="a label copied into every row")
    ap.add_argument("--runs", nargs="+", default=["cold", "same", "new_seed"], choices=["cold", "same", "new_seed"])
    ap.add_argument("--preset", help="loader weight_dtype (bf16, fp8_e4m3fn, fast, ...); default: the workflow's")
    ap.add_argument("--offload", help="loader offload (none, block_swap, low_memory, auto); default: the workflow's")
    ap.add_argument("--steps", type=int, help="sampler steps (default: the workflow's 50)")
    ap.add_argument("--image-size", type=int, help="sampler and text-encode image_size (default: the workflow's 704)")
    ap.add_argument("--windows", type=int, help="video length: the longest clip denoised in this many windows")
    ap.add_argument("--frames", type=int, help="video length in frames (25 fps); --windows overrides")
    ap.add_argument("--window", type=int, help="latent frames per window (adds Avatar Long-Video Windows; tiny runs)")
    ap.add_argument("--step-cache", type=float, help="sampler step_cache threshold (0 = off)")
    ap.add_argument("--decode", help="VAEDecodeTiled tile_size,overlap,temporal_size,temporal_overlap")
    ap.add_argument("--card-gib", type=float, help="simulate a card with this much memory (GiB)")
    ap.add_argument("--long-windows", type=int, nargs="*", default=[],
                    help="after the runs: warm runs of longer clips (this many windows each, repeated speech)")
    ap.add_argument("--long-steps", type=int, help="sampler steps of the long runs (default: --steps)")
    ap.add_argument("--long-step-cache", type=float, help="also run each long clip with this step_cache threshold")
    ap.add_argument("--vae-bench", nargs="*", default=[], help="then bench_vae.py configs on this run's VAE")
    ap.add_argument("--vae-budget-s", type=float, default=100.0)
    ap.add_argument("--deadline-s", type=float, help="start no run that would end later than this (s after start)")
    ap.add_argument("--scale", choices=["full", "tiny"], default="full", help="tiny: the files of workflow_assets --scale tiny")
    ap.add_argument("--cpu", action="store_true", help="ComfyUI's --cpu (checks this script without a GPU)")
    ap.add_argument("--comfy-args", nargs=argparse.REMAINDER, default=[], help="further ComfyUI arguments (last)")
    args = ap.parse_args(argv)
    if args.comfyui is None or not (args.comfyui / "comfy" / "model_patcher.py").is_file():
        ap.error("give --comfyui (or set COMFYUI_PATH) to a ComfyUI checkout")
    return args


def gpu_total_bytes() -> int:
    """The GPU's memory without initialising CUDA in this process (comfy-aimdo must come first)."""
    try:
        import pynvml
        pynvml.nvmlInit()
        return int(pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(0)).total)
    except Exception:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits", "-i", "0"],
                             capture_output=True, text=True, check=True).stdout
        return int(float(out.split()[0]) * 2**20)


def card_args(card_gib: float | None) -> tuple[list[str], float | None]:
    """ComfyUI arguments that leave it `card_gib` of this GPU, and torch's memory fraction for the same."""
    if card_gib is None:
        return [], None
    total = gpu_total_bytes()
    rest = max(total / GIB - card_gib, 0.0)
    # --reserve-vram is ComfyUI's own "leave this much to other programs" (main.py also gives it to comfy-aimdo
    # as its headroom); --vram-headroom is not added: it counts on top of that default headroom.
    return ["--reserve-vram", f"{rest:.2f}"], min(card_gib * GIB / total, 1.0)


def tiny_llama() -> None:
    """--scale tiny: ComfyUI builds its LLaVA LLaMA with the tiny asset's depth and MLP width (same keys)."""
    import comfy.text_encoders.hunyuan_video as hv
    original = hv.LLAMAModel.__init__

    def init(self, *a, model_options={}, **k):  # noqa: B006 (ComfyUI's signature)
        return original(self, *a, model_options={**model_options, "llama_model_config": dict(TINY_LLAMA)}, **k)
    hv.LLAMAModel.__init__ = init


def instrument(probe: NodeProbe) -> None:
    """Sub-stages worth telling apart inside a node."""
    import comfy.model_management as mm
    # the pack's seed-free reference encode, both modes (the official one runs the VAE's encoder tile by tile,
    # not through comfy.sd.VAE.encode, which is all the runs of 2026-12-07 timed); a cache hit does not call it
    probe.time_calls(pack_module("nodes.reference"), "reference_encoding", "VAE encode (reference)")
    probe.time_calls(mm, "load_models_gpu", "ComfyUI loads models to the GPU")
    probe.time_calls(pack_module("avatar_core.runner").LocalRunner, "sample", "sampling loop")
    record_offload_choice(probe)


def record_offload_choice(probe: NodeProbe) -> None:
    """The loader's offload=auto decision, into the loader node's row."""
    plan = pack_module("avatar_core.offload_plan")
    original = plan.choose_offload

    def recorded(*args, **kwargs):
        choice = original(*args, **kwargs)
        if probe.current is not None:
            probe.current["offload_choice"] = {"offload": choice.offload, "swap_blocks": choice.swap_blocks,
                                               "reason": choice.reason}
        return choice
    plan.choose_offload = recorded


def describe(row: dict, prompt: dict) -> dict:
    """Stage name, and the sampler's per-call split (first call, then each later model call)."""
    row["stage"] = STAGES.get(row["class"], row["class"])
    row["title"] = prompt.get(row["node"], {}).get("_meta", {}).get("title", row["class"])
    sampling = next((s for s in row["substages"] if s[0] == "sampling loop"), None)
    if row["class"] == SAMPLER and sampling is not None and row["progress"]:
        calls = call_times(row["progress"], start=sampling[1])
        row.update(calls=len(calls), first_call_s=calls[0], later_call_s=calls[1:])
    return row


def summary(rows: list[dict], run: str, outcome, wall: float, settings: dict) -> dict:
    total = round(sum(r["s"] for r in rows), 2)
    sampler = round(sum(r["s"] for r in rows if r["class"] == SAMPLER), 2)
    return {"run": run, "summary": True, "ok": outcome.ok, "error": outcome.error(), "wall_s": round(wall, 2),
            "nodes_s": total, "sampler_s": sampler, "non_sampler_s": round(total - sampler, 2),
            "ran": [r["node"] for r in rows], "cached": outcome.cached_nodes(),
            "peak_alloc_gib": max((r.get("peak_alloc_gib", 0) for r in rows), default=0),
            "device_used_peak_gib": max((r.get("device_used_peak_gib") or 0 for r in rows), default=0),
            "rss_peak_gib": max((r["rss_peak_gib"] for r in rows), default=0), **settings}


def main(argv=None) -> int:
    args = parse_args(argv)
    t0 = time.perf_counter()
    comfy_inprocess.prepare_base(args.base, REPO)
    extra, fraction = card_args(args.card_gib)
    state = comfy_inprocess.start_comfy(args.comfyui.resolve(), args.base.resolve(), dynamic=True, cpu=args.cpu,
                                        extra_args=extra + list(args.comfy_args))
    import torch
    if fraction is not None:
        torch.cuda.set_per_process_memory_fraction(fraction)
    failed = comfy_inprocess.load_nodes()
    if args.scale == "tiny":
        tiny_llama()
    probe = NodeProbe()
    instrument(probe)
    runner = comfy_inprocess.PromptRunner(progress_hook=probe.progress)
    prompt = api_prompt(args.workflow)
    settings = {"tag": args.tag, "workflow": args.workflow, "scale": args.scale,
                **apply_overrides(prompt, args, args.base / "models")}
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    head = {"setup": True, "device": device, "comfyui_start_s": round(time.perf_counter() - t0, 2),
            "extra_nodes_failed": failed, "cache": runner.cache_type, "card_gib": args.card_gib,
            "memory_fraction": fraction, "fa3": _has("flash_attn_interface"), "torch": torch.__version__,
            "model_files": str(args.base.resolve()),  # /dev/shm: cold loads read RAM, not a disk
            **state, **settings}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("a") as out:
        session = Session(runner, probe, prompt, out, settings, t0, args.deadline_s)
        session.emit(head)
        ok = all(session.run(run, reseed=run == "new_seed") for run in args.runs)
        ok = ok and long_runs(session, args)
        if args.vae_bench and ok:
            vae_bench(session, args)
    return 0 if ok else 1


class Session:
    """Queued runs of one prompt in one ComfyUI process, with the rows they give."""

    def __init__(self, runner, probe: NodeProbe, prompt: dict, out, settings: dict, t0: float,
                 deadline_s: float | None):
        self.runner, self.probe, self.prompt, self.out, self.settings = runner, probe, prompt, out, settings
        self.t0, self.deadline_s = t0, deadline_s
        self.last: dict = {}

    def emit(self, row: dict) -> None:
        emit(self.out, row)

    def left_s(self) -> float:
        return float("inf") if self.deadline_s is None else self.deadline_s - (time.perf_counter() - self.t0)

    def run(self, run: str, reseed: bool = False, expect_s: float = 0.0, extra: dict | None = None) -> bool:
        if expect_s > self.left_s():
            self.emit({"run": run, "summary": True, "skipped": f"expected {expect_s:.0f} s, {self.left_s():.0f} s "
                                                               "left before the deadline", **self.settings})
            return True
        if reseed:
            for node in by_class(self.prompt, SAMPLER):
                node["seed"] = int(node.get("seed", 0)) + 1
        self.probe.on_row = lambda row: self.emit({**describe(row, self.prompt), "tag": self.settings["tag"]})
        self.probe.begin(run)
        t = time.perf_counter()
        outcome = self.runner.run(self.prompt)
        wall = time.perf_counter() - t
        rows = self.probe.end()  # (already described and written, one by one)
        self.last = summary(rows, run, outcome, wall, {**self.settings, **(extra or {})})
        self.emit(self.last)
        return outcome.ok


def long_runs(session: Session, args: argparse.Namespace) -> bool:
    """Warm runs of longer clips: repeated speech, the video cut to the longest clip of K windows."""
    if not args.long_windows:
        return True
    frames = {k: frames_for(k, args.window) for k in args.long_windows}
    speech = "bench_speech_long.wav"
    write_speech(REPO / "example_inputs" / "speech.wav", args.base / "input" / speech, max(frames.values()) / FPS + 1)
    one_window = session.last.get("nodes_s", 0.0)  # the last warm run: a one-window clip's sampler + decode + video
    for node in by_class(session.prompt, "LoadAudio"):
        node["audio"] = speech
    for node in by_class(session.prompt, SAMPLER):
        node["steps"] = args.long_steps or args.steps or node["steps"]
    ok = True
    for k in args.long_windows:
        for node in by_class(session.prompt, "AvatarAudioEncode"):
            node["duration"] = frames[k] / FPS
        extra = {"windows": k, "frames": frames[k], "video_s": round(frames[k] / FPS, 2),
                 "steps": args.long_steps or args.steps}
        caches = [0.0] + ([args.long_step_cache] if args.long_step_cache else [])
        for threshold in caches:
            for node in by_class(session.prompt, SAMPLER):
                node["step_cache"] = threshold
            ok &= session.run(f"windows_{k}" + (f"_step_cache_{threshold}" if threshold else ""), reseed=True,
                              expect_s=1.2 * k * one_window, extra={**extra, "step_cache": threshold})
    return ok


def vae_bench(session: Session, args: argparse.Namespace) -> None:
    """bench_vae.py's configs on a one-window latent of this run's size, in this process (its VAE loader)."""
    import torch
    from bench_vae import run_configs
    from workflow_assets import VAE

    import nodes
    size = args.image_size or 704
    budget = min(args.vae_budget_s, session.left_s())
    if budget < 45:  # one 129-frame decode may take ~30 s: not started so close to the deadline
        session.emit({"vae_bench": True, "tag": args.tag, "config": "all", "skipped": f"{budget:.0f} s left"})
        return
    vae = nodes.VAELoader().load_vae(VAE)[0]
    frames = args.window or 33  # one window's latent frames (33 = 129 video frames)
    latent = torch.randn(1, 16, frames, size // 8, size // 8, generator=torch.Generator().manual_seed(0))
    run_configs(vae, latent, args.vae_bench, budget, lambda row: session.emit({"vae_bench": True, "tag": args.tag, **row}))


def _has(module: str) -> bool:
    import importlib.util
    return importlib.util.find_spec(module) is not None


def emit(out, row: dict) -> None:
    """The whole row to the JSON-lines file; one short line to stdout (what a device call's output tail shows)."""
    out.write(json.dumps(row) + "\n")
    out.flush()
    print(brief(row), flush=True)


def brief(row: dict) -> str:
    if row.get("setup"):
        keys = ("device", "dynamic_vram", "fa3", "cache", "card_gib", "preset", "steps", "frames", "extra_nodes_failed")
        return "SETUP " + json.dumps({k: row.get(k) for k in keys})
    if row.get("summary"):
        keys = ("run", "ok", "skipped", "error", "wall_s", "sampler_s", "non_sampler_s", "peak_alloc_gib",
                "device_used_peak_gib", "rss_peak_gib", "windows", "cached")
        return "RUN " + json.dumps({k: row[k] for k in keys if k in row})
    if row.get("vae_bench"):
        return "VAE " + json.dumps({k: v for k, v in row.items() if k not in ("vae_bench", "shape")})
    calls = f" calls {row.get('first_call_s')} then {row.get('later_call_s')}" if "calls" in row else ""
    choice = f" offload {row['offload_choice']['offload']}/{row['offload_choice']['swap_blocks']}" \
        if "offload_choice" in row else ""
    subs = "".join(f" [{s[0]} {s[2]}s]" for s in row.get("substages", []) if s[2] >= 0.05)
    return (f"  {row.get('run')} {row.get('node')} {row.get('class')}: {row.get('s')} s, alloc "
            f"{row.get('peak_alloc_gib')} dev {row.get('device_used_peak_gib')} rss {row.get('rss_peak_gib')} GiB"
            f"{calls}{choice}{subs}")


if __name__ == "__main__":
    raise SystemExit(main())
