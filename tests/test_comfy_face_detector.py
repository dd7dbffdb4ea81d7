"""In a real ComfyUI (COMFYUI_PATH): the face-detector loader offers only installed detectors with detface.pt as
the default, says which detector it built, refuses a missing one with the downloads named, and the mask node
finds faces on the reference at the video size."""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch

COMFYUI_PATH = os.environ.get("COMFYUI_PATH")
pytestmark = [pytest.mark.comfy, pytest.mark.skipif(
    not COMFYUI_PATH, reason="set COMFYUI_PATH to a ComfyUI checkout (and COMFYUI_PYTHON to its Python) to run")]
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))


class _OneFace(torch.nn.Module):
    """detface.pt's interface: one face row (cx, cy, w, h, obj, 10 landmarks, class) at the network input's centre."""

    def forward(self, x: torch.Tensor, grids: list[torch.Tensor]) -> torch.Tensor:
        h, w = float(x.shape[2]), float(x.shape[3])
        row = torch.zeros(1, 1, 16)
        row[0, 0, 0], row[0, 0, 1], row[0, 0, 2], row[0, 0, 3] = w / 2, h / 2, w / 8, h / 6
        row[0, 0, 4], row[0, 0, 15] = 0.9, 1.0
        return row


def _server(base: Path, detface: bool):
    import comfy_headless as ch
    from PIL import Image

    ch.prepare_base(base)
    Image.new("RGB", (300, 200), (120, 90, 60)).save(base / "input" / "face.png")
    if detface:
        (base / "models" / "face_detection").mkdir(parents=True, exist_ok=True)
        torch.jit.script(_OneFace()).save(str(base / "models" / "face_detection" / "detface.pt"))
    return ch.Server(COMFYUI_PATH, base, python=ch.env_python())


def _post(server, prompt: dict) -> tuple[int, dict]:
    req = urllib.request.Request(server.url + "/prompt", data=json.dumps({"prompt": prompt}).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


GRAPH = {
    "1": {"class_type": "LoadImage", "inputs": {"image": "face.png"}},
    "2": {"class_type": "AvatarInsightFaceLoader", "inputs": {"model_name": "detface.pt", "provider": "CPU",
                                                              "det_size": 640}},
    "3": {"class_type": "AvatarFaceMasks", "inputs": {"image": ["1", 0], "characters": 1, "face_scale": 3.0,
                                                      "face_detector": ["2", 0], "image_size": 256}},
    "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 1]}},
}


def test_detface_is_listed_first_used_and_masks_come_at_the_video_size(tmp_path):
    server = _server(tmp_path, detface=True)
    try:
        server.wait_ready()
        spec = server.get("/object_info/AvatarInsightFaceLoader")["AvatarInsightFaceLoader"]["input"]["required"]
        options = spec["model_name"][1].get("options", spec["model_name"][0])
        assert options == ["detface.pt"] and spec["model_name"][1].get("default") == "detface.pt"  # no antelopev2
        entry = server.run(GRAPH, timeout=300)
        (preview,) = entry["outputs"]["4"]["images"]
        from PIL import Image
        with Image.open(tmp_path / "temp" / preview["subfolder"] / preview["filename"]) as im:
            assert im.size == (384, 256)  # 300x200 -> the official video size for image_size 256
        assert "detface.pt: the official face detector" in server.log_tail(10**6)
    finally:
        server.stop()


def test_missing_detector_is_refused_before_running_with_both_downloads(tmp_path):
    from avatar_core import model_files
    server = _server(tmp_path, detface=False)
    try:
        server.wait_ready()
        spec = server.get("/object_info/AvatarInsightFaceLoader")["AvatarInsightFaceLoader"]["input"]["required"]
        assert spec["model_name"][1].get("options", spec["model_name"][0]) == []
        status, body = _post(server, GRAPH)
        assert status == 400, body
        text = json.dumps(body["node_errors"]["2"])
        assert model_files.DETFACE.url in text and model_files.FACES.url in text
    finally:
        server.stop()
