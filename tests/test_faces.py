"""Character masks without a real detector: official geometry (parity), ordering, overrides, early errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from avatar_core.conditioning.faces import (
    FaceBox,
    character_masks,
    expand_box,
    face_mask_for_model,
    find_insightface_detector,
)
from avatar_core.parity.common import load_fixture
from avatar_core.parity.conditioning import checks

FIXTURES = Path("/work/shared/fixtures/parity")


class ListDetector:
    """A detector that returns fixed boxes (the detection itself is tested on real photos elsewhere)."""

    def __init__(self, boxes: list[FaceBox]) -> None:
        self.boxes = boxes

    def detect(self, image: np.ndarray) -> list[FaceBox]:
        assert image.dtype == np.uint8 and image.ndim == 3
        return list(self.boxes)


def test_parity_module_runs_every_preproc_check_and_all_pass():
    results = checks(FIXTURES)
    names = {r.name for r in results}
    assert {"preproc/audio_prompts_fps25p0_nf5", "preproc/audio_prompts_fps12p5_nf5"} <= names
    assert {"preproc/facemask_pixel_bbox_30_12_14_18_area3", "preproc/facemask_latent_6x10"} <= names
    assert all(r.ok for r in results), [r.line() for r in results if not r.ok]


def test_detected_face_mask_matches_official_pixel_and_latent_masks():
    fx = load_fixture(FIXTURES / "preproc.safetensors")
    box = FaceBox(30, 12, 30 + 14, 12 + 18)  # official bbox [x, y, w, h] = [30, 12, 14, 18] on a 48x80 image
    out = character_masks(torch.zeros(1, 48, 80, 3), 1, ListDetector([box]), latent_size=(6, 10))
    assert torch.equal(out.pixel[0], fx["facemask_pixel_bbox_30_12_14_18_area3"][0, 0, 0])
    assert torch.allclose(out.latent[0], fx["facemask_latent_6x10"][0, 0, 0], atol=1e-6)
    assert out.sources == ["face"]
    assert face_mask_for_model(out.latent).shape == (1, 1, 1, 6, 10)  # model layout [B, N, Tm, H, W]


def test_expand_box_by_hand():
    # centre (37, 21) floored; 3x size 42x54 -> half 21/27; x from 16 to 58, y from max(-6, 0) to 48 (clipped)
    assert expand_box(FaceBox(30, 12, 44, 30), 80, 48) == (16, 0, 58, 48)


def test_characters_are_numbered_left_to_right_and_extra_faces_dropped():
    boxes = [FaceBox(100, 10, 120, 30), FaceBox(10, 10, 40, 40), FaceBox(60, 10, 64, 14)]  # right, left, tiny middle
    out = character_masks(np.zeros((64, 160, 3), np.uint8), 2, ListDetector(boxes))
    assert [b.x1 for b in out.boxes] == [10, 100]  # the tiny face is dropped, the rest ordered left to right
    assert out.latent.shape == (2, 8, 20) and out.notes


def test_user_mask_overrides_detection_for_its_character():
    boxes = [FaceBox(10, 10, 30, 30), FaceBox(100, 10, 120, 30)]
    drawn = torch.zeros(1, 64, 160)
    drawn[0, 5:40, 90:130] = 1.0  # the user paints the right-hand face for character 2
    out = character_masks(torch.zeros(1, 64, 160, 3), 2, ListDetector(boxes), user_masks=[None, drawn])
    assert out.sources == ["face", "user mask"]
    assert out.boxes[0].x1 == 10  # character 1 takes the face the user did not paint
    assert torch.equal(out.pixel[1], drawn[0])


def test_no_face_one_character_falls_back_to_the_whole_frame():
    out = character_masks(torch.zeros(1, 32, 48, 3), 1, ListDetector([]))
    assert out.sources == ["whole frame"] and bool((out.pixel == 1).all()) and "no face" in out.notes[0]


def test_more_characters_than_faces_names_the_missing_character():
    with pytest.raises(ValueError, match="character 3 \\(of 3\\) has no face"):
        character_masks(torch.zeros(1, 32, 96, 3), 3, ListDetector([FaceBox(5, 5, 15, 15), FaceBox(60, 5, 70, 15)]))
    with pytest.raises(ValueError, match="character 1 \\(of 2\\)"):
        character_masks(torch.zeros(1, 32, 96, 3), 2, ListDetector([]))


def test_bad_masks_and_missing_detector_fail_early():
    image = torch.zeros(1, 32, 48, 3)
    with pytest.raises(ValueError, match="does not match the reference image"):
        character_masks(image, 1, None, user_masks=[torch.ones(1, 16, 48)])
    with pytest.raises(ValueError, match="is empty"):
        character_masks(image, 1, None, user_masks=[torch.zeros(32, 48)])
    with pytest.raises(ValueError, match="no face detector"):
        character_masks(image, 2, None, user_masks=[torch.ones(32, 48)])
    with pytest.raises(ValueError, match="batch of 2"):
        character_masks(torch.zeros(2, 32, 48, 3), 1, ListDetector([]))


def test_insightface_folder_lookup(tmp_path):
    with pytest.raises(FileNotFoundError, match="buffalo_l"):
        find_insightface_detector(tmp_path)
    (tmp_path / "models" / "antelopev2").mkdir(parents=True)
    onnx = b"\x08\x07\x12\x07pytorch"  # the start of an ONNX ModelProto (ir_version, producer_name): told by content
    (tmp_path / "models" / "antelopev2" / "scrfd_10g_bnkps.onnx").write_bytes(onnx)
    assert find_insightface_detector(tmp_path).name == "scrfd_10g_bnkps.onnx"
    (tmp_path / "models" / "buffalo_l").mkdir()
    (tmp_path / "models" / "buffalo_l" / "det_10g.onnx").write_bytes(onnx)
    assert find_insightface_detector(tmp_path).name == "det_10g.onnx"  # buffalo_l first, as ComfyUI packs use it
    assert find_insightface_detector(tmp_path, "antelopev2").parent.name == "antelopev2"
