"""The one checker of every weight file the pack reads: path, format by content, safe load, dtypes, finiteness.

Every loader (transformer, fp8 scale map, Whisper, Audio Emotion Module, LoRA, face detectors, training clip
caches, saved text conditioning, resume checkpoints) goes through here, with one `FileKind` record that says
what the file is, which formats it may have, which keys may hold integers and how to get a good file. The
expected key layout (names and shapes) comes from the code that knows it (the model built on the meta
device, whisper-tiny's sizes) and is checked with `check_layout`.

Format is told by CONTENT, never by the extension alone: a ComfyUI-listed `.sft` is a safetensors file, a
`.pt` renamed to `.safetensors` is named for what it is, a Git LFS pointer or a saved web page is said to be
one. Loading is safe only: safetensors, `torch.load(weights_only=True)`, TorchScript via `torch.jit.load`.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

import torch

from .errors import InputError

SMALL = 1 << 20  # elements: tensors up to this size are checked for NaN/inf whole
SAMPLE = 4096  # elements checked at each end of a large CPU tensor (kinds with finite="sampled")
_MAX_HEADER = 100 << 20  # safetensors' own limit on the JSON header

FORMATS = {
    "safetensors": "a safetensors file",
    "torch": "a torch.save archive (.pt / .pth / .bin)",
    "pickle": "a legacy pickled torch file",
    "torchscript": "a TorchScript archive (torch.jit.save)",
    "onnx": "an ONNX model",
    "zip": "a zip archive that is not a torch file",
    "broken-zip": "a damaged or truncated zip archive (an interrupted download?)",
    "lfs": "a Git LFS pointer (a small text file standing in for the weights; fetch the real file)",
    "html": "a web page (the download saved the page, not the file)",
    "text": "a text file",
    "empty": "an empty file (0 bytes)",
    "unknown": "of no known weight format",
}


_TORCH = ("torch", "pickle", "torchscript")
_EXTENSIONS = {".safetensors": ("safetensors",), ".sft": ("safetensors",), ".onnx": ("onnx",), ".pt": _TORCH,
               ".pth": _TORCH, ".bin": _TORCH, ".ckpt": _TORCH}  # what a file's name promises


class WeightFileError(InputError):
    """A weight file that cannot be used: the message names the file, the key (if any) and the fix."""


class WeightFileNotFound(WeightFileError, FileNotFoundError):
    """The file (or folder) is not there; also a FileNotFoundError for code that catches that."""


@dataclass(frozen=True)
class FileKind:
    """One record per kind of file: what it is called in messages, how to get a good one, what it may hold."""

    what: str                              # "Whisper file", "LoRA file", ... (messages start with it)
    fix: str                               # where a good file comes from
    formats: tuple[str, ...] = ("safetensors",)
    int_keys: tuple[str, ...] = ()         # fnmatch patterns of keys that hold integers / bools (masks)
    finite: str = "whole"                  # "whole" | "sampled" (huge files: both ends of large tensors) | "off"
    metadata_format: str | None = None     # the safetensors metadata "format" this kind carries
    folder: bool = False                   # a folder (InsightFace pack) instead of a file


TRANSFORMER = FileKind(
    "Avatar checkpoint", "Choose the Avatar DiT (mp_rank_00_model_states.pt, its fp8 version, or a .safetensors "
    "converted from it) in models/diffusion_models; if it is that file, re-download it (the copy is damaged).",
    formats=("safetensors", "torch", "pickle"), finite="sampled")
FP8_MAP = FileKind(
    "fp8 scale map", "Put the official mp_rank_00_model_states_fp8_map.pt that belongs to the fp8 checkpoint "
    "beside it (re-download it if it is damaged).", formats=("torch", "pickle", "safetensors"))
WHISPER = FileKind(
    "Whisper file", "Use model.safetensors of whisper-tiny: download openai/whisper-tiny's model.safetensors again "
    "(complete) into models/audio_encoders.",
    formats=("safetensors", "torch", "pickle"))
WHISPER_CONFIG = FileKind(
    "Whisper config", "Put whisper-tiny's config.json (openai/whisper-tiny) beside its model.safetensors, or remove "
    "config.json: the weights alone are enough.", formats=())
EMOTION = FileKind(
    "Audio Emotion Module file", "Choose an AEM .safetensors written by python -m avatar_core.train --train-aem (or "
    "save_emotion_module) in models/avatar_emotion, or 'none'.", metadata_format="hyavatar-aem")
LORA = FileKind(
    "LoRA file", "LoRA files are read as safetensors only (never pickled .pt / .ckpt): use the .safetensors "
    "version of this LoRA (convert it with a trusted tool if only a .pt exists), or re-download it.",
    int_keys=("*alpha",))  # kohya / musubi store alpha as a scalar, sometimes an integer one
DETFACE = FileKind(
    "face detector", "Use detface.pt from the official weights (ckpts/det_align/detface.pt), unchanged, in "
    "models/face_detection. Pickled .pt files are never loaded.", formats=("torchscript",), finite="off")
INSIGHTFACE = FileKind(
    "InsightFace model pack", "Put the buffalo_l pack (det_10g.onnx) or antelopev2 (scrfd_10g_bnkps.onnx) in its "
    "own folder: ComfyUI/models/insightface/models/<pack>/.", formats=("onnx",), finite="off", folder=True)
TRAIN_CLIP = FileKind(
    "training clip cache", "Write the clip again with the Avatar Training Clip node (or "
    "avatar_core.train.data.write_clip).", int_keys=("text_mask", "motion_exp", "motion_pose", "fps"),
    metadata_format="hyavatar-train-clip")
TEXT_CONDITIONING = FileKind(
    "Avatar conditioning file", "Choose a file written by Avatar Save Conditioning, or encode the prompt with Avatar Text "
    "Encode.", int_keys=("*.mask",), metadata_format="hyavatar-conditioning")
RESUME = FileKind(
    "resume checkpoint", "It is removed and the render starts afresh.", int_keys=("rng_cpu",),
    metadata_format="hyavatar-resume")


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def refuse(kind: FileKind, path: Path, problem: str, fix: str | None = None) -> WeightFileError:
    """The one message shape: '<what> <file>: <problem>. <fix>'."""
    return WeightFileError(f"{kind.what} {Path(path).name}: {problem}. {kind.fix if fix is None else fix}")


# ---------------------------------------------------------------- path and format
def check_path(path: str | Path, kind: FileKind) -> Path:
    """The path exists and is a file (a folder for folder kinds), or an error that says which it is."""
    path = Path(path)
    if not path.exists():
        raise WeightFileNotFound(f"{kind.what} not found: {path} does not exist. {kind.fix}")
    if kind.folder and not path.is_dir():
        raise refuse(kind, path, f"is a file ({describe(sniff(path))}), but a folder is expected here")
    if not kind.folder and path.is_dir():
        raise refuse(kind, path, f"is a folder ({path}), but one file is expected here; choose the file inside it")
    return path


def _zip_format(path: Path) -> str:
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return "broken-zip"
    if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
        return "torchscript"
    if any(n.endswith("data.pkl") for n in names):
        return "torch"
    return "zip"


def _looks_onnx(head: bytes) -> bool:
    """An ONNX ModelProto starts with field 1 (ir_version, a small varint), then another top-level field."""
    return len(head) > 3 and head[0] == 0x08 and 1 <= head[1] <= 20 and head[2] in (
        0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42, 0x72)


def sniff(path: str | Path) -> str:
    """The file's format from its first bytes (a key of FORMATS)."""
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        return "empty"
    with open(path, "rb") as f:
        head = f.read(64)
    if head[:4] == b"PK\x03\x04":
        return _zip_format(path)
    if len(head) > 8 and head[8:9] == b"{" and 2 <= int.from_bytes(head[:8], "little") < _MAX_HEADER:
        return "safetensors"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "pickle"
    if _looks_onnx(head):
        return "onnx"
    if head.startswith(b"version https://git-lfs"):
        return "lfs"
    text = head.lstrip().lower()
    if text.startswith((b"<!doctype", b"<html", b"<?xml")):
        return "html"
    if all(32 <= b < 127 or b in (9, 10, 13) for b in head):
        return "text"
    return "unknown"


