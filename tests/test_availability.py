"""nodes/availability.py: the loaders offer only what can run here (kernels, GPU count, onnxruntime providers)."""

from __future__ import annotations

import sys
import types

import torch
from conftest import load_pack


def test_gpu_count_follows_torch(monkeypatch):
    avail = load_pack("nodes.availability")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert avail.gpu_count() == 1  # the loader's own process: 1 is always a valid choice
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert avail.gpu_count() == 4


def test_providers_are_those_of_the_installed_onnxruntime(monkeypatch):
    avail = load_pack("nodes.availability")
    fake = types.ModuleType("onnxruntime")
    fake.get_available_providers = lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setitem(sys.modules, "onnxruntime", fake)
    monkeypatch.setattr(avail, "_importable", lambda name: True)
    assert avail.onnx_providers() == ["CUDA", "CPU"]
    fake.get_available_providers = lambda: ["CPUExecutionProvider"]
    assert avail.onnx_providers() == ["CPU"]
    monkeypatch.setattr(avail, "_importable", lambda name: False)
    assert avail.onnx_providers() == ["CPU"]


def test_attention_choices_are_the_registry_s_available_kernels():
    avail = load_pack("nodes.availability")
    attention = load_pack("avatar_core.model.attention")
    kernels = avail.attention_kernels()
    assert kernels == attention.available_kernels() and "sdpa" in kernels and "auto" in kernels
    if not torch.cuda.is_available():
        assert not {"fa3", "fa3_fp8", "flash_attn", "sage"} & set(kernels)
