"""Character masks: detected faces (official detface.pt or InsightFace) or user MASKs, one per character, plus a preview."""

from __future__ import annotations

import logging

import torch
from comfy_api.latest import io, ui

from ..avatar_core.conditioning.faces import at_video_size, character_masks, image_to_uint8
from ..avatar_core.errors import InputError
from ..avatar_core.specs.concepts import CHARACTERS, FACE_SCALE, VIDEO_SIZE
from ..avatar_core.specs.tensors import IMAGE
from .convert import mask_preview, masks_by_character, official_size
from .types import CharacterMasks, FaceDetector
from .ui_payloads import face_mask_ui

MAX_CHARACTERS = CHARACTERS.ui_max
OVERLAP = {"nearest face": "nearest", "sum": "sum"}
# Newer ComfyUI re-sends the cached `ui` of nodes flagged so (also when a rerun skips them); a ComfyUI without
# the flag still gets the overlay whenever the node runs.
INTERMEDIATE = {"has_intermediate_output": True} if "has_intermediate_output" in getattr(
    io.Schema, "__dataclass_fields__", {}) else {}


class AvatarFaceMasks(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AvatarFaceMasks", display_name="Avatar Character Masks", category="HunyuanVideo-Avatar",
            description="Where each character's audio acts. A connected mask wins (mask_0 = character 1, mask_1 = "
                        "character 2, ...); the other characters get detected faces, numbered left to right. With one "
                        "character and no detector, the whole frame is used. To check the masks alone, connect "
                        "'preview' to a Preview Image node and run that.",
            inputs=[
                io.Image.Input("image", tooltip="The reference image (the same one the sampler gets)."),
                io.Int.Input("characters", default=1, min=CHARACTERS.ui_min, max=CHARACTERS.ui_max, step=1,
                             tooltip="How many characters speak. Detected faces are numbered left to right; with more "
                                     "faces than characters, the largest are kept."),
                io.Float.Input("face_scale", default=3.0, min=FACE_SCALE.ui_min, max=FACE_SCALE.ui_max, step=0.1,
                               tooltip="Grow each detected face box this many times (official 3.0): the mask must "
                                       "cover the head while it moves."),
                io.Combo.Input("overlap", options=list(OVERLAP), default="nearest face", optional=True,
                               tooltip="Where grown face boxes overlap: 'nearest face' gives each spot to the "
                                       "character whose face centre is nearest (no token driven by two audios); "
                                       "'sum' lets both audios drive it (older behaviour)."),
                FaceDetector.Input("face_detector", optional=True,
                                   tooltip="From 'Load Face Detector (Avatar faces)'. Not needed when masks are given."),
                io.Autogrow.Input("masks", optional=True, template=io.Autogrow.TemplatePrefix(
                    io.Mask.Input("mask"), prefix="mask_", min=0, max=MAX_CHARACTERS),
                    tooltip="Optional hand-drawn MASK per character (white = that character's face region)."),
                # Last and optional: workflows saved before it keep their widget values in place.
                io.Int.Input("image_size", default=704, min=VIDEO_SIZE.ui_min, max=VIDEO_SIZE.ui_max, step=64, optional=True,
                             tooltip="The Avatar Sampler's image_size (official 704). Faces are found on the "
                                     "reference resized to the video size, as the official code does, and the "
                                     "masks come out at that size."),
            ],
            outputs=[CharacterMasks.Output(display_name="character_masks"), io.Image.Output(display_name="preview")],
            # NOT an output node: with one, a graph whose other nodes fail validation would run only this node and
            # report success without a video. The overlay still reaches the node as its `ui` message (re-sent from
            # the cache on reruns where ComfyUI knows intermediate outputs); to check who is who before a long
            # render, connect `preview` to a Preview Image node and run that.
            **INTERMEDIATE,
        )

    @classmethod
    def execute(cls, image: torch.Tensor, characters: int, face_scale: float, overlap: str = "nearest face",
                face_detector=None, masks: io.Autogrow.Type = None, image_size: int = 704) -> io.NodeOutput:
        IMAGE.check("image", image)
        hint = "Set Avatar Character Masks' inputs."
        characters = CHARACTERS.check("characters", characters, hint)
        face_scale = FACE_SCALE.check("face_scale", face_scale, hint)
        image_size = VIDEO_SIZE.check("image_size", image_size, "Set it to the Avatar Sampler's image_size (official 704).")
        if overlap not in OVERLAP:
            raise InputError(f"overlap: {overlap!r} is not one of {list(OVERLAP)}. {hint}")
        video_hw = official_size(image.shape[1], image.shape[2], image_size)
        wanted = masks_by_character(masks, characters)
        video = torch.from_numpy(at_video_size(image_to_uint8(image[:1, :, :, :3]), video_hw).copy()).float()[None] / 255
        if face_detector is None and characters == 1 and wanted[0] is None:
            logging.warning("Avatar Character Masks: no face detector connected: the whole frame drives the mouth.")
            return cls._output(video, torch.ones(1, *video_hw))
        result = character_masks(image[:1, :, :, :3], characters, detector=face_detector, user_masks=wanted,
                                 area=face_scale, overlap=OVERLAP[overlap], video_size=video_hw)
        for note in result.notes:
            logging.warning("Avatar Character Masks: %s", note)
        return cls._output(video, result.pixel)

    @classmethod
    def _output(cls, image: torch.Tensor, masks: torch.Tensor) -> io.NodeOutput:
        """Masks + preview (on the reference at the video size), and the overlay / character list the frontend
        draws on the node."""
        preview = mask_preview(image, masks)
        saved = ui.PreviewImage(preview, cls=cls).as_dict()["images"]
        return io.NodeOutput(masks, preview, ui=face_mask_ui(masks, saved))
