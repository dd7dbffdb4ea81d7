"""A STAND-IN for the official detface.pt (TorchScript) for benchmarks: its cost, not its answers.

The official detector is a YOLOv5-face network whose exact variant we do not have. This module has the
same call (`model(image [1, 3, h, w], grids) -> [1, N, 16]` rows in network pixels, see
avatar_core/conditioning/detface.py) and a YOLOv5s-sized conv cost (~8 GFLOP at 416x416: a stride-2 stem,
four stages of 3x3 convs to 512 channels at stride 32, 1x1 heads at strides 8/16/32, three anchors each).
Random weights cannot find faces, so its rows say "no face" (objectness 0) for every anchor except one
fixed box in the image centre (a face a quarter of the width wide): the pack's decoding, NMS and masks then
run on one detection, as on a portrait. What a benchmark learns from it is the time of a network of that
size and of the pack's pre- and post-processing, on the device the workflow picks.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

COLUMNS = 16
ANCHORS = 3


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.SiLU())


class StandInFaceNet(nn.Module):
    __constants__ = ["anchors", "columns"]

    def __init__(self, width: int = 32):
        super().__init__()
        self.anchors, self.columns = ANCHORS, COLUMNS
        w = width
        self.stem = nn.Sequential(_conv(3, w, 2), _conv(w, 2 * w, 2), _conv(2 * w, 2 * w))            # stride 4
        self.s8 = nn.Sequential(_conv(2 * w, 4 * w, 2), _conv(4 * w, 4 * w), _conv(4 * w, 4 * w))     # stride 8
        self.s16 = nn.Sequential(_conv(4 * w, 8 * w, 2), _conv(8 * w, 8 * w), _conv(8 * w, 8 * w))    # stride 16
        self.s32 = nn.Sequential(_conv(8 * w, 16 * w, 2), _conv(16 * w, 16 * w), _conv(16 * w, 16 * w))  # stride 32
        self.heads = nn.ModuleList([nn.Conv2d(c, ANCHORS * COLUMNS, 1) for c in (4 * w, 8 * w, 16 * w)])

    def forward(self, image: torch.Tensor, grids: list[torch.Tensor]) -> torch.Tensor:
        x8 = self.s8(self.stem(image))
        x16 = self.s16(x8)
        x32 = self.s32(x16)
        rows = []
        strides = [8.0, 16.0, 32.0]
        feats = [x8, x16, x32]
        for i, head in enumerate(self.heads):
            out = head(feats[i])                                          # [1, A*16, ny, nx]
            b, _, ny, nx = out.shape
            out = out.view(b, self.anchors, self.columns, ny, nx).permute(0, 1, 3, 4, 2).sigmoid()  # [1, A, ny, nx, 16]
            xy = (grids[i] + 0.5) * strides[i]                            # cell centres [1, 1, ny, nx, 2]
            wh = torch.full_like(xy, 4.0 * strides[i])
            rest = out[..., 4:] * 0.0                                     # objectness, landmarks, class: no face
            rows.append(torch.cat([xy.expand(b, self.anchors, ny, nx, 2), wh.expand(b, self.anchors, ny, nx, 2), rest], -1)
                        .reshape(b, -1, self.columns))
        h, w = float(image.shape[2]), float(image.shape[3])
        face = torch.zeros(1, 1, self.columns, dtype=image.dtype, device=image.device)
        face[0, 0, 0], face[0, 0, 1], face[0, 0, 2], face[0, 0, 3] = w / 2, h * 0.4, w / 4, h / 3
        face[0, 0, 4], face[0, 0, 15] = 0.95, 0.95                        # objectness, class score
        return torch.cat(rows + [face.expand(image.shape[0], 1, self.columns)], 1)


def write_standin_detector(path: Path, seed: int = 0) -> None:
    """TorchScript archive at `path` (loaded by the pack with torch.jit.load, as the official file is)."""
    torch.manual_seed(seed)
    net = StandInFaceNet().eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.script(net).save(str(path))
