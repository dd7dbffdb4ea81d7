"""Data the frontend extension (js/hyavatar_characters.js) draws: pure functions, no ComfyUI import.

Every value is a list because ComfyUI concatenates each `ui` key over the node's outputs.
  AvatarFaceMasks   -> ui=face_mask_ui(masks, saved_overlay_images)
  AvatarAudioEncode -> ui=audio_ui([(input_name, AUDIO), ...])
"""

from __future__ import annotations

import math

import torch

from .convert import PALETTE

ENVELOPE_POINTS = 64
FLOOR_DB = -120.0  # RMS of digital silence, reported instead of -inf (same as js/lib/audio_level.js)


def colour_hex(index: int) -> str:
    r, g, b = PALETTE[index % len(PALETTE)]
    return f"#{r:02x}{g:02x}{b:02x}"


def character_summary(masks: torch.Tensor) -> list[dict]:
    """Masks [N, H, W] -> per character: number (1-based), colour of its tint, bounding box and area as
    fractions of the image (box None for an empty mask)."""
    n, h, w = masks.shape
    out = []
    for i in range(n):
        ys, xs = torch.nonzero(masks[i] > 0.5, as_tuple=True)
        box = None if len(ys) == 0 else [round(float(xs.min()) / w, 4), round(float(ys.min()) / h, 4),
                                         round(float(xs.max() + 1) / w, 4), round(float(ys.max() + 1) / h, 4)]
        out.append({"character": i + 1, "label": str(i + 1), "colour": colour_hex(i), "box": box,
                    "area": round(float((masks[i] > 0.5).float().mean()), 4)})
    return out


def envelope(samples: torch.Tensor, points: int = ENVELOPE_POINTS) -> list[float]:
    """Peak |sample| in each of `points` equal buckets of a mono track [T] (js/lib/audio_level.js envelope)."""
    t = samples.numel()
    out = []
    for p in range(points):
        start = (p * t) // points
        end = max(((p + 1) * t) // points, start + 1)
        chunk = samples[start:min(end, t)]
        out.append(round(min(float(chunk.abs().max()), 1.0), 4) if chunk.numel() else 0.0)
    return out


def audio_summary(waveform: torch.Tensor, sample_rate: int, name: str, points: int = ENVELOPE_POINTS) -> dict:
    """A ComfyUI AUDIO waveform ([B, C, T] or [C, T]; first item, channels averaged) -> duration (s),
    RMS level (dBFS), peak and envelope."""
    wav = waveform[0] if waveform.dim() == 3 else waveform
    mono = wav.float().mean(0)
    rms = float(mono.pow(2).mean().sqrt()) if mono.numel() else 0.0
    return {"input": name, "duration": round(mono.numel() / sample_rate, 4), "sample_rate": int(sample_rate),
            "rms_db": round(max(20 * math.log10(rms), FLOOR_DB), 2) if rms > 0 else FLOOR_DB,
            "peak": round(float(mono.abs().max()), 4) if mono.numel() else 0.0,
            "envelope": envelope(mono, points)}


def face_mask_ui(masks: torch.Tensor, overlay_images: list[dict]) -> dict:
    """`ui` of AvatarFaceMasks: the saved preview image refs ({filename, subfolder, type}) and the characters."""
    return {"avatar_overlay": list(overlay_images), "avatar_characters": character_summary(masks)}


def audio_ui(clips: list[tuple[str, dict]]) -> dict:
    """`ui` of AvatarAudioEncode from its (input name, AUDIO) pairs, e.g. [("audio_0", {...}), ...]."""
    return {"avatar_audio": [audio_summary(a["waveform"], int(a["sample_rate"]), name) for name, a in clips]}
