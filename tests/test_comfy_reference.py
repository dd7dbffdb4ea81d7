"""In a real ComfyUI (COMFYUI_PATH): the sampler's reference encode on a real comfy.sd.VAE of the HunyuanVideo
architecture (random weights, 5 frames of 64 x 48: untiled), both modes. ComfyUI's mode is the posterior mean;
the official mode adds std x the seeded float16 noise: their difference is that term (tests/comfy_reference_check.py).
Through the sampler's cache, a new seed reuses the official moments and gets the latent a fresh encode gave."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

COMFYUI_PATH = os.environ.get("COMFYUI_PATH")
pytestmark = [pytest.mark.comfy, pytest.mark.slow, pytest.mark.skipif(
    not COMFYUI_PATH, reason="set COMFYUI_PATH to a ComfyUI checkout (and COMFYUI_PYTHON to its Python) to run")]
TESTS = Path(__file__).resolve().parent


def test_official_reference_encode_is_the_mean_plus_the_seeded_sample_on_comfyuis_vae():
    proc = subprocess.run([os.environ.get("COMFYUI_PYTHON", sys.executable), str(TESTS / "comfy_reference_check.py"),
                           COMFYUI_PATH, str(TESTS)], capture_output=True, text=True, timeout=600, cwd=COMFYUI_PATH)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    print(got)
    assert got["shape_comfyui"] == got["shape_official"] == [1, 16, 2, 8, 6]
    assert got["std_noise_abs_max"] > 0.1  # the sample term is there (random weights: std ~ 1)
    # float16 moments against ComfyUI's float32 mean: a float16 rounding of the mean, nothing else
    assert got["official_minus_comfyui_vs_std_noise"] < 2e-2 * max(1.0, got["std_noise_abs_max"])
    assert got["official_vs_expected"] < 1e-5
    # the sampler's cache keeps the seed-free moments: a new seed does not run the encoder and gets, bit for bit,
    # what the official mode gave before (a whole official_reference_latent per seed); a changed image encodes
    assert got["encoder_calls_per_encode"] >= 1 and got["new_seed_encoder_calls"] == 0
    assert got["changed_image_encoder_calls"] == got["encoder_calls_per_encode"]
    assert got["cached_seed_is_the_old_latent"] and got["seeds_differ"] and got["comfyui_cached_is_uncached"]
