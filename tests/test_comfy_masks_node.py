"""In a real ComfyUI (COMFYUI_PATH): a graph whose other nodes fail validation must not run the character-mask
preview alone and report success (Avatar Character Masks is not an output node), while the overlay still
reaches the frontend as the node's `ui` when the graph runs."""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

COMFYUI_PATH = os.environ.get("COMFYUI_PATH")
pytestmark = [pytest.mark.comfy, pytest.mark.skipif(
    not COMFYUI_PATH, reason="set COMFYUI_PATH to a ComfyUI checkout (and COMFYUI_PYTHON to its Python) to run")]
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))


@pytest.fixture(scope="module")
def comfy(tmp_path_factory):
    import comfy_headless as ch
    from PIL import Image

    base = tmp_path_factory.mktemp("comfy_masks")
    ch.prepare_base(base)
    Image.new("RGB", (96, 64), (120, 90, 60)).save(base / "input" / "face.png")
    server = ch.Server(COMFYUI_PATH, base, python=ch.env_python())
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def _post(server, prompt: dict) -> tuple[int, dict]:
    req = urllib.request.Request(server.url + "/prompt", data=json.dumps({"prompt": prompt}).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _graph(ckpt_name: str) -> dict:
    """The main graph's mask branch plus a sampler whose model loader names a file that is not there."""
    import prompts

    g = prompts.avatar_prompt(dit=ckpt_name, whisper="missing_whisper.safetensors", vae="missing_vae.safetensors",
                              image="face.png", audio="missing.wav", conditioning="missing.safetensors")
    return g


def test_invalid_graph_is_refused_and_the_mask_node_does_not_run_alone(comfy):
    status, body = _post(comfy, _graph("missing_dit.safetensors"))
    assert status == 400, body  # before the fix: 200, the mask node ran alone and history said success
    assert body["error"]["type"] == "prompt_outputs_failed_validation"
    assert "1" in body["node_errors"] and body["node_errors"]["1"]["class_type"] == "AvatarModelLoader"
    assert "8" not in body.get("node_errors", {})  # the mask node itself was fine
    history = comfy.get("/history")
    assert not [h for h in history.values() if h.get("status", {}).get("status_str") == "success"], history


def test_mask_node_still_sends_its_overlay_when_its_preview_is_run(comfy):
    g = {k: v for k, v in _graph("x").items() if k in ("5", "8")}
    g["20"] = {"class_type": "PreviewImage", "inputs": {"images": ["8", 1]}}
    for run in ("first", "cached rerun"):  # a rerun skips the cached node; its overlay must still be sent
        entry = comfy.run(g, timeout=120)
        ui = entry["outputs"].get("8")  # the mask node's ui (overlay image + characters): history and frontend
        assert ui, f"{run}: no overlay for the mask node in {entry['outputs']}"
        assert ui["avatar_overlay"][0]["filename"].endswith(".png")
        assert ui["avatar_characters"][0]["character"] == 1 and ui["avatar_characters"][0]["box"] == [0, 0, 1, 1]
