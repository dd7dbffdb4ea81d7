"""The example workflows (example_workflows/*.json, UI format) against our node schemas and the native ones:
parse, known node types, consistent links with matching types, widget values in schema order. No ComfyUI."""

from __future__ import annotations

import json
import numbers

import pytest
from workflow_schema import NATIVE, REPO, our_schemas, overlaps

FOLDER = REPO / "example_workflows"
EXPECTED = ["avatar_emotion_reference", "avatar_four_speakers", "avatar_full_body", "avatar_long_clip",
            "avatar_single_portrait", "avatar_two_character_dialogue"]
OURS = our_schemas()
SCHEMAS = {**NATIVE, **OURS}
MODEL_WIDGETS = {"AvatarModelLoader": "ckpt_name", "AvatarWhisperLoader": "whisper_name", "VAELoader": "vae_name",
                 "DualCLIPLoader": ("clip_name1", "clip_name2"), "CLIPVisionLoader": "clip_name",
                 "AvatarInsightFaceLoader": "model_name"}
TITLE_HEIGHT = 30  # LiteGraph.NODE_TITLE_HEIGHT: the title bar is drawn above a node's pos


def load(name: str) -> dict:
    return json.loads((FOLDER / f"{name}.json").read_text())


def widgets(node: dict) -> dict:
    names = SCHEMAS[node["type"]].widget_names()
    return {n: v for n, v in zip(names, node.get("widgets_values", [])) if n is not None}


def test_one_folder_holds_exactly_the_example_workflows():
    assert sorted(p.stem for p in FOLDER.glob("*.json")) == EXPECTED
    # ComfyUI's Templates browser also scans workflows/, examples/, ...: a second folder would list them twice.
    for other in ("workflows", "example", "examples", "workflow"):
        assert not list((REPO / other).glob("*.json")), f"{other}/ would duplicate the templates"


@pytest.mark.parametrize("name", EXPECTED)
def test_nodes_are_ours_or_known_native(name):
    wf = load(name)
    assert wf["nodes"] and wf["version"] and isinstance(wf["links"], list)
    for node in wf["nodes"]:
        assert node["type"] in SCHEMAS, f"{name}: node {node['id']} has unknown type {node['type']}"
    assert {"AvatarModelLoader", "AvatarSampler", "SaveVideo", "Note"} <= {n["type"] for n in wf["nodes"]}


@pytest.mark.parametrize("name", EXPECTED)
def test_links_are_consistent_and_typed(name):
    wf = load(name)
    nodes = {n["id"]: n for n in wf["nodes"]}
    for link_id, src, src_slot, dst, dst_slot, kind in wf["links"]:
        out = nodes[src]["outputs"][src_slot]
        inp = nodes[dst]["inputs"][dst_slot]
        assert link_id in out["links"] and inp["link"] == link_id, f"{name}: link {link_id} not mirrored"
        assert SCHEMAS[nodes[src]["type"]].outputs[src_slot] == out["type"] == kind
        declared = SCHEMAS[nodes[dst]["type"]].socket_types()
        assert declared.get(inp["name"]) == kind, f"{name}: {nodes[dst]['type']}.{inp['name']} takes " \
                                                  f"{declared.get(inp['name'])}, linked {kind}"
    for node in wf["nodes"]:  # every required socket of our nodes is connected
        if node["type"] in OURS:
            linked = {i["name"] for i in node.get("inputs", []) if i.get("link") is not None}
            for inp in OURS[node["type"]].inputs:
                if not inp.widget and not inp.optional:
                    assert inp.name in linked, f"{name}: {node['type']}.{inp.name} is not connected"


