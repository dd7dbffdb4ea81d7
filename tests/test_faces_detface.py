"""The official detector path (detface.pt, TorchScript) with a scripted stand-in, and disjoint character masks.

Expected values are the official computation (Tencent-Hunyuan/HunyuanVideo-Avatar @ fd59436,
hymm_sp/data_kits/face_align/detface.py + align.py, fact sheet §4) worked out by hand for the stand-in's rows.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from avatar_core.conditioning.detface import DetFaceDetector, decode, network_size, nms
from avatar_core.conditioning.faces import FaceBox, box_mask, character_masks, to_latent

H0, W0 = 300, 500  # image size; network size 416 x 704 (short side 416, sides rounded up to 32)

# Network-pixel rows: cx, cy, w, h, objectness, 10 landmark coordinates, class score.
ROWS = {  # name: (cx, cy, w, h, obj, cls)
    "A": (100, 100, 60, 80, 0.9, 0.95),   # conf 0.855: first
    "B": (105, 100, 60, 80, 0.9, 0.9),    # IoU 0.846 with A: suppressed
    "C": (400, 200, 100, 120, 0.8, 0.9),  # conf 0.72, the largest face
    "D": (600, 100, 50, 50, 0.4, 1.0),    # objectness 0.4: dropped before NMS
    "E": (600, 300, 50, 50, 0.9, 0.5),    # conf 0.45: dropped
    "F": (140, 100, 60, 80, 0.7, 0.8),    # IoU 0.2 with A: kept, conf 0.56, same area as A
    "G": (600, 200, 50, 50, 0.6, 0.9),    # conf 0.54, small
    "H": (300, 300, 70, 90, 0.6, 0.88),   # conf 0.528, larger than A, smaller than C
}


class _StandIn(torch.nn.Module):
    """Outputs fixed rows in the official detector's format and records what it was given."""

    def __init__(self, rows: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("rows", rows)
        self.register_buffer("seen_size", torch.zeros(2))
        self.register_buffer("seen_mean", torch.zeros(3))
        self.register_buffer("seen_grids", torch.zeros(3, 4))

    def forward(self, x: torch.Tensor, grids: list[torch.Tensor]) -> torch.Tensor:
        self.seen_size.copy_(torch.tensor([x.shape[2], x.shape[3]], dtype=torch.float32))
        self.seen_mean.copy_(x.mean(dim=[0, 2, 3]))
        for k, g in enumerate(grids):
            self.seen_grids[k] = torch.tensor([float(g.shape[2]), float(g.shape[3]), float(g[0, 0, 0, -1, 0]),
                                               float(g[0, 0, -1, 0, 1])])
        return self.rows[None]


def _rows(names) -> torch.Tensor:
    out = torch.zeros(len(names), 16)
    for i, n in enumerate(names):
        cx, cy, w, h, obj, cls = ROWS[n]
        out[i, :5] = torch.tensor([cx, cy, w, h, obj])
        out[i, 5:15] = torch.arange(10.0)
        out[i, 15] = cls
    return out


@pytest.fixture
def detector(tmp_path):
    def make(names) -> DetFaceDetector:
        path = tmp_path / "detface.pt"
        torch.jit.script(_StandIn(_rows(names))).save(str(path))
        return DetFaceDetector(path)
    return make


def _image() -> np.ndarray:
    img = np.zeros((H0, W0, 3), np.uint8)
    img[..., 0], img[..., 2] = 200, 50  # R and B constant: the network must get RGB / 255
    img[..., 1] = np.random.default_rng(0).integers(0, 256, (H0, W0))
    return img


def _official_box(name: str) -> tuple[float, float, float, float]:
    """detface.py: x1 = det[j, 0] * w0/w1 - with numpy 1.24 (official requirements) a float32 scalar times a
    Python int is float64, evaluated left to right -, w = x2 * w0/w1 - x1 (not clipped)."""
    cx, cy, w, h, *_ = ROWS[name]
    x1, y1, x2, y2 = (float(np.float32(v)) for v in (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
    x, y = x1 * W0 / 704, y1 * H0 / 416
    return x, y, x2 * W0 / 704 - x, y2 * H0 / 416 - y


def test_network_size_is_the_official_rounding():
    assert network_size(H0, W0) == (416, 704)
    assert network_size(704, 1216) == (416, 736)  # int(1216 * 416 / 704 + 31) // 32 * 32


def test_stand_in_gets_the_official_input_and_its_rows_give_the_official_boxes_and_order(detector):
    det = detector(list(ROWS))
    faces = det.detect(_image())
    assert det.model.seen_size.tolist() == [416, 704]
    assert torch.allclose(det.model.seen_mean[[0, 2]], torch.tensor([200 / 255, 50 / 255]))  # RGB, / 255
    assert det.model.seen_grids.tolist() == [[52, 88, 87, 51], [26, 44, 43, 25], [13, 22, 21, 12]]  # (x, y) cells
    names = ["A", "C", "F", "G", "H"]  # B suppressed by A, D and E below the thresholds; conf order
    assert [round(f.score, 4) for f in faces] == [0.855, 0.72, 0.56, 0.54, 0.528]
    for face, name in zip(faces, names):
        x, y, w, h = _official_box(name)
        got = (face.x1, face.y1, face.x2, face.y2)
        assert all(type(v) is float for v in got) and got == (x, y, x + w, y + h)
    assert faces[0].x1 == pytest.approx(70 * 500 / 704) and faces[0].y1 == pytest.approx(60 * 300 / 416)


def test_one_character_gets_the_face_the_official_code_keeps(detector):
    """AlignImage(maxface=True) keeps the LAST face larger than the first (H), not the largest (C)."""
    out = character_masks(_image(), 1, detector(list(ROWS)))
    x, y, w, h = _official_box("H")
    assert out.sources == ["face"] and (out.boxes[0].x1, out.boxes[0].y1) == (x, y)
    assert torch.equal(out.pixel[0], box_mask(FaceBox(x, y, x + w, y + h), W0, H0))


def test_no_face_above_the_thresholds_falls_back_to_the_whole_frame(detector):
    out = character_masks(_image(), 1, detector(["D", "E"]))
    assert out.sources == ["whole frame"] and bool((out.pixel == 1).all())


def test_decode_keeps_conf_order_and_drops_by_objectness_then_conf():
    det = decode(_rows(["E", "G", "A", "D", "B"])[None])
    assert det[:, 4].tolist() == pytest.approx([0.855, 0.54])
    assert det[0, :4].tolist() == [70, 60, 130, 140] and det[0, 5:15].tolist() == list(range(10))


def test_nms_matches_torchvision_where_installed():
    ops = pytest.importorskip("torchvision.ops")
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(300, 2, generator=g) * 200
    boxes = torch.cat([xy, xy + 10 + torch.rand(300, 2, generator=g) * 40], 1)
    scores = torch.rand(300, generator=g).round(decimals=2)  # ties: the stable order decides
    for iou in (0.3, 0.45, 0.7):
        assert torch.equal(nms(boxes, scores, iou), ops.nms(boxes, scores, iou))


def test_a_pickled_file_is_refused_not_unpickled(tmp_path):
    path = tmp_path / "detface.pt"
    torch.save({"model": torch.zeros(3)}, path)
    with pytest.raises(ValueError, match="not a TorchScript archive.*ckpts/det_align/detface.pt"):
        DetFaceDetector(path)
    with pytest.raises(FileNotFoundError, match="models/face_detection"):
        DetFaceDetector(tmp_path / "missing.pt")


class _Boxes:
    def __init__(self, boxes):
        self.boxes = boxes

    def detect(self, image):
        return list(self.boxes)


def _tokens(latent: torch.Tensor) -> torch.Tensor:
    """What the model does with latent masks (models_audio.py): nearest resize to the token grid."""
    return F.interpolate(latent[:, None], size=(latent.shape[-2] // 2, latent.shape[-1] // 2), mode="nearest")[:, 0]


def test_overlapping_grown_boxes_are_split_by_the_nearest_face_centre():
    boxes = [FaceBox(60, 40, 100, 90), FaceBox(130, 50, 166, 95)]  # x3 boxes overlap over x in [94, 118)
    image = np.zeros((160, 256, 3), np.uint8)
    summed = character_masks(image, 2, _Boxes(boxes), overlap="sum")
    assert float(summed.pixel.sum(0).max()) == 2  # the old behaviour: both audios drive the overlap
    out = character_masks(image, 2, _Boxes(boxes))
    both = (summed.pixel > 0).all(0)
    assert both.any() and int((out.pixel > 0).sum(0).max()) == 1
    ys, xs = torch.nonzero(both, as_tuple=True)
    d0 = (xs + 0.5 - 80) ** 2 + (ys + 0.5 - 65) ** 2  # face centres (80, 65) and (148, 72.5)
    d1 = (xs + 0.5 - 148) ** 2 + (ys + 0.5 - 72.5) ** 2
    assert torch.equal(out.pixel[0][ys, xs] == 1, d0 <= d1) and torch.equal(out.pixel[1][ys, xs] == 1, d1 < d0)
    assert torch.equal(out.pixel.sum(0) > 0, summed.pixel.sum(0) > 0)  # nothing lost, only split
    for latent in (out.latent, to_latent(out.pixel, (20, 32))):
        assert int((latent > 0).sum(0).max()) == 1 and int((_tokens(latent) > 0).sum(0).max()) == 1
    assert int((summed.latent > 0).sum(0).max()) == 2


def test_user_mask_keeps_its_pixels_where_a_grown_face_box_overlaps_it():
    drawn = torch.zeros(1, 160, 256)
    drawn[0, 30:120, 120:200] = 1
    out = character_masks(torch.zeros(1, 160, 256, 3), 2, _Boxes([FaceBox(60, 40, 100, 90)]), user_masks=[None, drawn])
    assert torch.equal(out.pixel[1], drawn[0]) and not bool((out.pixel[0] * drawn[0]).any())
