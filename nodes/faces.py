"""Character masks: detected faces (InsightFace) or user MASKs, one per character, plus a preview."""

from __future__ import annotations

import numpy as np
import torch
from comfy_api.latest import io

from .convert import box_masks, check_image, mask_preview, resize_masks
from .types import CharacterMasks, FaceDetector

MAX_CHARACTERS = 8


def detect_faces(detector, image: torch.Tensor) -> list[tuple[float, float, float, float]]:
    """Face boxes of an IMAGE [1, H, W, 3], left to right."""
    bgr = (image[0, :, :, :3].clamp(0, 1) * 255).byte().numpy()[:, :, ::-1]
    faces = detector.get(np.ascontiguousarray(bgr))
    boxes = [tuple(float(v) for v in f.bbox[:4]) for f in faces]
    return sorted(boxes, key=lambda b: b[0])


class AvatarFaceMasks(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AvatarFaceMasks", display_name="Avatar Character Masks", category="HunyuanVideo-Avatar",
            description="Where each character's audio acts. Connected masks win (mask_k = character k); otherwise "
                        "faces are detected and numbered left to right; with neither, one character covers the frame.",
            inputs=[
                io.Image.Input("image", tooltip="The reference image (the same one the sampler gets)."),
                io.Int.Input("characters", default=1, min=1, max=MAX_CHARACTERS, step=1,
                             tooltip="How many characters speak. With a detector, the largest faces are kept."),
                io.Float.Input("face_scale", default=3.0, min=1.0, max=8.0, step=0.1,
                               tooltip="Grow each detected face box this many times (official 3.0): the mask must "
                                       "cover the head while it moves."),
                FaceDetector.Input("face_detector", optional=True,
                                   tooltip="From 'Load InsightFace (Avatar faces)'. Not needed when masks are given."),
                io.Autogrow.Input("masks", optional=True, template=io.Autogrow.TemplatePrefix(
                    io.Mask.Input("mask"), prefix="mask_", min=0, max=MAX_CHARACTERS),
                    tooltip="Optional hand-drawn MASK per character (white = that character's face region)."),
            ],
            outputs=[CharacterMasks.Output(display_name="character_masks"), io.Image.Output(display_name="preview")],
        )

    @classmethod
    def execute(cls, image: torch.Tensor, characters: int, face_scale: float, face_detector=None,
                masks: io.Autogrow.Type = None) -> io.NodeOutput:
        check_image(image)
        hw = (image.shape[1], image.shape[2])
        given = [masks[k] for k in sorted(masks or {}, key=lambda n: int(n.rsplit("_", 1)[1])) if masks[k] is not None]
        if given:
            out = resize_masks(torch.cat([m[:1] if m.dim() == 3 else m[None] for m in given]), hw)
            if characters != len(out):
                raise ValueError(f"characters={characters} but {len(out)} masks are connected; set characters to {len(out)}.")
        elif face_detector is not None:
            boxes = detect_faces(face_detector, image)
            if len(boxes) < characters:
                raise ValueError(f"characters={characters} but {len(boxes)} faces were found in the image; lower "
                                 "characters or connect one MASK per character.")
            largest = sorted(boxes, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]), reverse=True)[:characters]
            out = box_masks(sorted(largest, key=lambda b: b[0]), hw, face_scale)
        elif characters == 1:
            out = torch.ones(1, *hw)  # the official fallback when no face is found: the whole frame
        else:
            raise ValueError(f"characters={characters}: connect a face_detector or one MASK per character.")
        return io.NodeOutput(out, mask_preview(image, out))
