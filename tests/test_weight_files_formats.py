"""What a file is, told from its first bytes; layouts and NaN checks of weight files, worded as the kinds promise.

Written after a mutation run of avatar_core/weight_files.py (scripts/mutation.sh weight_files.py) left format
rules untested: each expectation comes from the format's own definition (the pickle protocol's opcodes, ONNX's
ModelProto field tags, safetensors' 8-byte header length, HTML/XML prologues, ASCII text), not from our output.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from avatar_core import weight_files as wf
from avatar_core.errors import InputError

# ONNX ModelProto's top-level fields after ir_version (onnx.proto): tag = field number << 3 | wire type
ONNX_TAGS = {"producer_name": 2 << 3 | 2, "producer_version": 3 << 3 | 2, "domain": 4 << 3 | 2,
             "model_version": 5 << 3 | 0, "doc_string": 6 << 3 | 2, "graph": 7 << 3 | 2,
             "opset_import": 8 << 3 | 2, "metadata_props": 14 << 3 | 2}


def _file(tmp_path: Path, content: bytes, name: str = "weights.bin") -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


@pytest.mark.parametrize("field", sorted(ONNX_TAGS))
def test_an_onnx_model_is_told_by_its_ir_version_then_any_top_level_field(tmp_path, field):
    head = bytes([1 << 3 | 0, 7, ONNX_TAGS[field]]) + b"\x05" + b"\x00" * 12   # ir_version = 7, then the field
    assert wf.sniff(_file(tmp_path, head)) == "onnx"


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_a_raw_pickle_of_any_protocol_from_2_is_a_pickle(tmp_path, protocol):
    assert wf.sniff(_file(tmp_path, pickle.dumps({"w": [1.0, 2.0]}, protocol=protocol))) == "pickle"


@pytest.mark.parametrize("content, told", [
    (b"\n  <!DOCTYPE html><html><body>Sign in</body></html>", "html"),   # leading blank space: still a web page
    (b"<?xml version='1.0'?><Error>AccessDenied</Error>", "html"),
    (b"model:\n  name: whisper\n", "text"),                              # line feeds are text
    (b"key = value\r\nother = 2\r\n", "text"),                           # and CR LF
    (b"a\x0bb", "unknown"),                                              # a vertical tab is not
    (b"\x00" * 8 + b"{\"w\": {}}", "unknown"),                           # a '{' after a zero header length
    (b"PK\x03\x04" + b"\x00" * 40, "broken-zip"),
])
def test_what_the_first_bytes_say(tmp_path, content, told):
    assert wf.sniff(_file(tmp_path, content)) == told


def test_a_safetensors_header_length_and_brace_make_a_safetensors_file(tmp_path):
    header = b'{"__metadata__": {}}'
    assert wf.sniff(_file(tmp_path, len(header).to_bytes(8, "little") + header)) == "safetensors"


def test_only_pickled_content_is_called_pickled_when_refused(tmp_path):
    text = _file(tmp_path, b"just some notes\n", "lora.safetensors")
    with pytest.raises(InputError) as err:
        wf.check_format(text, wf.LORA)
    assert "is a text file, not a safetensors file (whatever its .safetensors name says)" in str(err.value)
    assert "pickled" not in str(err.value).split(". ")[0]
    archive = tmp_path / "lora.pt"
    torch.save({"w": torch.zeros(2)}, archive)
    with pytest.raises(InputError, match="pickled files are never loaded here"):
        wf.check_format(archive, wf.LORA)


def test_layout_problems_are_listed_by_kind():
    expected = {"a": (2, 3), "b": (4,), "c": (1,)}
    sd = {"a": torch.zeros(3, 2), "b": torch.zeros(4), "z": torch.zeros(1)}
    assert wf.layout_problems(sd, expected) == [
        "1 missing keys (e.g. ['c'])", "1 unexpected keys (e.g. ['z'])",
        "1 shape mismatches (e.g. ['a: file (3, 2) vs expected (2, 3)'])"]
    assert wf.layout_problems(sd, expected, optional=("c",), extra=True) == [
        "1 shape mismatches (e.g. ['a: file (3, 2) vs expected (2, 3)'])"]


def test_check_layout_lets_extra_keys_through_when_told_to(tmp_path):
    sd = {"w": torch.zeros(2), "extra": torch.zeros(1)}
    wf.check_layout(sd, {"w": (2,)}, tmp_path / "f.safetensors", wf.LORA, extra=True)
    with pytest.raises(InputError, match=r"LoRA file f.safetensors: does not match the expected layout: 1 unexpected"):
        wf.check_layout(sd, {"w": (2,)}, tmp_path / "f.safetensors", wf.LORA)


def test_large_cpu_tensors_are_checked_at_both_ends_when_sampled_and_whole_otherwise():
    n = wf.SMALL + 10 * wf.SAMPLE
    end, middle = torch.zeros(n), torch.zeros(n)
    end[-1] = float("nan")
    middle[n // 2] = float("inf")
    sd = {"ok": torch.zeros(8), "end": end}
    assert wf.first_non_finite(sd, sampled=True) == "end"
    assert wf.first_non_finite({"middle": middle}, sampled=True) is None      # documented: both ends only
    assert wf.first_non_finite({"middle": middle}, sampled=False) == "middle"


def _saved_on_a_gpu(path: Path, monkeypatch) -> Path:
    """A torch.save archive whose storages say cuda:0, as a checkpoint saved from GPU tensors does (the official
    ones are); written here without a GPU by giving torch.save that location tag."""
    with monkeypatch.context() as m:
        m.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
        torch.save({"w": torch.arange(4.0)}, path)
    return path


@pytest.mark.parametrize("mmap_refused", [False, True])
def test_a_file_saved_from_gpu_tensors_loads_onto_the_cpu(tmp_path, monkeypatch, mmap_refused):
    path = _saved_on_a_gpu(tmp_path / "map.pt", monkeypatch)
    if mmap_refused:   # the plain load taken when torch refuses to memory-map the archive
        load = torch.load

        def no_mmap(*args, mmap=None, **kwargs):
            if mmap:
                raise RuntimeError("mmap can only be used with files saved with a newer torch.save")
            return load(*args, **kwargs)
        monkeypatch.setattr(torch, "load", no_mmap)
    sd, _ = wf.read_tensors(path, wf.FP8_MAP)
    assert sd["w"].device.type == "cpu" and torch.equal(sd["w"], torch.arange(4.0))
