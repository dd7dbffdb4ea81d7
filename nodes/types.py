"""Socket types of our own objects. Everything else uses ComfyUI's native types (IMAGE, MASK, AUDIO, VAE, ...)."""

from __future__ import annotations

from comfy_api.latest import io

AvatarModel = io.Custom("HYAVATAR_MODEL")            # ModelPatcher around an AvatarTransformer
WhisperEncoder = io.Custom("HYAVATAR_WHISPER")       # ModelPatcher around a whisper-tiny encoder
AudioFeatures = io.Custom("HYAVATAR_AUDIO_FEATURES")  # convert.AudioFeatures
FaceDetector = io.Custom("HYAVATAR_FACE_DETECTOR")   # InsightFace FaceAnalysis (+ provider)
CharacterMasks = io.Custom("HYAVATAR_CHARACTER_MASKS")  # float [N, H, W] pixel masks, one per character
Emotion = io.Custom("HYAVATAR_EMOTION")              # emotion reference latent [1, 16, T, h, w]
LongVideo = io.Custom("HYAVATAR_LONG_VIDEO")          # avatar_core.sampling.windows.WindowConfig
Resume = io.Custom("HYAVATAR_RESUME")                 # nodes.resume.ResumeSettings
