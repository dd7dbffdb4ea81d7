"""Avatar Training Clip: encodes one training clip with ComfyUI's own encoders into the trainer's cache file.

The HunyuanVideo VAE and text encoders are ComfyUI's, so the cache (avatar_core/train/data.py) is written
here, once per clip, with exactly the conversions the sampler applies; `python -m avatar_core.train` reads it.
"""

from __future__ import annotations

import os

import comfy.latent_formats
import comfy.utils
import folder_paths
import torch
from comfy_api.latest import io

from ..avatar_core.conditioning.faces import to_latent
from ..avatar_core.errors import InputError
from ..avatar_core.output_files import check_folder, check_name
from ..avatar_core.specs.concepts import NAME, VIDEO_SIZE
from ..avatar_core.specs.tensors import IMAGE, MASK
from ..avatar_core.train.data import ClipSample, write_clip_new
from .convert import MOTION_EXP, MOTION_POSE, image_to_frames, official_size, resize_masks
from .sampler import text_conditioning
from .types import AudioFeatures, CharacterMasks, Emotion

LATENT = comfy.latent_formats.HunyuanVideo()


class AvatarTrainingClip(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AvatarTrainingClip", display_name="Avatar Training Clip (cache)", category="HunyuanVideo-Avatar",
            description="Writes one clip of a training set (video frames + their audio + prompt, optional masks and "
                        "emotion image) as the cache file python -m avatar_core.train reads. The first frame is the "
                        "reference image. The clip is cut to 4k+1 frames (at most as many as audio rows).",
            inputs=[
                io.Image.Input("frames", tooltip="The clip's video frames (e.g. Load Video at the audio's fps)."),
                AudioFeatures.Input("audio_features", tooltip="Avatar Audio Encode of the clip's own audio."),
                io.Conditioning.Input("positive", tooltip="Avatar Text Encode of the clip's caption."),
                io.Vae.Input("vae", tooltip="The HunyuanVideo VAE."),
                io.String.Input("name", default="clip", tooltip="File name prefix in the dataset folder: each run "
                                "writes a new <name>_00001.safetensors, <name>_00002, ... (never over a clip)."),
                io.String.Input("dataset", default="avatar_training/my_set",
                                tooltip="Dataset folder, relative to ComfyUI's output folder (or absolute)."),
                io.Int.Input("image_size", default=704, min=VIDEO_SIZE.ui_min, max=VIDEO_SIZE.ui_max, step=64,
                             tooltip="Size the frames are resized to, as the sampler's image_size."),
                CharacterMasks.Input("character_masks", optional=True, tooltip="Face masks; default: whole frame."),
                Emotion.Input("emotion", optional=True, tooltip="Avatar Emotion Reference (needed to train the AEM)."),
            ],
            outputs=[io.String.Output(display_name="path")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, frames, audio_features, positive, vae, name: str, dataset: str, image_size: int,
                character_masks=None, emotion=None) -> io.NodeOutput:
        hint = "Set Avatar Training Clip's inputs."
        IMAGE.check("frames", frames)
        image_size = VIDEO_SIZE.check("image_size", image_size, hint)
        name, dataset = NAME.check("name", name, hint), NAME.check("dataset", dataset, hint)
        check_name(name, "name")  # before the VAE work: a bad name or an unwritable dataset folder fails now
        folder = dataset if os.path.isabs(dataset) else os.path.join(folder_paths.get_output_directory(), dataset)
        check_folder(folder, f"dataset {dataset!r}")
        feats = audio_features.features                                          # [N, F, 10, 5, 384]
        n = min(frames.shape[0], feats.shape[1])
        n = 4 * ((n - 1) // 4) + 1                                              # 4T - 3 video frames
        if n < 5:
            raise InputError(f"frames: a training clip needs at least 5 frames with audio, got {n}")
        h, w = official_size(frames.shape[1], frames.shape[2], image_size)
        masks = MASK.check("character_masks", character_masks if character_masks is not None else torch.ones(1, h, w))
        if masks.shape[0] != feats.shape[0]:
            raise InputError(f"{feats.shape[0]} audio tracks but {masks.shape[0]} character masks: one mask per audio")
        text = text_conditioning(positive, "positive", "cpu")  # every check before the VAE runs
        pixels = comfy.utils.common_upscale(frames[:n, :, :, :3].movedim(-1, 1), w, h, "lanczos", "disabled").movedim(1, -1)
        latents = vae.encode(pixels) * LATENT.scale_factor                          # [1, 16, T, h/8, w/8]
        ref = vae.encode(image_to_frames(pixels[:1], n)) * LATENT.scale_factor      # as the sampler encodes it
        clip = ClipSample(
            latents=latents[0].float().cpu(), ref_latents=ref[0].float().cpu(),
            audio=(feats[0] if feats.shape[0] == 1 else feats)[..., :n, :, :, :].float().cpu(),
            face_mask=to_latent(resize_masks(masks, (h, w)), tuple(latents.shape[-2:]))[:, None].cpu(),
            text_states=text.states[0].float().cpu(), text_mask=text.mask[0].cpu(), text_pooled=text.pooled[0].float().cpu(),
            motion_exp=torch.full((4,), float(MOTION_EXP)), motion_pose=torch.full((4,), float(MOTION_POSE)),
            fps=torch.tensor(float(audio_features.fps)), emotion=None if emotion is None else emotion[0].float().cpu(),
            caption=name)
        return io.NodeOutput(str(write_clip_new(folder, name, clip)))  # name_00001, ...: never over a clip
