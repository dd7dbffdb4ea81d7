"""The pack's ComfyExtension: registers model folders and lists every node."""

from __future__ import annotations

from comfy_api.latest import ComfyExtension, io

from . import audio, emotion, faces, loaders, lora, resume, sampler, text, training
from .paths import install_example_inputs, register_folders


class AvatarExtension(ComfyExtension):
    async def on_load(self) -> None:
        register_folders()
        install_example_inputs()

    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [
            loaders.AvatarModelLoader, loaders.AvatarWhisperLoader, loaders.AvatarInsightFaceLoader,
            audio.AvatarAudioEncode, faces.AvatarFaceMasks, emotion.AvatarEmotionEncode,
            text.AvatarTextEncode, text.AvatarConditioningSave, text.AvatarConditioningLoad,
            sampler.AvatarLongVideo, sampler.AvatarSampler,
            lora.AvatarLoraLoader, training.AvatarTrainingClip, training.AvatarTrainingDatasetFromFolder,
            resume.AvatarResume,
        ]
