"""Rebuild example_workflows/*.json from scripts/workflow_specs.py in the real ComfyUI frontend.

    COMFYUI_PATH=/path/to/ComfyUI COMFYUI_PYTHON=/path/to/its/python python scripts/build_workflows.py

Starts ComfyUI headless with this pack, builds each graph in headless Chromium (node + playwright-core from
tests/frontend), saves the frontend's own serialisation, and checks that scripts/ui_to_api.py converts each
saved workflow exactly as the frontend does (app.graphToPrompt). Every model loader gets the `models`
metadata the frontend's Missing Models panel reads (name, url, directory: avatar_core/model_files.py), and
each workflow a `<name>.jpg` thumbnail drawn from its example inputs (scripts/thumbnails.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import comfy_headless as ch  # noqa: E402
import thumbnails  # noqa: E402
import ui_to_api  # noqa: E402
import workflow_specs  # noqa: E402
from workflow_specs import mf  # noqa: E402

INPUTS = ch.REPO / "example_inputs"

OUT = ch.REPO / "example_workflows"
GROUPS = {0: "Models", 1: "Inputs", 2: "Conditioning", 3: "Sampling", 4: "Video", 5: "Video"}


def plan(name: str) -> dict:
    nodes, links, description = workflow_specs.WORKFLOWS[name]()
    # The Templates browser of frontend 1.49 shows a custom node pack's template by its file name only: the
    # one-line description also opens the Note, where a user who opened the template reads it.
    nodes = [(k, t, c, r, {**w, "text": f"{description}\n\n{w['text']}"} if t == "Note" else w, title)
             for k, t, c, r, w, title in nodes]
    groups: dict[str, list[str]] = {}
    for key, kind, col, _, _, _ in nodes:
        if kind != "Note":
            groups.setdefault(GROUPS[col], []).append(key)
    return {"name": name, "description": description,
            "nodes": [{"key": k, "type": t, "col": c, "row": r, "widgets": list(w.items()), "title": title,
                       "models": [m for v in w.values() if isinstance(v, str) and (m := mf.frontend_metadata(v))]}
                      for k, t, c, r, w, title in nodes],
            "links": [list(ln) for ln in links], "groups": [{"title": t, "keys": k} for t, k in groups.items()]}


def strip(prompt: dict) -> dict:
    return {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in prompt.items()}


def draw_thumbnail(name: str, workflow: dict) -> None:
    """<name>.jpg from the example inputs the workflow's LoadImage / LoadAudio nodes name."""
    by_type = lambda kind: [INPUTS / n["widgets_values"][0] for n in workflow["nodes"] if n["type"] == kind]  # noqa: E731
    title = name.removeprefix("avatar_").replace("_", " ").capitalize()
    images = [p for p in by_type("LoadImage") if p.is_file()]
    missing = [p.name for p in by_type("LoadImage") + by_type("LoadAudio") if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{name}: example inputs missing from {INPUTS}: {missing}")
    thumbnails.draw(title, images, by_type("LoadAudio"), OUT / f"{name}.jpg")


def main() -> int:
    comfy = os.environ.get("COMFYUI_PATH")
    if not comfy:
        print("set COMFYUI_PATH (and COMFYUI_PYTHON)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        ch.prepare_base(base)
        server = ch.Server(comfy, base, python=ch.env_python())
        try:
            server.wait_ready()
            info = server.get("/object_info")
            plans = base / "plans.json"
            plans.write_text(json.dumps([plan(n) for n in workflow_specs.WORKFLOWS]))
            proc = subprocess.run(["node", str(Path(__file__).with_suffix(".mjs")), server.url, str(plans)],
                                  capture_output=True, text=True, timeout=600)
        finally:
            server.stop()
    if proc.returncode:
        print(proc.stderr[-4000:], file=sys.stderr)
        return 1
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    bad = list(result["errors"])
    OUT.mkdir(exist_ok=True)
    for name, built in result["workflows"].items():
        bad += [f"{name}: {p}" for p in built["problems"]]
        mine = strip(ui_to_api.convert(built["workflow"], info))
        if mine != strip(built["prompt"]):
            bad.append(f"{name}: ui_to_api differs from the frontend:\n ours {json.dumps(mine)}\n  fe {json.dumps(strip(built['prompt']))}")
        (OUT / f"{name}.json").write_text(json.dumps(built["workflow"], indent=1) + "\n")
        draw_thumbnail(name, built["workflow"])
        print(f"wrote {OUT / name}.json ({len(built['workflow']['nodes'])} nodes)")
    for b in bad:
        print("PROBLEM:", b, file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
