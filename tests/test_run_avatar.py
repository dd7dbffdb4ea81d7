"""scripts/run_avatar.py without ComfyUI: the wrong Python is named with the one to use, missing-model texts carry
the folder layout and the download page, and the smoke graph is the small one."""

from __future__ import annotations

import subprocess
import sys
import venv

import pytest
from conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO))
from avatar_core import model_files  # noqa: E402

RUN = REPO / "scripts" / "run_avatar.py"


@pytest.mark.parametrize("mode", [["--smoke"], ["--image", "IMG", "--audio", "IMG"]])
def test_a_python_without_torch_is_told_which_python_to_use(tmp_path, mode):
    env_dir = tmp_path / "bare"
    venv.create(env_dir, with_pip=False)  # a Python with nothing installed
    bare = env_dir / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")
    comfy = tmp_path / "ComfyUI"
    comfy.mkdir()
    (comfy / "main.py").write_text("")
    (tmp_path / "face.png").write_bytes(b"x")
    args = [a.replace("IMG", str(tmp_path / "face.png")) for a in mode]
    proc = subprocess.run([str(bare), str(RUN), *args], capture_output=True, text=True, timeout=120,
                          env={"COMFYUI_PATH": str(comfy), "PATH": "/usr/bin:/bin"})
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr
    assert f"{bare} cannot run ComfyUI with this pack (missing: torch" in proc.stderr, proc.stderr
    assert "COMFYUI_PYTHON=" in proc.stderr and "Python that runs ComfyUI" in proc.stderr


def test_missing_model_text_has_layout_and_source_for_every_file():
    for known in model_files.ALL:
        text = model_files.describe(known.name, known.folder)
        assert f"put it in ComfyUI/models/{known.folder}/" in text and "layout: models/" in text
        assert known.url in text and known.url.startswith("https://")
    assert "config.json" in model_files.describe(model_files.WHISPER.name, "audio_encoders")
    assert "buffalo_l/det_10g.onnx" in model_files.describe("buffalo_l", "insightface/models")
    assert "unknown.safetensors -> put it in ComfyUI/models/vae/" in model_files.describe("unknown.safetensors", "vae")


def test_smoke_graph_uses_a_small_window():
    import run_avatar
    prompt = {"1": {"class_type": "AvatarTextEncode", "inputs": {}}, "2": {"class_type": "AvatarFaceMasks", "inputs": {}},
              "3": {"class_type": "AvatarModelLoader", "inputs": {}}, "4": {"class_type": "AvatarWhisperLoader", "inputs": {}},
              "5": {"class_type": "VAELoader", "inputs": {}}, "6": {"class_type": "AvatarSampler", "inputs": {}},
              "7": {"class_type": "DualCLIPLoader", "inputs": {}}}
    files = {"conditioning": "c", "dit": "d", "whisper": "w", "vae": "v"}
    out = run_avatar.smoke_graph(prompt, files)
    assert "7" not in out and out["1"]["class_type"] == "AvatarConditioningLoad"
    window = out[out["6"]["inputs"]["long_video"][0]]
    assert window == {"class_type": "AvatarLongVideo", "inputs": {"window": 5, "stride": 2}}
    frames = round(run_avatar.SMOKE_SECONDS * 25)
    assert frames <= 4 * run_avatar.SMOKE_WINDOW - 3  # the whole clip fits one window


# ---------------------------------------------------------------- nothing overwritten
def _args(tmp_path, *extra):
    import run_avatar
    (tmp_path / "mine").mkdir(exist_ok=True)
    (tmp_path / "mine" / "face.png").write_bytes(b"USER IMAGE")
    (tmp_path / "mine" / "speech.wav").write_bytes(b"USER SPEECH")
    return run_avatar.parse_args(["--image", str(tmp_path / "mine" / "face.png"),
                                  "--audio", str(tmp_path / "mine" / "speech.wav"), *extra])


