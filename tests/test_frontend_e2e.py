"""The frontend extension in a real ComfyUI, driven by headless Chromium (tests/frontend/e2e.mjs).

Loads every example workflow and converts it with the frontend itself (app.graphToPrompt), builds the
two-speaker graph, queues only the face-mask node (tiny run: user masks, no model), and checks that the
overlay and the per-character audio legend are drawn, on screen, and come back after save + reopen. Everything
runs twice: with nodes drawn on the LiteGraph canvas, and with the Vue "Nodes 2.0" renderer
(Comfy.VueNodes.Enabled).
Screenshots: tests/frontend/artifacts/ (gitignored). Needs COMFYUI_PATH (+ COMFYUI_PYTHON), node,
tests/frontend/node_modules (npm install there) and /usr/bin/chromium (apt-get install chromium).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from assets import SPEECH_A, SPEECH_B, package_file
from conftest import REPO

COMFYUI_PATH = os.environ.get("COMFYUI_PATH")
FRONTEND = REPO / "tests" / "frontend"
ARTIFACTS = FRONTEND / "artifacts"
CHROMIUM = "/usr/bin/chromium"
CROP = (380, 200, 900, 620)  # two faces of insightface's t1.jpg
FACE_BOXES = [(75, 50, 220, 180), (360, 120, 500, 250)]  # (x0, y0, x1, y1) in the crop, one per character

pytestmark = [pytest.mark.comfy, pytest.mark.slow, pytest.mark.skipif(
    not COMFYUI_PATH, reason="set COMFYUI_PATH to a ComfyUI checkout (and COMFYUI_PYTHON to its Python) to run")]


def _require_browser() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    if not os.path.exists(CHROMIUM):
        pytest.skip("chromium missing: apt-get install -y chromium")
    if not (FRONTEND / "node_modules" / "playwright-core").is_dir():
        proc = subprocess.run(["npm", "install", "--no-audit", "--no-fund"], cwd=FRONTEND, capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"npm install of playwright-core failed: {proc.stderr[-300:]}")
    return node


def _write_inputs(input_dir: Path) -> dict:
    import insightface
    from PIL import Image

    photo = Path(insightface.__file__).parent / "data" / "images" / "t1.jpg"
    Image.open(photo).convert("RGB").crop(CROP).save(input_dir / "two_faces.png")
    w, h = CROP[2] - CROP[0], CROP[3] - CROP[1]
    masks = []
    for k, (x0, y0, x1, y1) in enumerate(FACE_BOXES):
        m = np.zeros((h, w, 3), np.uint8)
        m[y0:y1, x0:x1] = 255
        Image.fromarray(m).save(input_dir / f"character_{k + 1}_mask.png")
        masks.append(f"character_{k + 1}_mask.png")
    audios = []
    for spec in (SPEECH_A, SPEECH_B):
        src = package_file(*spec)
        shutil.copy(src, input_dir / src.name)
        audios.append(src.name)
    return {"image": "two_faces.png", "masks": masks, "audios": audios}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def comfy_url(tmp_path_factory):
    pytest.importorskip("insightface")  # for its sample photo only
    base = tmp_path_factory.mktemp("comfy_frontend")
    for sub in ("custom_nodes", "models", "input", "output", "user"):
        (base / sub).mkdir()
    (base / "custom_nodes" / "ComfyUI-HunyuanVideo-Avatar").symlink_to(REPO, target_is_directory=True)
    inputs = _write_inputs(base / "input")
    port = _free_port()
    python = os.environ.get("COMFYUI_PYTHON", sys.executable)
    log = open(base / "comfyui.log", "w")
    proc = subprocess.Popen([python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
                             "--base-directory", str(base), "--disable-auto-launch",
                             "--database-url", "sqlite:///:memory:"],
                            cwd=COMFYUI_PATH, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            if proc.poll() is not None:
                pytest.fail(f"ComfyUI exited: {(base / 'comfyui.log').read_text()[-3000:]}")
            try:
                urllib.request.urlopen(url + "/system_stats", timeout=5)
                break
            except OSError:
                time.sleep(1)
        yield url, inputs, base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def example_workflows() -> list[Path]:
    return sorted(p for d in ("workflows", "example_workflows") for p in (REPO / d).glob("*.json"))


@pytest.fixture(scope="module", params=["classic", "vue_nodes"])
def browser_result(comfy_url, request):
    """One browser session per node renderer: the LiteGraph canvas, and the Vue "Nodes 2.0" mode."""
    node = _require_browser()
    url, inputs, base = comfy_url
    out_dir = ARTIFACTS / request.param
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = {"url": url, "outDir": str(out_dir), "twoSpeakers": inputs, "vueNodes": request.param == "vue_nodes",
           "workflows": [{"name": p.stem, "json": json.loads(p.read_text())} for p in example_workflows()]}
    cfg_path = base / f"e2e_config_{request.param}.json"
    cfg_path.write_text(json.dumps(cfg))
    proc = subprocess.run([node, str(FRONTEND / "e2e.mjs"), str(cfg_path)], cwd=FRONTEND, capture_output=True,
                          text=True, timeout=540)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    (out_dir / "result.json").write_text(json.dumps(result, indent=1))
    return result


def test_extension_loads_without_errors(browser_result):
    assert browser_result["extensionLoaded"]
    assert browser_result["errors"] == []


def test_face_node_run_draws_overlay_and_audio_legend(browser_result):
    run = browser_result["run"]
    assert run["status"] == 200, run["body"]
    assert "AvatarFaceMasks" in run["queued"] and "AvatarSampler" not in run["queued"]
    state = browser_result["afterRun"]
    assert state["overlayLoaded"] and state["overlayProperty"].startswith("data:image/jpeg")
    assert [c["character"] for c in state["characters"]] == [1, 2]
    boxes = [c["box"] for c in state["characters"]]
    assert boxes[0][0] < boxes[1][0], "character 1 is the left face"
    assert [(r["character"], r["input"], r["file"], r["summary"]) for r in state["rows"]] == [
        (1, "audio_0", Path(SPEECH_A[1]).name, True), (2, "audio_1", Path(SPEECH_B[1]).name, True)]
    assert state["warnings"] == []
    assert state["legendColours"] == ["#e6194b", "#3cb44b"], "both character swatches are painted"


def test_overlay_is_on_screen_in_both_node_renderers(browser_result):
    assert browser_result["vueNodesActive"] == browser_result["vueNodes"], "the renderer setting did not take"
    shown = browser_result["afterRunShown"]
    assert shown["attached"], "the overlay element is not in the page"
    assert min(shown["imgShownPx"]) > 50, f"the overlay image is not visible: {shown['imgShownPx']} px"


def test_overlay_survives_save_and_reopen(browser_result):
    state = browser_result["reopened"]
    assert state["overlayLoaded"] and state["overlayProperty"].startswith("data:image/jpeg")
    assert len(state["rows"]) == 2 and all(r["summary"] for r in state["rows"])


def test_every_example_workflow_converts_through_the_frontend(browser_result):
    for wf in browser_result["workflows"]:
        assert wf["promptNodes"], f"{wf['name']}: graphToPrompt produced nothing"
        for legend in wf["legends"]:
            assert legend["found"], f"{wf['name']}: face-mask node without the overlay widget"
            assert legend["rows"], f"{wf['name']}: no character rows"


def test_help_text_renders(browser_result):
    help_ = browser_result["help"]
    assert "AvatarFaceMasks" in help_ and "AvatarAudioEncode" in help_
    gaps = {k: v["untipped"] for k, v in help_.items() if v["untipped"]}
    assert all(v["description"] for v in help_.values()), {k for k, v in help_.items() if not v["description"]}
    assert gaps == {}, f"inputs without a tooltip: {gaps}"
    assert browser_result["tooltip"]["shown"], "hovering 'characters' shows its tooltip"
