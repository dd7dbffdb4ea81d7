"""Avatar Text Encode through ComfyUI's own LLaMA, CLIP-vision and tokenizer classes (COMFYUI_PATH): the fixtures'
tiny official LLaVA gives the official 831 states (within 1e-5, fp32, pads included) and mask (exact)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from avatar_core.parity.tokenizer import TokenizerUnavailable, write_llava_tokenizer

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(os.environ.get("HYAVATAR_SHARED", REPO.parent / "shared")) / "fixtures" / "text"
COMFYUI_PATH = os.environ.get("COMFYUI_PATH")
pytestmark = [pytest.mark.comfy, pytest.mark.skipif(
    not COMFYUI_PATH, reason="set COMFYUI_PATH to a ComfyUI checkout (and COMFYUI_PYTHON to its Python) to run"),
    pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"text fixtures not found at {FIXTURES}")]


def test_text_encode_node_matches_the_official_states_with_comfyui_classes(tmp_path):
    # ComfyUI's llama tokenizer.json may be absent (it is in this snapshot): ComfyUI's own BPE class reads the
    # rebuilt one from a temp dir; ComfyUI's folder is never modified.
    try:
        write_llava_tokenizer(tmp_path / "tok", json.loads((FIXTURES / "tokenizer_recipe.json").read_text())
                              ["inner_file_sha256"])
    except TokenizerUnavailable as e:
        pytest.skip(str(e))
    python = os.environ.get("COMFYUI_PYTHON", sys.executable)
    proc = subprocess.run([python, str(REPO / "tests" / "comfy_text_check.py"), COMFYUI_PATH, str(REPO),
                           str(FIXTURES), str(tmp_path / "tok")], capture_output=True, text=True, timeout=900,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    errors = rows.pop()["errors"]
    assert "clip_vision and image not connected" in errors["old_inputs"] and "Load CLIP Vision" in errors["old_inputs"]
    assert errors["too_long"].startswith("prompt too long") and "cut about" in errors["too_long"]
    cases = {p.stem for p in FIXTURES.glob("case_*.json")}
    assert {r["case"] for r in rows} == cases and len(rows) >= len(cases)
    for r in rows:
        where = f"{r['case']}/{r['prompt']}"
        assert r["tokens_equal"], f"{where}: ComfyUI's tokenizer gives other tokens"
        assert r["shape"] == [1, 831, 32] and r["pooled_shape"][0] == 1, where
        assert r["allclose"] and r["max_abs"] <= 1e-5, f"{where}: states differ by {r['max_abs']}"
        assert r["mask_equal"] and r["neg_allclose"], where
