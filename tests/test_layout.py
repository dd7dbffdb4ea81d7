"""The README's test command works wherever the pack is: in ComfyUI/custom_nodes/<any name>/ under ComfyUI's
own pytest.ini and `tests` package (pytest must stop at the pack's configuration), and as a loose module."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

# ComfyUI 0.33's pytest.ini, verbatim: its rootdir, `pythonpath = .` and `tests` package are what used to hide ours.
COMFY_PYTEST_INI = """[pytest]
markers =
  inference: mark as inference test (deselect with '-m "not inference"')
  execution: mark as execution test (deselect with '-m "not execution"')
testpaths =
  tests
  tests-unit
addopts = -s
pythonpath = .
"""
SKIP = shutil.ignore_patterns(".git", "node_modules", "__pycache__", ".pytest_cache", "artifacts", "*.pyc")


def _comfy_tree(tmp: Path) -> Path:
    """tmp/ComfyUI with ComfyUI's pytest.ini and a `tests` package whose conftest fails if pytest reaches it."""
    comfy = tmp / "ComfyUI"
    (comfy / "tests").mkdir(parents=True)
    real = Path(os.environ.get("COMFYUI_PATH", "/nonexistent")) / "pytest.ini"
    (comfy / "pytest.ini").write_text(real.read_text() if real.is_file() else COMFY_PYTEST_INI)
    (comfy / "tests" / "__init__.py").write_text("")
    (comfy / "tests" / "conftest.py").write_text("raise RuntimeError('pytest used ComfyUI/tests/conftest.py')\n")
    (comfy / "tests" / "test_model.py").write_text("raise RuntimeError('pytest imported ComfyUI/tests')\n")
    return comfy


def _pytest(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    # the copies are not beside ../shared: point them at the same fixtures this checkout sees
    env = {**os.environ, "HYAVATAR_SHARED": os.environ.get("HYAVATAR_SHARED", str(REPO.parent / "shared"))}
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_suite_collects_inside_custom_nodes_under_comfyuis_pytest_ini(tmp_path):
    pack = _comfy_tree(tmp_path) / "custom_nodes" / "ComfyUI-HunyuanVideo-Avatar"
    shutil.copytree(REPO, pack, ignore=SKIP)
    here = _pytest(REPO, "tests", "--collect-only", "-q")
    there = _pytest(pack, "tests", "--collect-only", "-q")
    from_comfy = _pytest(pack.parents[1], str(pack / "tests"), "--collect-only", "-q")
    for proc in (here, there, from_comfy):
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    count = here.stdout.strip().splitlines()[-1]
    assert "tests collected" in count and there.stdout.strip().splitlines()[-1].split(" in ")[0] == count.split(" in ")[0]
    assert from_comfy.stdout.strip().splitlines()[-1].split(" in ")[0] == count.split(" in ")[0]
    # and tests that import the pack, `conftest`, `assets` and each other run there
    ran = _pytest(pack, "tests/test_perf_paths.py", "tests/test_nodes_convert.py", "-q", "-x")
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-2000:]


def test_root_init_is_harmless_as_a_loose_module():
    spec = importlib.util.spec_from_file_location("__init__", REPO / "__init__.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # no relative import attempted outside a package
    assert module.WEB_DIRECTORY == "./js" and not hasattr(module, "comfy_entrypoint")


def test_comfyui_path_without_comfyui_python_skips_the_real_comfyui_tests_saying_why(tmp_path):
    """COMFYUI_PATH set, COMFYUI_PYTHON not, and a test Python without ComfyUI's requirements: the real-ComfyUI tests
    skip with one reason naming COMFYUI_PYTHON (they used to fail on "No module named 'sqlalchemy'")."""
    comfy = tmp_path / "ComfyUI"
    comfy.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "COMFYUI_PYTHON"}
    # a module ComfyUI needs is hidden from this Python, whatever this Python has installed
    (tmp_path / "sitecustomize.py").write_text("import sys\nsys.modules['sqlalchemy'] = None\n")
    env.update(COMFYUI_PATH=str(comfy), PYTHONPATH=str(tmp_path))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rs",
                           "tests/test_lora_node.py"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout
    assert proc.returncode == 0 and "3 skipped" in out and "failed" not in out and "error" not in out, out[-3000:]
    assert "COMFYUI_PYTHON is not" in out and "COMFYUI_PYTHON=" in out, out[-3000:]
    assert re.search(r"lacks ComfyUI's requirements \(no module [a-zA-Z, ]*sqlalchemy", out), out[-3000:]
