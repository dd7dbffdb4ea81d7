"""The model files a full Avatar render needs: name, ComfyUI folder, exact layout and where to download each.

One list for every place that names them: the loaders' missing-file errors (nodes/paths.py), run_avatar.py's
missing-model report, and the `models` metadata of the example workflows (what the frontend's Missing Models
panel shows: folder and download link). Plain data, no ComfyUI or torch import.
"""

from __future__ import annotations

from dataclasses import dataclass

HF = "https://huggingface.co"
REPACKAGED = f"{HF}/Comfy-Org/HunyuanVideo_repackaged/resolve/main/split_files"
OFFICIAL_REPO = f"{HF}/tencent/HunyuanVideo-Avatar"


@dataclass(frozen=True)
class ModelFile:
    name: str            # what the loader's widget holds (relative to the folder)
    folder: str          # under ComfyUI/models/
    url: str             # a direct download, or the official repo page when the file must be converted
    layout: str          # the exact files on disk
    how: str             # one line: where it comes from / what to do

    @property
    def direct(self) -> bool:
        """True when `url` downloads the file itself (the frontend's download button works as is)."""
        return "/resolve/" in self.url


AVATAR = ModelFile(
    "hunyuan_video_avatar_bf16.safetensors", "diffusion_models",
    f"{OFFICIAL_REPO}/tree/main/ckpts/hunyuan-video-t2v-720p/transformers",
    "diffusion_models/hunyuan_video_avatar_bf16.safetensors",
    "CONVERT the official mp_rank_00_model_states.pt from the page linked (no ready .safetensors exists): "
    "python -m avatar_core.convert mp_rank_00_model_states.pt hunyuan_video_avatar_bf16.safetensors "
    "(the .pt and the fp8 .pt with its _map.pt also load as they are)")
WHISPER = ModelFile(
    "whisper-tiny/model.safetensors", "audio_encoders", f"{HF}/openai/whisper-tiny/resolve/main/model.safetensors",
    "audio_encoders/whisper-tiny/model.safetensors + audio_encoders/whisper-tiny/config.json",
    f"openai/whisper-tiny (= the official ckpts/whisper-tiny): model.safetensors AND config.json "
    f"({HF}/openai/whisper-tiny/resolve/main/config.json) in one whisper-tiny/ folder")
VAE = ModelFile(
    "hunyuan_video_vae_bf16.safetensors", "vae", f"{REPACKAGED}/vae/hunyuan_video_vae_bf16.safetensors",
    "vae/hunyuan_video_vae_bf16.safetensors", "Comfy-Org/HunyuanVideo_repackaged (= the official VAE)")
CLIP_L = ModelFile(
    "clip_l.safetensors", "text_encoders", f"{REPACKAGED}/text_encoders/clip_l.safetensors",
    "text_encoders/clip_l.safetensors", "Comfy-Org/HunyuanVideo_repackaged")
LLAVA = ModelFile(
    "llava_llama3_fp16.safetensors", "text_encoders", f"{REPACKAGED}/text_encoders/llava_llama3_fp16.safetensors",
    "text_encoders/llava_llama3_fp16.safetensors",
    "Comfy-Org/HunyuanVideo_repackaged (fp16, as the official encoder runs; llava_llama3_fp8_scaled is the "
    "smaller alternative, see the README)")
LLAVA_VISION = ModelFile(
    "llava_llama3_vision.safetensors", "clip_vision", f"{REPACKAGED}/clip_vision/llava_llama3_vision.safetensors",
    "clip_vision/llava_llama3_vision.safetensors", "Comfy-Org/HunyuanVideo_repackaged")
FACES = ModelFile(
    "buffalo_l", "insightface/models",
    "https://github.com/deepinsight/insightface/releases/download/v0.7/buffalo_l.zip",
    "insightface/models/buffalo_l/det_10g.onnx (+ the other .onnx files of the zip: 1k3d68, 2d106det, "
    "genderage, w600k_r50)",
    "InsightFace's buffalo_l.zip, unzipped into a buffalo_l/ folder (non-commercial research licence); "
    "antelopev2/ (scrfd_10g_bnkps.onnx, ...) works too")

ALL = (AVATAR, WHISPER, VAE, CLIP_L, LLAVA, LLAVA_VISION, FACES)
BY_NAME = {m.name: m for m in ALL}


def describe(name: str, folder: str) -> str:
    """Multi-line text for one missing file: its exact place on disk and where to get it."""
    known = BY_NAME.get(name)
    if known is None:
        return f"{name} -> put it in ComfyUI/models/{folder}/ (see the README's model table)"
    return (f"{name} -> put it in ComfyUI/models/{folder}/\n      layout: models/{known.layout}\n"
            f"      get it: {known.how}\n      from: {known.url}")


def frontend_metadata(name: str) -> dict | None:
    """The `models` entry ComfyUI's frontend reads from a loader node (name, url, directory), or None."""
    known = BY_NAME.get(name)
    if known is None or "/" in known.folder:  # folders the frontend does not know (insightface/models) get none
        return None
    return {"name": known.name, "url": known.url, "directory": known.folder}
