"""Frontend extension: its JS unit tests (node --test tests/js/), and the Python payloads it draws,
checked against the JS definitions (same colours, same envelope and level)."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess

import pytest
import torch
from conftest import REPO, load_pack

NODE = shutil.which("node")
needs_node = pytest.mark.skipif(NODE is None, reason="node (Node.js) is not installed: the JS unit tests need it")


@needs_node
def test_js_unit_tests_pass():
    proc = subprocess.run([NODE, "--test", "tests/js/"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    passed = int(re.search(r"^# pass (\d+)", proc.stdout, re.M).group(1))
    assert passed >= 10 and "# fail 0" in proc.stdout


def test_js_palette_is_the_overlay_palette():
    js = (REPO / "js" / "lib" / "palette.js").read_text()
    hexes = re.findall(r'"#([0-9a-f]{6})"', js.split("PALETTE =")[1].split(";")[0])
    assert [tuple(int(h[i:i + 2], 16) for i in (0, 2, 4)) for h in hexes] == load_pack("nodes.convert").PALETTE


def test_character_summary_boxes_colours_and_empty_masks():
    ui = load_pack("nodes.ui_payloads")
    masks = torch.zeros(3, 100, 200)
    masks[0, 10:50, 20:60] = 1
    masks[1, 0:100, 150:200] = 1
    out = ui.character_summary(masks)
    assert [c["character"] for c in out] == [1, 2, 3]
    assert out[0]["box"] == [0.1, 0.1, 0.3, 0.5] and out[0]["colour"] == "#e6194b"
    assert out[1]["box"] == [0.75, 0.0, 1.0, 1.0] and out[1]["area"] == 0.25
    assert out[2]["box"] is None and out[2]["area"] == 0.0


def test_face_mask_ui_values_are_lists():
    # ComfyUI concatenates each ui key over outputs: a non-list value would break execution.
    ui = load_pack("nodes.ui_payloads")
    payload = ui.face_mask_ui(torch.ones(2, 64, 64), [{"filename": "a.png", "subfolder": "", "type": "temp"}])
    assert all(isinstance(v, list) for v in payload.values())
    audio = ui.audio_ui([("audio_0", {"waveform": torch.zeros(1, 1, 1600), "sample_rate": 16000})])
    assert audio["avatar_audio"][0]["rms_db"] == ui.FLOOR_DB and audio["avatar_audio"][0]["duration"] == 0.1


@needs_node
def test_python_and_js_audio_summaries_agree():
    """The server payload (after a run) and the browser's own decode (before a run) must show the same."""
    ui = load_pack("nodes.ui_payloads")
    rate, n = 16000, 16000 * 2 + 123
    t = torch.arange(n) / rate
    sig = 0.4 * torch.sin(2 * math.pi * 150 * t) * (t > 0.5) * (t < 1.4)  # a burst: envelope shape matters
    stereo = torch.stack([sig, sig * 0.5])[None]  # [1, 2, T]: the mono mix is 0.75 * sig
    py = ui.audio_summary(stereo, rate, "audio_0")
    script = ("import {summarize, mixToMono} from './js/lib/audio_level.js';"
              "import {readFileSync} from 'node:fs';"
              "const d = JSON.parse(readFileSync(0, 'utf8'));"
              "console.log(JSON.stringify(summarize(mixToMono(d.ch.map(c => Float32Array.from(c))), d.rate)));")
    data = json.dumps({"ch": stereo[0].tolist(), "rate": rate})
    proc = subprocess.run([NODE, "--input-type=module", "-e", script], input=data, cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    js = json.loads(proc.stdout)
    assert abs(js["duration"] - py["duration"]) < 1e-3
    assert abs(js["rms_db"] - py["rms_db"]) < 0.05
    assert len(js["envelope"]) == len(py["envelope"]) == ui.ENVELOPE_POINTS
    assert max(abs(a - b) for a, b in zip(js["envelope"], py["envelope"])) < 1e-3
    assert py["envelope"][0] == 0 and py["envelope"][32] > 0.25  # silent start, loud middle
