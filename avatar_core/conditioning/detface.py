"""The official face detector: the YOLOv5-face TorchScript ``detface.pt`` shipped with the official weights
(``ckpts/det_align/detface.pt``), run with the official preprocessing, decoding and NMS.

Official code (Tencent-Hunyuan/HunyuanVideo-Avatar @ fd59436, hymm_sp/data_kits/face_align/detface.py; fact
sheet §4), re-stated from its behaviour:
* the RGB image is resized with OpenCV's bilinear ``cv2.resize`` so that its short side becomes 416, each side
  ``int(side * 416 / short + 31) // 32 * 32``; pixels / 255 as float32 [1, 3, h1, w1];
* the network is called as ``model(image, grids)``: one (x, y) cell grid [1, 1, h1/s, w1/s, 2] per stride
  s = 8, 16, 32, and returns [1, N, 16] rows (cx, cy, w, h, objectness, 5 landmarks (x, y), class score) in
  network pixels;
* NMS: rows with objectness > 0.5, conf = objectness x class score > 0.5, corners from centre/size, greedy
  IoU 0.45 in descending conf (torchvision.ops.nms, stable order); kept rows in that order;
* boxes back to image pixels as [x, y, w, h] = [x1 w0/w1, y1 h0/h1, x2 w0/w1 - x, y2 h0/h1 - y] (float64,
  not clipped).
The TorchScript file is loaded with ``torch.jit.load`` (TorchScript code, never a Python pickle).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..weight_files import DETFACE, check_torchscript, refuse
from .faces import FaceBox

SHORT_SIDE = 416
STRIDES = (8, 16, 32)
CONF_THRESHOLD = 0.5
IOU_THRESHOLD = 0.45
CLASS_OFFSET = 4096  # official max_wh: boxes of different classes are shifted apart before NMS
COLUMNS = 16  # cx, cy, w, h, obj, 10 landmark coordinates, one class score


def network_size(height: int, width: int) -> tuple[int, int]:
    """(h1, w1): the image scaled so its short side is 416, each side rounded up to a multiple of 32."""
    r = SHORT_SIDE / min(height, width)
    return int(height * r + 31) // 32 * 32, int(width * r + 31) // 32 * 32


def cell_grids(h1: int, w1: int, device: torch.device | str = "cpu") -> list[torch.Tensor]:
    """One [1, 1, ny, nx, 2] grid of (x, y) cell indices per stride, float32 (what the network adds offsets to)."""
    grids = []
    for s in STRIDES:
        yv, xv = torch.meshgrid(torch.arange(h1 // s), torch.arange(w1 // s), indexing="ij")
        grids.append(torch.stack((xv, yv), 2).view(1, 1, h1 // s, w1 // s, 2).float().to(device))
    return grids


def network_input(image: np.ndarray) -> torch.Tensor:
    """RGB uint8 [H, W, 3] -> [1, 3, h1, w1] float32 in [0, 1], resized with OpenCV's bilinear as officially."""
    try:
        import cv2
    except ImportError as exc:
        raise ImportError("the official face detector needs OpenCV: run `python install.py` in this pack's folder "
                          "(or pip install opencv-python-headless).") from exc
    h1, w1 = network_size(*image.shape[:2])
    resized = cv2.resize(np.ascontiguousarray(image), (w1, h1), interpolation=cv2.INTER_LINEAR)
    return (torch.from_numpy(resized).permute(2, 0, 1).float() / 255)[None]


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy NMS with torchvision's CPU semantics: stable descending score order, drop IoU > threshold."""
    x1, y1, x2, y2 = boxes.unbind(1)
    areas = (x2 - x1) * (y2 - y1)
    order = torch.sort(scores, descending=True, stable=True).indices
    suppressed = torch.zeros(len(scores), dtype=torch.bool)
    keep = []
    for i in order.tolist():
        if suppressed[i]:
            continue
        keep.append(i)
        w = (torch.minimum(x2[i], x2) - torch.maximum(x1[i], x1)).clamp(min=0)
        h = (torch.minimum(y2[i], y2) - torch.maximum(y1[i], y1)).clamp(min=0)
        inter = w * h
        suppressed |= inter / (areas[i] + areas - inter) > iou_threshold
    return torch.tensor(keep, dtype=torch.long)


def decode(pred: torch.Tensor, conf_threshold: float = CONF_THRESHOLD,
           iou_threshold: float = IOU_THRESHOLD) -> torch.Tensor:
    """Network rows [1, N, 16] -> kept detections [K, 16] (x1, y1, x2, y2, conf, landmarks, class), conf order."""
    x = pred[0].float()
    x = x[x[:, 4] > conf_threshold].clone()  # objectness
    x[:, 15:] *= x[:, 4:5]  # conf = objectness x class score
    corners = torch.stack([x[:, 0] - x[:, 2] / 2, x[:, 1] - x[:, 3] / 2,
                           x[:, 0] + x[:, 2] / 2, x[:, 1] + x[:, 3] / 2], 1)
    conf, cls = x[:, 15:].max(1, keepdim=True)
    det = torch.cat((corners, conf, x[:, 5:15], cls.float()), 1)[conf.view(-1) > conf_threshold]
    if len(det) == 0:
        return det
    keep = nms(det[:, :4] + det[:, 15:16] * CLASS_OFFSET, det[:, 4], iou_threshold)
    return det[keep]


def to_face_boxes(det: torch.Tensor, height: int, width: int, h1: int, w1: int) -> list[FaceBox]:
    """Detections in network pixels -> FaceBoxes in image pixels, with the official float64 arithmetic.

    The official code keeps [x, y, w, h] and rebuilds x2 = x + w; storing x2 that way keeps expand_box exact.
    """
    faces = []
    for row in det.tolist():
        x, y = row[0] * width / w1, row[1] * height / h1
        w, h = row[2] * width / w1 - x, row[3] * height / h1 - y
        faces.append(FaceBox(x, y, x + w, y + h, row[4]))
    return faces


class DetFaceDetector:
    """The official ``detface.pt`` (TorchScript) behind the FaceDetector interface; faces in conf order."""

    def __init__(self, path: str | Path, device: str | torch.device = "cpu",
                 conf_threshold: float = CONF_THRESHOLD, iou_threshold: float = IOU_THRESHOLD) -> None:
        self.path, self.device = Path(path), torch.device(device)
        self.conf_threshold, self.iou_threshold = conf_threshold, iou_threshold
        check_torchscript(self.path, DETFACE)  # exists, one file, TorchScript by content (any name)
        try:
            self.model = torch.jit.load(str(self.path), map_location=self.device).eval()
        except RuntimeError as exc:
            raise refuse(DETFACE, self.path, f"is a TorchScript archive that does not load "
                                             f"({str(exc).splitlines()[0][:200]})") from exc

    @torch.no_grad()
    def detect(self, image: np.ndarray) -> list[FaceBox]:
        height, width = image.shape[:2]
        img = network_input(image).to(self.device)
        h1, w1 = img.shape[-2:]
        pred = self.model(img, cell_grids(h1, w1, self.device))
        if not isinstance(pred, torch.Tensor) or pred.ndim != 3 or pred.shape[-1] != COLUMNS:
            got = tuple(pred.shape) if isinstance(pred, torch.Tensor) else type(pred).__name__
            raise ValueError(f"{self.path.name}: the network returned {got}, not [1, N, {COLUMNS}] rows (box, "
                             "objectness, 5 landmarks, class): this is not the official detface.pt.")
        return to_face_boxes(decode(pred.cpu(), self.conf_threshold, self.iou_threshold), height, width, h1, w1)
