"""Tensor specs: images, masks and model tensors, checked by shape and size BEFORE anything is allocated.

Order of every check: type, rank, sizes (a 100000 x 100000 view costs nothing until someone converts it), dtype,
then the values in one reduction (``aminmax`` / ``sum``: no input-sized temporaries).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .fields import Spec, span

_CHECK_CHUNK = 1 << 20  # elements per isfinite pass when counting bad values (4 MB of temporaries)
TOLERANCE = 0.05  # resampling filters (Lanczos) overshoot 0..1 a little; beyond this a value is a unit mix-up
MAX_SIDE = 16384
MAX_PIXELS = 8192 * 8192  # per image: the video is at most 2048 px on its short side, larger only costs memory


def non_finite_count(tensor: torch.Tensor) -> int:
    """How many values are NaN or inf (0 for integer tensors): one reduction, counted in chunks only if needed."""
    if not tensor.is_floating_point() or tensor.numel() == 0:
        return 0
    # A NaN or inf anywhere makes the sum non-finite (finite conditioning values are far too small to overflow
    # float32 when summed); only then count, in chunks (isfinite allocates its input's size).
    if bool(torch.isfinite(tensor.sum(dtype=torch.float32))):
        return 0
    flat = tensor.reshape(-1)
    return sum(int((~torch.isfinite(flat[i : i + _CHECK_CHUNK])).sum()) for i in range(0, flat.numel(), _CHECK_CHUNK))


def value_range(tensor: torch.Tensor) -> tuple[float, float]:
    """(min, max) in one pass; NaN when any value is NaN."""
    lo, hi = torch.aminmax(tensor.detach())
    return float(lo), float(hi)


_KINDS = {
    "float": lambda d: d.is_floating_point,
    "int": lambda d: not d.is_floating_point and not d.is_complex,
    "number": lambda d: not d.is_complex and d != torch.bool,
    "any": lambda d: True,
}


@dataclass(frozen=True)
class Tensor(Spec):
    """A tensor of one of ``ndims`` ranks; ``kind`` float / int (integers or bool) / number (not bool) / any;
    finite; values in [lo, hi]. ``layout`` is said in messages (e.g. '[B, C, T, H, W] latents')."""

    ndims: tuple[int, ...] = ()
    kind: str = "float"
    finite: bool = True
    lo: float | None = None
    hi: float | None = None
    above: bool = False  # lo itself excluded
    layout: str = ""

    def check(self, name: str, value: Any, hint: str = "") -> torch.Tensor:
        want = f" {self.layout}" if self.layout else ""
        if not isinstance(value, torch.Tensor):
            raise self.fail(name, f"expected a torch.Tensor{want}, got {type(value).__name__}", hint)
        if self.ndims and value.dim() not in self.ndims:
            raise self.fail(name, f"expected{want or ' a tensor'} with {' or '.join(map(str, self.ndims))} "
                                  f"dimensions, got shape {tuple(value.shape)}", hint)
        if not _KINDS[self.kind](value.dtype):
            raise self.fail(name, f"expected {self.kind} values, got {value.dtype}", hint)
        if self.finite:
            bad = non_finite_count(value)
            if bad:
                raise self.fail(name, f"{bad} of {value.numel()} values are NaN or inf", hint)
        if (self.lo is not None or self.hi is not None) and value.numel() and value.dtype != torch.bool:
            lo, hi = value_range(value)
            low = self.lo is not None and (lo <= self.lo if self.above else lo < self.lo)
            if low or (self.hi is not None and hi > self.hi):
                shown = value.tolist() if value.numel() <= 8 else f"values from {lo:g} to {hi:g}"
                raise self.fail(name, f"got {shown}; values must be {span(self.lo, self.hi, '', self.above)}", hint)
        return value


def _unit_mixup(lo: float, hi: float) -> str:
    """What a value range outside 0..1 most likely is, and the fix."""
    if hi > 1 + TOLERANCE:
        return f"values reach {hi:g}: this looks like 0..255; divide by 255 to get 0..1"
    return f"values go down to {lo:g}: this looks like -1..1; use (x + 1) / 2 to get 0..1"


@dataclass(frozen=True)
class Image(Spec):
    """ComfyUI IMAGE: float [B, H, W, C] (C = 3 or 4) in 0..1, finite, at least ``min_side`` and at most
    MAX_SIDE px a side and MAX_PIXELS per image. ``batch`` False: one image ([1, H, W, C] or [H, W, C]);
    ``arrays``: an RGB uint8 numpy array [H, W, 3] is accepted too (what face detectors take)."""

    batch: bool = True
    min_side: int = 64
    arrays: bool = False

    def check(self, name: str, value: Any, hint: str = "") -> Any:
        if isinstance(value, np.ndarray) and self.arrays:
            if value.dtype != np.uint8 or value.ndim != 3 or value.shape[2] != 3:
                raise self.fail(name, f"numpy images must be RGB uint8 [H, W, 3], got {value.dtype} {value.shape}",
                                hint)
            self._check_size(name, value.shape[0], value.shape[1], hint)
            return value
        if not isinstance(value, torch.Tensor):
            raise self.fail(name, f"expected an IMAGE tensor [batch, height, width, 3], got {type(value).__name__}",
                            hint)
        shape = tuple(value.shape)
        if value.dim() not in ((3, 4) if not self.batch else (4,)) or shape[-1] not in (3, 4):
            channels_first = value.dim() in (3, 4) and shape[-3] in (3, 4) and shape[-1] > 4
            raise self.fail(name, f"expected an IMAGE [batch, height, width, 3], got shape {shape}" + (
                "; this looks channels-first [B, C, H, W]: use image.permute(0, 2, 3, 1)" if channels_first else ""),
                hint)
        batch = shape[0] if value.dim() == 4 else 1
        if batch == 0:
            raise self.fail(name, "the image batch is empty (0 images)", hint)
        if batch > 1 and not self.batch:
            raise self.fail(name, f"expected one image, got a batch of {batch}; pick one frame", hint)
        self._check_size(name, shape[-3], shape[-2], hint)
        if not value.is_floating_point():
            raise self.fail(name, f"pixels are {value.dtype}; ComfyUI's IMAGE is float in 0..1: use "
                                  "image.float() / 255", hint)
        lo, hi = value_range(value)
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise self.fail(name, "holds NaN or inf pixels: the node or file before this one is broken "
                                  "(reload the image)", hint)
        if lo < -TOLERANCE or hi > 1 + TOLERANCE:
            raise self.fail(name, "pixels must be in 0..1; " + _unit_mixup(lo, hi), hint)
        return value

    def _check_size(self, name: str, height: int, width: int, hint: str) -> None:
        if height < self.min_side or width < self.min_side:
            raise self.fail(name, f"{width}x{height} is too small; give at least {self.min_side}x{self.min_side} "
                                  "pixels", hint)
        if max(height, width) > MAX_SIDE or height * width > MAX_PIXELS:
            raise self.fail(name, f"{width}x{height} ({height * width / 1e6:.0f} megapixels) is larger than this pack "
                                  f"handles ({MAX_PIXELS / 1e6:.0f} megapixels, {MAX_SIDE} px a side); the video is at "
                                  "most 2048 px on its short side: downscale the image first", hint)


@dataclass(frozen=True)
class Mask(Spec):
    """A mask: float in 0..1 (or bool) of rank ``ndims`` ([H, W], [N, H, W], or the model's [B, N, T, H, W]),
    finite, at most MAX_PIXELS a plane. Integer masks are refused: 0/1 and 0..255 cannot be told apart."""

    ndims: tuple[int, ...] = (2, 3)
    layout: str = "[H, W] or [N, H, W]"

    def check(self, name: str, value: Any, hint: str = "") -> torch.Tensor:
        if not isinstance(value, torch.Tensor):
            raise self.fail(name, f"expected a MASK tensor {self.layout}, got {type(value).__name__}", hint)
        if value.dim() not in self.ndims or value.numel() == 0:
            raise self.fail(name, f"expected a MASK {self.layout}, got shape {tuple(value.shape)}", hint)
        if value.shape[-2] * value.shape[-1] > MAX_PIXELS or max(value.shape[-2:]) > MAX_SIDE:
            raise self.fail(name, f"a {value.shape[-1]}x{value.shape[-2]} mask is larger than this pack handles "
                                  f"({MAX_PIXELS / 1e6:.0f} megapixels): downscale it with its image", hint)
        if value.dtype == torch.bool:
            return value
        if not value.is_floating_point():
            raise self.fail(name, f"mask values are {value.dtype}; masks are float 0..1: use mask.float() / 255 for "
                                  "0..255 masks, mask.float() for 0/1 masks", hint)
        lo, hi = value_range(value)
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise self.fail(name, "holds NaN or inf values; masks are 0..1 (redraw or reload the mask)", hint)
        if lo < -TOLERANCE or hi > 1 + TOLERANCE:
            raise self.fail(name, "mask values must be in 0..1; " + _unit_mixup(lo, hi), hint)
        return value


@dataclass(frozen=True)
class Device(Spec):
    """A torch device (or its name): one this process can use, so a typo or a missing GPU stops the run now,
    not when the first tensor is moved there. Returned unchanged."""

    def check(self, name: str, value: Any, hint: str = "") -> Any:
        if not isinstance(value, (str, torch.device)):
            raise self.fail(name, f"expected a device such as 'cpu' or 'cuda', got {type(value).__name__}", hint)
        try:
            device = torch.device(value)
        except (RuntimeError, ValueError):
            raise self.fail(name, f"{value!r} is not a device name", hint) from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise self.fail(name, f"{value!r}: no CUDA GPU is visible to this process", hint)
        if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
            raise self.fail(name, f"{value!r}: this machine has {torch.cuda.device_count()} CUDA device(s)", hint)
        return value


DEVICE = Device(fix="Use cpu, cuda or cuda:N.")
IMAGE = Image(fix="Connect an IMAGE (e.g. Load Image).")  # a ComfyUI IMAGE batch (nodes use its first image)
ONE_IMAGE = Image(batch=False, arrays=True, min_side=16, fix="Give one RGB image (ComfyUI IMAGE or uint8 [H, W, 3]).")
MASK = Mask(fix="Connect a MASK drawn on the reference image (white = the character's face region).")
