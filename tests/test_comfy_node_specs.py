"""In a real ComfyUI Python (COMFYUI_PATH / COMFYUI_PYTHON): every node number widget takes its min/max from its
spec, and bad inputs given to the nodes (NaN, kHz sample rates, 0..255 masks, huge images, ...) are refused with
InputError naming the input and the fix before any model is touched (tests/comfy_node_specs_check.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
COMFYUI_PATH = os.environ.get("COMFYUI_PATH")
pytestmark = [pytest.mark.comfy, pytest.mark.skipif(
    not COMFYUI_PATH, reason="set COMFYUI_PATH to a ComfyUI checkout (and COMFYUI_PYTHON to its Python) to run")]


def test_node_widgets_and_bad_inputs_follow_the_specs() -> None:
    python = os.environ.get("COMFYUI_PYTHON", sys.executable)
    run = subprocess.run([python, str(REPO / "tests" / "comfy_node_specs_check.py"), COMFYUI_PATH, str(REPO)],
                         capture_output=True, text=True, timeout=600)
    assert "NODE_SPECS_OK" in run.stdout, run.stdout[-3000:] + run.stderr[-5000:]
