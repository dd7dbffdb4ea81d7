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
import logging
from dataclasses import dataclass, fields
from pathlib import Path

import torch
from safetensors.torch import save, save_file

from ..errors import InputError
from ..output_files import write_new
from ..specs.concepts import MOTION, WINDOW
from ..specs.conditioning import AUDIO_FIX, LATENT_CHANNELS, TEXT_FIX
from ..specs.fields import Maybe, Rule, Text, check_fields, declared
from ..specs.tensors import Mask, Tensor
from ..weight_files import TRAIN_CLIP, read_tensors, refuse

FORMAT = "hyavatar-train-clip"
VERSION = "1"
log = logging.getLogger(__name__)
LATENT_SCALE = 0.476986  # HunyuanVideo VAE scale factor (ComfyUI latent_formats.HunyuanVideo)


_REENCODE = "Re-encode the clip with Avatar Training Clip (or avatar_core.train.data.write_clip)."


def _shape_problem(clip: ClipSample) -> str:
    """Shapes consistent with each other (the sampler's conventions; see the table above)."""
    if clip.latents.shape[0] != LATENT_CHANNELS or clip.latents.shape[1] < 1:
        return f"latents must be [16, T, h, w], got {tuple(clip.latents.shape)}"
    _, T, h, w = clip.latents.shape
    ref = clip.ref_latents
    if ref.shape[0] != LATENT_CHANNELS or ref.shape[1] not in (1, T) or ref.shape[2:] != (h, w):
        return f"ref_latents must be [16, {T} or 1, {h}, {w}], got {tuple(ref.shape)}"
    audio = clip.audio if clip.audio.dim() == 5 else clip.audio.unsqueeze(0)
    if audio.shape[1] != 4 * T - 3:
        return (f"audio must be [(N,) {4 * T - 3}, 10, 5, 384] (4T-3 rows for {T} latent frames), "
                f"got {tuple(clip.audio.shape)}")
    fm = clip.face_mask
    if fm.shape[0] != audio.shape[0] or fm.shape[1] not in (1, T) or fm.shape[2:] != (h, w):
        return f"face_mask must be [{audio.shape[0]}, 1 or {T}, {h}, {w}], got {tuple(fm.shape)}"
    if clip.text_mask.shape != clip.text_states.shape[:1]:
        return (f"text_states [L, Dt] and text_mask [L] expected, got {tuple(clip.text_states.shape)} and "
                f"{tuple(clip.text_mask.shape)}")
    if clip.motion_exp.numel() != 4 or clip.motion_pose.numel() != 4:
        return f"motion_exp and motion_pose must be [4], got {tuple(clip.motion_exp.shape)}, {tuple(clip.motion_pose.shape)}"
    if clip.emotion is not None and clip.emotion.shape[0] != LATENT_CHANNELS:
        return f"emotion must be [16, Te, he, we], got {tuple(clip.emotion.shape)}"
    return ""


_MOTION = Tensor(ndims=(1,), kind="number", lo=MOTION.lo, hi=MOTION.hi, fix=MOTION.fix)


@declared(Rule(("latents", "ref_latents", "audio", "face_mask", "text_states"), _shape_problem, _REENCODE),
          latents=Tensor(ndims=(4,), layout="[16, T, h, w] latents", fix=_REENCODE),
          ref_latents=Tensor(ndims=(4,), layout="[16, T or 1, h, w] reference latents", fix=_REENCODE),
          audio=Tensor(ndims=(4, 5), layout="[(N,) F, 10, 5, 384] audio features", fix=AUDIO_FIX),
          face_mask=Mask(ndims=(4,), layout="[N, Tm, h, w] face masks", fix=_REENCODE),
          text_states=Tensor(ndims=(2,), layout="[L, Dt] text states", fix=TEXT_FIX),
          text_mask=Tensor(ndims=(1,), kind="any", layout="[L] text mask", fix=TEXT_FIX),
          text_pooled=Tensor(ndims=(1,), layout="[D2] pooled text", fix=TEXT_FIX),
          motion_exp=_MOTION, motion_pose=_MOTION,
          fps=Tensor(ndims=(0, 1), kind="number", lo=0.0, above=True, hi=240.0, fix="Give the clip's frame rate (25)."),
          emotion=Maybe(Tensor(ndims=(4,), layout="[16, Te, he, we] emotion latent", fix=_REENCODE)),
          caption=Text())
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
        """Every tensor and their shapes (errors name the clip file and the tensor)."""
        try:
            check_fields(self)
        except InputError as e:
            raise InputError(f"{name}: {e}") from None

    @property
    def frames(self) -> int:
        return int(self.latents.shape[1])

    def bucket(self) -> tuple:
        """The shapes a batch must share (aspect-ratio bucket: latent size, frames, characters, text length)."""
        return tuple(None if t is None else tuple(t.shape) for t in (
            self.latents, self.ref_latents, self.audio, self.face_mask, self.text_states, self.emotion))


def write_clip(path: str | Path, clip: ClipSample) -> None:
    """Write one cached clip (what an encoder script / ComfyUI graph calls once per clip)."""
    clip.check(Path(path).name)
    tensors = {f.name: getattr(clip, f.name) for f in fields(clip) if f.name != "caption"}
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items() if v is not None}
    save_file(tensors, str(path), metadata={"format": FORMAT, "version": VERSION, "caption": clip.caption})


