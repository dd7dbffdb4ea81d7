"""Render a lip-synced video from an image and a speech file through ComfyUI, headless, with an example workflow.

    python scripts/run_avatar.py --image face.png --audio speech.wav            # real models
    python scripts/run_avatar.py --smoke                                        # tiny random weights, CPU

ComfyUI is found from COMFYUI_PATH, or from this pack's place in ComfyUI/custom_nodes/; its Python from
COMFYUI_PYTHON (default: this one). Real runs use that ComfyUI's models/ folders and name every missing model
file with its folder. --smoke writes tiny RANDOM weights to a temporary ComfyUI base folder and renders on the
CPU: it proves the install works end to end; its video is noise.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import comfy_headless as ch  # noqa: E402
import ui_to_api  # noqa: E402

WORKFLOWS = ch.REPO / "example_workflows"
MODEL_INPUTS = {("AvatarModelLoader", "ckpt_name"): "diffusion_models", ("AvatarWhisperLoader", "whisper_name"): "audio_encoders",
                ("VAELoader", "vae_name"): "vae", ("DualCLIPLoader", "clip_name1"): "text_encoders",
                ("DualCLIPLoader", "clip_name2"): "text_encoders", ("CLIPVisionLoader", "clip_name"): "clip_vision",
                ("AvatarInsightFaceLoader", "model_name"): "insightface/models"}
TEXT_NODES = {"DualCLIPLoader", "CLIPVisionLoader", "CLIPVisionEncode"}


def find_comfyui() -> Path:
    if os.environ.get("COMFYUI_PATH"):
        return Path(os.environ["COMFYUI_PATH"]).resolve()
    if ch.REPO.parent.name == "custom_nodes" and (ch.REPO.parent.parent / "main.py").is_file():
        return ch.REPO.parent.parent
    raise SystemExit("ComfyUI not found: set COMFYUI_PATH=/path/to/ComfyUI, or clone this pack into "
                     "ComfyUI/custom_nodes/.")


def missing_models(prompt: dict, info: dict) -> list[str]:
    """'file -> models/folder/' for every model file a loader names that ComfyUI does not list."""
    out = []
    for node in prompt.values():
        declared = {**info[node["class_type"]]["input"].get("required", {}),
                    **info[node["class_type"]]["input"].get("optional", {})}
        for name, value in node["inputs"].items():
            folder = MODEL_INPUTS.get((node["class_type"], name))
            if folder is None:
                continue
            spec = declared[name]
            options = spec[0] if isinstance(spec[0], list) else spec[1].get("options", [])
            if value not in options:
                out.append(f"{value} -> put it in ComfyUI/models/{folder}/")
    return out


def first(prompt: dict, kind: str) -> dict:
    return next(n for n in prompt.values() if n["class_type"] == kind)


def smoke_graph(prompt: dict, files: dict) -> dict:
    """Swap the real models for the tiny random ones. The 8B text encoders cannot be made tiny: the text
    branch becomes saved random conditioning; no face detector model: one character, the whole frame."""
    text_id = next(k for k, n in prompt.items() if n["class_type"] == "AvatarTextEncode")
    prompt = {k: n for k, n in prompt.items() if n["class_type"] not in TEXT_NODES | {"AvatarInsightFaceLoader"}}
    prompt[text_id] = {"class_type": "AvatarConditioningLoad", "inputs": {"conditioning_name": files["conditioning"]}}
    first(prompt, "AvatarFaceMasks")["inputs"].pop("face_detector", None)
    first(prompt, "AvatarModelLoader")["inputs"].update(ckpt_name=files["dit"], weight_dtype="fp32")
    first(prompt, "AvatarWhisperLoader")["inputs"]["whisper_name"] = files["whisper"]
    first(prompt, "VAELoader")["inputs"]["vae_name"] = files["vae"]
    return prompt


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", type=Path, help="reference image (png/jpg)")
    ap.add_argument("--audio", type=Path, help="speech (wav/mp3/flac)")
    ap.add_argument("--prompt", help="what happens in the video (default: the workflow's)")
    ap.add_argument("--workflow", default="avatar_single_portrait", help="an example_workflows/ name")
    ap.add_argument("--out", type=Path, default=Path("avatar.mp4"), help="where to copy the mp4 (default avatar.mp4)")
    ap.add_argument("--steps", type=int, help="denoising steps (workflow default 50; smoke 2)")
    ap.add_argument("--image-size", type=int, help="short side of the video (workflow default 704; smoke 128)")
    ap.add_argument("--smoke", action="store_true", help="tiny random weights on the CPU: proves the install, output is noise")
    ap.add_argument("--base", type=Path, help="ComfyUI base folder (models/, input/, output/, custom_nodes/); "
                                              "default: the ComfyUI folder itself")
    ap.add_argument("--gpu", action="store_true", help="let ComfyUI use the GPU in --smoke mode (real runs always may)")
    ap.add_argument("--cpu", action="store_true", help="start ComfyUI with --cpu (machines without a GPU)")
    args = ap.parse_args(argv)
    if not args.smoke and not (args.image and args.audio):
        ap.error("give --image and --audio (or --smoke for the install check)")
    return args


def _has_cuda() -> bool:
    """Asks ComfyUI's own Python (it may not be this one) whether torch sees a CUDA GPU."""
    probe = "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"
    return subprocess.run([ch.env_python(), "-c", probe], capture_output=True).returncode == 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    comfy = find_comfyui()
    tmp = tempfile.TemporaryDirectory(prefix="avatar_smoke_") if args.smoke else None
    base = Path(tmp.name) if tmp else (args.base or comfy)
    if args.smoke:
        ch.prepare_base(base)
        sys.path.insert(0, str(comfy))
        import smoke_assets
        files = smoke_assets.write_models(base / "models")
        inputs = smoke_assets.write_inputs(base / "input")
    elif not (base / "custom_nodes" / ch.PACK_DIR_NAME).exists() and ch.REPO.parent.resolve() != (base / "custom_nodes").resolve():
        raise SystemExit(f"this pack is not in {base / 'custom_nodes'}: clone or link it there first.")
    for key, src in (("image", args.image), ("audio", args.audio)):
        if src is not None:
            if not src.is_file():
                raise SystemExit(f"--{key} {src}: no such file.")
            (base / "input").mkdir(parents=True, exist_ok=True)
            shutil.copy(src, base / "input" / src.name)
    image = args.image.name if args.image else inputs["image"]
    audio = args.audio.name if args.audio else inputs["audio"]
    workflow = json.loads((WORKFLOWS / f"{args.workflow}.json").read_text())
    cpu = args.cpu or (args.smoke and not args.gpu)
    if not cpu and not _has_cuda():
        print("no CUDA GPU found: starting ComfyUI with --cpu (very slow for real renders)")
        cpu = True
    server = ch.Server(comfy, base, python=ch.env_python(), cpu=cpu)
    try:
        server.wait_ready()
        info = server.get("/object_info")
        prompt = ui_to_api.convert(workflow, info)
        if args.smoke:
            prompt = smoke_graph(prompt, files)
        sampler = first(prompt, "AvatarSampler")["inputs"]
        sampler.update(steps=args.steps or (2 if args.smoke else sampler["steps"]),
                       image_size=args.image_size or (128 if args.smoke else sampler["image_size"]))
        first(prompt, "LoadAudio")["inputs"]["audio"] = audio
        next(n for n in prompt.values() if n["class_type"] == "LoadImage")["inputs"]["image"] = image
        if args.prompt and "AvatarTextEncode" in {n["class_type"] for n in prompt.values()}:
            first(prompt, "AvatarTextEncode")["inputs"]["prompt"] = args.prompt
        missing = missing_models(prompt, info)
        if missing:
            print("Missing model files (see the README's model table for where to download them):", file=sys.stderr)
            print("\n".join("  " + m for m in missing), file=sys.stderr)
            return 2
        entry = server.run(prompt, timeout=24 * 3600)
    finally:
        server.stop()
    videos = [p for p in ch.output_files(entry, base) if p.suffix == ".mp4"]
    if not videos:
        print("ComfyUI finished but wrote no mp4; see " + str(server.log_path), file=sys.stderr)
        return 1
    shutil.copy(videos[0], args.out)
    print(f"wrote {args.out.resolve()}")
    if args.smoke:
        print("SMOKE RUN: tiny RANDOM weights, the video is noise. It only shows that the install works end to end; "
              "put the real model files in place and run without --smoke.")
    if tmp:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
