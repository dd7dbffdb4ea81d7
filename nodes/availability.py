"""What this machine can run, for the loaders' option lists: only installed kernels, present GPUs and usable
onnxruntime providers are offered; the tooltips say how to get the others. Called when a schema is built."""

from __future__ import annotations

import importlib.util

import torch

from ..avatar_core.model import attention

# onnxruntime's provider name -> the loader's option name, in the order they are offered.
ONNX_PROVIDERS = {"CUDAExecutionProvider": "CUDA", "ROCMExecutionProvider": "ROCm",
                  "CoreMLExecutionProvider": "CoreML", "CPUExecutionProvider": "CPU"}

GPU_HELP = "Up to the number of CUDA GPUs torch sees here; more need more GPUs in this machine (CUDA_VISIBLE_DEVICES)."
PROVIDER_HELP = ("Only the providers of the installed onnxruntime are listed. CUDA: `pip uninstall -y onnxruntime` "
                 "then `pip install onnxruntime-gpu` (ROCm: onnxruntime-rocm; CoreML: the macOS onnxruntime), "
                 "exactly one flavour; see install.py.")


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def attention_kernels() -> list[str]:
    """"auto" and every registered kernel that is installed and has its hardware here (the model's registry)."""
    return attention.available_kernels()


def attention_tooltip() -> str:
    """The loader's attention tooltip, from the registry's records: which kernels are quantised, and what each
    kernel that is not listed here needs (its record's note)."""
    kernels = attention.KERNELS.values()
    quantised = " / ".join(k.name for k in kernels if not k.exact)
    missing = "; ".join(f"{k.name}: {k.note}" for k in kernels if not k.available())
    text = ("Attention kernel (only those that run on this machine are listed). auto: FlashAttention-3 on Hopper "
            "when installed, else sdpa (works everywhere).")
    if quantised:
        text += f" {quantised}: quantised (small extra error)."
    if missing:
        text += f" Not available here: {missing}. Restart ComfyUI after installing."
    return text


def gpu_count() -> int:
    """CUDA GPUs torch sees (at least 1: the loader's own process)."""
    return max(1, torch.cuda.device_count() if torch.cuda.is_available() else 0)


def onnx_providers() -> list[str]:
    """The loader's provider names the installed onnxruntime offers (CPU always: every build has it)."""
    names = ["CPU"]
    if _importable("onnxruntime"):
        try:
            import onnxruntime
            offered = set(onnxruntime.get_available_providers())
        except Exception:  # a broken or doubly installed onnxruntime: the loader reports it when run
            offered = set()
        names = [ours for theirs, ours in ONNX_PROVIDERS.items() if theirs in offered or ours == "CPU"]
    return names


def detector_providers() -> list[str]:
    """The face-detector loader's choices: the onnxruntime providers (InsightFace), plus CUDA when torch sees a
    GPU (the official detface.pt runs in torch)."""
    names = onnx_providers()
    if torch.cuda.is_available() and "CUDA" not in names:
        names.insert(0, "CUDA")
    return names
