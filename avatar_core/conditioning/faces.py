"""Faces -> per-character masks: detector interface, InsightFace loader, the official box-to-mask rule.

The official detector (detface.pt, TorchScript) lives in detface.py.

The official code keeps one face and builds one mask (``get_facemask``: the box scaled x3 about its
floored centre, clipped, 1 inside; bilinear to latent size; the model then nearest-resizes to tokens).
It detects on the reference AFTER resizing it to the video size (PIL LANCZOS, audio_dataset.py), so the box,
its floored centre and the mask's pixel grid are those of the video: ``character_masks(video_size=...)`` does
the same. Here every character gets such a mask: faces are numbered left to right so character numbering is
stable, and a user-drawn mask replaces detection for its character.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError
from ..specs.concepts import CHARACTERS, FACE_SCALE
from ..specs.fields import Choice, Instance, Int, Items, Maybe, checked
from ..specs.tensors import MASK, ONE_IMAGE
from ..weight_files import INSIGHTFACE, WeightFileNotFound, check_format, describe, refuse, sniff

OFFICIAL_AREA = 3.0  # official get_facemask(area=3.0) call in sample_inference_audio.py
LATENT_STRIDE = 8  # VAE spatial compression


@dataclass(frozen=True)
class FaceBox:
    """A detected face in pixels: corners (x1, y1) top-left and (x2, y2) bottom-right, detector score."""

    x1: float
    y1: float
    x2: float
    y2: float
    score: float = 1.0

    @property
    def area(self) -> float:
        return max(self.x2 - self.x1, 0.0) * max(self.y2 - self.y1, 0.0)

    @property
    def center_x(self) -> float:
        return (self.x1 + self.x2) / 2


@runtime_checkable
class FaceDetector(Protocol):
    """Anything that finds faces in an RGB uint8 image [H, W, 3]."""

    def detect(self, image: np.ndarray) -> list[FaceBox]: ...


def expand_box(box: FaceBox, width: int, height: int, area: float = OFFICIAL_AREA) -> tuple[int, int, int, int]:
    """The official rectangle: box scaled by ``area`` about its floored centre, clipped -> (x1, y1, x2, y2)."""
    ww, hh = (box.x2 - box.x1) * area, (box.y2 - box.y1) * area
    cx, cy = math.floor((box.x2 + box.x1) / 2), math.floor((box.y2 + box.y1) / 2)
    x1, y1 = max(cx - math.floor(ww / 2), 0), max(cy - math.floor(hh / 2), 0)
    x2, y2 = min(cx + math.floor(ww / 2), width), min(cy + math.floor(hh / 2), height)
    return int(x1), int(y1), int(max(x2, 0)), int(max(y2, 0))


def box_mask(box: FaceBox, width: int, height: int, area: float = OFFICIAL_AREA) -> torch.Tensor:
    """0/1 float mask [H, W] of the expanded box."""
    x1, y1, x2, y2 = expand_box(box, width, height, area)
    mask = torch.zeros(height, width)
    mask[y1:y2, x1:x2] = 1.0
    return mask


def to_latent(masks: torch.Tensor, latent_size: tuple[int, int]) -> torch.Tensor:
    """[N, H, W] pixel masks -> [N, h, w] by bilinear resize (align_corners=False), fractional at borders.

    Masks that do not overlap in pixels stay disjoint: a latent position that the resize shares between
    characters goes wholly to the one with the larger share (ties: the lower number), so no latent token (the
    model nearest-resizes to tokens) is driven by two audios. Overlapping masks (overlap="sum") are left as is.
    """
    latent = F.interpolate(masks[:, None].float(), size=tuple(latent_size), mode="bilinear", align_corners=False)[:, 0]
    if latent.shape[0] < 2 or int((masks > 0).sum(0).max()) > 1:
        return latent
    winner = latent.argmax(0)  # [h, w]; first index on ties
    return latent * (torch.arange(latent.shape[0])[:, None, None] == winner)


def resize_masks(masks: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """Masks [N, H, W] resized to (h, w) with nearest (user masks keep hard edges)."""
    if tuple(masks.shape[-2:]) == tuple(hw):
        return masks.float()
    return F.interpolate(masks[:, None].float(), size=tuple(hw), mode="nearest")[:, 0]


def at_video_size(image: np.ndarray, video_size: tuple[int, int]) -> np.ndarray:
    """RGB uint8 [H, W, 3] -> the reference at the video (height, width), PIL LANCZOS as the official dataset."""
    from PIL import Image

    from .llava_image import reference_at_video_size

    if tuple(image.shape[:2]) == tuple(video_size):
        return image
    return np.asarray(reference_at_video_size(Image.fromarray(image, "RGB"), tuple(video_size)))


def face_mask_for_model(latent_masks: torch.Tensor) -> torch.Tensor:
    """[N, h, w] latent masks -> the model's face_mask layout [1, N, 1, h, w] (one time step, repeated by the model)."""
    return latent_masks[None, :, None]


