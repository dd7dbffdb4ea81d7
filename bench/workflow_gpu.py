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
this process see an N GiB card (torch's per-process memory fraction + ComfyUI's --reserve-vram/--vram-headroom
for the rest of the GPU), so the loader's offload=auto and ComfyUI's own memory management choose as they
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
import ui_to_api  # noqa: E402
from workflow_assets import DETECTOR, TINY_LLAMA, write_speech  # noqa: E402
from workflow_probe import GIB, NodeProbe, call_times  # noqa: E402

STAGES = {"AvatarModelLoader": "load transformer", "DualCLIPLoader": "load text encoders",
          "CLIPVisionLoader": "load CLIP vision", "VAELoader": "load VAE", "AvatarWhisperLoader": "load whisper",
          "AvatarInsightFaceLoader": "load face detector", "LoadImage": "read inputs", "LoadImageMask": "read inputs",
          "LoadAudio": "read inputs", "AudioMerge": "read inputs", "AvatarAudioEncode": "audio encode (whisper)",
          "AvatarFaceMasks": "face detection + masks", "AvatarTextEncode": "text encode (LLaVA + CLIP-L)",
          "AvatarEmotionEncode": "emotion encode", "AvatarLongVideo": "settings",
          "AvatarSampler": "sampler", "VAEDecodeTiled": "VAE decode", "VAEDecode": "VAE decode",
          "ImageFromBatch": "video assembly", "CreateVideo": "video assembly", "SaveVideo": "mp4 encode + write"}
SAMPLER = "AvatarSampler"
FPS = 25


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
    return ["--reserve-vram", f"{rest:.2f}", "--vram-headroom", f"{rest:.2f}"], min(card_gib * GIB / total, 1.0)


def tiny_llama() -> None:
    """--scale tiny: ComfyUI builds its LLaVA LLaMA with the tiny asset's depth and MLP width (same keys)."""
    import comfy.text_encoders.hunyuan_video as hv
    original = hv.LLAMAModel.__init__

    def init(self, *a, model_options={}, **k):  # noqa: B006 (ComfyUI's signature)
        return original(self, *a, model_options={**model_options, "llama_model_config": dict(TINY_LLAMA)}, **k)
    hv.LLAMAModel.__init__ = init


def object_info(kinds: set[str]) -> dict:
    """/object_info entries (input specs) for these node types, as the server would send them."""
    from comfy_api.internal import _ComfyNodeInternal

    import nodes
    out = {}
    for kind in kinds:
        cls = nodes.NODE_CLASS_MAPPINGS.get(kind)
        if cls is None:
            continue
        info = cls.GET_NODE_INFO_V1() if issubclass(cls, _ComfyNodeInternal) else {"input": cls.INPUT_TYPES()}
        out[kind] = json.loads(json.dumps(info, default=str))
    return out


def frames_for(windows: int) -> int:
    """The longest clip (frames) that the pack denoises in `windows` windows per step (official 33 / 10)."""
    plan_clip = pack_module("avatar_core.sampling.windows").plan_clip
    best = None
    for f in range(1, 128 * windows + 64):
        if plan_clip(f).windows_per_step == windows:
            best = f
    if best is None:
        raise ValueError(f"--windows {windows}: no clip length gives that many windows")
    return best


def by_class(prompt: dict, kind: str) -> list[dict]:
    return [n["inputs"] for n in prompt.values() if n["class_type"] == kind]


