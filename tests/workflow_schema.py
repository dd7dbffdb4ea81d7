"""Node schemas for checking workflow files without ComfyUI: ours read from nodes/*.py source (AST), the
native ones we use written down from ComfyUI 0.33 (tests/test_comfy_workflows.py checks them against a real
ComfyUI's /object_info)."""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

from avatar_core.specs import concepts  # the specs node widgets read their ranges from (no torch)

REPO = Path(__file__).resolve().parents[1]
IO_TYPES = {"Int": "INT", "Float": "FLOAT", "String": "STRING", "Boolean": "BOOLEAN", "Combo": "COMBO",
            "Image": "IMAGE", "Mask": "MASK", "Audio": "AUDIO", "Vae": "VAE", "Clip": "CLIP",
            "ClipVision": "CLIP_VISION", "ClipVisionOutput": "CLIP_VISION_OUTPUT", "Conditioning": "CONDITIONING",
            "Latent": "LATENT"}
WIDGETS = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


@dataclass
class Input:
    name: str
    type: str
    optional: bool = False
    kwargs: dict = field(default_factory=dict)  # literal keyword arguments (min, max, options, default, ...)

    @property
    def widget(self) -> bool:  # a force_input value is a socket only
        return self.type in WIDGETS and not self.kwargs.get("force_input")


@dataclass
class NodeSchema:
    inputs: list[Input]
    outputs: list[str]
    frontend_widgets: int = 0  # widgets the frontend adds after the schema's own (upload buttons, our overlay)

    def widget_names(self) -> list[str | None]:
        names: list[str | None] = []
        for inp in sorted(self.inputs, key=lambda i: i.optional):  # required first, stable
            if inp.widget:
                names.append(inp.name)
                if inp.kwargs.get("control_after_generate"):
                    names.append(None)
        return names + [None] * self.frontend_widgets

    def socket_types(self) -> dict[str, str]:
        return {i.name: i.type for i in self.inputs}


CONSTS: dict[str, object] = {}  # module-level constants of the file being read (e.g. MAX_CHARACTERS)


def _literal(node):
    if isinstance(node, ast.Name) and node.id in CONSTS:
        return CONSTS[node.id]
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and hasattr(concepts, node.value.id):
        return getattr(getattr(concepts, node.value.id), node.attr)  # a widget range read from its spec
    try:
        return ast.literal_eval(node)
    except ValueError:
        return None


def _custom_types() -> dict[str, str]:
    tree = ast.parse((REPO / "nodes" / "types.py").read_text())
    return {t.targets[0].id: t.value.args[0].value for t in tree.body
            if isinstance(t, ast.Assign) and isinstance(t.value, ast.Call)}


def _type_of(call: ast.Call, custom: dict[str, str]) -> str:
    owner = call.func.value  # io.Int in io.Int.Input / WhisperEncoder in WhisperEncoder.Input
    if isinstance(owner, ast.Attribute):
        return IO_TYPES[owner.attr]
    return custom[owner.id]


def _inputs(call: ast.Call, custom: dict[str, str]) -> list[Input]:
    kw = {k.arg: _literal(k.value) for k in call.keywords}
    name = call.args[0].value
    owner = call.func.value
    if isinstance(owner, ast.Attribute) and owner.attr == "Autogrow":  # sockets <name>.<prefix><k>
        tmpl = next(k.value for k in call.keywords if k.arg == "template")
        inner = tmpl.args[0]
        tkw = {k.arg: _literal(k.value) for k in tmpl.keywords}
        kind = _type_of(inner, custom)
        return [Input(f"{name}.{tkw['prefix']}{i}", kind, optional=bool(kw.get("optional")) or i >= tkw.get("min", 0))
                for i in range(tkw["max"])]
    return [Input(name, _type_of(call, custom), bool(kw.get("optional")), kw)]


