"""Write example_inputs/: the small, freely licensed images and speech the example workflows load.

    python scripts/make_example_inputs.py            # everything; needs scikit-image, Pillow, espeak-ng and sox (apt)
    python scripts/make_example_inputs.py four       # only some groups: images, speech, four

Images come from scikit-image's bundled `astronaut` photo (NASA, public domain); speech is synthesised with
espeak-ng from our own sentences. The files are committed; rerun this only to change them. See
example_inputs/README.md for what each file is and its licence.
"""

from __future__ import annotations

import subprocess
import sys
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


FOUR = (("Hi everyone, shall we start?", "en-us"),
        ("Yes. The launch went well.", "en-us+f3"),
        ("That is wonderful news!", "en-gb"),
        ("Then let us celebrate.", "en-gb+f2"))  # (sentence, espeak-ng voice), in speaking order
FOUR_GAP = 0.3  # seconds of silence before each turn


def speak(text: str, path: Path, voice: str = "en-us", pad_before: float = 0.0, total: float | None = None,
          exact_silence: bool = False) -> None:
    """espeak-ng -> 16 kHz mono (sox), with optional silence before and after (a speaker's own track).
    ``exact_silence``: no dither, so the silence is digital zeros (sox dithers to 16 bits by default)."""
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", "150", "-w", str(raw), text], check=True)
        effects = ["rate", str(RATE), "pad", str(pad_before), str(total or 0)]
        if total is not None:
            effects += ["trim", "0", str(total)]  # padded past the end, then cut to exactly `total` seconds
        subprocess.run(["sox", *(["-D"] if exact_silence else []), str(raw), "-c", "1", "-b", "16", str(path), *effects],
                       check=True)


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


def four_people() -> None:
    """four_people.jpg: four people in a row (the photo, its mirror image, and both a little closer), each in a
    192x384 column (a 768x384 image: 640x1280 video); their grown face boxes overlap, which the masks split."""
    photo = Image.fromarray(data.astronaut()).resize((384, 384), Image.LANCZOS)
    closer = Image.fromarray(data.astronaut()).resize((440, 440), Image.LANCZOS)
    head = round((FACE[0] + FACE[2]) / 2 * 384 / 512)                            # head centre x at 384 px
    columns = [photo.crop((head - 96, 0, head + 96, 384))]
    columns.append(ImageOps.mirror(columns[0]))
    near = round(head * 440 / 384)
    columns.append(closer.crop((near - 96, 20, near + 96, 404)))
    columns.append(ImageOps.mirror(columns[2]))
    row = Image.new("RGB", (768, 384))
    for k, col in enumerate(columns):
        row.paste(col, (192 * k, 0))
    row.save(OUT / "four_people.jpg", quality=88)


def four_speakers() -> None:
    """speaker_1.flac .. speaker_4.flac: four voices taking turns, each track silent (digital zeros) outside its
    own turn and as long as the whole conversation; FLAC keeps the zeros exact and the files small."""
    with tempfile.TemporaryDirectory() as tmp:
        lengths = []
        for k, (text, voice) in enumerate(FOUR):
            clip = Path(tmp) / f"{k}.wav"
            speak(text, clip, voice)
            lengths.append(seconds(clip))
    starts = [sum(lengths[:k]) + FOUR_GAP * (k + 1) for k in range(len(FOUR))]
    total = starts[-1] + lengths[-1] + 0.5
    for k, ((text, voice), start) in enumerate(zip(FOUR, starts)):
        speak(text, OUT / f"speaker_{k + 1}.flac", voice, pad_before=round(start, 2), total=round(total, 2),
              exact_silence=True)


GROUPS = {"images": images, "speech": speech, "four": lambda: (four_people(), four_speakers())}


if __name__ == "__main__":
    OUT.mkdir(exist_ok=True)
    for group in sys.argv[1:] or list(GROUPS):
        GROUPS[group]()
    for p in sorted(OUT.iterdir()):
        print(f"{p.name}: {p.stat().st_size // 1024} KiB" + (f", {seconds(p):.1f} s" if p.suffix in (".wav", ".ogg", ".flac") else ""))