@pytest.mark.parametrize("name", EXPECTED)
def test_widget_values_follow_the_schemas(name):
    for node in load(name)["nodes"]:
        schema = SCHEMAS[node["type"]]
        values = node.get("widgets_values", [])
        assert len(values) == len(schema.widget_names()), f"{name}: {node['type']} has {len(values)} widget values"
        if node["type"] not in OURS:
            continue
        for inp in schema.inputs:
            if not inp.widget:
                continue
            v, kw = widgets(node)[inp.name], inp.kwargs
            expected = {"INT": int, "FLOAT": numbers.Real, "STRING": str, "BOOLEAN": bool, "COMBO": str}[inp.type]
            assert isinstance(v, expected) and not (inp.type != "BOOLEAN" and isinstance(v, bool)), \
                f"{name}: {node['type']}.{inp.name} = {v!r}"
            if kw.get("min") is not None and kw.get("max") is not None:
                assert kw["min"] <= v <= kw["max"], f"{name}: {node['type']}.{inp.name} = {v} out of range"
            if isinstance(kw.get("options"), list):
                assert v in kw["options"], f"{name}: {node['type']}.{inp.name} = {v!r}"


@pytest.mark.parametrize("name", EXPECTED)
def test_note_names_every_model_file_and_its_folder(name):
    wf = load(name)
    note = "\n".join(n["widgets_values"][0] for n in wf["nodes"] if n["type"] == "Note")
    for node in wf["nodes"]:
        for widget in (lambda w: w if isinstance(w, tuple) else (w,))(MODEL_WIDGETS.get(node["type"], ())):
            assert widgets(node)[widget] in note, f"{name}: the Note does not name {widgets(node)[widget]}"
    for folder in ("diffusion_models", "audio_encoders", "vae", "text_encoders", "clip_vision", "face_detection",
                   "insightface"):
        assert f"models/{folder}/" in note


def _linked(wf: dict, kind: str, input_name: str) -> list[dict]:
    """Nodes feeding input `input_name` of nodes of type `kind`."""
    nodes = {n["id"]: n for n in wf["nodes"]}
    return [nodes[src] for _, src, _, dst, slot, _ in wf["links"]
            if nodes[dst]["type"] == kind and nodes[dst]["inputs"][slot]["name"] == input_name]


def test_each_workflow_shows_its_feature():
    dialogue = load("avatar_two_character_dialogue")
    assert [n["type"] for n in _linked(dialogue, "AvatarAudioEncode", "audio.audio_0")] == ["LoadAudio"]
    assert [n["type"] for n in _linked(dialogue, "AvatarAudioEncode", "audio.audio_1")] == ["LoadAudio"]
    assert _linked(dialogue, "AvatarFaceMasks", "masks.mask_0") and _linked(dialogue, "AvatarFaceMasks", "masks.mask_1")
    assert widgets(next(n for n in dialogue["nodes"] if n["type"] == "AvatarFaceMasks"))["characters"] == 2
    assert [n["type"] for n in _linked(load("avatar_long_clip"), "AvatarSampler", "long_video")] == ["AvatarLongVideo"]
    four = load("avatar_four_speakers")
    assert widgets(next(n for n in four["nodes"] if n["type"] == "AvatarFaceMasks"))["characters"] == 4
    assert [widgets(n)["audio"] for k in range(4) for n in _linked(four, "AvatarAudioEncode", f"audio.audio_{k}")] == \
        [f"speaker_{k}.flac" for k in (1, 2, 3, 4)]
    assert [n["type"] for n in _linked(four, "AvatarFaceMasks", "face_detector")]  # faces numbered by the detector
    emotion = load("avatar_emotion_reference")
    assert [n["type"] for n in _linked(emotion, "AvatarSampler", "emotion")] == ["AvatarEmotionEncode"]
    for name in EXPECTED:  # the video is trimmed to the audio and keeps it
        wf = load(name)
        assert [n["type"] for n in _linked(wf, "ImageFromBatch", "length")] == ["AvatarAudioEncode"]
        assert _linked(wf, "CreateVideo", "audio")


