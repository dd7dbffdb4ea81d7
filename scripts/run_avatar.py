"""Render a lip-synced video from an image and a speech file through ComfyUI, headless, with an example workflow.

    python scripts/run_avatar.py --image face.png --audio speech.wav            # real models
    python scripts/run_avatar.py --smoke                                        # tiny random weights, CPU

This script itself needs only the Python standard library; ComfyUI runs in ComfyUI's own Python: COMFYUI_PYTHON,
else a venv inside the ComfyUI folder, else this Python. ComfyUI is found from COMFYUI_PATH, or from this pack's
place in ComfyUI/custom_nodes/. Real runs use that ComfyUI's models/ folders and name every missing model file
with its folder, layout and download page. --smoke writes tiny RANDOM weights to a temporary ComfyUI base folder
and renders on the CPU: it proves the install works end to end; its video is noise.
Nothing is left behind but the video: the input copies and ComfyUI's log are removed when the run ends. Nothing
is overwritten: the inputs are copied under names of their own, --out refuses an existing file (--overwrite).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import comfy_headless as ch  # noqa: E402
import ui_to_api  # noqa: E402

sys.path.insert(0, str(ch.REPO))
from avatar_core import model_files, output_files  # noqa: E402  (plain data and the standard library, no torch)
from avatar_core.errors import InputError  # noqa: E402
from avatar_core.specs.concepts import STEPS, VIDEO_SIZE  # noqa: E402  (the nodes' own specs, no torch)

WORKFLOWS = ch.REPO / "example_workflows"
MODEL_INPUTS = {("AvatarModelLoader", "ckpt_name"): "diffusion_models", ("AvatarWhisperLoader", "whisper_name"): "audio_encoders",
                ("VAELoader", "vae_name"): "vae", ("DualCLIPLoader", "clip_name1"): "text_encoders",
                ("DualCLIPLoader", "clip_name2"): "text_encoders", ("CLIPVisionLoader", "clip_name"): "clip_vision",
                ("AvatarInsightFaceLoader", "model_name"): "face_detection"}
TEXT_NODES = {"DualCLIPLoader", "CLIPVisionLoader", "CLIPVisionEncode"}
NEEDED = ("torch", "numpy", "safetensors", "transformers", "av", "aiohttp", "yaml")  # ComfyUI's and ours
SMOKE_SECONDS = 0.6  # 15 video frames: enough to show the install works; the VAE work scales with the frames
SMOKE_WINDOW = 5     # latent frames: one window (17 frames) holds the whole clip; the official 33 would encode 129
T0 = time.monotonic()


def say(msg: str) -> None:
    print(f"[{time.monotonic() - T0:5.1f} s] {msg}", flush=True)


def find_comfyui() -> Path:
    if os.environ.get("COMFYUI_PATH"):
        return Path(os.environ["COMFYUI_PATH"]).resolve()
    if ch.REPO.parent.name == "custom_nodes" and (ch.REPO.parent.parent / "main.py").is_file():
        return ch.REPO.parent.parent
    raise SystemExit("ComfyUI not found: set COMFYUI_PATH=/path/to/ComfyUI, or clone this pack into "
                     "ComfyUI/custom_nodes/.")


def comfy_python(comfy: Path) -> str:
    """COMFYUI_PYTHON, else a virtual environment inside the ComfyUI folder, else this Python."""
    if os.environ.get("COMFYUI_PYTHON"):
        return os.environ["COMFYUI_PYTHON"]
    for rel in ("venv/bin/python", ".venv/bin/python", "venv/Scripts/python.exe", "../python_embeded/python.exe"):
        if (comfy / rel).is_file():
            return str((comfy / rel).resolve())
    return sys.executable


def check_python(python: str, comfy: Path) -> None:
    """Stop with the Python to use (not a traceback) when `python` cannot run ComfyUI and this pack."""
    code = ("import importlib.util as u, sys; missing = [m for m in sys.argv[1:] if u.find_spec(m) is None]; "
            "print(' '.join(missing)); sys.exit(1 if missing else 0)")
    try:
        proc = subprocess.run([python, "-c", code, *NEEDED], capture_output=True, text=True, timeout=120)
    except OSError as e:
        raise SystemExit(f"cannot run ComfyUI's Python {python}: {e}. Set COMFYUI_PYTHON to the Python that runs "
                         "ComfyUI.") from None
    if proc.returncode:
        missing = proc.stdout.strip() or proc.stderr.strip()[-300:]
        raise SystemExit(
            f"{python} cannot run ComfyUI with this pack (missing: {missing}).\n"
            f"Use the Python that runs ComfyUI, for example:\n"
            f"  COMFYUI_PYTHON=/path/to/comfyui/venv/bin/python python {Path(__file__).name} ...\n"
            f"  or run this script with that Python. With ComfyUI's Python, install this pack's needs:\n"
            f"  python -m pip install -r {ch.REPO / 'requirements.txt'} && python {ch.REPO / 'install.py'}\n"
            f"(ComfyUI folder: {comfy})")


def missing_models(prompt: dict, info: dict) -> list[str]:
    """One entry per model file a loader names that ComfyUI does not list: folder, layout and download."""
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
            if node["class_type"] == "AvatarInsightFaceLoader":  # detface.pt absent: an InsightFace pack stands in
                try:
                    model_files.choose_face_detector(value, [o for o in options if o.endswith(".pt")],
                                                     [o for o in options if not o.endswith(".pt")])
                except ValueError as e:
                    out.append(str(e))
            elif value not in options:
                out.append(model_files.describe(value, folder))
    return out


def first(prompt: dict, kind: str) -> dict:
    return next(n for n in prompt.values() if n["class_type"] == kind)


def smoke_graph(prompt: dict, files: dict) -> dict:
    """Swap the real models for the tiny random ones. The 8B text encoders cannot be made tiny: the text
    branch becomes saved random conditioning; no face detector model: one character, the whole frame. A
    small window (Avatar Long-Video Windows) holds the whole clip, so the reference is VAE-encoded for 17
    frames instead of 129."""
    text_id = next(k for k, n in prompt.items() if n["class_type"] == "AvatarTextEncode")
    prompt = {k: n for k, n in prompt.items() if n["class_type"] not in TEXT_NODES | {"AvatarInsightFaceLoader"}}
    prompt[text_id] = {"class_type": "AvatarConditioningLoad", "inputs": {"conditioning_name": files["conditioning"]}}
    first(prompt, "AvatarFaceMasks")["inputs"].pop("face_detector", None)
    first(prompt, "AvatarModelLoader")["inputs"].update(ckpt_name=files["dit"], weight_dtype="fp32")
    first(prompt, "AvatarWhisperLoader")["inputs"]["whisper_name"] = files["whisper"]
    first(prompt, "VAELoader")["inputs"]["vae_name"] = files["vae"]
    prompt["smoke_windows"] = {"class_type": "AvatarLongVideo", "inputs": {"window": SMOKE_WINDOW, "stride": 2}}
    first(prompt, "AvatarSampler")["inputs"]["long_video"] = ["smoke_windows", 0]
    # The tiny TAEHV stand-in has no posterior (mean and log-variance): ComfyUI's own encode.
    first(prompt, "AvatarSampler")["inputs"]["reference_encode"] = "comfyui"
    return prompt


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", type=Path, help="reference image (png/jpg)")
    ap.add_argument("--audio", type=Path, help="speech (wav/mp3/flac)")
    ap.add_argument("--prompt", help="what happens in the video (default: the workflow's)")
    ap.add_argument("--workflow", default="avatar_single_portrait", help="an example_workflows/ name")
    ap.add_argument("--out", type=Path, help="where to put the mp4 (default: ComfyUI's output folder for real runs, "
                                             "the system temp folder for --smoke); an existing file is never "
                                             "overwritten unless --overwrite")
    ap.add_argument("--overwrite", action="store_true", help="let --out replace an existing file")
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
    for key in ("image", "audio"):
        src = getattr(args, key)
        if src is not None and not src.is_file():
            ap.error(f"--{key} {src}: no such file")
    if not (WORKFLOWS / f"{args.workflow}.json").is_file():
        names = sorted(p.stem for p in WORKFLOWS.glob("*.json"))
        ap.error(f"--workflow {args.workflow!r}: no such example workflow; choose one of {names}")
    try:  # the sampler node's specs: refused here, before ComfyUI starts, not after the models load
        for flag, spec, key in (("--steps", STEPS, "steps"), ("--image-size", VIDEO_SIZE, "image_size")):
            if getattr(args, key) is not None:
                setattr(args, key, spec.check(flag, getattr(args, key)))
    except InputError as e:
        ap.error(str(e))
    check_out(args)
    return args


def _has_cuda(python: str) -> bool:
    """Asks ComfyUI's own Python (it may not be this one) whether torch sees a CUDA GPU."""
    probe = "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"
    return subprocess.run([python, "-c", probe], capture_output=True).returncode == 0


