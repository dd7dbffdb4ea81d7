"""Run by ComfyUI-Manager after requirements.txt: the face-detection stack without clobbering.

onnxruntime and onnxruntime-gpu install the same files, so an environment must hold exactly one of them.
We keep whichever flavour is already there, else install onnxruntime-gpu where torch sees CUDA and plain
onnxruntime otherwise (face detection runs once per reference image: the CPU flavour is fast enough).
insightface is installed with --no-deps because its own metadata asks for plain onnxruntime; its other
requirements are installed explicitly. OpenCV: insightface declares `opencv-python`, so that is the one build
we install (an environment must hold one: opencv-python and opencv-python-headless both provide `cv2` and
overwrite each other); an existing headless build is kept, and `pip check` then names that mismatch, which is
harmless. Likewise with onnxruntime-gpu, `pip check` reports insightface's wish for plain onnxruntime.
"""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
import subprocess
import sys

FLAVOURS = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-directml", "onnxruntime-silicon")
# insightface's own requirements, less onnxruntime (chosen above) and opencv-python (handled above).
INSIGHTFACE_NEEDS = ("numpy", "onnx>=1.13", "tqdm", "requests", "scipy", "scikit-image")


def installed(name: str) -> bool:
    try:
        md.version(name)
        return True
    except md.PackageNotFoundError:
        return False


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


FA3 = "tokenspeed-fa3"  # FlashAttention-3 wheel: CUDA 13, torch stable ABI, Hopper (sm_90) kernels only


def fa3_wanted() -> bool:
    """Optional FlashAttention-3: only for a CUDA 13 build of torch >= 2.9 on a Hopper GPU."""
    try:
        import torch
    except ImportError:
        return False
    major_minor = tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2])
    return (major_minor >= (2, 9) and str(torch.version.cuda or "").startswith("13") and torch.cuda.is_available()
            and any(torch.cuda.get_device_capability(i)[0] == 9 for i in range(torch.cuda.device_count())))


def install_fa3() -> None:
    """--no-deps: it must never replace torch. Kept only if it imports with this torch (else removed)."""
    pip_install("--no-deps", FA3)
    if subprocess.call([sys.executable, "-c", "import torch, flash_attn_interface"]) != 0:
        print(f"[HunyuanVideo-Avatar] {FA3} does not load with this torch; removed (attention uses PyTorch SDPA)")
        subprocess.call([sys.executable, "-m", "pip", "uninstall", "-y", FA3])


def pip_install(*args: str) -> None:
    subprocess.check_call([sys.executable, "-m", "pip", "install", *args])


def main() -> int:
    present = [f for f in FLAVOURS if installed(f)]
    if len(present) > 1:
        print(f"[HunyuanVideo-Avatar] WARNING: several onnxruntime flavours are installed ({', '.join(present)}); "
              "they overwrite each other. Keep one: pip uninstall -y " + " ".join(present) + " && pip install onnxruntime-gpu")
    if not present:
        pip_install("onnxruntime-gpu" if cuda_available() else "onnxruntime")
    if importlib.util.find_spec("cv2") is None:
        pip_install("opencv-python")
    if not installed("insightface"):
        pip_install("--no-deps", "insightface")
    missing = [req for req in INSIGHTFACE_NEEDS if not installed(req.split(">")[0])]
    if missing:
        pip_install(*missing)
    if not installed(FA3) and fa3_wanted():
        install_fa3()
    return 0


if __name__ == "__main__":
    sys.exit(main())
