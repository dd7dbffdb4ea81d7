"""Saved text conditioning: the new format round-trips exactly, files are numbered and never overwritten,
files of the previous format (no pad states) and foreign files are refused with the fix."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from avatar_core.conditioning import saved_text
from avatar_core.conditioning.text import check_official_conditioning


def _prompt(seed: int):
    g = torch.Generator().manual_seed(seed)
    mask = torch.cat([torch.ones(1, 40), torch.zeros(1, 216), torch.ones(1, 575)], dim=1).long()
    return torch.randn(1, 831, 8, generator=g), mask, torch.randn(1, 4, generator=g)


def test_round_trip_is_exact_and_files_are_numbered_never_overwritten(tmp_path):
    (tmp_path / "avatar_prompt_00001.safetensors").write_bytes(b"the user's file")
    first = saved_text.write_new(tmp_path, "avatar_prompt", _prompt(0), _prompt(1))
    second = saved_text.write_new(tmp_path, "avatar_prompt", _prompt(2), _prompt(3))
    assert (first.name, second.name) == ("avatar_prompt_00002.safetensors", "avatar_prompt_00003.safetensors")
    assert (tmp_path / "avatar_prompt_00001.safetensors").read_bytes() == b"the user's file"
    pos, neg = saved_text.read(first)
    for got, want in zip(pos + neg, _prompt(0) + _prompt(1)):
        assert torch.equal(got, want)


def test_one_mask_tensor_shared_by_both_prompts_saves(tmp_path):
    states, mask, pooled = _prompt(0)
    path = saved_text.write_new(tmp_path, "shared", (states, mask, pooled), (states, mask, pooled))
    assert torch.equal(saved_text.read(path)[1][1], mask)


def test_a_name_taken_between_listing_and_writing_is_skipped(tmp_path, monkeypatch):
    real = saved_text.next_free_path
    calls = []

    def racing(folder, name):  # another save writes the first free number just before us
        path = real(folder, name)
        if not calls:
            path.write_bytes(b"other")
        calls.append(path)
        return path

    monkeypatch.setattr(saved_text, "next_free_path", racing)
    path = saved_text.write_new(tmp_path, "p", _prompt(0), _prompt(1))
    assert path.name == "p_00002.safetensors" and (tmp_path / "p_00001.safetensors").read_bytes() == b"other"


def test_files_of_the_previous_format_are_refused_with_the_fix(tmp_path):
    old = tmp_path / "old.safetensors"  # version 1: unpadded states, no mask, no version
    save_file({f"{s}.{k}": torch.randn(1, 600, 8) if k == "states" else torch.randn(1, 4)
               for s in ("pos", "neg") for k in ("states", "pooled")}, str(old), metadata={"format": "hyavatar-conditioning"})
    with pytest.raises(ValueError, match="older version of this pack.*Re-encode the prompt with Avatar Text Encode"):
        saved_text.read(old)
    foreign = tmp_path / "lora.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(ValueError, match="not an Avatar conditioning file"):
        saved_text.read(foreign)


def test_only_the_official_layout_is_accepted():
    states, mask, _ = _prompt(0)
    check_official_conditioning(states, mask, "positive")
    with pytest.raises(ValueError, match="positive: text conditioning of shape \\(1, 600, 8\\).*Avatar Text Encode"):
        check_official_conditioning(torch.randn(1, 600, 8), None, "positive")
    with pytest.raises(ValueError, match="831-position layout"):
        check_official_conditioning(states, None, "negative")  # states without the positional mask
