"""Shared pieces of the parity checks against the official code's fixtures."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file


@dataclass
class CheckResult:
    """One comparison against a fixture tensor."""

    name: str
    max_abs: float
    max_rel: float
    ok: bool
    detail: str = ""
    skipped: bool = False  # not checked (a missing optional tool); ok stays True, the line says why

    def line(self) -> str:
        status = "SKIP" if self.skipped else "ok  " if self.ok else "FAIL"
        extra = f"  {self.detail}" if self.detail else ""
        return f"{status} {self.name:<60s} max_abs={self.max_abs:.3e} max_rel={self.max_rel:.3e}{extra}"


def compare(name: str, got: torch.Tensor, ref: torch.Tensor, atol: float = 1e-4, rtol: float = 1e-4) -> CheckResult:
    """allclose-style check (|got - ref| <= atol + rtol * |ref|) reporting max abs / rel error."""
    if got.shape != ref.shape:
        return CheckResult(name, float("inf"), float("inf"), False, f"shape {tuple(got.shape)} != {tuple(ref.shape)}")
    got, ref = got.detach().double().cpu(), ref.detach().double().cpu()
    diff = (got - ref).abs()
    max_abs = float(diff.max()) if diff.numel() else 0.0
    max_rel = float((diff / ref.abs().clamp_min(1e-12)).max()) if diff.numel() else 0.0
    ok = bool((diff <= atol + rtol * ref.abs()).all())
    return CheckResult(name, max_abs, max_rel, ok)


def exact(name: str, got: torch.Tensor, ref: torch.Tensor) -> CheckResult:
    """Bitwise equality (token ids, masks, pixel values)."""
    if got.shape != ref.shape:
        return CheckResult(name, float("inf"), float("inf"), False, f"shape {tuple(got.shape)} != {tuple(ref.shape)}")
    diff = (got.double() - ref.double()).abs()
    max_abs = float(diff.max()) if diff.numel() else 0.0
    return CheckResult(name, max_abs, 0.0, bool(torch.equal(got, ref)), "exact")


def skip(name: str, why: str) -> CheckResult:
    return CheckResult(name, 0.0, 0.0, True, f"skipped: {why}", skipped=True)


def load_fixture(path: Path) -> dict[str, torch.Tensor]:
    """Load a safetensors fixture, cloning so tensors are aligned (see the fixtures README)."""
    return {k: v.clone() for k, v in load_file(str(path)).items()}
