"""bench/bench_sampler.py's options on the tiny CPU model (the script's GPU numbers are measured on the device)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _summary(tmp_path: Path, *extra: str) -> dict:
    cmd = [sys.executable, str(ROOT / "bench" / "bench_sampler.py"), "--tiny", "--size", "64x64", "--audio-frames",
           "129", "--steps", "3", *extra]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=tmp_path).stdout
    return json.loads(next(line for line in out.splitlines() if line.startswith("SUMMARY "))[8:])


def test_presets_step_cache_and_latent_comparison(tmp_path):
    ref = tmp_path / "bf16.safetensors"
    first = _summary(tmp_path, "--save-latents", str(ref))
    assert first["windows_per_step"] == 1 and first["preset"] == "bf16" and ref.exists()
    again = _summary(tmp_path, "--reference", str(ref))
    assert again["rel_err_vs_reference"] == 0.0                      # deterministic on the CPU
    fast = _summary(tmp_path, "--preset", "fast", "--reference", str(ref))
    assert fast["attention"] == "fa3_fp8" and 0 < fast["rel_err_vs_reference"] < 0.2   # fp8 weights: close, not equal
    cached = _summary(tmp_path, "--step-cache", "10", "--reference", str(ref))
    assert cached["step_cache_calls"] == 3 and cached["step_cache_skipped"] >= 1
    assert cached["rel_err_vs_reference"] > 0
    through_runner = _summary(tmp_path, "--runner", "--reference", str(ref))
    assert through_runner["runner"] and through_runner["rel_err_vs_reference"] == 0.0   # same weights, same path
