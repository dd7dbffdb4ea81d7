"""The example workflows in a real ComfyUI (COMFYUI_PATH): listed by the Templates browser, converted to API
prompts against the live /object_info, and the README's run command (missing files named; --smoke renders)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from test_workflows import EXPECTED, FOLDER
from workflow_schema import NATIVE, REPO

COMFYUI_PATH = os.environ.get("COMFYUI_PATH")
pytestmark = [pytest.mark.comfy, pytest.mark.skipif(
    not COMFYUI_PATH, reason="set COMFYUI_PATH to a ComfyUI checkout (and COMFYUI_PYTHON to its Python) to run")]
sys.path.insert(0, str(REPO / "scripts"))
RUN = REPO / "scripts" / "run_avatar.py"


@pytest.fixture(scope="module")
def comfy(tmp_path_factory):
    import comfy_headless as ch
    base = tmp_path_factory.mktemp("comfy_wf")
    ch.prepare_base(base)
    server = ch.Server(COMFYUI_PATH, base, python=ch.env_python())
    try:
        server.wait_ready()
        yield server, base, server.get("/object_info")
    finally:
        server.stop()


def test_templates_browser_lists_and_serves_the_workflows(comfy):
    import comfy_headless as ch
    server, _, _ = comfy
    assert sorted(server.get("/workflow_templates")[ch.PACK_DIR_NAME]) == EXPECTED
    for name in EXPECTED:
        served = server.get(f"/api/workflow_templates/{ch.PACK_DIR_NAME}/{name}.json")
        assert served == json.loads((FOLDER / f"{name}.json").read_text())


def test_native_schemas_match_comfyui(comfy):
    info = comfy[2]
    for kind, schema in NATIVE.items():
        if kind == "Note":
            continue  # a frontend-only node
        declared = {**info[kind]["input"].get("required", {}), **info[kind]["input"].get("optional", {})}
        assert info[kind]["output"] == schema.outputs, kind
        for inp in schema.inputs:
            spec = declared[inp.name]
            got = "COMBO" if isinstance(spec[0], list) or spec[0] in ("COMBO", "COMFY_DYNAMICCOMBO_V3") else spec[0]
            assert got == inp.type, f"{kind}.{inp.name}: {spec[0]}"


@pytest.mark.parametrize("name", EXPECTED)
def test_workflow_converts_to_a_complete_api_prompt(comfy, name):
    import ui_to_api
    info = comfy[2]
    prompt = ui_to_api.convert(json.loads((FOLDER / f"{name}.json").read_text()), info)
    assert "AvatarSampler" in {n["class_type"] for n in prompt.values()}
    for node_id, node in prompt.items():
        kind = node["class_type"]
        assert kind in info, f"{name}: {kind} missing from /object_info"
        for required in ui_to_api.required_inputs(info, kind, node["inputs"]):
            assert required in node["inputs"], f"{name}: node {node_id} ({kind}) lacks {required}"
        for value in node["inputs"].values():
            if isinstance(value, list):
                assert value[0] in prompt and value[1] < len(info[prompt[value[0]]["class_type"]]["output"])


def _run(args: list[str], **env) -> subprocess.CompletedProcess:
    return subprocess.run([os.environ.get("COMFYUI_PYTHON", sys.executable), str(RUN), *args], capture_output=True,
                          text=True, timeout=900, env={**os.environ, **env})


def test_run_names_every_missing_model_file_and_folder(comfy, tmp_path):
    import comfy_headless as ch
    base = tmp_path / "base"
    ch.prepare_base(base)
    (tmp_path / "face.png").write_bytes(b"x")  # never read: the model check comes first
    (tmp_path / "speech.wav").write_bytes(b"x")
    proc = _run(["--image", str(tmp_path / "face.png"), "--audio", str(tmp_path / "speech.wav"), "--base", str(base),
                 "--cpu"])
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-3000:]
    for line in ("hunyuan_video_avatar_bf16.safetensors -> put it in ComfyUI/models/diffusion_models/",
                 "whisper-tiny/model.safetensors -> put it in ComfyUI/models/audio_encoders/",
                 "layout: models/audio_encoders/whisper-tiny/model.safetensors + audio_encoders/whisper-tiny/config.json",
                 "hunyuan_video_vae_bf16.safetensors -> put it in ComfyUI/models/vae/",
                 "clip_l.safetensors -> put it in ComfyUI/models/text_encoders/",
                 "llava_llama3_fp16.safetensors -> put it in ComfyUI/models/text_encoders/",
                 "llava_llama3_vision.safetensors -> put it in ComfyUI/models/clip_vision/",
                 "buffalo_l -> put it in ComfyUI/models/insightface/models/",
                 "layout: models/insightface/models/buffalo_l/det_10g.onnx",
                 "from: https://huggingface.co/Comfy-Org/HunyuanVideo_repackaged/resolve/main/split_files/text_encoders/"
                 "llava_llama3_fp16.safetensors",
                 "CONVERT the official mp_rank_00_model_states.pt"):
        assert line in proc.stderr, proc.stderr[-3000:]
    left = {p.name for p in (base / "input").iterdir()}
    assert "face.png" not in left and not [n for n in left if n.startswith("run_avatar_")], \
        f"input copies left behind: {left}"
    # The pack's example speech.wav (four templates load it) is there, itself: the user's same-named file was
    # copied under a name of its own, so it neither took the example's place nor took it away at clean-up.
    example = REPO / "example_inputs" / "speech.wav"
    assert (base / "input" / "speech.wav").read_bytes() == example.read_bytes()
    assert not (base / "comfyui.log").exists(), "the run left ComfyUI's log behind"


@pytest.mark.slow
def test_smoke_run_renders_an_mp4_with_audio_and_says_it_is_noise(tmp_path):
    import av
    out = tmp_path / "smoke.mp4"
    proc = _run(["--smoke", "--out", str(out)])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "the video is noise" in proc.stdout
    progress = [ln for ln in proc.stdout.splitlines() if ln.startswith("[")]  # "[ 12.3 s] ..." as it goes
    assert len(progress) >= 5 and any("ComfyUI is up" in ln for ln in progress), proc.stdout[-2000:]
    with av.open(str(out)) as c:
        assert sorted(s.type for s in c.streams) == ["audio", "video"]
        v = c.streams.video[0]
        assert (v.codec_context.width, v.codec_context.height) == (128, 128)  # 128 short side, sides multiples of 64
        assert v.frames == 15  # 0.6 s of smoke speech at 25 fps


def test_long_video_windows_keeps_the_old_shift_name(comfy):
    """The window step was renamed `shift` -> `stride` (the sampler's `shift` is the flow shift). UI workflows keep
    loading (widget values are positional) and old API prompts that still say `shift` run with their value."""
    import ui_to_api
    info = comfy[2]
    spec = info["AvatarLongVideo"]["input"]
    assert "stride" in spec["optional"] and spec["optional"]["shift"][1].get("forceInput")
    old_ui = {"nodes": [{"id": 1, "type": "AvatarLongVideo", "inputs": [], "outputs": [], "widgets_values": [33, 7],
                         "mode": 0}], "links": []}
    assert ui_to_api.convert(old_ui, info)["1"]["inputs"] == {"window": 33, "stride": 7}
    code = ("import sys; sys.path.insert(0, sys.argv[1]); sys.path.insert(0, sys.argv[2]); "
            "sys.argv = sys.argv[:1] + ['--cpu']; import comfy.options; comfy.options.enable_args_parsing(); "
            "from conftest import load_pack; n = load_pack('nodes.sampler').AvatarLongVideo; "
            "print(n.execute(window=33, shift=7).result[0].offset, n.execute(window=33, stride=4).result[0].offset, "
            "n.execute(window=33).result[0].offset)")
    proc = subprocess.run([os.environ.get("COMFYUI_PYTHON", sys.executable), "-c", code, COMFYUI_PATH,
                           str(REPO / "tests")], capture_output=True, text=True, timeout=300, cwd=COMFYUI_PATH)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split()[-3:] == ["7", "4", "10"]
