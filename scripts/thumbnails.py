"""Template thumbnails: `<workflow>.jpg` beside each example workflow, the card image ComfyUI's Templates browser
shows for a custom node's template (it asks for /api/workflow_templates/<pack>/<name>.jpg). Drawn from the
workflow's own example inputs: its image(s) and the waveform of its speech, with the template's title."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

SIZE = (512, 384)
BG, FG, WAVE = (24, 26, 32), (235, 235, 240), (90, 170, 255)


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1 ships a scalable default font
    except TypeError:
        return ImageFont.load_default()


def _envelope(path: Path, bins: int) -> np.ndarray:
    """Peak level per bin in [0, 1] (WAV read directly; other formats through PyAV)."""
    if path.suffix == ".wav":
        with wave.open(str(path)) as w:
            x = np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32) / 32768
    else:
        import av
        with av.open(str(path)) as c:
            x = np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(audio=0)]).astype(np.float32)
    x = np.abs(x[: len(x) // bins * bins]).reshape(bins, -1).max(axis=1)
    return x / max(float(x.max()), 1e-6)


def draw(title: str, images: list[Path], audios: list[Path], out: Path) -> None:
    card = Image.new("RGB", SIZE, BG)
    pen = ImageDraw.Draw(card)
    pictures = [Image.open(p).convert("RGB") for p in images[:2]]
    box_w = (SIZE[0] - 16 * (len(pictures) + 1)) // max(len(pictures), 1)
    for k, pic in enumerate(pictures):
        pic.thumbnail((box_w, 220))
        card.paste(pic, (16 + k * (box_w + 16) + (box_w - pic.width) // 2, 16 + (220 - pic.height) // 2))
    lane = (SIZE[1] - 40 - 248 - 4) // max(len(audios), 1)
    for k, audio in enumerate(audios):
        env = _envelope(audio, SIZE[0] - 32)
        mid = 248 + lane * k + lane // 2
        for x, v in enumerate(env):
            h = max(1, int(v * (lane // 2 - 3)))
            pen.line([(16 + x, mid - h), (16 + x, mid + h)], fill=WAVE if k == 0 else (255, 170, 90))
    pen.rectangle([0, SIZE[1] - 40, SIZE[0], SIZE[1]], fill=(0, 0, 0))
    pen.text((16, SIZE[1] - 32), title, fill=FG, font=_font(20))
    card.save(out, quality=85)
