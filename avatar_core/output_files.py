"""Files the pack writes: never over a user's file, into a folder checked before the long work starts.

* New files get ComfyUI's counter naming (``<name>_00001.<ext>``, one above the highest number there, as
  ComfyUI's savers), created exclusively: a file that appears between the listing and the write is never
  replaced, the next number is taken.
* A folder that must take files later (resume checkpoints, training checkpoints) is checked up front: a
  folder (not a file), writable (a real write: permission bits say nothing for root or a read-only mount),
  with room for what will be written.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from .errors import InputError

_MAX_TRIES = 100


def check_name(name: str, what: str = "name") -> str:
    """A plain file-name stem: no folder parts, not empty (a name must not write somewhere else)."""
    if not isinstance(name, str) or not name.strip() or name.strip() != name or any(
            c in name for c in '/\\:*?"<>|\0') or name in (".", ".."):
        raise InputError(f"{what} {name!r}: give a plain file name without folder parts or the characters "
                         '/ \\ : * ? " < > | (e.g. clip000).')
    return name


def next_free_path(folder: str | Path, name: str, suffix: str) -> Path:
    """`<folder>/<name>_NNNNN<suffix>` one above the highest number there (ComfyUI's savers' naming)."""
    pattern = re.compile(re.escape(name) + r"_(\d{5,})" + re.escape(suffix) + "$")
    taken = [int(m.group(1)) for f in os.listdir(folder) if (m := pattern.match(f))]
    return Path(folder) / f"{name}_{max(taken, default=0) + 1:05d}{suffix}"


def write_new(folder: str | Path, name: str, data: bytes, suffix: str = ".safetensors",
              pick: Callable[[str | Path, str], Path] | None = None) -> Path:
    """Write `data` to a new numbered file; never replaces an existing one (exclusive create, next number
    on a race). `pick(folder, name)`: the name chooser (default: next_free_path with `suffix`)."""
    check_name(name)
    check_folder(folder, f"cannot save {name}", len(data))
    Path(folder).mkdir(parents=True, exist_ok=True)
    for _ in range(_MAX_TRIES):
        path = pick(folder, name) if pick is not None else next_free_path(folder, name, suffix)
        try:
            with open(path, "xb") as f:
                f.write(data)
            return path
        except FileExistsError:
            continue  # another save took this number between the listing and the open
    raise FileExistsError(f"could not find a free file name for {name} in {folder}")


def write_exclusive(path: str | Path, data: bytes) -> Path | None:
    """Write `data` as exactly `path` unless a file is there (then None: nothing written, nothing replaced).
    Written beside it under a temporary name and linked into place, so a crash never leaves a half file at
    `path` (a resumable writer, e.g. the dataset builder, takes a file that exists as done)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    with open(tmp, "xb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    try:
        os.link(tmp, path)                 # atomic, and refuses an existing name (rename would replace it)
    except FileExistsError:
        return None
    finally:
        tmp.unlink()
    return path


def folder_problem(directory: str | Path, need_bytes: int = 0, margin: int = 16 << 20) -> str | None:
    """Why `directory` cannot take `need_bytes` of new files (None: it can). Creates nothing: a missing folder
    is judged by the nearest folder above it that exists (the writer creates it when it writes)."""
    d = Path(directory)
    existing = d
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{d} is a file, not a folder" if existing == d else f"{d} cannot be created: {existing} is a file"
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".hyavatar_probe_") as f:
            f.write(b"0")
            f.flush()
    except OSError as e:
        return f"{d} cannot be written ({e.strerror or e})"
    free = shutil.disk_usage(existing).free
    if free < need_bytes + margin:
        return f"{d} has {free / 2**20:.0f} MiB free, {(need_bytes + margin) / 2**20:.0f} MiB are needed"
    return None


def check_folder(directory: str | Path, what: str, need_bytes: int = 0) -> Path:
    """`folder_problem` as an InputError naming `what` (call it before the expensive work that fills it)."""
    problem = folder_problem(directory, need_bytes)
    if problem is not None:
        raise InputError(f"{what}: {problem}. Choose another folder, or free some space.")
    return Path(directory)


def refuse_non_empty(folder: Path, what: str, fix: str) -> None:
    """A folder a new run would write over: refused unless empty (or missing)."""
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{what} {folder} is a file, not a folder. {fix}")
    entries = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    if entries:
        raise InputError(f"{what} {folder} already holds files ({', '.join(entries[:5])}"
                         f"{', ...' if len(entries) > 5 else ''}), which a new run would overwrite. {fix}")
