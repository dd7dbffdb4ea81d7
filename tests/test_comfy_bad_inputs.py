"""The bad-input table through a real ComfyUI (COMFYUI_PATH): API prompts with one mistake each; /history must
say `error` with a message that names the input and the fix (or the prompt is refused at validation with it).
Also: a repackaged (ComfyUI-prefixed) checkpoint renders, and a cancelled render resumes to the same video."""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

COMFYUI_PATH = os.environ.get("COMFYUI_PATH")
pytestmark = [pytest.mark.comfy, pytest.mark.skipif(
    not COMFYUI_PATH, reason="set COMFYUI_PATH to a ComfyUI checkout (and COMFYUI_PYTHON to its Python) to run")]
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
NAN = float("nan")


def _bad_files(models: Path, dit: str, whisper: str) -> None:
    """Damaged copies of the smoke model files (written with this Python's torch + safetensors)."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file
    sd = load_file(str(models / "diffusion_models" / dit))
    with safe_open(str(models / "diffusion_models" / dit), "pt") as f:
        meta = f.metadata()  # the tiny model's config (a 13B file's shapes tell it; the tiny head size does not)
    save_file({"model.diffusion_model." + k: v for k, v in sd.items()},
              str(models / "diffusion_models" / "repackaged.safetensors"), metadata=meta)
    nan = dict(sd, **{"img_in.proj.bias": torch.full_like(sd["img_in.proj.bias"], NAN)})
    save_file(nan, str(models / "diffusion_models" / "nan_weights.safetensors"), metadata=meta)
    fp8 = {k: (v.to(torch.float8_e4m3fn) if v.dim() == 2 else v) for k, v in sd.items()}
    save_file(fp8, str(models / "diffusion_models" / "avatar_fp8_e4m3fn.safetensors"), metadata=meta)
    data = (models / "audio_encoders" / whisper).read_bytes()
    (models / "audio_encoders" / "whisper_truncated.safetensors").write_bytes(data[: len(data) // 2])
    ws = load_file(str(models / "audio_encoders" / whisper))
    ws = {k: (torch.cat([v, v[:128]]) if k == "encoder.conv1.weight" else v) for k, v in ws.items()}
    save_file(ws, str(models / "audio_encoders" / "whisper_base.safetensors"))  # width 512: not tiny


@pytest.fixture(scope="module")
def comfy(tmp_path_factory):

    import comfy_headless as ch
    base = tmp_path_factory.mktemp("comfy_bad")
    ch.prepare_base(base)
    written = ch.write_smoke_assets(base, COMFYUI_PATH)
    _bad_files(base / "models", written["models"]["dit"], written["models"]["whisper"])
    server = ch.Server(COMFYUI_PATH, base, python=ch.env_python())
    try:
        server.wait_ready()
        yield server, base, written["models"], written["inputs"]
    finally:
        server.stop()


def _post(server, prompt: dict) -> str:
    """Queue a prompt (NaN allowed, as Python's json writes it); returns the prompt id or ComfyUI's refusal."""
    req = urllib.request.Request(server.url + "/prompt", data=json.dumps({"prompt": prompt}).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.loads(r.read())["prompt_id"]
    except urllib.error.HTTPError as e:
        raise AssertionError(f"refused at validation: {e.read().decode()[:3000]}") from e


def _wait(server, pid: str, timeout: float = 600) -> dict:
    end = time.time() + timeout
    while time.time() < end:
        hist = server.get(f"/history/{pid}")
        if pid in hist and hist[pid].get("status", {}).get("completed") is not None:
            return hist[pid]
        time.sleep(0.5)
    raise TimeoutError(pid)


def _error(server, prompt: dict) -> tuple[str, str]:
    """(node type, message) of the execution error the user sees for `prompt`."""
    entry = _wait(server, _post(server, prompt))
    assert entry["status"]["status_str"] == "error", entry["status"]
    errors = [m[1] for m in entry["status"]["messages"] if m[0] == "execution_error"]
    assert errors, entry["status"]
    return errors[0]["node_type"], errors[0]["exception_message"]


def _prompt(files, inputs, **kw):
    import prompts
    opts = dict(dit=files["dit"], whisper=files["whisper"], vae=files["vae"], image=inputs["image"],
                audio=inputs["audio"], conditioning=files["conditioning"], image_size=128, steps=2,
                weight_dtype="fp32", deep_cache=False, prefix="avatar/bad")
    opts.update(kw)
    return prompts.avatar_prompt(**opts)


def _set(prompt: dict, class_type: str, **values) -> dict:
    node = next(n for n in prompt.values() if n["class_type"] == class_type)
    node["inputs"].update(values)
    return prompt


CASES = [  # (case, node, inputs, expected node type, pattern: the input ... the fix)
    ("cfg NaN", "AvatarSampler", {"cfg": NAN}, "AvatarSampler", r"cfg: got nan.*Avatar Sampler's cfg widget"),
    ("shift NaN", "AvatarSampler", {"shift": NAN}, "AvatarSampler", r"shift: got nan.*official flow shift 5\.0.*Avatar Sampler's shift widget"),
    ("shift 0", "AvatarSampler", {"shift": 0.0}, "AvatarSampler", r"shift: 0\.0 is out of range.*official flow shift 5\.0"),
    ("step_cache NaN", "AvatarSampler", {"step_cache": NAN}, "AvatarSampler", r"step_cache: got nan.*0 = off"),
    ("official noise without CUDA", "AvatarSampler", {"noise": "official"}, "AvatarSampler",
     r"noise='official' is the official pipeline's CUDA draw.*set the Avatar Sampler's noise to 'cpu'"),
    ("official encode on a VAE without a posterior", "AvatarSampler", {"reference_encode": "official"}, "AvatarSampler",
     r"reference_encode='official' needs the HunyuanVideo VAE.*'comfyui'"),
    ("mask image_size not a multiple of 64", "AvatarFaceMasks", {"image_size": 200}, "AvatarFaceMasks",
     r"image_size: 200 is not a multiple of 64.*Avatar Sampler.s image_size"),
    ("face_scale NaN", "AvatarFaceMasks", {"face_scale": NAN}, "AvatarFaceMasks",
     r"face_scale: got nan.*official 3\.0"),
    ("duration NaN", "AvatarAudioEncode", {"duration": NAN}, "AvatarAudioEncode",
     r"duration: got nan, which is not a finite number.*0 = as long as the audio"),
    ("whisper truncated", "AvatarWhisperLoader", {"whisper_name": "whisper_truncated.safetensors"},
     "AvatarWhisperLoader", r"whisper_truncated\.safetensors: is truncated.*whisper-tiny's model\.safetensors"),
    ("whisper base", "AvatarWhisperLoader", {"whisper_name": "whisper_base.safetensors"}, "AvatarWhisperLoader",
     r"whisper_base\.safetensors: this Whisper encoder has width 512.*use whisper-tiny"),
    ("DiT NaN weights", "AvatarModelLoader", {"ckpt_name": "nan_weights.safetensors"}, "AvatarModelLoader",
     r"nan_weights\.safetensors: weight img_in\.proj\.bias holds NaN/inf.*re-download it"),
    ("DiT fp8 without scales", "AvatarModelLoader", {"ckpt_name": "avatar_fp8_e4m3fn.safetensors"},
     "AvatarModelLoader", r"avatar_fp8_e4m3fn\.safetensors holds fp8 weights but no per-layer scales.*fp8_e4m3fn"),
]


@pytest.mark.parametrize("case,node,values,node_type,message", CASES, ids=[c[0] for c in CASES])
def test_bad_input_through_comfyui(comfy, case, node, values, node_type, message) -> None:
    import re
    server, _, files, inputs = comfy
    got_type, text = _error(server, _set(_prompt(files, inputs, prefix=f"avatar/{case}"), node, **values))
    assert got_type == node_type and re.search(message, text, re.S), (got_type, text)


def test_resume_settings_nan_minutes(comfy) -> None:
    server, _, files, inputs = comfy
    prompt = _prompt(files, inputs)
    prompt["20"] = {"class_type": "AvatarResume", "inputs": {"folder": "output", "every_minutes": NAN}}
    prompt["9"]["inputs"]["resume"] = ["20", 0]
    node_type, text = _error(server, prompt)
    assert node_type == "AvatarResume" and "every_minutes: got nan" in text and "default 10" in text


def test_an_unwritable_resume_folder_stops_before_step_one_or_renders_on_when_asked(comfy) -> None:
    """temp/avatar_resume is a file: 'stop' names it before any step; 'continue without checkpoints' renders."""
    server, base, files, inputs = comfy
    blocker = base / "temp" / "avatar_resume"
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("not a folder")
    try:
        for choice in ("stop", "continue without checkpoints"):
            prompt = _prompt(files, inputs, prefix="avatar/unwritable")
            prompt["20"] = {"class_type": "AvatarResume",
                            "inputs": {"folder": "temp", "every_minutes": 0.0, "if_unwritable": choice}}
            prompt["9"]["inputs"]["resume"] = ["20", 0]
            if choice == "stop":
                node_type, text = _error(server, prompt)
                assert node_type == "AvatarSampler" and "avatar_resume is a file, not a folder" in text, text
                assert "if_unwritable = continue" in text, text
            else:
                entry = _wait(server, _post(server, prompt))
                assert entry["status"]["status_str"] == "success", entry["status"]
                assert "WITHOUT checkpoints" in server.log_tail(10**5)
        assert blocker.read_text() == "not a folder"
    finally:
        blocker.unlink()


def test_wrong_wiring_is_refused_naming_the_input(comfy) -> None:
    """ComfyUI's own type check (while the masks output node may still run: helper "audio" fixes that part)."""
    server, _, files, inputs = comfy
    prompt = _prompt(files, inputs)
    prompt["9"]["inputs"]["audio_features"] = ["5", 0]  # an IMAGE into the audio features socket
    req = urllib.request.Request(server.url + "/prompt", data=json.dumps({"prompt": prompt}).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            answer = json.loads(r.read())
    except urllib.error.HTTPError as e:
        answer = json.loads(e.read())
    errors = json.dumps(answer.get("node_errors", {}).get("9", {}))
    assert "audio_features" in errors and "received_type(IMAGE) mismatch input_type(HYAVATAR_AUDIO_FEATURES)" in errors


@pytest.mark.slow
def test_repackaged_checkpoint_renders(comfy) -> None:
    import comfy_headless as ch
    server, base, files, inputs = comfy
    entry = server.run(_prompt(files, inputs, dit="repackaged.safetensors", steps=1, prefix="avatar/repackaged"))
    assert [p for p in ch.output_files(entry, base) if p.suffix == ".mp4"]


@pytest.mark.slow
def test_cancelled_render_resumes_to_the_same_video(comfy) -> None:
    """Interrupt a render once its first checkpoint exists, queue it again: it continues from the checkpoint
    (the log says so), leaves no checkpoint, and its video equals an uninterrupted render's (resume off)."""
    import comfy_headless as ch
    import numpy as np
    from test_comfy_e2e import _decoded_frames
    server, base, files, inputs = comfy
    folder = base / "output" / "avatar_resume"

    def prompt(where: str, prefix: str) -> dict:
        p = _prompt(files, inputs, steps=6, prefix=prefix)
        p["20"] = {"class_type": "AvatarResume", "inputs": {"folder": where, "every_minutes": 0.0}}
        p["9"]["inputs"]["resume"] = ["20", 0]
        return p

    pid = _post(server, prompt("output", "avatar/resumed"))
    end = time.time() + 600
    while not list(folder.glob("*.safetensors")) and time.time() < end:
        time.sleep(0.05)
    urllib.request.urlopen(urllib.request.Request(server.url + "/interrupt", data=b"", method="POST"), timeout=30)
    first = _wait(server, pid)
    assert first["status"]["status_str"] == "error", "the render finished before it could be interrupted"
    assert len(list(folder.glob("*.safetensors"))) == 1
    resumed = server.run(prompt("output", "avatar/resumed"))
    assert "Avatar resume: continuing from step" in server.log_tail(10**6)
    assert list(folder.iterdir()) == [], "the checkpoint must be removed when the render completes"
    reference = server.run(prompt("off", "avatar/reference"))
    videos = [[p for p in ch.output_files(e, base) if p.suffix == ".mp4"][0] for e in (resumed, reference)]
    a, b = _decoded_frames(videos[0]), _decoded_frames(videos[1])
    assert a.std() > 1 and np.array_equal(a, b)