def describe(fmt: str) -> str:
    return FORMATS.get(fmt, fmt)


def check_format(path: Path, kind: FileKind) -> str:
    """The detected format, or an error saying what the file really is (and that the name says otherwise)."""
    fmt = sniff(path)
    if fmt in kind.formats:
        return fmt
    wanted = " or ".join(describe(f) for f in kind.formats)
    problem = f"is {describe(fmt)}, not {wanted}"
    named = _EXTENSIONS.get(path.suffix.lower())
    if named is not None and fmt not in named:  # the name promises another format than the content has
        problem += f" (whatever its {path.suffix} name says)"
    if fmt == "pickle" or (fmt == "torch" and "torch" not in kind.formats):
        problem += "; pickled files are never loaded here (they could run code)"
    raise refuse(kind, path, problem)


# ---------------------------------------------------------------- reading
def safetensors_header(path: Path, kind: FileKind) -> tuple[dict[str, dict], dict[str, str]]:
    """(tensor entries, metadata) from the JSON header, with truncation told apart from other damage."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        raw = f.read(n)
    if len(raw) < n:
        raise refuse(kind, path, f"is truncated: its header alone claims {n} bytes, the file holds {size} "
                                 "(an interrupted download or copy)")
    try:
        header = json.loads(raw)
        entries = {k: v for k, v in header.items() if k != "__metadata__"}
        end = max((int(v["data_offsets"][1]) for v in entries.values()), default=0)
        meta = {str(k): str(v) for k, v in (header.get("__metadata__") or {}).items()}
    except (ValueError, TypeError, KeyError, AttributeError, IndexError) as e:
        raise refuse(kind, path, f"has a damaged safetensors header ({e})") from e
    if 8 + n + end > size:
        raise refuse(kind, path, f"is truncated: its header lists {end} bytes of tensors, the file holds "
                                 f"{size - 8 - n} (an interrupted download or copy)")
    return entries, meta


def _torch_load(path: Path, kind: FileKind, fmt: str) -> object:
    try:
        if path.name.endswith(".safetensors"):  # torch.load would hand a path of that name to safetensors
            with open(path, "rb") as f:
                return torch.load(f, map_location="cpu", weights_only=True)
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=fmt == "torch")
        except RuntimeError as e:
            if "mmap" not in str(e):
                raise
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 (truncated / corrupt / pickled code: all unusable)
        if "weights_only" in str(e) or "Unpickl" in type(e).__name__:
            raise refuse(kind, path, "holds pickled Python objects, which are never loaded (they could run code)") \
                from e
        raise refuse(kind, path, f"cannot be read ({type(e).__name__}: {str(e)[:200]}): the download may be "
                                 "incomplete") from e


def read_tensors(path: str | Path, kind: FileKind) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Every tensor of the file (+ safetensors metadata), checked: format, safe load, dtypes, finiteness."""
    path = check_path(path, kind)
    fmt = check_format(path, kind)
    meta: dict[str, str] = {}
    if fmt == "safetensors":
        from safetensors import safe_open
        _, meta = safetensors_header(path, kind)
        if kind.metadata_format is not None and meta.get("format") != kind.metadata_format:
            raise refuse(kind, path, f"is not {_article(kind.what)} {kind.what} (its metadata format is {meta.get('format')!r}, "
                                     f"not {kind.metadata_format!r})")
        try:
            with safe_open(str(path), framework="pt") as f:
                sd = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as e:  # noqa: BLE001 (a header that parses but data that does not)
            raise refuse(kind, path, f"cannot be read ({type(e).__name__}: {str(e)[:200]})") from e
    else:
        obj = _torch_load(path, kind, fmt)
        if isinstance(obj, dict) and isinstance(obj.get("module"), dict):
            obj = obj["module"]  # DeepSpeed / the official checkpoints
        if not isinstance(obj, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                for k, v in obj.items()):
            raise refuse(kind, path, f"holds a {type(obj).__name__}, not a state dict of named tensors")
        sd = obj
    check_tensors(sd, path, kind)
    return sd, meta


