"""Character masks as the official code makes them: faces detected on the reference resized to the VIDEO size.

The expected masks are the official steps written out here (Tencent-Hunyuan/HunyuanVideo-Avatar @ fd59436):
audio_dataset.py picks the video size (short side 704, sides rounded to 64, area capped at 704 x 1216) and resizes
the reference with PIL LANCZOS; predict() hands that image (float16, exact for uint8 values) to get_facemask,
which gives AlignImage the BGR uint8 array; DetFace resizes it (cv2 bilinear, short side 416, sides up to a
multiple of 32), converts BGR to RGB, / 255, runs the network with the cell grids, keeps rows with conf > 0.5 after
NMS (IoU 0.45) and maps boxes back with float64 arithmetic; AlignImage(maxface=True) keeps the LAST face larger
than the first; get_facemask grows it x3 about its floored centre at the video size; predict resizes the mask
bilinearly to the latent size. The detector is a TorchScript stand-in whose confidences depend on the pixels
it is given, so detecting on another image (the one given, not the video-size one) can change the result.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from avatar_core.conditioning.detface import DetFaceDetector
from avatar_core.conditioning.faces import character_masks, resize_masks

cv2 = pytest.importorskip("cv2", reason="the official detector path resizes with OpenCV")

# Candidate faces as fractions of the network input (cx, cy, w, h): the stand-in scores each by the mean red
# value inside it, so its confidence (and the face order) follows the pixels.
CANDIDATES = torch.tensor([
    [0.20, 0.30, 0.08, 0.12],   # small bright face: first in conf order
    [0.50, 0.45, 0.16, 0.22],   # larger
    [0.78, 0.40, 0.15, 0.21],   # larger, conf close to the previous one
    [0.50, 0.85, 0.05, 0.05],   # dim: below the threshold
])


class _RedMeans(torch.nn.Module):
    """Rows (cx, cy, w, h, objectness = mean red inside, 10 landmarks, class 1) for fixed relative boxes."""

    def __init__(self, candidates: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("candidates", candidates)

    def forward(self, x: torch.Tensor, grids: list[torch.Tensor]) -> torch.Tensor:
        h1, w1 = x.shape[2], x.shape[3]
        rows = torch.zeros(self.candidates.shape[0], 16)
        for k in range(self.candidates.shape[0]):
            cx, cy = self.candidates[k, 0] * w1, self.candidates[k, 1] * h1
            bw, bh = self.candidates[k, 2] * w1, self.candidates[k, 3] * h1
            x1, y1 = int(cx - bw / 2), int(cy - bh / 2)
            x2, y2 = int(cx + bw / 2), int(cy + bh / 2)
            rows[k, 0], rows[k, 1], rows[k, 2], rows[k, 3] = cx, cy, bw, bh
            rows[k, 4] = x[0, 0, y1:y2, x1:x2].mean()
            rows[k, 15] = 1.0
        return rows[None]


def _image(h: int, w: int, seed: int) -> np.ndarray:
    """Textured background with red blobs under the candidates (sharp edges: resampling moves the means)."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 90, (h, w, 3)).astype(np.uint8)
    for (cx, cy, bw, bh), red in zip(CANDIDATES.tolist(), (250, 232, 231, 60)):
        x1, x2 = int((cx - bw * 0.6) * w), int((cx + bw * 0.6) * w)
        y1, y2 = int((cy - bh * 0.6) * h), int((cy + bh * 0.6) * h)
        img[y1:y2, x1:x2, 0] = red
        img[y1:y2:3, x1:x2:2, 0] = red - 40  # fine stripes: LANCZOS and bilinear average them differently
    return img


def _official_video_size(h: int, w: int) -> tuple[int, int]:
    scale = 704 / min(w, h)
    nw, nh = round(w * scale / 64) * 64, round(h * scale / 64) * 64
    if nw * nh > 704 * 1216:
        scale = math.sqrt(704 * 1216 / w / h)
        nw, nh = round(w * scale / 64) * 64, round(h * scale / 64) * 64
    return nh, nw


