"""Nothing the pack writes goes over a user's file, and a folder that must take files later is checked first:
ComfyUI's counter naming with exclusive create, names without folder parts, the trainer's output folder."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from avatar_core import output_files
from avatar_core.config import AvatarConfig
from avatar_core.errors import InputError
from avatar_core.train import TrainConfig, train
from avatar_core.train.data import read_clip, write_clip_new
from avatar_core.train.synthetic import synthetic_clip, write_synthetic_folder

CFG = AvatarConfig.tiny()


def test_counter_naming_never_replaces_a_file(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "clip_00001.safetensors").write_bytes(b"mine")
    (tmp_path / "clip_00007.safetensors").write_bytes(b"mine too")
    assert output_files.write_new(tmp_path, "clip", b"new").name == "clip_00008.safetensors"
    real = output_files.next_free_path

    def racing(folder, name, suffix):  # another writer takes the number between the listing and the open
        path = real(folder, name, suffix)
        if not path.exists() and path.name == "clip_00009.safetensors":
            path.write_bytes(b"theirs")
        return path

    monkeypatch.setattr(output_files, "next_free_path", racing)
    assert output_files.write_new(tmp_path, "clip", b"new").name == "clip_00010.safetensors"
    assert (tmp_path / "clip_00009.safetensors").read_bytes() == b"theirs"
    assert (tmp_path / "clip_00001.safetensors").read_bytes() == b"mine"


@pytest.mark.parametrize("name", ["../clip", "a/b", "", " clip", "c:x", ".."])
def test_names_with_folder_parts_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(InputError, match="plain file name"):
        output_files.write_new(tmp_path, name, b"x")
    assert list(tmp_path.iterdir()) == []


def test_a_clip_written_twice_under_one_name_gives_two_files(tmp_path: Path) -> None:
    clip = synthetic_clip(CFG, 3, 4, 6)
    first = write_clip_new(tmp_path, "clip000", clip)
    second = write_clip_new(tmp_path, "clip000", clip)
    assert (first.name, second.name) == ("clip000_00001.safetensors", "clip000_00002.safetensors")
    assert torch.equal(read_clip(first).latents, clip.latents)


def test_a_folder_that_is_a_file_is_refused_for_new_files(tmp_path: Path) -> None:
    (tmp_path / "set").write_text("x")
    with pytest.raises(InputError, match=r"set is a file, not a folder"):
        output_files.write_new(tmp_path / "set", "clip", b"x")


@pytest.mark.parametrize("name", ["clip000", "Take X 01", "XX", "a.b-c_d"])
def test_plain_names_are_taken_as_they_are(name: str) -> None:
    assert output_files.check_name(name) == name


def test_an_exclusive_write_lands_whole_at_its_path_and_never_replaces(tmp_path: Path) -> None:
    target = tmp_path / "clip.bin"
    assert output_files.write_exclusive(target, b"first") == target
    assert output_files.write_exclusive(str(target), b"second") is None
    assert target.read_bytes() == b"first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.bin"]  # no temporary file left either way


def test_a_name_chooser_picks_the_file(tmp_path: Path) -> None:
    asked = []

    def pick(folder, name):
        asked.append((Path(folder), name))
        return Path(folder) / f"{name}-chosen.bin"

    assert output_files.write_new(tmp_path, "clip", b"x", pick=pick) == tmp_path / "clip-chosen.bin"
    assert asked == [(tmp_path, "clip")] and (tmp_path / "clip-chosen.bin").read_bytes() == b"x"


MIB = 2**20


def _free(monkeypatch, free: int) -> None:
    usage = shutil.disk_usage("/")
    monkeypatch.setattr(output_files.shutil, "disk_usage", lambda path: usage._replace(free=free))


def test_room_is_what_is_written_plus_the_margin(tmp_path: Path, monkeypatch) -> None:
    margin = 16 * MIB  # folder_problem's default
    _free(monkeypatch, margin + 100)
    assert output_files.folder_problem(tmp_path, 100) is None          # exactly enough
    assert output_files.check_folder(tmp_path, "resume") == tmp_path   # nothing asked: the margin alone
    assert output_files.write_new(tmp_path, "clip", b"x" * 100).stat().st_size == 100
    with pytest.raises(InputError, match=r"^cannot save clip: .* MiB are needed\. Choose another folder"):
        output_files.write_new(tmp_path, "clip", b"x" * 101)
    _free(monkeypatch, margin)
    assert output_files.check_folder(tmp_path, "resume") == tmp_path


def test_the_room_message_says_mebibytes(tmp_path: Path, monkeypatch) -> None:
    _free(monkeypatch, 30 * MIB)
    assert output_files.folder_problem(tmp_path, 20 * MIB) == f"{tmp_path} has 30 MiB free, 36 MiB are needed"


# ---------------------------------------------------------------- the trainer's output folder
@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_synthetic_folder(tmp_path_factory.mktemp("clips"), CFG, clips=1)


def _config(data: Path, out: Path, **kw) -> TrainConfig:
    return TrainConfig(**{**dict(data=str(data), output=str(out), random_model="tiny", dtype="fp32", lora_rank=4,
                                 lora_alpha=4.0, steps=1, save_every=1, progress=False, device="cpu"), **kw})


def test_a_second_training_into_the_same_folder_is_refused(data: Path, tmp_path: Path) -> None:
    first = train(_config(data, tmp_path / "run"))
    before = first.lora.read_bytes()
    with pytest.raises(InputError, match=r"output folder .*run already holds files \(checkpoints, lora\.safetensors.*"
                                         r"new or empty folder \(--output\).*--resume latest"):
        train(_config(data, tmp_path / "run", seed=1))
    assert first.lora.read_bytes() == before, "the first run's LoRA must stay as it was"
    resumed = train(_config(data, tmp_path / "run", steps=2, resume="latest"))  # resuming from it: allowed
    assert len(resumed.losses) == 2
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match=r"already holds files \(notes\.txt\)"):
        train(_config(data, tmp_path / "other", resume="latest"))  # 'latest' with nothing to resume: a new run


@pytest.mark.parametrize("case", ["a file", "inside a file", "full"])
def test_an_unusable_output_folder_stops_before_step_one(data: Path, tmp_path: Path, monkeypatch, case: str) -> None:
    (tmp_path / "f").write_text("x")
    out = {"a file": tmp_path / "f", "inside a file": tmp_path / "f" / "run", "full": tmp_path / "run"}[case]
    if case == "full":
        monkeypatch.setattr("avatar_core.output_files.shutil.disk_usage",
                            lambda p: type("Usage", (), {"free": 10**5})())
    built: list[int] = []
    monkeypatch.setattr("avatar_core.train.trainer.build_base", lambda cfg: built.append(1))
    with pytest.raises(InputError, match=r"output folder.*(is a file|cannot be written|MiB free)"):
        train(_config(data, out))
    assert built == [], "refused before the model was built"
    assert os.path.isfile(tmp_path / "f")
