"""Write example_inputs/: the small, freely licensed images and speech the example workflows load.

    python scripts/make_example_inputs.py      # needs scikit-image, Pillow, espeak-ng and sox (apt)

Images come from scikit-image's bundled `astronaut` photo (NASA, public domain); speech is synthesised with
espeak-ng from our own sentences. The files are committed; rerun this only to change them. See
example_inputs/README.md for what each file is and its licence.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from skimage import data

OUT = Path(__file__).resolve().parents[1] / "example_inputs"
FACE = (150, 30, 330, 230)   # the astronaut's head in the 512x512 photo (x0, y0, x1, y1)
RATE = 16000                  # Whisper's rate: nothing to resample

SPEECH = ("Hello! I am an example portrait. The audio you connect decides what I say, "
          "and my lips follow every word.")
LEFT = "Good morning. Did you see the launch yesterday?"
RIGHT = "I did! It was the most beautiful thing I have ever seen."
TALK = ("Welcome to this short talk about space flight. A rocket has to reach about eight kilometres per second "
        "to stay in orbit. At that speed, it goes around the whole Earth in about ninety minutes. Astronauts see "
        "sixteen sunrises and sixteen sunsets every day. Living in orbit is hard work. Every drop of water is "
        "recycled, and every experiment is planned months in advance. Muscles and bones grow weaker without "
        "gravity, so the crew exercises for two hours a day. Food comes in small packets, and salt and pepper "
        "come as liquids, so that no crumbs float into the equipment. Sleeping is strange, too: you tie your "
        "sleeping bag to the wall, and there is no up or down. Still, almost everybody who has been there says "
        "the same thing. Looking back at the Earth, a thin blue line of air around a bright planet, changes the "
        "way you think about home. Thank you for listening, and have a wonderful day.")


def speak(text: str, path: Path, voice: str = "en-us", pad_before: float = 0.0, total: float | None = None) -> None:
    """espeak-ng -> 16 kHz mono (sox), with optional silence before and after (a speaker's own track)."""
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", "150", "-w", str(raw), text], check=True)
        effects = ["rate", str(RATE), "pad", str(pad_before), str(total or 0)]
        if total is not None:
            effects += ["trim", "0", str(total)]  # padded past the end, then cut to exactly `total` seconds
        subprocess.run(["sox", str(raw), "-c", "1", "-b", "16", str(path), *effects], check=True)


def seconds(path: Path) -> float:
    out = subprocess.run(["soxi", "-D", str(path)], capture_output=True, text=True, check=True)
    return float(out.stdout)


def images() -> None:
    photo = Image.fromarray(data.astronaut())                                       # 512x512 RGB
    photo.save(OUT / "portrait.jpg", quality=88)
    photo.crop((96, 0, 416, 512)).save(OUT / "full_body.jpg", quality=88)          # portrait orientation
    half = photo.resize((384, 384), Image.LANCZOS)
    pair = Image.new("RGB", (768, 384))
    pair.paste(half, (0, 0))
    pair.paste(ImageOps.mirror(half), (384, 0))
    pair.save(OUT / "two_people.jpg", quality=88)
    s = 384 / 512
    x0, y0, x1, y1 = (round(v * s) for v in FACE)
    for side, box in (("left", (x0, y0, x1, y1)), ("right", (768 - x1, y0, 768 - x0, y1))):
        mask = np.zeros((384, 768), np.uint8)
        mask[box[1]:box[3], box[0]:box[2]] = 255                                    # white = this character
        Image.fromarray(mask).save(OUT / f"two_people_mask_{side}.png", optimize=True)
    photo.crop(FACE).resize((256, 256), Image.LANCZOS).save(OUT / "emotion_smile.jpg", quality=88)


def speech() -> None:
    speak(SPEECH, OUT / "speech.wav")
    with tempfile.TemporaryDirectory() as tmp:
        first = Path(tmp) / "left.wav"
        speak(LEFT, first)
        gap = seconds(first) + 0.4
        total = gap + 4.0
    speak(LEFT, OUT / "speaker_left.wav", total=total)
    speak(RIGHT, OUT / "speaker_right.wav", voice="en-us+f3", pad_before=gap, total=total)
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "talk.wav"
        speak(TALK, wav, voice="en-gb")
        subprocess.run(["sox", str(wav), "-C", "0", str(OUT / "speech_long.ogg")], check=True)  # vorbis, small


if __name__ == "__main__":
    OUT.mkdir(exist_ok=True)
    images()
    speech()
    for p in sorted(OUT.iterdir()):
        print(f"{p.name}: {p.stat().st_size // 1024} KiB" + (f", {seconds(p):.1f} s" if p.suffix in (".wav", ".ogg") else ""))