def apply_overrides(prompt: dict, args: argparse.Namespace) -> dict:
    """Change the prompt's inputs as asked; returns what was set (for the rows)."""
    set_: dict = {}
    models = args.base / "models"
    for node in by_class(prompt, "AvatarModelLoader"):
        if args.preset:
            node["weight_dtype"] = set_["preset"] = args.preset
        if args.offload:
            node["offload"] = set_["offload"] = args.offload
    for node in by_class(prompt, "AvatarInsightFaceLoader"):
        pack = models / "insightface" / "models" / node["model_name"]
        if node["model_name"] != DETECTOR and not pack.is_dir():  # no InsightFace files or package: the stand-in
            set_["face_detector"] = f"{DETECTOR} stand-in (bench/standin_detector.py) for {node['model_name']}"
            node["model_name"] = DETECTOR
    for node in by_class(prompt, SAMPLER):
        if args.steps:
            node["steps"] = set_["steps"] = args.steps
        if args.image_size:
            node["image_size"] = set_["image_size"] = args.image_size
        if args.step_cache is not None:
            node["step_cache"] = set_["step_cache"] = args.step_cache
    for node in by_class(prompt, "AvatarTextEncode"):
        if args.image_size:
            node["image_size"] = args.image_size
    frames = frames_for(args.windows) if args.windows else args.frames
    for node in by_class(prompt, "AvatarAudioEncode") if frames else []:
        node["duration"] = frames / FPS
        set_.update(frames=frames, video_s=round(frames / FPS, 2))
    if args.window:
        _set_window(prompt, args.window)
        set_["window"] = args.window
    for node in by_class(prompt, "VAEDecodeTiled") if args.decode else []:
        keys = ("tile_size", "overlap", "temporal_size", "temporal_overlap")
        node.update(dict(zip(keys, (int(v) for v in args.decode.split(",")))))
        set_["decode"] = args.decode
    return set_


def _set_window(prompt: dict, window: int) -> None:
    existing = by_class(prompt, "AvatarLongVideo")
    if existing:
        existing[0]["window"] = window
        return
    prompt["900"] = {"class_type": "AvatarLongVideo", "inputs": {"window": window, "stride": min(10, window - 1)}}
    for node in by_class(prompt, SAMPLER):
        node["long_video"] = ["900", 0]


def instrument(probe: NodeProbe) -> None:
    """Sub-stages worth telling apart inside a node."""
    import comfy.model_management as mm
    import comfy.sd
    probe.time_calls(comfy.sd.VAE, "encode", "VAE encode (reference)")
    probe.time_calls(mm, "load_models_gpu", "ComfyUI loads models to the GPU")
    probe.time_calls(pack_module("avatar_core.runner").LocalRunner, "sample", "sampling loop")


def pack_module(name: str):
    """A module of the pack as ComfyUI loaded it from custom_nodes/ (not a second copy)."""
    hits = [m for key, m in sys.modules.items() if key.endswith("." + name) and comfy_inprocess.PACK_DIR_NAME in key]
    if not hits:
        raise RuntimeError(f"the pack's {name} is not loaded: did ComfyUI import {comfy_inprocess.PACK_DIR_NAME} "
                           "from custom_nodes/? (see its log above)")
    return hits[0]


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
    workflow = json.loads((REPO / "example_workflows" / f"{args.workflow}.json").read_text())
    prompt = ui_to_api.convert(workflow, object_info({n["type"] for n in workflow["nodes"]}))
    settings = {"tag": args.tag, "workflow": args.workflow, "scale": args.scale, **apply_overrides(prompt, args)}
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    head = {"setup": True, "device": device, "comfyui_start_s": round(time.perf_counter() - t0, 2),
            "extra_nodes_failed": failed, "cache": runner.cache_type, "card_gib": args.card_gib,
            "memory_fraction": fraction, "fa3": _has("flash_attn_interface"), "torch": torch.__version__,
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
        self.probe.begin(run)
        t = time.perf_counter()
        outcome = self.runner.run(self.prompt)
        wall = time.perf_counter() - t
        rows = [describe(r, self.prompt) for r in self.probe.end()]
        for row in rows:
            self.emit({**row, "tag": self.settings["tag"]})
        self.last = summary(rows, run, outcome, wall, {**self.settings, **(extra or {})})
        self.emit(self.last)
        return outcome.ok


def long_runs(session: Session, args: argparse.Namespace) -> bool:
    """Warm runs of longer clips: repeated speech, the video cut to the longest clip of K windows."""
    if not args.long_windows:
        return True
    frames = {k: frames_for(k) for k in args.long_windows}
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
    vae = nodes.VAELoader().load_vae(VAE)[0]
    latent = torch.randn(1, 16, 33, size // 8, size // 8, generator=torch.Generator().manual_seed(0))
    run_configs(vae, latent, args.vae_bench, budget, lambda row: session.emit({"vae_bench": True, **row}))


def _has(module: str) -> bool:
    import importlib.util
    return importlib.util.find_spec(module) is not None


def emit(out, row: dict) -> None:
    line = json.dumps(row)
    out.write(line + "\n")
    out.flush()
    print(line if len(line) < 2000 else line[:2000] + " ...", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