@dataclass
class CharacterMasks:
    """Per-character masks at image and latent resolution, and where each came from."""

    pixel: torch.Tensor  # [N, H, W] float
    latent: torch.Tensor  # [N, h, w] float
    boxes: list[FaceBox | None]  # detected face per character (None for a user mask / whole frame)
    sources: list[str]  # "face", "user mask" or "whole frame"
    notes: list[str] = field(default_factory=list)  # things the user should be told (e.g. no face found)


def image_to_uint8(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """A checked image (ONE_IMAGE: ComfyUI IMAGE [1, H, W, C] / [H, W, C] float in [0, 1], or RGB uint8
    [H, W, 3]) -> RGB uint8 [H, W, 3]."""
    if isinstance(image, np.ndarray):
        return np.ascontiguousarray(image)
    image = image[0] if image.ndim == 4 else image
    return image[..., :3].detach().float().cpu().clamp(0, 1).mul(255).round().to(torch.uint8).numpy()


def _check_user_mask(mask: torch.Tensor, index: int, height: int, width: int) -> torch.Tensor:
    """A checked MASK ([H, W] or [1, H, W]) as [H, W] float in [0, 1], or a clear error."""
    m = mask.detach().float().cpu()
    if m.ndim == 3 and m.shape[0] == 1:
        m = m[0]
    if m.shape != (height, width):
        raise InputError(
            f"mask of character {index + 1}: size {tuple(mask.shape)} does not match the reference image "
            f"({height}x{width}); draw the mask on the same image or resize it to {width}x{height}."
        )
    if float(m.max()) <= 0:
        raise InputError(f"mask of character {index + 1} is empty (all zeros); paint the character's face area.")
    return m.clamp(0, 1)


def _pick_faces(faces: list[FaceBox], wanted: int, taken: torch.Tensor | None) -> tuple[list[FaceBox], list[str]]:
    """Faces for the characters without a mask: skip faces inside user masks, keep the largest, number left to right."""
    notes = []
    if taken is not None:  # a face mostly covered by a user mask belongs to that user's character
        free = []
        for face in faces:
            x1, y1, x2, y2 = (int(round(v)) for v in (face.x1, face.y1, face.x2, face.y2))
            inside = taken[max(y1, 0) : max(y2, 0), max(x1, 0) : max(x2, 0)]
            if inside.numel() == 0 or float(inside.mean()) < 0.5:
                free.append(face)
        faces = free
    if wanted == 1 and len(faces) > 1 and taken is None:
        notes.append(f"found {len(faces)} faces for 1 character: kept the one the official code keeps.")
        faces = [official_face_choice(faces)]
    if len(faces) > wanted:
        notes.append(f"found {len(faces)} faces for {wanted} character(s): kept the {wanted} largest.")
        faces = sorted(faces, key=lambda b: b.area, reverse=True)[:wanted]
    return sorted(faces, key=lambda b: (b.center_x, b.y1)), notes


def official_face_choice(faces: Sequence[FaceBox]) -> FaceBox:
    """The face the official code keeps (AlignImage(maxface=True) as released): faces in score order, the LAST
    one whose area exceeds the FIRST face's (its ``max_area`` is never updated), else the first."""
    first = (faces[0].x2 - faces[0].x1) * (faces[0].y2 - faces[0].y1)
    chosen = faces[0]
    for face in faces[1:]:
        if (face.x2 - face.x1) * (face.y2 - face.y1) > first:
            chosen = face
    return chosen


def separate_overlaps(pixel: torch.Tensor, centres: Sequence[tuple[float, float] | None]) -> torch.Tensor:
    """Disjoint masks [N, H, W]: user masks (centre None) win over detected faces; a pixel that several face
    masks cover goes to the character whose face centre is nearest, one that several user masks cover to the
    one whose mask centroid is nearest (ties: the lower number)."""
    out = pixel.clone()
    user = [i for i, c in enumerate(centres) if c is None]
    faces = [i for i, c in enumerate(centres) if c is not None]
    if user and faces:  # user masks win over detected faces
        taken = out[user].amax(0) > 0
        out[faces] = out[faces] * ~taken
    _keep_nearest(out, faces, [centres[i] for i in faces])  # type: ignore[misc]
    _keep_nearest(out, user, [_centroid(pixel[i]) for i in user])
    return out


def _centroid(mask: torch.Tensor) -> tuple[float, float]:
    """(x, y) of a mask's weighted pixel centres."""
    h, w = mask.shape
    weight = mask.float() / mask.float().sum().clamp_min(1e-12)
    return (float((weight.sum(0) * (torch.arange(w) + 0.5)).sum()), float((weight.sum(1) * (torch.arange(h) + 0.5)).sum()))


def _keep_nearest(out: torch.Tensor, members: list[int], centres: list[tuple[float, float]]) -> None:
    """In place: each pixel that several of ``members`` cover stays only in the one with the nearest centre."""
    if len(members) < 2:
        return
    h, w = out.shape[-2:]
    ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    dist = torch.stack([(xs - cx) ** 2 + (ys - cy) ** 2 for cx, cy in centres])  # [M, H, W]
    dist = torch.where(out[members] > 0, dist, torch.full_like(dist, float("inf")))
    nearest = dist.argmin(0)
    for k, i in enumerate(members):
        out[i] = out[i] * (nearest == k)


def _no_face_error(missing: int, num_characters: int, found: int, height: int, width: int) -> InputError:
    return InputError(
        f"character {missing} (of {num_characters}) has no face: the detector found {found} usable face(s) in the "
        f"{width}x{height} reference image. Draw a MASK for character {missing}, lower the number of characters, "
        "or use an image where every character's face is visible."
    )


@checked(image=ONE_IMAGE, num_characters=CHARACTERS, area=FACE_SCALE,
         user_masks=Maybe(Items(Maybe(MASK), fix="Give one MASK (or None) per character.")),
         latent_size=Maybe(Items(Int(1, 4096, unit="latents"), lo=2, hi=2, fix="Give (height, width) in latents.")),
         overlap=Choice(("nearest", "sum"), fix="nearest: each spot to one character; sum: both audios drive it."),
         detector=Maybe(Instance(FaceDetector, what="a face detector (an object with detect(image))",
                                 fix="Load one (detface.pt or InsightFace), or give a MASK per character.")))
def character_masks(
    image: torch.Tensor | np.ndarray,
    num_characters: int = 1,
    detector: FaceDetector | None = None,
    user_masks: Sequence[torch.Tensor | None] | None = None,
    area: float = OFFICIAL_AREA,
    latent_size: tuple[int, int] | None = None,
    overlap: str = "nearest",
    video_size: tuple[int, int] | None = None,
) -> CharacterMasks:
    """One face mask per character (numbered left to right), at image (or video) and latent resolution.

    ``user_masks[i]`` (a MASK at image size) replaces detection for character i. With no face found and one
    character, the whole frame is used (the official fallback) and a note says so; with several characters,
    a character left without a face raises an error naming it. ``latent_size`` defaults to (H // 8, W // 8).
    ``overlap``: "nearest" (grown face boxes that overlap are split, each pixel to the nearest face centre; user
    masks keep their pixels, split the same way by their centroids where they overlap each other; to_latent
    keeps the masks disjoint) or "sum" (masks as they are: where they
    overlap, both audios drive the same tokens).
    ``video_size`` (height, width): detect on the reference resized to the video size (LANCZOS) and give the
    masks at that size, as the official code does (image.official_video_size); user masks (drawn at the image
    size) are resized to it with nearest. None: detect on the image as given.
    """
    arr = image_to_uint8(image)
    height, width = arr.shape[:2]
    user = list(user_masks) if user_masks is not None else []
    if len(user) > num_characters:
        raise InputError(f"{len(user)} masks given for {num_characters} character(s); give at most one per character.")
    user += [None] * (num_characters - len(user))
    checked = {i: _check_user_mask(m, i, height, width) for i, m in enumerate(user) if m is not None}
    if video_size is not None:
        arr, (height, width) = at_video_size(arr, video_size), tuple(video_size)
        checked = {i: resize_masks(m[None], (height, width))[0] for i, m in checked.items()}
    need = [i for i in range(num_characters) if i not in checked]
    faces, notes = [], []
    if need:
        if detector is None:
            raise InputError(
                f"character(s) {[i + 1 for i in need]} have no mask and no face detector was given; "
                "load a face detector (the official detface.pt in models/face_detection, or InsightFace in "
                "models/insightface) or draw a MASK per character."
            )
        taken = torch.stack(list(checked.values())).amax(0) if checked else None
        faces, notes = _pick_faces(list(detector.detect(arr)), len(need), taken)
    pixel = torch.zeros(num_characters, height, width)
    boxes: list[FaceBox | None] = [None] * num_characters
    sources = ["user mask"] * num_characters
    for i, m in checked.items():
        pixel[i] = m
    for slot, i in enumerate(need):
        if slot < len(faces):
            boxes[i], sources[i] = faces[slot], "face"
            pixel[i] = box_mask(faces[slot], width, height, area)
        elif num_characters == 1:
            sources[i] = "whole frame"
            pixel[i] = 1.0
            notes.append("no face found in the reference image: the whole frame drives the mouth (official fallback).")
        else:
            raise _no_face_error(i + 1, num_characters, len(faces), height, width)
    if overlap == "nearest" and num_characters > 1:
        centres = [None if b is None else ((b.x1 + b.x2) / 2, (b.y1 + b.y2) / 2) for b in boxes]
        pixel = separate_overlaps(pixel, centres)
    latent_hw = latent_size or (height // LATENT_STRIDE, width // LATENT_STRIDE)
    return CharacterMasks(pixel, to_latent(pixel, latent_hw), boxes, sources, notes)


# Detector files of the usual InsightFace packs under ComfyUI's models/insightface/models/<pack>/.
_DETECTOR_FILES = {"buffalo_l": "det_10g.onnx", "antelopev2": "scrfd_10g_bnkps.onnx"}


def find_insightface_detector(insightface_dir: str | Path, pack: str | None = None) -> Path:
    """The detection ONNX of an InsightFace pack (buffalo_l, antelopev2, ...) under ``insightface_dir``."""
    root = Path(insightface_dir)
    if root.exists() and not root.is_dir():
        raise refuse(INSIGHTFACE, root, "is a file, but the InsightFace models folder is expected here")
    packs = [pack] if pack else list(_DETECTOR_FILES)
    for name in packs:
        for folder in (root / "models" / name, root / name):
            if folder.exists() and not folder.is_dir():  # e.g. det_10g.onnx put straight into models/
                raise refuse(INSIGHTFACE, folder, f"is a file ({describe(sniff(folder))}), but an InsightFace "
                                                  "pack is a folder of .onnx files")
            known = folder / _DETECTOR_FILES.get(name, "")
            found = [known] if known.is_file() else (
                sorted(folder.glob("det_*.onnx")) + sorted(folder.glob("scrfd*.onnx")) if folder.is_dir() else [])
            if found:
                check_format(found[0], INSIGHTFACE)  # an LFS pointer or a saved web page is named as such
                return found[0]
    raise WeightFileNotFound(
        f"no InsightFace face detector found under {root} (looked for {packs} in {root / 'models'}): put the "
        "buffalo_l pack (det_10g.onnx) or antelopev2 (scrfd_10g_bnkps.onnx) in ComfyUI/models/insightface/models/."
    )


class InsightFaceDetector:
    """InsightFace's SCRFD detector through onnxruntime, loaded from a folder (insightface imported lazily)."""

    def __init__(
        self,
        insightface_dir: str | Path,
        pack: str | None = None,
        providers: Sequence[str] = ("CPUExecutionProvider",),
        det_size: int = 640,
        det_thresh: float = 0.5,
    ) -> None:
        self.model_file = find_insightface_detector(insightface_dir, pack)
        try:
            from insightface.model_zoo import get_model
        except ImportError as exc:
            raise ImportError("face detection needs the 'insightface' and 'onnxruntime' packages: pip install insightface onnxruntime-gpu") from exc
        self.model = get_model(str(self.model_file), providers=list(providers))
        if self.model is None:
            raise ValueError(f"{self.model_file}: insightface does not recognise this file as a face detector.")
        self.model.prepare(ctx_id=0, input_size=(det_size, det_size), det_thresh=det_thresh)

    def detect(self, image: np.ndarray) -> list[FaceBox]:
        bboxes, _ = self.model.detect(np.ascontiguousarray(image[:, :, ::-1]), max_num=0)  # insightface wants BGR
        return [FaceBox(float(b[0]), float(b[1]), float(b[2]), float(b[3]), float(b[4])) for b in bboxes]