def clip_bytes(clip: ClipSample, name: str) -> bytes:
    """One clip cache file's bytes (checked; `name` names the clip in an error)."""
    clip.check(name)
    tensors = {f.name: getattr(clip, f.name) for f in fields(clip) if f.name != "caption"}
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items() if v is not None}
    return save(tensors, metadata={"format": FORMAT, "version": VERSION, "caption": clip.caption})


def write_clip_new(folder: str | Path, name: str, clip: ClipSample) -> Path:
    """Write one cached clip as `<folder>/<name>_NNNNN.safetensors` (ComfyUI's counter naming): never over an
    existing file, so a second run of the same graph adds a clip instead of replacing one."""
    return write_new(folder, name, clip_bytes(clip, name))


def read_clip(path: str | Path) -> ClipSample:
    """One clip cache, checked as every weight file is (weight_files.TRAIN_CLIP: format by content, metadata,
    float dtypes but the mask, NaN/inf by key), then by the clip's own specs (ranks, values, shapes)."""
    path = Path(path)
    tensors, meta = read_tensors(path, TRAIN_CLIP)
    if meta.get("version") != VERSION:
        raise refuse(TRAIN_CLIP, path, f"has cache format version {meta.get('version')!r}; this pack reads {VERSION!r}")
    names = {f.name for f in fields(ClipSample)} - {"caption"}
    missing = sorted(names - set(tensors) - {"emotion"})
    if missing:
        raise refuse(TRAIN_CLIP, path, f"lacks {missing}")
    try:  # the clip checks itself when made (specs above)
        return ClipSample(**{k: v for k, v in tensors.items() if k in names}, caption=meta.get("caption", ""))
    except InputError as e:
        raise refuse(TRAIN_CLIP, path, str(e)) from e


@dataclass(frozen=True)
class ClipShape:
    """The sizes of one clip that the run's settings and the model must fit (recorded when it was checked)."""

    file: str
    frames: int  # latent frames T
    emotion: bool
    text_dim: int
    pooled_dim: int
    audio_dims: tuple[int, ...]  # (window, layers, channels) of the Whisper features
    bucket: tuple = ()           # every tensor's shape: clips of one bucket stack into a batch (ClipSample.bucket)

    def check_fits(self, cfg) -> None:
        want = (cfg.text_dim, cfg.text_pooled_dim, (cfg.audio_window, cfg.audio_layers, cfg.audio_channels))
        have = (self.text_dim, self.pooled_dim, self.audio_dims)
        if have != want:
            raise InputError(f"{self.file}: text / pooled / audio sizes {have} do not match the model's {want}; "
                             "encode the clips with this model's text encoders and whisper-tiny.")


def _shape_of(name: str, clip: ClipSample) -> ClipShape:
    return ClipShape(name, clip.frames, clip.emotion is not None, clip.text_states.shape[-1],
                     clip.text_pooled.shape[-1], tuple(clip.audio.shape[-3:]), clip.bucket())


class ClipFolder:
    """Every `*.safetensors` clip cache in a folder, read on access (sorted by name: a fixed order). Every clip is
    read and checked once when the folder is opened: a bad clip fails before training starts, not at step 5000.

    Clips of different sizes (aspect ratios, lengths, numbers of characters) are grouped in buckets of equal
    shapes (`buckets`, `bucket_of`): a batch is drawn from one bucket, so no clip is padded or cropped."""

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
        self.shapes = [_shape_of(p.name, read_clip(p)) for p in self.files]
        emotion = [s.emotion for s in self.shapes]
        groups: dict[tuple, list[int]] = {}
        for i, shape in enumerate(self.shapes):
            groups.setdefault(shape.bucket, []).append(i)
        self.buckets: list[list[int]] = list(groups.values())       # clip indices, first-seen order
        self.bucket_of: list[int] = [0] * len(self.shapes)           # clip index -> bucket index
        for b, members in enumerate(self.buckets):
            for i in members:
                self.bucket_of[i] = b
        if len(set(emotion)) > 1:
            raise InputError(f"{self.folder}: {emotion.count(True)} clips have an emotion latent and "
                             f"{emotion.count(False)} do not; give every clip one (to train the AEM) or none")
        log.info("checked %d training clips in %s", len(self.shapes), self.folder)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> ClipSample:
        return read_clip(self.files[i])

    def has_emotion(self) -> bool:
        return self.shapes[0].emotion

    def check_run(self, need_emotion: bool = False, sampled: bool = False) -> None:
        """What the run's settings need of the (already checked) clips: ``need_emotion``: emotion latents (AEM
        training); ``sampled``: the first clip is sampled during training, so its length must be a window."""
        if need_emotion and not self.has_emotion():
            raise InputError(f"{self.folder}: train_aem needs clips with an `emotion` latent; {self.files[0].name} "
                             "has none. Encode the clips with an emotion image, or train without train_aem.")
        if sampled:
            WINDOW.check(f"{self.files[0].name}: latent frames (the clip that sample_every samples)",
                         self.shapes[0].frames, "Put a clip of 2..256 latent frames first, or set sample_every 0.")

    def describe(self) -> str:
        return json.dumps({"folder": str(self.folder), "clips": len(self), "buckets": [len(b) for b in self.buckets]})
