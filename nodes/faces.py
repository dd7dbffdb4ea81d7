"""Character masks: detected faces (InsightFace) or user MASKs, one per character, plus a preview."""

from __future__ import annotations

import logging

import torch
from comfy_api.latest import io, ui

from ..avatar_core.conditioning.faces import character_masks
from ..avatar_core.validation import check_number
from .convert import check_image, mask_preview, masks_by_character
from .types import CharacterMasks, FaceDetector
from .ui_payloads import face_mask_ui

MAX_CHARACTERS = 8


class AvatarFaceMasks(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AvatarFaceMasks", display_name="Avatar Character Masks", category="HunyuanVideo-Avatar",
            description="Where each character's audio acts. A connected mask wins (mask_0 = character 1, mask_1 = "
                        "character 2, ...); the other characters get detected faces, numbered left to right. With one "
                        "character and no detector, the whole frame is used.",
            inputs=[
                io.Image.Input("image", tooltip="The reference image (the same one the sampler gets)."),
                io.Int.Input("characters", default=1, min=1, max=MAX_CHARACTERS, step=1,
                             tooltip="How many characters speak. Detected faces are numbered left to right; with more "
                                     "faces than characters, the largest are kept."),
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
            # An output node, so users can run just this one to check who is who before a long render.
            is_output_node=True,
        )

    @classmethod
    def execute(cls, image: torch.Tensor, characters: int, face_scale: float, face_detector=None,
                masks: io.Autogrow.Type = None) -> io.NodeOutput:
        check_image(image)
        check_number("face_scale", face_scale, lo=1.0, hi=8.0, fix="Set Avatar Character Masks' face_scale (official 3.0).")
        wanted = masks_by_character(masks, characters)
        if face_detector is None and characters == 1 and wanted[0] is None:
            logging.warning("Avatar Character Masks: no face detector connected: the whole frame drives the mouth.")
            return cls._output(image, torch.ones(1, image.shape[1], image.shape[2]))
        result = character_masks(image[:1, :, :, :3], characters, detector=face_detector,
                                 user_masks=wanted, area=face_scale)
        for note in result.notes:
            logging.warning("Avatar Character Masks: %s", note)
        return cls._output(image, result.pixel)

    @classmethod
    def _output(cls, image: torch.Tensor, masks: torch.Tensor) -> io.NodeOutput:
        """Masks + preview, and the overlay / character list the frontend draws on the node."""
        preview = mask_preview(image, masks)
        saved = ui.PreviewImage(preview, cls=cls).as_dict()["images"]
        return io.NodeOutput(masks, preview, ui=face_mask_ui(masks, saved))
