"""Parity checks of the conditioning pre-processing against the official code's ``preproc`` fixtures.

Called by ``python -m avatar_core.parity DIR``. Key patterns handled (others, e.g. ``sched_*``, are not ours):
``audio_prompts_fps<F>p<f>_nf<N>`` (windowing of ``whisper_hidden_states``), ``facemask_pixel_bbox_<x>_<y>_<w>_<h>_area<A>``
and ``facemask_latent_<h>x<w>`` (the pixel mask resized bilinearly).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from ..conditioning.audio import window_features
from ..conditioning.faces import FaceBox, box_mask, to_latent
from .common import CheckResult, compare, load_fixture

_AUDIO_KEY = re.compile(r"^audio_prompts_fps(\d+)p(\d+)_nf(\d+)$")
_PIXEL_KEY = re.compile(r"^facemask_pixel_bbox_(\d+)_(\d+)_(\d+)_(\d+)_area(\d+(?:p\d+)?)$")
_LATENT_KEY = re.compile(r"^facemask_latent_(\d+)x(\d+)$")


def _audio_checks(fx: dict[str, torch.Tensor]) -> list[CheckResult]:
    out = []
    for key in sorted(k for k in fx if _AUDIO_KEY.match(k)):
        whole, frac, nf = _AUDIO_KEY.match(key).groups()
        fps = float(f"{whole}.{frac}")
        if "whisper_hidden_states" not in fx:
            out.append(CheckResult(key, float("nan"), float("nan"), False, "whisper_hidden_states missing"))
            continue
        got = window_features(fx["whisper_hidden_states"][0], fps, int(nf))[None]  # [1, F, 10, 5, 384]
        out.append(compare(f"preproc/{key}", got, fx[key], atol=0.0, rtol=0.0))
    return out


def _mask_checks(fx: dict[str, torch.Tensor]) -> list[CheckResult]:
    out, ours = [], []
    pixel_keys = sorted(k for k in fx if _PIXEL_KEY.match(k))
    for key in pixel_keys:
        x, y, w, h, area = _PIXEL_KEY.match(key).groups()
        ref = fx[key]  # [1, 1, 1, H, W]
        height, width = ref.shape[-2:]
        box = FaceBox(float(x), float(y), float(x) + float(w), float(y) + float(h))
        got = box_mask(box, width, height, float(area.replace("p", ".")))[None, None, None]
        ours.append(got)
        out.append(compare(f"preproc/{key}", got, ref, atol=0.0, rtol=0.0))
    for key in sorted(k for k in fx if _LATENT_KEY.match(k)):
        lh, lw = (int(v) for v in _LATENT_KEY.match(key).groups())
        if not pixel_keys:
            out.append(CheckResult(key, float("nan"), float("nan"), False, "no facemask_pixel_* tensor to resize"))
            continue
        got = to_latent(ours[0][0, 0], (lh, lw))[None, None]  # our pixel mask -> latent: the whole chain
        out.append(compare(f"preproc/{key}", got, fx[key], atol=1e-6, rtol=1e-6))
    return out


def checks(fixture_dir: Path) -> list[CheckResult]:
    """Every conditioning check that ``fixture_dir/preproc.safetensors`` supports (absent keys are skipped)."""
    path = Path(fixture_dir) / "preproc.safetensors"
    if not path.is_file():
        return []
    fx = load_fixture(path)
    return _audio_checks(fx) + _mask_checks(fx)
