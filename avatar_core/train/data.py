"""Training data: one cached clip per `.safetensors` file, holding exactly what the sampler feeds the model.

The encoders (HunyuanVideo VAE, LLaVA + CLIP text encoders) are ComfyUI's in real use, so the cache is the
contract between "encode once" (a ComfyUI graph, a script) and the trainer. One file per clip:

| tensor       | shape                          | what (same conventions as the sampler)                        |
|--------------|--------------------------------|---------------------------------------------------------------|
| latents      | [16, T, h, w]                  | VAE latents of the clip's 4T-3 frames x the latent scale factor (0.476986) |
| ref_latents  | [16, T, h, w] or [16, 1, h, w] | the reference frame repeated to 4T-3 frames, encoded, scaled (as the sampler) |
| audio        | [F, 10, 5, 384] or [N, F, ...] | Whisper windows, one row per video frame, F = 4T-3 (one per character) |
| face_mask    | [N, Tm, h, w]                  | latent-resolution face masks (Tm = 1 or T)                    |
| text_states  | [L, Dt]; text_mask [L]; text_pooled [D2] | the prompt's LLaVA states (official layout) and CLIP pooled |
| motion_exp, motion_pose | [4]                 | motion ids (official defaults: 30 / 25 ...)                   |
| fps          | []                             | frames per second of the clip                                 |
| emotion      | [16, Te, he, we] (optional)    | VAE latent of the emotion reference image (trains the AEM)   |

Metadata: `format = hyavatar-train-clip`, `version = 1`, `caption` (the prompt, for reference).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save, save_file

from ..errors import InputError
from ..output_files import write_new
from ..weight_files import TRAIN_CLIP, read_tensors, refuse

FORMAT = "hyavatar-train-clip"
VERSION = "1"
LATENT_SCALE = 0.476986  # HunyuanVideo VAE scale factor (ComfyUI latent_formats.HunyuanVideo)


@dataclass
class ClipSample:
    latents: torch.Tensor
    ref_latents: torch.Tensor
    audio: torch.Tensor
    face_mask: torch.Tensor
    text_states: torch.Tensor
    text_mask: torch.Tensor
    text_pooled: torch.Tensor
    motion_exp: torch.Tensor
    motion_pose: torch.Tensor
    fps: torch.Tensor
    emotion: torch.Tensor | None = None
    caption: str = ""

    def check(self, name: str) -> None:
        """Shapes consistent with each other (errors name the clip file and the tensor)."""
        if self.latents.dim() != 4 or self.latents.shape[0] != 16:
            raise ValueError(f"{name}: latents must be [16, T, h, w], got {tuple(self.latents.shape)}")
        _, T, h, w = self.latents.shape
        if self.ref_latents.shape[0] != 16 or self.ref_latents.shape[1] not in (1, T) or self.ref_latents.shape[2:] != (h, w):
            raise ValueError(f"{name}: ref_latents must be [16, {T} or 1, {h}, {w}], got {tuple(self.ref_latents.shape)}")
        audio = self.audio if self.audio.dim() == 5 else self.audio.unsqueeze(0)
        if audio.dim() != 5 or audio.shape[1] != 4 * T - 3:
            raise ValueError(f"{name}: audio must be [(N,) {4 * T - 3}, 10, 5, 384] (4T-3 rows for {T} latent frames), "
                             f"got {tuple(self.audio.shape)}")
        fm = self.face_mask
        if fm.dim() != 4 or fm.shape[0] != audio.shape[0] or fm.shape[1] not in (1, T) or fm.shape[2:] != (h, w):
            raise ValueError(f"{name}: face_mask must be [{audio.shape[0]}, 1 or {T}, {h}, {w}], got {tuple(fm.shape)}")
        if self.text_states.dim() != 2 or self.text_mask.shape != self.text_states.shape[:1]:
            raise ValueError(f"{name}: text_states [L, Dt] and text_mask [L] expected, got "
                             f"{tuple(self.text_states.shape)} and {tuple(self.text_mask.shape)}")

    @property
    def frames(self) -> int:
        return int(self.latents.shape[1])


def write_clip(path: str | Path, clip: ClipSample) -> None:
    """Write one cached clip (what an encoder script / ComfyUI graph calls once per clip)."""
    clip.check(Path(path).name)
    tensors = {f.name: getattr(clip, f.name) for f in fields(clip) if f.name != "caption"}
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items() if v is not None}
    save_file(tensors, str(path), metadata={"format": FORMAT, "version": VERSION, "caption": clip.caption})


def write_clip_new(folder: str | Path, name: str, clip: ClipSample) -> Path:
    """Write one cached clip as `<folder>/<name>_NNNNN.safetensors` (ComfyUI's counter naming): never over an
    existing file, so a second run of the same graph adds a clip instead of replacing one."""
    clip.check(name)
    tensors = {f.name: getattr(clip, f.name) for f in fields(clip) if f.name != "caption"}
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items() if v is not None}
    data = save(tensors, metadata={"format": FORMAT, "version": VERSION, "caption": clip.caption})
    return write_new(folder, name, data)


def read_clip(path: str | Path) -> ClipSample:
    """One clip cache, checked as every weight file is (weight_files.TRAIN_CLIP: format by content, metadata,
    float dtypes but the mask, NaN/inf by key), then its shapes against each other."""
    path = Path(path)
    tensors, meta = read_tensors(path, TRAIN_CLIP)
    if meta.get("version") != VERSION:
        raise refuse(TRAIN_CLIP, path, f"has cache format version {meta.get('version')!r}; this pack reads {VERSION!r}")
    names = {f.name for f in fields(ClipSample)} - {"caption"}
    missing = sorted(names - set(tensors) - {"emotion"})
    if missing:
        raise refuse(TRAIN_CLIP, path, f"lacks {missing}")
    clip = ClipSample(**{k: v for k, v in tensors.items() if k in names}, caption=meta.get("caption", ""))
    try:
        clip.check(path.name)
    except ValueError as e:
        raise refuse(TRAIN_CLIP, path, str(e).removeprefix(f"{path.name}: ")) from e
    return clip


class ClipFolder:
    """Every `*.safetensors` clip cache in a folder, read on access (sorted by name: a fixed order)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            what = "is a file, not a folder" if self.folder.exists() else "not found"
            raise InputError(f"training data folder {self.folder} {what}: give the folder the Avatar Training Clip "
                             "node wrote its caches into (output/avatar_training/<set>).")
        self.files = sorted(self.folder.glob("*.safetensors"))
        if not self.files:
            raise InputError(f"{self.folder} holds no clip caches (*.safetensors written by the Avatar Training Clip "
                             "node or write_clip)")
        emotion = []
        for p in self.files:  # every clip read and checked once: fail before training starts, not at step 5000
            emotion.append(read_clip(p).emotion is not None)
        if len(set(emotion)) > 1:
            raise InputError(f"{self.folder}: {emotion.count(True)} clips have an emotion latent and "
                             f"{emotion.count(False)} do not; give every clip one (to train the AEM) or none")

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> ClipSample:
        return read_clip(self.files[i])

    def has_emotion(self) -> bool:
        with safe_open(str(self.files[0]), framework="pt") as f:
            return "emotion" in f.keys()

    def describe(self) -> str:
        return json.dumps({"folder": str(self.folder), "clips": len(self)})
