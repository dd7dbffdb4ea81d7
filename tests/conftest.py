"""Shared pytest configuration: markers, and `load_pack` to import this repo as a ComfyUI custom-node package."""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACK_NAME = "hyavatar_pack"  # any name: ComfyUI itself imports the pack under its folder path


def pytest_configure(config):
    config.addinivalue_line("markers", "comfy: needs a real ComfyUI checkout (set COMFYUI_PATH); skipped otherwise")
    config.addinivalue_line("markers", "slow: takes more than a few seconds on CPU")


def load_pack(submodule: str = ""):
    """Import `nodes.<submodule>` of this repo with relative imports working, without running the root
    __init__ (which only ComfyUI needs). Returns the module."""
    if PACK_NAME not in sys.modules:
        pkg = types.ModuleType(PACK_NAME)
        pkg.__path__ = [str(REPO)]
        sys.modules[PACK_NAME] = pkg
    return importlib.import_module(f"{PACK_NAME}.{submodule}" if submodule else PACK_NAME)
