"""The API prompt of an example workflow, with the inputs a benchmark changes (bench/workflow_gpu.py).

    prompt = api_prompt("avatar_single_portrait")            # ui_to_api.convert with this ComfyUI's node specs
    settings = apply_overrides(prompt, args, models_dir)       # preset, offload, steps, size, clip length, ...
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "scripts"), str(REPO / "bench")]
import comfy_inprocess  # noqa: E402
import ui_to_api  # noqa: E402
from workflow_assets import DETECTOR  # noqa: E402

SAMPLER = "AvatarSampler"
FPS = 25


def api_prompt(name: str) -> dict:
    """example_workflows/<name>.json as the API prompt a browser would queue."""
    workflow = json.loads((REPO / "example_workflows" / f"{name}.json").read_text())
    return ui_to_api.convert(workflow, object_info({n["type"] for n in workflow["nodes"]}))


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


def frames_for(windows: int, window: int | None = None) -> int:
    """The longest clip (frames) that the pack denoises in `windows` windows per step (official 33 / 10)."""
    mod = pack_module("avatar_core.sampling.windows")
    config = mod.WindowConfig() if window is None else mod.WindowConfig(window=window, offset=min(10, window - 1))
    best = None
    for f in range(1, 4 * (config.window - 1) * windows + 64):
        if mod.plan_clip(f, config).windows_per_step == windows:
            best = f
    if best is None:
        raise ValueError(f"--windows {windows}: no clip length gives that many windows")
    return best


def by_class(prompt: dict, kind: str) -> list[dict]:
    return [n["inputs"] for n in prompt.values() if n["class_type"] == kind]


def apply_overrides(prompt: dict, args: argparse.Namespace, models: Path) -> dict:
    """Change the prompt's inputs as asked (workflow_gpu.py's options); returns what was set (for the rows)."""
    set_: dict = {}
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
    frames = frames_for(args.windows, args.window) if args.windows else args.frames
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


def pack_module(name: str):
    """A module of the pack as ComfyUI loaded it from custom_nodes/ (not a second copy)."""
    import importlib
    top = [key for key in sys.modules if comfy_inprocess.PACK_DIR_NAME in key and "." not in key]
    if not top:
        raise RuntimeError(f"the pack is not loaded: did ComfyUI import {comfy_inprocess.PACK_DIR_NAME} from "
                           "custom_nodes/? (see its log above)")
    return importlib.import_module(f"{top[0]}.{name}")
