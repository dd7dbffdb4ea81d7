"""The four-speaker template in a real ComfyUI (COMFYUI_PATH) with tiny random weights: as shipped (its example
inputs, four tracks, its AudioMerge soundtrack) but the models swapped for the smoke ones (scripts/run_avatar.py
smoke_graph) and, since there is no detector model in the smoke set, one drawn mask per person; then with listeners
(an unconnected audio in the middle, none for the last character)."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest
from test_workflows import FOLDER
from workflow_schema import REPO

COMFYUI_PATH = os.environ.get("COMFYUI_PATH")
pytestmark = [pytest.mark.comfy, pytest.mark.slow, pytest.mark.skipif(
    not COMFYUI_PATH, reason="set COMFYUI_PATH to a ComfyUI checkout (and COMFYUI_PYTHON to its Python) to run")]
sys.path.insert(0, str(REPO / "scripts"))
COLUMN = 192  # four_people.jpg: four 192x384 columns, one person each (scripts/make_example_inputs.py)


@pytest.fixture(scope="module")
def comfy(tmp_path_factory):
    import comfy_headless as ch
    from PIL import Image
    base = tmp_path_factory.mktemp("comfy_four")
    ch.prepare_base(base)
    written = ch.write_smoke_assets(base, COMFYUI_PATH)
    for k in range(4):  # each person's head and shoulders, no overlap
        mask = np.zeros((384, 768), np.uint8)
        mask[0:220, COLUMN * k + 16:COLUMN * (k + 1) - 16] = 255
        Image.fromarray(mask).save(base / "input" / f"four_people_mask_{k}.png")
    server = ch.Server(COMFYUI_PATH, base, python=ch.env_python())
    try:
        server.wait_ready()
        yield server, base, written["models"], server.get("/object_info")
    finally:
        server.stop()


def _smoke_prompt(info: dict, files: dict) -> dict:
    import run_avatar
    import ui_to_api
    prompt = run_avatar.smoke_graph(ui_to_api.convert(json.loads((FOLDER / "avatar_four_speakers.json").read_text()),
                                                      info), files)
    masks_id = next(k for k, n in prompt.items() if n["class_type"] == "AvatarFaceMasks")
    for k in range(4):
        prompt[f"mask_{k}"] = {"class_type": "LoadImageMask", "inputs": {"image": f"four_people_mask_{k}.png",
                                                                          "channel": "red"}}
        prompt[masks_id]["inputs"][f"masks.mask_{k}"] = [f"mask_{k}", 0]
    run_avatar.first(prompt, "AvatarSampler")["inputs"].update(steps=2, image_size=128)
    return prompt


def _video(entry: dict, base) -> tuple[int, list[str], tuple[int, int]]:
    import av
    import comfy_headless as ch
    videos = [p for p in ch.output_files(entry, base) if p.suffix == ".mp4"]
    assert len(videos) == 1
    with av.open(str(videos[0])) as c:
        v = c.streams.video[0]
        return v.frames, sorted(s.type for s in c.streams), (v.codec_context.width, v.codec_context.height)


def test_the_four_speaker_template_renders_every_speaker_with_tiny_weights(comfy):
    server, base, files, info = comfy
    prompt = _smoke_prompt(info, files)
    encode = run_encode(prompt)
    assert [encode["inputs"][f"audio.audio_{k}"][0] for k in range(4)] and encode["inputs"]["start_offsets"] == "0, 0, 0, 0"
    frames, streams, size = _video(server.run(prompt, timeout=900), base)
    assert streams == ["audio", "video"] and size == (192, 128)  # 2:1 at 128: the official area cap gives 192x128
    assert frames == 164320 // 640  # the tracks' 10.27 s at 25 fps, floor as officially


def test_listeners_render_a_gap_and_a_trailing_listener(comfy):
    server, base, files, info = comfy
    prompt = _smoke_prompt(info, files)
    encode = run_encode(prompt)
    del encode["inputs"]["audio.audio_1"], encode["inputs"]["audio.audio_3"]  # characters 2 and 4 listen
    encode["inputs"]["duration"] = 2.0
    frames, _, _ = _video(server.run(prompt, timeout=900), base)
    assert frames == 50
    assert "Traceback" not in server.log_tail(20000)


def run_encode(prompt: dict) -> dict:
    return next(n for n in prompt.values() if n["class_type"] == "AvatarAudioEncode")


def test_nobody_speaking_without_a_duration_is_refused_naming_the_fix(comfy):
    server, _, files, info = comfy
    prompt = _smoke_prompt(info, files)
    encode = run_encode(prompt)
    for k in range(4):
        del encode["inputs"][f"audio.audio_{k}"]
    with pytest.raises(RuntimeError, match=r"no audio connected.*set duration for a video where every character listens"):
        server.run(prompt, timeout=300)
