"""The open registries in a real ComfyUI Python (COMFYUI_PATH / COMFYUI_PYTHON): an attention kernel and a solver
registered after the pack is imported are choices of the loader's `attention` and the sampler's `solver` inputs
(their schemas read the registries when they are built), described in the tooltips from their records."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
COMFYUI_PATH = os.environ.get("COMFYUI_PATH")
pytestmark = [pytest.mark.comfy, pytest.mark.skipif(
    not COMFYUI_PATH, reason="set COMFYUI_PATH to a ComfyUI checkout (and COMFYUI_PYTHON to its Python) to run")]

SCRIPT = textwrap.dedent("""
    import importlib, sys, types
    comfy_path, repo = sys.argv[1:3]
    sys.path[:0] = [comfy_path, repo]
    import comfy.cli_args
    comfy.cli_args.args.cpu = True
    pkg = types.ModuleType("hyavatar_pack"); pkg.__path__ = [repo]; sys.modules["hyavatar_pack"] = pkg
    loaders = importlib.import_module("hyavatar_pack.nodes.loaders")
    sampler = importlib.import_module("hyavatar_pack.nodes.sampler")
    attention = importlib.import_module("hyavatar_pack.avatar_core.model.attention")
    solvers = importlib.import_module("hyavatar_pack.avatar_core.sampling.solvers")

    def combo(node, name):
        return next(i for i in node.define_schema().inputs if i.id == name)

    assert "late_kernel" not in combo(loaders.AvatarModelLoader, "attention").options
    attention.register(attention.AttentionKernel("late_kernel", attention._sdpa, lambda q: True, exact=False,
                                                 note="a test kernel"))
    kernel = combo(loaders.AvatarModelLoader, "attention")
    assert "late_kernel" in kernel.options, kernel.options
    assert "late_kernel" in kernel.tooltip and "quantised" in kernel.tooltip, kernel.tooltip
    solver = combo(sampler.AvatarSampler, "solver")
    assert solver.options == ["euler", "dpmpp_2m"] and solver.default == "euler", solver.options
    assert "euler is the OFFICIAL one" in solver.tooltip and "dpmpp_2m: DPM-Solver++(2M)" in solver.tooltip
    solvers.register(solvers.Solver("late_solver", solvers.SOLVERS["euler"].step, note="a test solver"))
    solver = combo(sampler.AvatarSampler, "solver")
    assert "late_solver" in solver.options and "late_solver: a test solver" in solver.tooltip, solver.tooltip
    print("REGISTRIES_OK")
""")


def test_late_kernel_and_solver_are_node_choices(tmp_path):
    python = os.environ.get("COMFYUI_PYTHON", sys.executable)
    script = tmp_path / "check.py"
    script.write_text(SCRIPT)
    run = subprocess.run([python, str(script), COMFYUI_PATH, str(REPO)], capture_output=True, text=True, timeout=300)
    assert "REGISTRIES_OK" in run.stdout, run.stdout[-2000:] + run.stderr[-4000:]
