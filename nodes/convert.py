"""Pure conversions between ComfyUI values and avatar_core inputs (no ComfyUI import: tested without it)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..avatar_core.conditioning.audio import CharacterAudio, with_listeners
from ..avatar_core.conditioning.faces import resize_masks  # noqa: F401 (node API)
from ..avatar_core.conditioning.image import official_video_size as official_size  # noqa: F401 (node API)
from ..avatar_core.errors import InputError
from ..avatar_core.specs.concepts import START_OFFSET

MOTION_EXP, MOTION_POSE = 30, 25  # official motion bucket ids


@dataclass
class AudioFeatures:
    """Whisper windows of every character, all as long as the video, and a listener's (for the characters
    after the last track: those the masks have and the audio node does not)."""

    features: torch.Tensor  # [N, F, 10, 5, 384]
    fps: float
    listener: torch.Tensor | None = None  # [F, 10, 5, 384] Whisper of silence; None: every character has a track

    @property
    def num_frames(self) -> int:
        return int(self.features.shape[1])

    def for_characters(self, count: int) -> torch.Tensor:
        """[count, F, 10, 5, 384]: the tracks, then listeners up to ``count`` characters (one per mask)."""
        n = self.features.shape[0]
        if n > count:
            raise InputError(f"Avatar Audio Encode gives {n} tracks (audio_0 .. audio_{n - 1}) but there are only "
                             f"{count} character masks: set characters to {n} on Avatar Character Masks, or "
                             f"disconnect audio_{count} and after.")
        if n < count and self.listener is None:
            raise InputError(f"{n} audio tracks but {count} character masks: give one mask per audio (Avatar "
                             "Character Masks, 'characters' input).")
        return self.features if n == count else with_listeners(self.features, self.listener, count, self.fps)


def character_tracks(audio: dict | None, start_offsets: str = "0", max_characters: int = 8) -> list[CharacterAudio]:
    """Autogrow AUDIO inputs {'audio_0': AUDIO or None, ...} -> one track per character up to the last connected
    input: audio_k is character k + 1, a SPEAKER starting at the k-th of the comma-separated ``start_offsets``
    (seconds); an input left unconnected makes its character a LISTENER (no speech). Offsets of characters after
    the last connected input (listeners the sampler adds) are ignored. No input connected: one listener."""
    slots = {int(name.rsplit("_", 1)[1]): a for name, a in (audio or {}).items() if a is not None}
    count = max(slots) + 1 if slots else 1
    offsets = parse_offsets(start_offsets, max_characters)
    return [CharacterAudio(slots[k]["waveform"], slots[k]["sample_rate"], offsets[k], f"audio_{k} (character {k + 1})")
            if k in slots else CharacterAudio.listener(f"character {k + 1} (listener: audio_{k} not connected)")
            for k in range(count)]


def parse_offsets(text: str, count: int, name: str = "start_offsets") -> list[float]:
    """'0, 2.5' -> [0.0, 2.5] seconds, one per connected audio; missing entries are 0. Errors name the input."""
    parts = [p.strip() for p in str(text).replace(";", ",").split(",") if p.strip()]
    if len(parts) > count:
        raise InputError(f"{name} has {len(parts)} values but only {count} audio inputs are connected: give one "
                         "start time (seconds) per connected audio, e.g. '0, 2.5'.")
    values = []
    for k, part in enumerate(parts):
        try:
            value: float | str = float(part)
        except ValueError:
            value = part  # refused by the spec as "not a number"
        values.append(START_OFFSET.check(f"{name}: value {k + 1} ({part!r})", value,
                                         hint=f"Separate the seconds by commas, one per audio input (got {text!r})."))
    return values + [0.0] * (count - len(values))


def image_to_frames(image: torch.Tensor, frames: int) -> torch.Tensor:
    """First IMAGE of a batch [B, H, W, C] (RGB, 0..1) repeated as a video [frames, H, W, 3]."""
    return image[:1, :, :, :3].expand(frames, -1, -1, -1).contiguous()


def masks_by_character(masks: dict | None, characters: int) -> list[torch.Tensor | None]:
    """Autogrow MASK inputs {'mask_0': MASK, ...} -> one entry per character (None: detect that one)."""
    out: list[torch.Tensor | None] = [None] * characters
    for name, mask in (masks or {}).items():
        index = int(name.rsplit("_", 1)[1])
        if mask is None:
            continue
        if index >= characters:
            raise InputError(f"{name} is connected but characters={characters}: set characters to at least "
                             f"{index + 1} or disconnect {name}.")
        out[index] = mask
    return out


def motion_tensor(value: float) -> torch.Tensor:
    """One motion bucket id -> the model's [1, 4] input (the official code repeats it 4 times)."""
    return torch.full((1, 4), float(value))


PALETTE = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
           (240, 50, 230), (210, 245, 60)]


def mask_preview(image: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """IMAGE [1, H, W, 3] with each character's mask tinted in its own colour and numbered 1..N."""
    from PIL import Image, ImageDraw

    base = image[0, :, :, :3].clone()
    for i, m in enumerate(masks):
        colour = torch.tensor(PALETTE[i % len(PALETTE)], dtype=base.dtype) / 255
        base = torch.where(m[..., None] > 0.5, 0.55 * base + 0.45 * colour, base)
    pil = Image.fromarray((base.clamp(0, 1) * 255).byte().numpy())
    draw = ImageDraw.Draw(pil)
    for i, m in enumerate(masks):
        ys, xs = torch.nonzero(m > 0.5, as_tuple=True)
        if len(ys):
            draw.text((int(xs.float().mean()), int(ys.float().mean())), str(i + 1), fill=(255, 255, 255),
                      font_size=max(12, image.shape[1] // 12), stroke_width=2, stroke_fill=(0, 0, 0))
    return torch.from_numpy(__import__("numpy").array(pil)).float()[None] / 255
