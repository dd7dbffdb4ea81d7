"""scripts/mutation.py picks what to mutate and which tests run against it (a developer command, not CI)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
try:
    import mutation
except ModuleNotFoundError as e:  # Python 3.10 without the `toml` package mutmut brings
    pytest.skip(f"scripts/mutation.py cannot be imported here ({e}): it needs Python 3.11+ or toml",
                allow_module_level=True)


def test_a_file_without_a_list_gets_the_tests_that_import_its_module():
    globs, tests = mutation.target("convert.py")
    assert globs == ["avatar_core/convert.py"]
    importers = sorted(f"tests/{p.name}" for p in (REPO / "tests").glob("test_*.py")
                       if "avatar_core.convert" in p.read_text(encoding="utf-8"))
    assert importers and set(importers) <= set(tests)


def test_a_package_and_a_listed_file_get_their_lists():
    assert mutation.target("specs")[0] == ["avatar_core/specs/*"]
    assert "tests/test_specs_messages.py" in mutation.target("specs")[1]
    assert mutation.target("sampling/resume.py") == (["avatar_core/sampling/resume.py"],
                                                     [f"tests/{n}.py" for n in mutation.TESTS["sampling/resume.py"]])


def test_an_unknown_target_is_refused_naming_the_choices():
    with pytest.raises(SystemExit, match="no package or .py file avatar_core/nope"):
        mutation.target("nope")