def start_smoke_assets(python: str, comfy: Path, base: Path) -> subprocess.Popen:
    """Tiny random weights + inputs, written by ComfyUI's Python while ComfyUI starts (they only meet at /prompt)."""
    return subprocess.Popen([python, str(Path(__file__).with_name("smoke_assets.py")), str(base), str(comfy),
                             str(SMOKE_SECONDS)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish_smoke_assets(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=600)
    if proc.returncode:
        raise SystemExit(f"writing the smoke-test weights failed:\n{err[-3000:]}")
    return json.loads(out.strip().splitlines()[-1])


def copy_inputs(args: argparse.Namespace, base: Path, created: list[Path]) -> dict[str, str]:
    """--image / --audio into <base>/input (LoadImage and LoadAudio read from there): ({"image": name, "audio":
    name}, the files this run created). A file already in the input folder is used where it is; anything else
    is copied under a name of its own (run_avatar_<token>_<name>), created exclusively: never over a file there
    (the example speech.wav four templates load, or a user's file of the same name)."""
    folder = base / "input"
    folder.mkdir(parents=True, exist_ok=True)
    names: dict[str, str] = {}
    for key in ("image", "audio"):
        src = getattr(args, key)
        if src is None:
            continue
        if src.resolve().parent == folder.resolve():
            names[key] = src.name
            continue
        for _ in range(100):
            dst = folder / f"run_avatar_{secrets.token_hex(4)}_{src.name}"
            try:
                with open(src, "rb") as fin, open(dst, "xb") as fout:
                    created.append(dst)
                    shutil.copyfileobj(fin, fout)
                break
            except FileExistsError:
                continue
        names[key] = dst.name
    return names


def remove_created(created: list[Path]) -> None:
    """The clean-up: only the files this run created itself (never one that was there before)."""
    for path in created:
        path.unlink(missing_ok=True)


def check_out(args: argparse.Namespace) -> None:
    """--out is checked before anything runs: never over an existing file (unless --overwrite), never a folder."""
    out = args.out
    if out is None:
        return
    if out.is_dir():
        raise SystemExit(f"--out {out} is a folder: give a file name, e.g. {out / 'avatar.mp4'}")
    if out.exists() and not args.overwrite:
        raise SystemExit(f"--out {out} already exists and is never overwritten: give another name, or pass "
                         "--overwrite to replace it")
    if out.parent.exists() and not out.parent.is_dir():
        raise SystemExit(f"--out {out}: {out.parent} is a file, not a folder")


def place_output(made: Path, out: Path, overwrite: bool) -> Path:
    """Move ComfyUI's video to `out`; never over a file that appeared there meanwhile (unless overwrite):
    then the video stays where ComfyUI saved it, and that path is returned."""
    if out.resolve() == made.resolve():
        return made
    out.parent.mkdir(parents=True, exist_ok=True)
    if overwrite:
        shutil.move(made, out)  # a move: no second copy left in ComfyUI's output folder
        return out
    try:
        with open(made, "rb") as fin, open(out, "xb") as fout:  # exclusive: a file there now is kept
            shutil.copyfileobj(fin, fout)
    except FileExistsError:
        say(f"{out} appeared while rendering and is kept (never overwritten); the video stays at {made}")
        return made
    made.unlink()
    return out


def build_prompt(args: argparse.Namespace, info: dict, files: dict | None, inputs: dict) -> dict:
    workflow = json.loads((WORKFLOWS / f"{args.workflow}.json").read_text())
    prompt = ui_to_api.convert(workflow, info)
    if files is not None:
        prompt = smoke_graph(prompt, files)
    sampler = first(prompt, "AvatarSampler")["inputs"]
    sampler.update(steps=args.steps or (2 if args.smoke else sampler["steps"]),
                   image_size=args.image_size or (128 if args.smoke else sampler["image_size"]))
    first(prompt, "AvatarFaceMasks")["inputs"]["image_size"] = sampler["image_size"]  # faces found at the video size
    first(prompt, "LoadAudio")["inputs"]["audio"] = inputs["audio"]
    first(prompt, "LoadImage")["inputs"]["image"] = inputs["image"]
    if args.prompt and "AvatarTextEncode" in {n["class_type"] for n in prompt.values()}:
        first(prompt, "AvatarTextEncode")["inputs"]["prompt"] = args.prompt
    return prompt


def render(server: ch.Server, prompt: dict, base: Path) -> Path:
    """Queue, print ComfyUI's progress lines as they come, return the mp4."""
    def progress(line: str) -> None:
        line = re.sub(r"\x1b\[[0-9;]*m", "", line).strip()  # ComfyUI's log colours
        if any(k in line for k in ("Avatar", "got prompt", "Prompt executed", "Requested to load", "%|")):
            say("  comfyui: " + line[-160:])
    entry = server.run(prompt, timeout=24 * 3600, on_log=progress)
    videos = [p for p in ch.output_files(entry, base) if p.suffix == ".mp4"]
    if not videos:
        raise RuntimeError("ComfyUI finished but wrote no mp4")
    return videos[0]


def default_out(args: argparse.Namespace, made: Path) -> Path:
    if args.out is not None:
        return args.out
    if args.smoke:  # never in the checkout; hyavatar_smoke.mp4, else hyavatar_smoke_00001.mp4, ... (never over one)
        first = Path(tempfile.gettempdir()) / "hyavatar_smoke.mp4"
        return first if not first.exists() else output_files.next_free_path(first.parent, "hyavatar_smoke", ".mp4")
    return made  # real runs: where ComfyUI saved it (its output folder)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    comfy = find_comfyui()
    python = comfy_python(comfy)
    tmp = tempfile.TemporaryDirectory(prefix="avatar_run_")
    base = Path(tmp.name) / "base" if args.smoke else (args.base or comfy)
    created: list[Path] = []
    copied: dict[str, str] = {}
    server = None
    try:
        check_python(python, comfy)
        if args.smoke:
            ch.prepare_base(base)
            say(f"smoke run: writing tiny random weights and starting ComfyUI ({comfy}, Python {python})")
            assets = start_smoke_assets(python, comfy, base)
        else:
            if not (base / "custom_nodes" / ch.PACK_DIR_NAME).exists() and \
                    ch.REPO.parent.resolve() != (base / "custom_nodes").resolve():
                raise SystemExit(f"this pack is not in {base / 'custom_nodes'}: clone or link it there first.")
            copied = copy_inputs(args, base, created)
        cpu = args.cpu or (args.smoke and not args.gpu)
        if not cpu and not _has_cuda(python):
            say("no CUDA GPU found: starting ComfyUI with --cpu (very slow for real renders)")
            cpu = True
        server = ch.Server(comfy, base, python=python, cpu=cpu, log_dir=Path(tmp.name), fast_start=args.smoke)
        files = None
        inputs = {"image": None, "audio": None, **copied}
        if args.smoke:
            written = finish_smoke_assets(assets)
            files, inputs = written["models"], written["inputs"]
            say("tiny random weights written")
        server.wait_ready()
        say("ComfyUI is up")
        info = server.get("/object_info")
        prompt = build_prompt(args, info, files, inputs)
        missing = missing_models(prompt, info)
        if missing:
            print("Missing model files (README \"Model files\"; the Missing Models panel in ComfyUI links them too):",
                  file=sys.stderr)
            print("\n".join("  " + m for m in missing), file=sys.stderr)
            return 2
        say("queued: " + (f"{SMOKE_SECONDS} s clip, 2 steps at 128 px on the CPU" if args.smoke else "rendering"))
        made = render(server, prompt, base)
        out = place_output(made, default_out(args, made), args.overwrite)
        say(f"wrote {out.resolve()}")
        if args.smoke:
            print("SMOKE RUN: tiny RANDOM weights, the video is noise. It only shows that the install works end to "
                  "end; put the real model files in place and run without --smoke.")
        return 0
    except RuntimeError as e:
        tail = server.log_tail() if server else ""
        print(f"{e}\n--- end of ComfyUI's log ---\n{tail}", file=sys.stderr)
        return 1
    finally:
        if server:
            server.stop()
        remove_created(created)
        tmp.cleanup()
        if server:
            say("stopped ComfyUI; removed its log and the input copies")


if __name__ == "__main__":
    sys.exit(main())