def check_tensors(sd: Mapping[str, torch.Tensor], path: Path, kind: FileKind) -> None:
    """Integer tensors where numbers are expected, and NaN / inf, named by key."""
    for key, t in sd.items():
        if not (t.is_floating_point() or t.is_complex()) and not any(fnmatch(key, p) for p in kind.int_keys):
            raise refuse(kind, path, f"weight {key} is stored as {str(t.dtype).replace('torch.', '')}, but it must "
                                     "hold real numbers (a float dtype): the file was written wrongly or is not "
                                     f"{_article(kind.what)} {kind.what}")
    if kind.finite != "off":
        bad = first_non_finite(sd, sampled=kind.finite == "sampled")
        if bad is not None:
            raise refuse(kind, path, f"weight {bad} holds NaN/inf values, so every result would be garbage or "
                                     "black; the file is damaged (an interrupted download or conversion)")


def _non_finite(t: torch.Tensor) -> bool:
    if t.dtype in (torch.float8_e4m3fn, torch.float8_e5m2):  # isfinite has no fp8 kernel everywhere
        t = t.to(torch.float16)
    return not bool(torch.isfinite(t).all())


def first_non_finite(sd: Mapping[str, torch.Tensor], sampled: bool = True) -> str | None:
    """Name of the first floating tensor holding NaN/inf. ``sampled``: large CPU tensors are checked at both
    ends only (a full pass over 13B CPU weights costs ~100 s; see checkpoint_checks)."""
    for name, t in sd.items():
        if not t.is_floating_point() or t.numel() == 0:
            continue
        part = t
        if sampled and t.numel() > SMALL and t.device.type != "cuda":
            flat = t.reshape(-1)
            part = torch.cat([flat[:SAMPLE], flat[-SAMPLE:]])
        if _non_finite(part):
            return name
    return None