def test_inputs_never_replace_a_file_in_comfyui_input_and_only_the_copies_are_removed(tmp_path):
    import run_avatar
    base = tmp_path / "ComfyUI"
    (base / "input").mkdir(parents=True)
    (base / "input" / "speech.wav").write_bytes(b"EXAMPLE SPEECH")  # what four templates load
    (base / "input" / "face.png").write_bytes(b"SOMEONE ELSE")
    before = {p.name: p.read_bytes() for p in (base / "input").iterdir()}
    created: list = []
    names = run_avatar.copy_inputs(_args(tmp_path), base, created)
    assert (base / "input" / names["audio"]).read_bytes() == b"USER SPEECH"
    assert (base / "input" / names["image"]).read_bytes() == b"USER IMAGE"
    assert {p.name: p.read_bytes() for p in (base / "input").iterdir() if p not in created} == before
    run_avatar.remove_created(created)
    assert {p.name: p.read_bytes() for p in (base / "input").iterdir()} == before, "clean-up removed a user file"
    # a file already in ComfyUI/input is used where it is, and never removed
    args = run_avatar.parse_args(["--image", str(base / "input" / "face.png"), "--audio", str(base / "input" / "speech.wav")])
    created = []
    assert run_avatar.copy_inputs(args, base, created) == {"image": "face.png", "audio": "speech.wav"} and created == []


def test_out_never_overwrites_an_existing_file(tmp_path):
    import run_avatar
    (tmp_path / "old.mp4").write_bytes(b"OLD")
    with pytest.raises(SystemExit, match=r"old\.mp4 already exists and is never overwritten.*--overwrite"):
        _args(tmp_path, "--out", str(tmp_path / "old.mp4"))
    with pytest.raises(SystemExit, match=r"is a folder: give a file name"):
        _args(tmp_path, "--out", str(tmp_path))
    assert _args(tmp_path, "--out", str(tmp_path / "old.mp4"), "--overwrite").overwrite
    made = tmp_path / "made.mp4"
    made.write_bytes(b"NEW")
    assert run_avatar.place_output(made, tmp_path / "old.mp4", overwrite=False) == made  # appeared meanwhile: kept
    assert (tmp_path / "old.mp4").read_bytes() == b"OLD" and made.read_bytes() == b"NEW"
    assert run_avatar.place_output(made, tmp_path / "sub" / "new.mp4", overwrite=False) == tmp_path / "sub" / "new.mp4"
    assert (tmp_path / "sub" / "new.mp4").read_bytes() == b"NEW" and not made.exists()
    made.write_bytes(b"NEWER")
    assert run_avatar.place_output(made, tmp_path / "old.mp4", overwrite=True) == tmp_path / "old.mp4"
    assert (tmp_path / "old.mp4").read_bytes() == b"NEWER"


def test_the_smoke_video_never_replaces_an_earlier_one(tmp_path, monkeypatch):
    import run_avatar
    monkeypatch.setattr(run_avatar.tempfile, "gettempdir", lambda: str(tmp_path))
    args = run_avatar.parse_args(["--smoke"])
    assert run_avatar.default_out(args, tmp_path / "x.mp4") == tmp_path / "hyavatar_smoke.mp4"
    (tmp_path / "hyavatar_smoke.mp4").write_bytes(b"earlier")
    assert run_avatar.default_out(args, tmp_path / "x.mp4") == tmp_path / "hyavatar_smoke_00001.mp4"


def test_smoke_graph_encodes_the_reference_with_comfyuis_encode():
    """The smoke VAE (TAEHV) has no posterior: the official reference encode would refuse it."""
    import run_avatar
    prompt = {"1": {"class_type": "AvatarTextEncode", "inputs": {}}, "2": {"class_type": "AvatarFaceMasks", "inputs": {}},
              "3": {"class_type": "AvatarModelLoader", "inputs": {}}, "4": {"class_type": "AvatarWhisperLoader", "inputs": {}},
              "5": {"class_type": "VAELoader", "inputs": {}},
              "6": {"class_type": "AvatarSampler", "inputs": {"reference_encode": "official"}}}
    out = run_avatar.smoke_graph(prompt, {"conditioning": "c", "dit": "d", "whisper": "w", "vae": "v"})
    assert out["6"]["inputs"]["reference_encode"] == "comfyui"
