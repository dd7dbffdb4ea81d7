"""Shared pytest configuration: markers, and `load_pack` to import this repo as a ComfyUI custom-node package."""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
import types
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACK_NAME = "hyavatar_pack"  # any name: ComfyUI itself imports the pack under its folder path


def pytest_configure(config):
    config.addinivalue_line("markers", "comfy: needs a real ComfyUI checkout (set COMFYUI_PATH); skipped otherwise")
    config.addinivalue_line("markers", "slow: takes more than a few seconds on CPU")


# Modules ComfyUI's server imports at start-up (its requirements.txt): a Python without them cannot run ComfyUI.
COMFYUI_MODULES = ("aiohttp", "sqlalchemy", "alembic", "yaml", "torchsde", "scipy", "psutil", "PIL")


def comfy_python_problem() -> str | None:
    """Why the real-ComfyUI tests cannot run here, or None. With COMFYUI_PATH set and COMFYUI_PYTHON not, they run
    ComfyUI in this Python, which then needs ComfyUI's requirements; say so once instead of dozens of import errors."""
    if not os.environ.get("COMFYUI_PATH") or os.environ.get("COMFYUI_PYTHON"):
        return None
    missing = [m for m in COMFYUI_MODULES if importlib.util.find_spec(m) is None]
    if not missing:
        return None
    return (f"COMFYUI_PATH is set but COMFYUI_PYTHON is not, so the real-ComfyUI tests would run ComfyUI in this "
            f"Python ({sys.executable}), which lacks ComfyUI's requirements (no module {', '.join(missing)}): set "
            f"COMFYUI_PYTHON to the Python that runs ComfyUI, e.g. COMFYUI_PYTHON=/path/to/ComfyUI/venv/bin/python")


def pytest_report_header(config):
    problem = comfy_python_problem()
    return [f"real-ComfyUI tests skipped: {problem}"] if problem else []


def _fastest_first(items) -> None:
    """Under mutmut (scripts/mutation.sh: MUTANT_UNDER_TEST set, run in its mutants/ folder): a mutant's run stops
    at the first failing test, so run the quickest test files first and the quickest tests of each first."""
    try:
        durations = json.loads(Path("mutmut-stats.json").read_text())["duration_by_test"]
    except (OSError, ValueError, KeyError):
        return
    per_file: dict[str, float] = {}
    for item in items:
        per_file[item.nodeid.split("::")[0]] = per_file.get(item.nodeid.split("::")[0], 0.0) + durations.get(
            item.nodeid, 0.0)
    items.sort(key=lambda it: (per_file[it.nodeid.split("::")[0]], durations.get(it.nodeid, 0.0)))


_ran_by_file: dict[str, list[str]] = {}


def pytest_runtest_logfinish(nodeid, location):
    """Under mutmut's coverage pass (MUTANT_UNDER_TEST=stats), the functions that spawned worker processes ran
    (reported by scripts/mutation.py's sitecustomize when they exit) count as covered by every test of the file
    that ran so far: a pool started by a module fixture serves several tests and exits after the last."""
    folder = os.environ.get("MUTATION_CHILD_HITS")
    if os.environ.get("MUTANT_UNDER_TEST") != "stats" or not folder:
        return
    from mutmut.state import state
    ran = _ran_by_file.setdefault(nodeid.split("::")[0], [])
    ran.append(nodeid)
    for report in Path(folder).glob("*.json"):
        for name in json.loads(report.read_text()):
            state().tests_by_mangled_function_name[name].update(ran)
        report.unlink()


def pytest_collection_modifyitems(config, items):
    if os.environ.get("MUTANT_UNDER_TEST"):
        _fastest_first(items)
    problem = comfy_python_problem()
    if problem:
        skip = pytest.mark.skip(reason=problem)
        for item in items:
            if item.get_closest_marker("comfy"):
                item.add_marker(skip)


def load_pack(submodule: str = ""):
    """Import `nodes.<submodule>` of this repo with relative imports working, without running the root
    __init__ (which only ComfyUI needs). Returns the module."""
    if PACK_NAME not in sys.modules:
        pkg = types.ModuleType(PACK_NAME)
        pkg.__path__ = [str(REPO)]
        sys.modules[PACK_NAME] = pkg
    return importlib.import_module(f"{PACK_NAME}.{submodule}" if submodule else PACK_NAME)
