"""Which face detector the loader builds (avatar_core.model_files.choose_face_detector): the official detface.pt
when installed, an InsightFace pack as a said fallback, a clear error naming the downloads otherwise."""

from __future__ import annotations

import pytest

from avatar_core import model_files as mf
from avatar_core.errors import InputError


def test_installed_files_and_packs_are_used_as_named():
    official = mf.choose_face_detector("detface.pt", ["detface.pt"], ["buffalo_l"])
    assert (official.kind, official.name, official.official) == ("detface", "detface.pt", True)
    pack = mf.choose_face_detector("antelopev2", ["detface.pt"], ["antelopev2", "buffalo_l"])
    assert (pack.kind, pack.name, pack.official) == ("insightface", "antelopev2", False)
    assert "NOT the official" in pack.note and mf.DETFACE.url in pack.note


def test_absent_detface_falls_back_to_an_installed_pack_and_says_so():
    choice = mf.choose_face_detector("detface.pt", [], ["antelopev2", "buffalo_l"])
    assert (choice.kind, choice.name, choice.official) == ("insightface", "buffalo_l", False)  # buffalo_l first
    assert choice.note.startswith("detface.pt is not installed: using InsightFace buffalo_l")
    assert mf.choose_face_detector("detface.pt", [], ["antelopev2"]).name == "antelopev2"


@pytest.mark.parametrize("name, files, packs", [("detface.pt", [], []), ("antelopev2", ["detface.pt"], ["buffalo_l"]),
                                                ("other.pt", [], ["buffalo_l"])])
def test_nothing_usable_is_refused_with_both_downloads(name, files, packs):
    with pytest.raises(InputError) as e:
        mf.choose_face_detector(name, files, packs)
    text = str(e.value)
    assert repr(name) in text and mf.DETFACE.url in text and mf.FACES.url in text and "models/face_detection" in text


def test_detface_has_a_direct_download_for_the_missing_models_panel():
    assert mf.DETFACE.direct and mf.DETFACE.url.endswith("/ckpts/det_align/detface.pt")
    assert mf.frontend_metadata("detface.pt") == {"name": "detface.pt", "url": mf.DETFACE.url,
                                                  "directory": "face_detection"}
