"""Training data nodes: Avatar Training Clip (one clip from frames already in the graph) and Avatar Training
Dataset From Folder (a folder of videos, avatar_core/train/prepare.py), both with ComfyUI's own encoders.

The HunyuanVideo VAE and text encoders are ComfyUI's, so the caches (avatar_core/train/data.py) are written
here with exactly the conversions the sampler applies; `python -m avatar_core.train` reads them.
"""

from __future__ import annotations

import os

import comfy.latent_formats
import comfy.model_management as mm
import comfy.utils
import folder_paths
import torch
from comfy_api.latest import io

from ..avatar_core.conditioning.faces import to_latent
from ..avatar_core.conditioning.text import with_prefix
from ..avatar_core.errors import InputError
from ..avatar_core.output_files import check_folder, check_name
from ..avatar_core.specs.concepts import CLIP_FRAMES, MAX_CLIPS, MIN_SIDE, NAME, VIDEO_SIZE
from ..avatar_core.specs.tensors import IMAGE, MASK
from ..avatar_core.train.data import ClipSample, write_clip_new
from ..avatar_core.train.prepare import Encoders, PrepareConfig, prepare_dataset, whisper_audio
from .convert import MOTION_EXP, MOTION_POSE, image_to_frames, official_size, resize_masks
from .sampler import text_conditioning
from .types import AudioFeatures, CharacterMasks, Emotion, FaceDetector, WhisperEncoder

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


def _text_encoder(clip, clip_vision, positive, official_prefix: bool, image_size: int):
    """Encoders.text: each clip's caption with its first frame through LLaVA (as the sampler's Avatar Text
    Encode), or one given conditioning for every clip."""
    if clip is not None and clip_vision is not None:
        from .text import encode  # (imports ComfyUI's text-encoder helpers only when used)

        def text(caption: str, image: torch.Tensor):
            cond = encode(clip, clip_vision, image[None], {"prompt": with_prefix(caption, official_prefix)},
                          image_size)[0]
            t = text_conditioning(cond, "caption", "cpu")
            return t.states[0], t.mask[0], t.pooled[0]
        return text
    if positive is None:
        raise InputError("Avatar Training Dataset From Folder: connect clip + clip_vision (each clip's caption "
                         "encoded with its first frame, as the sampler does) or positive (one prompt for all clips).")
    fixed = text_conditioning(positive, "positive", "cpu")
    return lambda caption, image: (fixed.states[0], fixed.mask[0], fixed.pooled[0])


class AvatarTrainingDatasetFromFolder(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AvatarTrainingDatasetFromFolder", display_name="Avatar Training Dataset From Folder",
            category="HunyuanVideo-Avatar",
            description="Turns a folder of talking videos into the dataset python -m avatar_core.train reads: each "
                        "video is cut into clips of clip_frames frames at fps, each clip encoded (VAE latents, "
                        "Whisper features of its speech, face mask, caption from <video>.txt or the default). "
                        "Resumable (clips already written are kept); bad files are skipped and listed in 'report'.",
            inputs=[
                io.String.Input("videos", default="avatar_training/videos",
                                tooltip="Folder of videos (.mp4, .mov, .mkv, ...), relative to ComfyUI's input "
                                        "folder or absolute. One speaker per video; <name>.txt beside a video is its "
                                        "caption."),
                io.String.Input("dataset", default="avatar_training/my_set",
                                tooltip="Dataset folder, relative to ComfyUI's output folder (or absolute). Run again "
                                        "with the same settings to continue it."),
                io.Vae.Input("vae", tooltip="The HunyuanVideo VAE."),
                WhisperEncoder.Input("whisper", tooltip="From 'Load Whisper (Avatar audio)'."),
                io.Clip.Input("clip", optional=True, tooltip="DualCLIPLoader (clip_l + llava_llama3, hunyuan_video): "
                              "each clip's caption encoded with its first frame. Or connect positive."),
                io.ClipVision.Input("clip_vision", optional=True, tooltip="Load CLIP Vision: llava_llama3_vision."),
                io.Conditioning.Input("positive", optional=True,
                                      tooltip="Instead of clip + clip_vision: one encoded prompt for every clip "
                                              "(Avatar Text Encode or Avatar Load Conditioning)."),
                FaceDetector.Input("face_detector", optional=True,
                                   tooltip="Masks from the face in each clip's first frame; clips without a face are "
                                           "skipped. Without it the whole frame is the mask."),
                io.String.Input("caption", multiline=True, default="A person is talking.",
                                tooltip="Caption of videos without a <name>.txt beside them."),
                io.Boolean.Input("official_prefix", default=True,
                                 tooltip="Prepend the official prompt prefix, as Avatar Text Encode does."),
                io.Int.Input("clip_frames", default=33, min=CLIP_FRAMES.ui_min, max=CLIP_FRAMES.ui_max, step=4,
                             tooltip="Frames per clip, 4k+1 (33 = 1.3 s at 25 fps; 129 = the sampler's window)."),
                io.Combo.Input("fps", options=["25", "12.5"], default="25", tooltip="Clip frame rate (official 25)."),
                io.Int.Input("image_size", default=704, min=VIDEO_SIZE.ui_min, max=VIDEO_SIZE.ui_max, step=64,
                             tooltip="Short side of the training size (as the sampler's image_size); each aspect "
                                     "ratio gets its official size and trains in its own bucket."),
                io.Int.Input("max_clips", default=0, min=MAX_CLIPS.ui_min, max=MAX_CLIPS.ui_max,
                             tooltip="Clips per video at most; 0 = all."),
                io.Int.Input("min_side", default=256, min=MIN_SIDE.ui_min, max=MIN_SIDE.ui_max,
                             tooltip="Videos whose shorter side has fewer pixels are skipped as too small."),
            ],
            outputs=[io.String.Output(display_name="dataset"), io.String.Output(display_name="report")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, videos: str, dataset: str, vae, whisper, caption: str, official_prefix: bool, clip_frames: int,
                fps: str, image_size: int, max_clips: int, min_side: int, clip=None, clip_vision=None, positive=None,
                face_detector=None) -> io.NodeOutput:
        source = videos if os.path.isabs(videos) else os.path.join(folder_paths.get_input_directory(), videos)
        folder = dataset if os.path.isabs(dataset) else os.path.join(folder_paths.get_output_directory(), dataset)
        cfg = PrepareConfig(source, folder, clip_frames, float(fps), image_size, max_clips, min_side, caption)
        cfg.check()  # the settings and the videos folder, before any model is loaded
        text = _text_encoder(clip, clip_vision, positive, official_prefix, image_size)
        mm.load_model_gpu(whisper)
        encoders = Encoders(vae=lambda frames: vae.encode(frames) * LATENT.scale_factor, text=text,
                            audio=whisper_audio(whisper.model.inner), faces=face_detector,
                            check_cancel=mm.throw_exception_if_processing_interrupted)
        bar = comfy.utils.ProgressBar(1)
        report = prepare_dataset(cfg, encoders, on_progress=lambda done, total: bar.update_absolute(done, total))
        summary = report.summary()
        return io.NodeOutput(str(report.folder), summary, ui={"text": [summary]})