def _official_detect(model: torch.jit.ScriptModule, bgr: np.ndarray) -> list[list[float]]:
    """DetFace.detect: [x, y, w, h] boxes in conf order (NMS written out greedily; the stand-in's rows never
    overlap by more than IoU 0.45, so only the thresholds and the order matter)."""
    h0, w0 = bgr.shape[:2]
    r = 416 / min(h0, w0)
    h1, w1 = int(h0 * r + 31) // 32 * 32, int(w0 * r + 31) // 32 * 32
    img = cv2.cvtColor(cv2.resize(bgr, (w1, h1), interpolation=cv2.INTER_LINEAR), cv2.COLOR_BGR2RGB)
    x = torch.from_numpy(img).permute(2, 0, 1).float()[None] / 255
    grids = []
    for s in (8, 16, 32):
        yv, xv = torch.meshgrid(torch.arange(h1 // s), torch.arange(w1 // s), indexing="ij")
        grids.append(torch.stack((xv, yv), 2).view(1, 1, h1 // s, w1 // s, 2).float())
    pred = model(x, grids)[0]
    pred = pred[pred[:, 4] > 0.5]
    conf = pred[:, 4] * pred[:, 15]
    pred, conf = pred[conf > 0.5], conf[conf > 0.5]
    boxes = []
    for j in torch.argsort(conf, descending=True, stable=True).tolist():
        cx, cy, bw, bh = pred[j, :4].tolist()
        x1, y1, x2, y2 = (float(np.float32(v)) for v in (cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2))
        bx, by = x1 * w0 / w1, y1 * h0 / h1
        boxes.append([bx, by, x2 * w0 / w1 - bx, y2 * h0 / h1 - by])
    return boxes


def _official_masks(model: torch.jit.ScriptModule, image: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(pixel mask [h, w], latent mask [h/8, w/8], index of the chosen face) as the official code makes them."""
    h, w = _official_video_size(*image.shape[:2])
    ref = np.array(Image.fromarray(image).convert("RGB").resize((w, h), Image.LANCZOS))
    ref = torch.from_numpy(ref).to(torch.float16).numpy().astype(np.uint8)  # predict's float16 batch, back to uint8
    boxes = _official_detect(model, np.ascontiguousarray(ref[:, :, [2, 1, 0]]))
    chosen = 0
    if len(boxes) > 1:  # AlignImage(maxface=True): max_area is never updated
        first = boxes[0][2] * boxes[0][3]
        for i in range(1, len(boxes)):
            if boxes[i][2] * boxes[i][3] > first:
                chosen = i
    x1, y1, ww, hh = boxes[chosen] if boxes else [0, 0, w, h]
    x2, y2 = x1 + ww, y1 + hh
    ww, hh = (x2 - x1) * 3.0, (y2 - y1) * 3.0
    center = [(x2 + x1) // 2, (y2 + y1) // 2]
    x1, y1 = max(center[0] - ww // 2, 0), max(center[1] - hh // 2, 0)
    x2, y2 = min(center[0] + ww // 2, w), min(center[1] + hh // 2, h)
    pixel = torch.zeros(h, w)
    pixel[int(y1):int(y2), int(x1):int(x2)] = 1.0
    latent = F.interpolate(pixel[None, None], (h // 8, w // 8), mode="bilinear")[0, 0]
    return pixel, latent, chosen


SIZES = [(300, 500, 0), (480, 640, 1), (720, 1280, 2), (1000, 600, 3), (333, 517, 4), (517, 333, 5),
         (611, 611, 6), (1080, 1920, 7)]


@pytest.fixture(scope="module")
def detector(tmp_path_factory) -> DetFaceDetector:
    path = tmp_path_factory.mktemp("detface") / "detface.pt"
    torch.jit.script(_RedMeans(CANDIDATES)).save(str(path))
    return DetFaceDetector(path)


@pytest.mark.parametrize("h, w, seed", SIZES)
def test_masks_on_the_video_size_image_are_the_official_masks(detector, h, w, seed):
    image = _image(h, w, seed)
    pixel, latent, chosen = _official_masks(detector.model, image)
    assert chosen > 0  # the official choice is not simply the first face
    out = character_masks(image, 1, detector, video_size=_official_video_size(h, w))
    assert out.sources == ["face"]
    assert torch.equal(out.pixel[0], pixel) and torch.equal(out.latent[0], latent)


def test_detecting_on_the_image_as_given_is_not_the_official_mask(detector):
    """What the nodes did before (detect at the image's own size, the sampler then resizing the mask with
    nearest) differs from the official masks: border cells move, and on some images another face wins."""
    moved, other_face = 0, 0
    for h, w, seed in SIZES:
        image = _image(h, w, seed)
        pixel, latent, _ = _official_masks(detector.model, image)
        old = character_masks(image, 1, detector)
        resized = resize_masks(old.pixel, pixel.shape)
        moved += not torch.equal(resized[0], pixel)
        official_box = character_masks(image, 1, detector, video_size=pixel.shape).boxes[0]
        other_face += round(old.boxes[0].score, 3) != round(official_box.score, 3)
    print(f"detection on the given image: {moved} of {len(SIZES)} masks differ, {other_face} pick another face")
    assert moved >= 2 and other_face >= 1


def test_user_masks_follow_to_the_video_size_with_nearest(detector):
    drawn = torch.zeros(1, 300, 500)
    drawn[0, 40:200, 300:460] = 1
    out = character_masks(_image(300, 500, 0), 2, detector, user_masks=[None, drawn], video_size=(704, 1152))
    assert out.pixel.shape == (2, 704, 1152) and out.sources == ["face", "user mask"]
    assert torch.equal(out.pixel[1], F.interpolate(drawn[None], (704, 1152), mode="nearest")[0, 0])
    with pytest.raises(ValueError, match="does not match the reference image"):  # drawn on another image
        character_masks(_image(300, 500, 0), 2, detector, user_masks=[None, torch.ones(704, 1152)],
                        video_size=(704, 1152))
