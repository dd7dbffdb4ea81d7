"""Run a Python command with the packages hidden that the GPU image lacks and bench/build_carry.sh does not carry.

    python bench/gpu_image_check.py /tmp/ComfyUI/venv/bin/python bench/workflow_gpu.py --scale tiny --cpu ...

A CPU check of the carry's completeness before device time is spent: ComfyUI's own environment has every
package; the GPU image (.library/device/KINDS.md, "Python packages already there") lacks some, and the carry
brings only WHEELS of bench/build_carry.sh. Importing a hidden package raises ModuleNotFoundError, as it would
there; each attempt is also printed to stderr ("gpu_image_check: hidden import NAME"), so an import that is
caught and skipped (ComfyUI's optional extras) shows too. What this cannot check: versions (the image has
Python 3.12, torch 2.11, transformers 5.x, numpy 2.5) and binary compatibility of the carried wheels (pip picked
them for CPython 3.12 manylinux x86-64).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

# In ComfyUI's environment, absent from the GPU image, and not carried. (httpx2 / httpcore2 / truststore stay: this
# environment's huggingface_hub 2.x needs them, the image's huggingface_hub 1.x does not.)
HIDDEN = ("comfy_angle", "comfyui_frontend_package", "comfyui_workflow_templates", "comfyui_embedded_docs",
          "ctranslate2", "insightface", "kernels", "kornia", "kornia_rs", "OpenGL",
          "spandrel", "retinaface", "tomlkit")
PREFIXES = ("comfyui_workflow_templates",)

SITECUSTOMIZE = '''
import importlib.util
import sys
HIDDEN, PREFIXES = {hidden!r}, {prefixes!r}


def _hidden(name):
    top = name.split(".")[0]
    return top in HIDDEN or top.startswith(PREFIXES)


class _Hide:  # an import of a hidden package fails as a missing one does
    def find_spec(self, name, path=None, target=None):
        if _hidden(name):
            print(f"gpu_image_check: hidden import {{name}}", file=sys.stderr)
            raise ModuleNotFoundError(f"No module named {{name!r}} (hidden: not on the GPU image)", name=name)
        return None


_find_spec = importlib.util.find_spec


def find_spec(name, package=None):  # "is it installed?" probes (transformers' is_*_available) see it absent
    return None if _hidden(name) else _find_spec(name, package)


importlib.util.find_spec = find_spec
sys.meta_path.insert(0, _Hide())
'''


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "sitecustomize.py").write_text(SITECUSTOMIZE.format(hidden=HIDDEN, prefixes=PREFIXES))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (tmp, os.environ.get("PYTHONPATH")) if p))
        return subprocess.call(argv, env=env)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