@pytest.mark.parametrize("name", EXPECTED)
def test_model_loaders_carry_the_frontends_model_metadata(name):
    """properties.models (name, url, directory) on every loader: the Missing Models panel shows the folder and a
    download link for each file the loader names (ComfyUI's own templates do the same)."""
    from avatar_core import model_files
    for node in load(name)["nodes"]:
        if node["type"] not in MODEL_WIDGETS:
            continue
        wanted = [widgets(node)[w] for w in (lambda w: w if isinstance(w, tuple) else (w,))(MODEL_WIDGETS[node["type"]])]
        entries = {m["name"]: m for m in node["properties"].get("models", [])}
        for file in wanted:
            known = model_files.BY_NAME[file]
            assert entries.get(file) == {"name": file, "url": known.url, "directory": known.folder}, f"{name}: {file}"
            # downloadable, never a pickle (detface.pt is TorchScript, loaded with torch.jit.load)
            assert known.url.startswith("https://huggingface.co/")
            assert file.endswith(".safetensors") or file == model_files.DETFACE.name


def test_llava_is_fp16_by_default():
    for name in EXPECTED:
        clip = next(n for n in load(name)["nodes"] if n["type"] == "DualCLIPLoader")
        assert widgets(clip)["clip_name2"] == "llava_llama3_fp16.safetensors", name


@pytest.mark.parametrize("name", EXPECTED)
def test_thumbnail_and_example_inputs_are_shipped(name):
    from PIL import Image
    with Image.open(FOLDER / f"{name}.jpg") as thumb:  # the Templates browser asks for <name>.jpg
        assert thumb.format == "JPEG" and thumb.width >= 256
    wf = load(name)
    assert wf["extra"]["info"]["description"]
    for node in wf["nodes"]:
        if node["type"] in ("LoadImage", "LoadAudio", "LoadImageMask"):
            assert (REPO / "example_inputs" / node["widgets_values"][0]).is_file(), f"{name}: {node['widgets_values'][0]}"
    licences = (REPO / "example_inputs" / "README.md").read_text()
    for f in (REPO / "example_inputs").iterdir():
        assert f.name == "README.md" or f"`{f.name}`" in licences, f"{f.name} has no licence line"


def test_overlap_check_sees_an_overlap():
    boxes = [{"type": "A", "title": "a", "rect": [0, 0, 100, 100]}, {"type": "B", "title": "b", "rect": [99, 50, 10, 10]},
             {"type": "C", "title": "c", "rect": [100, 0, 10, 10]}]
    assert overlaps(boxes) == ["A 'a' and B 'b'"]


@pytest.mark.parametrize("name", EXPECTED)
def test_saved_layout_has_no_overlapping_nodes(name):
    """As saved (pos = top-left of the body, the title bar above it); tests/test_frontend_templates.py checks
    the same in the real frontend after it opened the template."""
    boxes = [{"type": n["type"], "title": n.get("title", ""),
              "rect": [n["pos"][0], n["pos"][1] - TITLE_HEIGHT, n["size"][0], n["size"][1] + TITLE_HEIGHT]}
             for n in load(name)["nodes"]]
    assert overlaps(boxes) == []


@pytest.mark.parametrize("name", EXPECTED)
def test_templates_use_the_official_detector_and_detect_at_the_video_size(name):
    wf = load(name)
    faces = next(n for n in wf["nodes"] if n["type"] == "AvatarInsightFaceLoader")
    assert widgets(faces)["model_name"] == "detface.pt"
    sampler = next(n for n in wf["nodes"] if n["type"] == "AvatarSampler")
    masks = next(n for n in wf["nodes"] if n["type"] == "AvatarFaceMasks")
    assert widgets(masks)["image_size"] == widgets(sampler)["image_size"]
    description = wf["extra"]["info"]["description"]
    assert "\n" not in description and len(description) <= 100
    note = next(n for n in wf["nodes"] if n["type"] == "Note")
    assert note["widgets_values"][0].startswith(description + "\n")