# ---------------------------------------------------------------- layout
def layout_problems(sd: Mapping[str, torch.Tensor], expected: Mapping[str, tuple[int, ...]], *,
                    optional: tuple[str, ...] = (), extra: bool = False) -> list[str]:
    """Missing keys, unexpected keys (unless ``extra``) and shape mismatches, as short phrases."""
    missing = sorted(k for k in expected if k not in sd and k not in optional)
    unexpected = [] if extra else sorted(k for k in sd if k not in expected)
    bad = [f"{k}: file {tuple(sd[k].shape)} vs expected {tuple(expected[k])}"
           for k in expected if k in sd and tuple(sd[k].shape) != tuple(expected[k])]
    parts = [f"{len(missing)} missing keys (e.g. {missing[:3]})"] if missing else []
    parts += [f"{len(unexpected)} unexpected keys (e.g. {unexpected[:3]})"] if unexpected else []
    parts += [f"{len(bad)} shape mismatches (e.g. {bad[:2]})"] if bad else []
    return parts


def check_layout(sd: Mapping[str, torch.Tensor], expected: Mapping[str, tuple[int, ...]], path: Path,
                 kind: FileKind, *, optional: tuple[str, ...] = (), extra: bool = False, model: str = "") -> None:
    parts = layout_problems(sd, expected, optional=optional, extra=extra)
    if parts:
        raise refuse(kind, path, f"does not match {model or 'the expected layout'}: " + "; ".join(parts))


def read_json(path: str | Path, kind: FileKind) -> dict:
    """A config file beside weights: a JSON object, or an error naming the file."""
    path = Path(path)
    if path.is_dir():
        raise refuse(kind, path, "is a folder, but a config.json file is expected here")
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise refuse(kind, path, f"is not valid JSON ({e})") from e
    if not isinstance(data, dict):
        raise refuse(kind, path, f"holds a JSON {type(data).__name__}, not an object of settings")
    return data


def read_lora_file(path: str | Path) -> dict[str, torch.Tensor]:
    """The entry of the LoRA reader (lora/apply.py): exists, safetensors by content, float, finite."""
    return read_tensors(path, LORA)[0]


def check_torchscript(path: str | Path, kind: FileKind = DETFACE) -> Path:
    """A TorchScript archive by content (any name); everything else is refused with what it is."""
    path = check_path(path, kind)
    check_format(path, kind)
    return path
