"""Packaging of the node pack: dependency lists, registry metadata, the onnxruntime install rule."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import tomllib

REPO = Path(__file__).resolve().parents[1]


def requirement_lines() -> list[str]:
    lines = (REPO / "requirements.txt").read_text().splitlines()
    return [ln.split("#")[0].strip() for ln in lines if ln.split("#")[0].strip()]


def test_requirements_are_loose_and_never_torch_or_onnxruntime():
    reqs = requirement_lines()
    assert reqs, "requirements.txt lists nothing"
    for req in reqs:
        name = re.split(r"[<>=!~;\[ ]", req)[0].lower()
        assert name not in {"torch", "torchvision", "torchaudio"}, f"{req}: ComfyUI owns torch"
        assert not name.startswith("onnxruntime"), f"{req}: onnxruntime flavours are chosen by install.py"
        assert name != "insightface", f"{req}: insightface would pull plain onnxruntime; install.py adds it --no-deps"
        assert "==" not in req and "<" not in req, f"{req}: keep bounds loose (lower bounds only)"


def test_pyproject_matches_requirements_and_has_registry_metadata():
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert meta["project"]["dependencies"] == requirement_lines()
    assert meta["project"]["name"] and meta["project"]["version"]
    assert meta["project"]["license"] == {"file": "LICENSE"}
    assert "Apache License" in (REPO / "LICENSE").read_text()[:200]
    assert "TENCENT HUNYUAN COMMUNITY LICENSE" in (REPO / "NOTICE").read_text()
    assert "DisplayName" in meta["tool"]["comfy"]


@pytest.fixture
def install_module():
    spec = importlib.util.spec_from_file_location("pack_install", REPO / "install.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize(
    "present, cuda, expected",
    [
        ((), False, ["onnxruntime"]),
        ((), True, ["onnxruntime-gpu"]),
        (("onnxruntime-gpu",), False, []),   # an existing flavour is kept, never a second one added
        (("onnxruntime",), True, []),
    ],
)
def test_install_py_adds_at_most_one_onnxruntime_flavour(install_module, monkeypatch, present, cuda, expected):
    calls: list[tuple[str, ...]] = []
    monkeypatch.setattr(install_module, "installed", lambda name: name in present or name not in install_module.FLAVOURS)
    monkeypatch.setattr(install_module, "cuda_available", lambda: cuda)
    monkeypatch.setattr(install_module.importlib.util, "find_spec", lambda name: object())
    monkeypatch.setattr(install_module, "pip_install", lambda *a: calls.append(a))
    assert install_module.main() == 0
    assert [a[-1] for a in calls] == expected


def test_install_py_installs_insightface_without_dependencies(install_module, monkeypatch):
    calls: list[tuple[str, ...]] = []
    monkeypatch.setattr(install_module, "installed", lambda name: name == "onnxruntime")
    monkeypatch.setattr(install_module.importlib.util, "find_spec", lambda name: object())
    monkeypatch.setattr(install_module, "pip_install", lambda *a: calls.append(a))
    install_module.main()
    # insightface without its dependencies (it would pull plain onnxruntime), then its other needs explicitly
    assert calls == [("--no-deps", "insightface"), install_module.INSIGHTFACE_NEEDS]
    assert not any(c.startswith("onnxruntime") or c.startswith("opencv") for c in install_module.INSIGHTFACE_NEEDS)


def test_install_py_installs_the_opencv_build_insightface_declares(install_module, monkeypatch):
    """One OpenCV build, the one insightface's metadata names, so that `pip check` is clean."""
    calls: list[tuple[str, ...]] = []
    monkeypatch.setattr(install_module, "installed", lambda name: name != "opencv-python")
    monkeypatch.setattr(install_module.importlib.util, "find_spec", lambda name: None)  # no cv2 at all
    monkeypatch.setattr(install_module, "pip_install", lambda *a: calls.append(a))
    install_module.main()
    assert calls == [("opencv-python",)]
    import importlib.metadata as md
    try:
        declared = md.requires("insightface") or []
    except md.PackageNotFoundError:
        pytest.skip("insightface not installed here")
    assert any(r.split(";")[0].strip() == "opencv-python" for r in declared)
