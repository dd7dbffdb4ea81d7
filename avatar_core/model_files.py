"""The model files a full Avatar render needs: name, ComfyUI folder, exact layout and where to download each.

One list for every place that names them: the loaders' missing-file errors (nodes/paths.py), run_avatar.py's
missing-model report, and the `models` metadata of the example workflows (what the frontend's Missing Models
panel shows: folder and download link). Plain data, no ComfyUI or torch import.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .errors import InputError

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
    f"openai/whisper-tiny (= the official ckpts/whisper-tiny): model.safetensors, with its config.json "
    f"({HF}/openai/whisper-tiny/resolve/main/config.json) beside it in one whisper-tiny/ folder (optional: the "
    f"loader reads the sizes off the weights)")
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
DETFACE = ModelFile(
    "detface.pt", "face_detection", f"{OFFICIAL_REPO}/resolve/main/ckpts/det_align/detface.pt",
    "face_detection/detface.pt",
    "the official face detector, ckpts/det_align/detface.pt of the official weights (YOLO-face, TorchScript: "
    "loaded with torch.jit.load, never unpickled); the masks are then the official ones")
FACES = ModelFile(
    "buffalo_l", "insightface/models",
    "https://github.com/deepinsight/insightface/releases/download/v0.7/buffalo_l.zip",
    "insightface/models/buffalo_l/det_10g.onnx (+ the other .onnx files of the zip: 1k3d68, 2d106det, "
    "genderage, w600k_r50)",
    "the FALLBACK face detector when detface.pt is absent (not the official one: masks can differ): InsightFace's "
    "buffalo_l.zip, unzipped into a buffalo_l/ folder (non-commercial research licence); antelopev2/ "
    "(scrfd_10g_bnkps.onnx, ...) works too")

ALL = (AVATAR, WHISPER, VAE, CLIP_L, LLAVA, LLAVA_VISION, DETFACE, FACES)
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


@dataclass(frozen=True)
class DetectorChoice:
    """Which face detector the loader builds for the name it was given, and what it tells the user."""

    kind: str   # "detface" (TorchScript in models/face_detection) or "insightface" (a pack)
    name: str   # the file or the pack that is loaded
    note: str   # one line for the node's output text and the log
    official: bool


def choose_face_detector(name: str, torchscript_files: Sequence[str],
                         insightface_packs: Sequence[str]) -> DetectorChoice:
    """The detector for the loader's ``name``: an installed detface.pt-like file or InsightFace pack as named;
    the official detface.pt named but absent -> an installed InsightFace pack (buffalo_l first), said so;
    anything else -> an InputError that says what to download where."""
    if name in torchscript_files:
        return DetectorChoice("detface", name, f"{name}: the official face detector (the official masks).", True)
    get_official = f"for the official masks put {DETFACE.name} in models/{DETFACE.folder}/ ({DETFACE.url})"
    if name in insightface_packs:
        return DetectorChoice("insightface", name, f"InsightFace {name}: NOT the official face detector (masks "
                              f"can differ from the official ones); {get_official}.", False)
    if name == DETFACE.name and insightface_packs:
        pack = FACES.name if FACES.name in insightface_packs else insightface_packs[0]
        return DetectorChoice("insightface", pack, f"{DETFACE.name} is not installed: using InsightFace {pack} "
                              f"instead (fallback, NOT the official detector: masks can differ); {get_official}.",
                              False)
    raise InputError(f"face detector {name!r} is not installed (models/{DETFACE.folder} has "
                     f"{list(torchscript_files) or 'nothing'}, models/{FACES.folder} has "
                     f"{list(insightface_packs) or 'nothing'}).\n{describe(DETFACE.name, DETFACE.folder)}\n"
                     f"  or the fallback: {describe(FACES.name, FACES.folder)}\nThen press R in ComfyUI to refresh "
                     "the lists.")
