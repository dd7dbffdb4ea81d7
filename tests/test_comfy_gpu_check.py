"""scripts/comfy_gpu_check.py in a real ComfyUI: every offload mode through ComfyUI's own memory management.

On a machine with an NVIDIA GPU this is the DynamicVRAM path (comfy-aimdo, ModelPatcherDynamic), which every
ComfyUI user on NVIDIA gets by default; without a GPU it runs ComfyUI with --cpu (the legacy ModelPatcher).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
COMFYUI_PATH = os.environ.get("COMFYUI_PATH")
pytestmark = [pytest.mark.comfy, pytest.mark.slow, pytest.mark.skipif(
    not COMFYUI_PATH, reason="set COMFYUI_PATH to a ComfyUI checkout (and COMFYUI_PYTHON to its Python) to run")]


def _has_cuda(python: str) -> bool:
    probe = "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"
    return subprocess.run([python, "-c", probe], capture_output=True).returncode == 0


def test_every_offload_mode_runs_cancels_and_agrees_under_comfy_memory_management(tmp_path):
    python = os.environ.get("COMFYUI_PYTHON", sys.executable)
    gpu = _has_cuda(python)
    cmd = [python, str(REPO / "scripts" / "comfy_gpu_check.py"), "--comfyui", COMFYUI_PATH, "--base", str(tmp_path),
           "--json", str(tmp_path / "result.json"), "--dtype", "bf16" if gpu else "fp32"] + ([] if gpu else ["--cpu"])
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200, cwd=tmp_path)
    print(proc.stdout[-3000:], proc.stderr[-3000:])
    result = json.loads((tmp_path / "result.json").read_text())
    modes = {m["offload"]: m for m in result["modes"]}
    assert set(modes) == {"none", "low_memory", "block_swap"}
    for name, m in modes.items():
        assert "error" not in m, f"{name}: {m['error']}"
        assert m["finite"], f"{name}: non-finite latents"
        assert m["max_abs_vs_first_mode"] < 1e-2, f"{name} differs from offload=none by {m['max_abs_vs_first_mode']}"
        assert m["decoded"][1] == 129  # one 33-latent window decodes to 129 frames
        assert m["interrupt"].startswith("stopped"), f"{name}: ComfyUI's interrupt did not stop the sampler"
        assert m["rerun_max_abs"] == 0, f"{name}: a run after a cancelled one differs by {m['rerun_max_abs']}"
        if gpu:
            assert m["alloc_after_unload_gib"] < 0.01, f"{name}: GPU memory left after unloading"
    if gpu:  # what ComfyUI itself enables on NVIDIA
        assert result["dynamic_vram"] and modes["none"]["patcher"] == "ModelPatcherDynamic"
    assert proc.returncode == 0 and result["summary"] == "ok"


NAN_VAE_SNIPPET = r"""
import sys, torch
sys.path[:0] = [sys.argv[1], sys.argv[2] + "/scripts"]
sys.argv = [sys.argv[0], "--cpu"]
import comfy.options; comfy.options.enable_args_parsing()
import smoke_assets
imp = smoke_assets._pack()
sampler = imp("hyavatar_pack.nodes.sampler")

class NanVAE:  # a VAE whose encoder overflows (an fp16 VAE can)
    def encode(self, frames):
        return torch.full((1, 16, 33, frames.shape[1] // 8, frames.shape[2] // 8), float("nan"))

class Model:  # the sampler stops before it touches the transformer
    model = None

Feats = imp("hyavatar_pack.nodes.convert").AudioFeatures

try:
    sampler.AvatarSampler.execute(Model(), [], [], torch.rand(1, 64, 64, 3), NanVAE(), Feats(torch.zeros(1, 40, 10, 5, 384), 25.0), image_size=64)
except ValueError as e:
    print("ERROR:", e)
"""


def test_a_vae_that_gives_nan_is_named_before_sampling():
    """A non-finite reference latent would make a black video after minutes of sampling: stop at once."""
    python = os.environ.get("COMFYUI_PYTHON", sys.executable)
    proc = subprocess.run([python, "-c", NAN_VAE_SNIPPET, COMFYUI_PATH, str(REPO)], capture_output=True, text=True,
                          timeout=300)
    assert "ERROR: vae: encoding the reference image gave NaN/inf" in proc.stdout, proc.stdout + proc.stderr[-2000:]
