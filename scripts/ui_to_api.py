"""UI-format workflow (what the ComfyUI frontend saves) -> API prompt (what POST /prompt takes), using /object_info.

The frontend keeps widget values as a flat list (`widgets_values`) in the order it creates widgets: each input
that is a widget, in /object_info order (required, then optional); a seed-like input is followed by its
frontend-only control_after_generate; upload widgets (LoadImage's button, LoadAudio's player and button) come
after all the others; a dynamic combo is followed by the widgets of its chosen option, named "<combo>.<child>". Extra trailing
values (widgets a frontend extension adds) are ignored. `scripts/build_workflows.py` checks this conversion
against the frontend's own (app.graphToPrompt) for every example workflow.
"""

from __future__ import annotations

from collections.abc import Iterator

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
DYNAMIC_COMBO = "COMFY_DYNAMICCOMBO_V3"
UI_ONLY_NODES = {"Note", "MarkdownNote"}


def _sections(inputs: dict) -> Iterator[tuple[str, list]]:
    for section in ("required", "optional"):
        yield from (inputs.get(section) or {}).items()


def widget_names(inputs: dict, values: list, prefix: str = "") -> list[str | None]:
    """Name of each entry of `widgets_values` (None: a frontend-only widget) for a node whose /object_info
    `input` is `inputs`. Dynamic combos read their chosen option from `values`. Upload widgets come last."""
    names: list[str | None] = []
    uploads: list[None] = []
    for name, spec in _sections(inputs):
        kind, opts = spec[0], (spec[1] if len(spec) > 1 else {})
        if kind == DYNAMIC_COMBO:
            names.append(prefix + name)
            chosen = values[len(names) - 1] if len(names) - 1 < len(values) else None
            option = next((o for o in opts.get("options", []) if o["key"] == chosen), None)
            if option is not None:
                names += widget_names(option.get("inputs", {}), values[len(names):], prefix + name + ".")
            continue
        if not (isinstance(kind, list) or kind in WIDGET_TYPES) or opts.get("forceInput"):
            continue  # a socket (IMAGE, MODEL, an autogrow group, ...)
        names.append(prefix + name)
        if opts.get("control_after_generate"):
            names.append(None)
        if opts.get("image_upload"):
            uploads.append(None)
        if opts.get("audio_upload"):
            uploads += [None, None]  # audio player, upload button
    return names + uploads


def convert(workflow: dict, object_info: dict) -> dict:
    """UI workflow -> API prompt. Raises ValueError naming the node when a type is unknown or a node is bypassed."""
    links = {ln[0]: ln for ln in workflow.get("links", [])}  # id -> [id, from_node, from_slot, to_node, to_slot, type]
    prompt = {}
    for node in workflow["nodes"]:
        kind = node["type"]
        if kind in UI_ONLY_NODES:
            continue
        if kind not in object_info:
            raise ValueError(f"node {node['id']} ({kind}): ComfyUI has no such node type; install the pack that "
                             "provides it or update ComfyUI.")
        if node.get("mode", 0) in (2, 4):
            raise ValueError(f"node {node['id']} ({kind}) is muted or bypassed; this converter does not handle that.")
        inputs: dict = {}
        linked = set()
        for slot in node.get("inputs", []):
            if slot.get("link") is not None:
                ln = links[slot["link"]]
                inputs[slot["name"]] = [str(ln[1]), ln[2]]
                linked.add(slot["name"])
        values = node.get("widgets_values") or []
        pairs = (values.items() if isinstance(values, dict)  # some nodes save {name: value}
                 else zip(widget_names(object_info[kind]["input"], values), values))
        for name, value in pairs:
            if name is not None and name not in linked:
                inputs[name] = value
        prompt[str(node["id"])] = {"class_type": kind, "inputs": inputs, "_meta": {"title": node.get("title") or kind}}
    return prompt


def required_inputs(object_info: dict, kind: str, prompt_inputs: dict) -> list[str]:
    """Required inputs of a node type (dynamic-combo children of the chosen options included)."""
    def walk(inputs: dict, prefix: str) -> list[str]:
        out = []
        for name, spec in (inputs.get("required") or {}).items():
            kind_, opts = spec[0], (spec[1] if len(spec) > 1 else {})
            if kind_ == "COMFY_AUTOGROW_V3":
                tmpl = opts.get("template", {})
                out += [f"{prefix}{name}.{tmpl.get('prefix', '')}{i}" for i in range(tmpl.get("min", 0))]
                continue
            out.append(prefix + name)
            if kind_ == DYNAMIC_COMBO:
                option = next((o for o in opts["options"] if o["key"] == prompt_inputs.get(prefix + name)), None)
                if option is not None:
                    out += walk(option.get("inputs", {}), prefix + name + ".")
        return out
    return walk(object_info[kind]["input"], "")
