"""Every example workflow opened as a template in the real ComfyUI frontend (headless chromium, the frontend's own
template loader): the only errors are the missing model files, the Missing Models panel shows each with its folder,
and its Download buttons open the model table's links; the example inputs are in place. Screenshots of the
graph and of the error panel: tests/frontend/artifacts/templates/ (gitignored)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from conftest import REPO
from test_frontend_e2e import ARTIFACTS, FRONTEND, _require_browser
from test_workflows import EXPECTED, MODEL_WIDGETS, load, widgets
from workflow_schema import overlaps

sys.path.insert(0, str(REPO / "scripts"))
from avatar_core import model_files  # noqa: E402

COMFYUI_PATH = os.environ.get("COMFYUI_PATH")
pytestmark = [pytest.mark.comfy, pytest.mark.slow, pytest.mark.skipif(
    not COMFYUI_PATH, reason="set COMFYUI_PATH to a ComfyUI checkout (and COMFYUI_PYTHON to its Python) to run")]
# What a fresh, offline browser profile logs by itself: 404s for a new user's settings files, the panel's HEAD
# requests for file sizes (no network here), and a frontend notice when a template is opened from the URL.
HARMLESS = re.compile(r"Failed to load resource|ComfyApp graph accessed before initialization")


@pytest.fixture(scope="module")
def opened(tmp_path_factory):
    import comfy_headless as ch
    node = _require_browser()
    base = tmp_path_factory.mktemp("comfy_templates")
    ch.prepare_base(base)
    out_dir = ARTIFACTS / "templates"
    out_dir.mkdir(parents=True, exist_ok=True)
    server = ch.Server(COMFYUI_PATH, base, python=ch.env_python())
    try:
        server.wait_ready()
        cfg = base / "templates.json"
        cfg.write_text(json.dumps({"url": server.url, "source": ch.PACK_DIR_NAME, "templates": EXPECTED,
                                   "outDir": str(out_dir)}))
        proc = subprocess.run([node, str(FRONTEND / "templates.mjs"), str(cfg)], cwd=FRONTEND, capture_output=True,
                              text=True, timeout=580)
    finally:
        server.stop()
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    (out_dir / "result.json").write_text(json.dumps(result, indent=1))
    assert "error" not in result, result.get("error")
    return {t["name"]: t for t in result["templates"]}


def model_names(name: str) -> list[str]:
    out = []
    for node in load(name)["nodes"]:
        for w in (lambda w: w if isinstance(w, tuple) else (w,))(MODEL_WIDGETS.get(node["type"], ())):
            out.append(widgets(node)[w])
    return out


@pytest.mark.parametrize("name", EXPECTED)
def test_template_opens_with_only_missing_models_each_with_folder_and_link(opened, name):
    t = opened[name]
    assert t["pageErrors"] == [], t["pageErrors"]
    assert [e for e in t["errors"] if not HARMLESS.search(e)] == []
    files = sorted(set(model_names(name)))
    panel = t["text"]
    counts = re.search(r"(\d+) nodes? — (\d+) errors?", panel)
    assert counts and int(counts.group(2)) == len(files), panel[-2000:]
    assert "Missing Models" in panel and "Missing Nodes" not in panel and "Unknown" not in panel
    for file in files:
        folder = model_files.BY_NAME[file].folder
        assert f"{file}\n{folder}\n" in panel, f"{file} is not listed with its folder {folder}"
    assert t["downloads"] == {f: model_files.BY_NAME[f].url for f in files}


@pytest.mark.parametrize("name", EXPECTED)
def test_template_inputs_are_present_in_comfyui(opened, name):
    loaders = opened[name]["graph"]["images"]
    assert loaders, f"{name}: no LoadImage / LoadAudio nodes seen"
    for loader in loaders:
        assert loader["value"] in loader["options"], f"{name}: {loader['type']} {loader['value']} not in ComfyUI/input"



@pytest.mark.parametrize("name", EXPECTED)
def test_no_two_nodes_overlap_in_the_real_frontend(opened, name):
    boxes = opened[name]["graph"]["boxes"]
    assert len(boxes) == len(load(name)["nodes"])
    assert overlaps(boxes) == []


@pytest.mark.parametrize("name", EXPECTED)
def test_face_detector_list_offers_only_installed_detectors(opened, name):
    """The test ComfyUI has no detector installed: the list is empty (no 'antelopev2' that is not there), and the
    template's detface.pt shows in the Missing Models panel instead (test above)."""
    (loader,) = opened[name]["graph"]["combos"]
    assert loader["value"] == model_files.DETFACE.name and loader["options"] == []
def test_four_speaker_legend_names_each_character_its_audio_in_order(opened):
    """The extension's legend on the mask node of the four-speaker template, as drawn in the browser: four rows,
    audio_k -> character k + 1 with its file, each file decoded in the browser (FLAC) for its waveform."""
    legends = opened["avatar_four_speakers"]["graph"]["legends"]
    assert legends == [[{"character": k + 1, "input": f"audio_{k}", "role": "speaker", "file": f"speaker_{k + 1}.flac",
                         "summary": True} for k in range(4)]]
    assert [len(rows) for rows in opened["avatar_two_character_dialogue"]["graph"]["legends"]] == [2]
