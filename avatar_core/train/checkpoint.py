"""Resumable training checkpoints: tensors in safetensors, everything else in JSON (never pickle).

    <output>/checkpoints/step-000100/ trainable.safetensors  (adapter parameters by name)
                                      optimizer.safetensors  (optimizer state tensors, `state.<i>.<key>`)
                                      state.json             (step, losses, config, optimizer scalars / groups)
A checkpoint is written to a temporary folder and renamed, so a crash never leaves a half checkpoint.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def save_checkpoint(folder: Path, step: int, params: dict[str, torch.nn.Parameter], optimizer: torch.optim.Optimizer,
                    extra: dict) -> Path:
    final = folder / f"step-{step:06d}"
    tmp = folder / f".tmp-step-{step:06d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in params.items()}, str(tmp / "trainable.safetensors"))
    tensors, scalars, groups = _flatten_optimizer(optimizer.state_dict())
    save_file(tensors, str(tmp / "optimizer.safetensors"))
    state = dict(extra, step=step, optimizer_scalars=scalars, optimizer_groups=groups, params=list(params))
    (tmp / "state.json").write_text(json.dumps(state, indent=1))
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    return final


def latest_checkpoint(folder: Path) -> Path | None:
    found = sorted(p for p in folder.glob("step-*") if (p / "state.json").is_file())
    return found[-1] if found else None


def load_checkpoint(path: Path, params: dict[str, torch.nn.Parameter], optimizer: torch.optim.Optimizer) -> dict:
    """Restore parameters and optimizer state in place; returns the JSON state (step, losses, ...)."""
    state = json.loads((path / "state.json").read_text())
    if state["params"] != list(params):
        raise ValueError(f"{path}: checkpoint trains {len(state['params'])} tensors, this run {len(params)}; resume "
                         "with the same adapter settings (lora_blocks, lora_rank, lora_layers, train_aem)")
    saved = load_file(str(path / "trainable.safetensors"))
    with torch.no_grad():
        for k, p in params.items():
            p.copy_(saved[k])
    tensors = load_file(str(path / "optimizer.safetensors"))
    optimizer.load_state_dict(_unflatten_optimizer(tensors, state["optimizer_scalars"], state["optimizer_groups"]))
    return state


def _flatten_optimizer(sd: dict) -> tuple[dict[str, torch.Tensor], dict, list]:
    tensors, scalars = {}, {}
    for idx, entry in sd["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{idx}.{key}"] = value.detach().contiguous().cpu()
            else:
                scalars.setdefault(str(idx), {})[key] = value
    return tensors, scalars, sd["param_groups"]


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], scalars: dict, groups: list) -> dict:
    state: dict[int, dict] = {}
    for name, t in tensors.items():
        _, idx, key = name.split(".", 2)
        state.setdefault(int(idx), {})[key] = t
    for idx, entry in scalars.items():
        state.setdefault(int(idx), {}).update(entry)
    return {"state": state, "param_groups": groups}