def our_schemas() -> dict[str, NodeSchema]:
    custom = _custom_types()
    out = {}
    for path in sorted((REPO / "nodes").glob("*.py")):
        tree = ast.parse(path.read_text())
        CONSTS.clear()
        CONSTS.update({t.targets[0].id: _literal(t.value) for t in tree.body
                       if isinstance(t, ast.Assign) and isinstance(t.targets[0], ast.Name)})
        for call in ast.walk(tree):
            if not (isinstance(call, ast.Call) and getattr(call.func, "attr", None) == "Schema"):
                continue
            kw = {k.arg: k.value for k in call.keywords}
            inputs = [i for c in kw["inputs"].elts for i in _inputs(c, custom)]
            outputs = [_type_of(c, custom) for c in kw["outputs"].elts] if "outputs" in kw else []
            out[kw["node_id"].value] = NodeSchema(inputs, outputs)
    if "AvatarFaceMasks" in out and "character_overlay" in (REPO / "js" / "hyavatar_characters.js").read_text():
        out["AvatarFaceMasks"].frontend_widgets = 1  # the character overlay widget of our frontend extension
    return out


def _native(inputs: dict[str, str], outputs: list[str], widgets: int = 0, optional: tuple = ()) -> NodeSchema:
    ins = [Input(n, t, n in optional) for n, t in inputs.items()]
    return NodeSchema(ins, outputs, frontend_widgets=widgets)


# Native nodes the example workflows use. frontend_widgets: for plain nodes, the upload widgets; for SaveVideo,
# the dynamic-combo children of mp4 / h264 / re-encode (crf, color space) and the hidden legacy codec combo.
NATIVE = {
    "LoadImage": _native({"image": "COMBO"}, ["IMAGE", "MASK"], 1),
    "LoadImageMask": _native({"image": "COMBO", "channel": "COMBO"}, ["MASK"], 1),
    "LoadAudio": _native({"audio": "COMBO"}, ["AUDIO"], 2),
    "VAELoader": _native({"vae_name": "COMBO"}, ["VAE"]),
    "DualCLIPLoader": _native({"clip_name1": "COMBO", "clip_name2": "COMBO", "type": "COMBO", "device": "COMBO"},
                              ["CLIP"], optional=("device",)),
    "CLIPVisionLoader": _native({"clip_name": "COMBO"}, ["CLIP_VISION"]),
    "CLIPVisionEncode": _native({"clip_vision": "CLIP_VISION", "image": "IMAGE", "crop": "COMBO"}, ["CLIP_VISION_OUTPUT"]),
    "VAEDecodeTiled": _native({"samples": "LATENT", "vae": "VAE", "tile_size": "INT", "overlap": "INT",
                               "temporal_size": "INT", "temporal_overlap": "INT"}, ["IMAGE"]),
    "ImageFromBatch": _native({"image": "IMAGE", "batch_index": "INT", "length": "INT"}, ["IMAGE"]),
    "CreateVideo": _native({"images": "IMAGE", "fps": "FLOAT", "audio": "AUDIO", "bit_depth": "INT"}, ["VIDEO"],
                           optional=("audio", "bit_depth")),
    "SaveVideo": _native({"video": "VIDEO", "filename_prefix": "STRING", "format": "COMBO"}, ["VIDEO"], 5),
    "AudioMerge": _native({"audio1": "AUDIO", "audio2": "AUDIO", "merge_method": "COMBO"}, ["AUDIO"]),
    "Note": _native({"text": "STRING"}, []),
}


def overlaps(boxes: list[dict]) -> list[str]:
    """Pairs of nodes whose rectangles ``rect`` = [x, y, w, h] share area (touching edges do not count)."""
    import itertools
    out = []
    for a, b in itertools.combinations(boxes, 2):
        (ax, ay, aw, ah), (bx, by, bw, bh) = a["rect"], b["rect"]
        if min(ax + aw, bx + bw) - max(ax, bx) > 0 and min(ay + ah, by + bh) - max(ay, by) > 0:
            out.append(f"{a['type']} '{a['title']}' and {b['type']} '{b['title']}'")
    return out
