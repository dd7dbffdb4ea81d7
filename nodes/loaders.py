"""Loaders: the Avatar transformer, whisper-tiny and the face detector (detface.pt or InsightFace), under ComfyUI's memory management."""

from __future__ import annotations

import logging
import os

import comfy.model_management as mm
import comfy.model_patcher
import folder_paths
import torch
from comfy_api.latest import io

from ..avatar_core import model_files
from ..avatar_core.conditioning.detface import DetFaceDetector
from ..avatar_core.conditioning.faces import InsightFaceDetector
from ..avatar_core.conditioning.whisper import load_whisper_encoder
from ..avatar_core.distributed import MODES
from ..avatar_core.runner import AUTO_OFFLOAD, OFFLOAD_MODES, WEIGHT_FORMATS, LoadSpec
from ..avatar_core.specs.concepts import DETECTOR_SIZE, GPUS, SWAP_BLOCKS
from . import availability, distributed, paths
from .messages import tell_ui
from .types import AvatarModel, FaceDetector, WhisperEncoder

WEIGHT_DTYPES = tuple(WEIGHT_FORMATS)
OFFLOAD = OFFLOAD_MODES + (AUTO_OFFLOAD,)
NO_AEM = "none"
PROVIDERS = {"CPU": ["CPUExecutionProvider"], "CUDA": ["CUDAExecutionProvider", "CPUExecutionProvider"],
             "ROCm": ["ROCMExecutionProvider", "CPUExecutionProvider"],
             "CoreML": ["CoreMLExecutionProvider", "CPUExecutionProvider"]}


def _checkpoints() -> list[str]:
    # The fp8 scale map sits beside its checkpoint; it is not a model of its own.
    return [f for f in folder_paths.get_filename_list("diffusion_models") if not f.endswith("_map.pt")]


def _patcher(runner: torch.nn.Module, swapping: bool = False) -> comfy.model_patcher.ModelPatcher:
    """ComfyUI manages the runner's memory; the sampler node reaches the runner as `patcher.model`."""
    # A block-swapping model manages its own placement: ComfyUI must not move it as a whole.
    offload = mm.get_torch_device() if swapping else mm.unet_offload_device()
    return comfy.model_patcher.CoreModelPatcher(runner, load_device=mm.get_torch_device(), offload_device=offload)


class Holder(torch.nn.Module):
    """Wraps a module whose class owns a read-only `device` property (transformers models): ModelPatcher
    writes `model.device` when it moves weights."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner


class AvatarModelLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AvatarModelLoader", display_name="Load HunyuanVideo-Avatar Model", category="HunyuanVideo-Avatar",
            description="Loads the Avatar transformer from models/diffusion_models: the official .pt, the official "
                        "fp8 .pt (its _map.pt must sit beside it) or our .safetensors.",
            inputs=[
                io.Combo.Input("ckpt_name", options=_checkpoints(),
                               tooltip="Avatar checkpoint in models/diffusion_models (e.g. mp_rank_00_model_states_fp8.pt)."),
                io.Combo.Input("weight_dtype", options=list(WEIGHT_DTYPES), default="bf16",
                               tooltip="bf16: official precision (~26 GB). fp8_e4m3fn: block linears stored in fp8 "
                                       "(~14 GB, official fp8 scheme); an fp8 file stays fp8, a bf16 file is quantised. "
                                       "fp8_e4m3fn_fast: the same weights with fp8 matmuls (row-wise scaled, Ada/Hopper "
                                       "GPUs; ~5% faster on an H100, small extra error). fast: fp8_e4m3fn_fast plus fp8 "
                                       "attention (FlashAttention-3 on Hopper; see the README's performance section)."),
                io.Combo.Input("attention", options=availability.attention_kernels(), default="auto",
                               tooltip=availability.attention_tooltip()),
                io.Combo.Input("emotion_weights", options=[NO_AEM] + paths.emotion_files(), default=NO_AEM,
                               optional=True,
                               tooltip="Audio Emotion Module weights (.safetensors in models/avatar_emotion) for the "
                                       "emotion reference. The public release has none: without them an emotion "
                                       "input has no effect."),
                io.Combo.Input("offload", options=list(OFFLOAD), default="none", optional=True,
                               tooltip="none: the whole model on the GPU (fastest; ~30 GB peak at 704x704 in bf16). "
                                       "block_swap: the first `swap_blocks` blocks stream from pinned RAM, one ahead "
                                       "on a side stream. low_memory: every block streams and token work is chunked "
                                       "(7.6 GB peak at 704x704, ~0.5% slower on an H100 with PCIe 5). auto: the "
                                       "first of these that fits this GPU's memory at 704x704 (the log says which)."),
                io.Int.Input("swap_blocks", default=20, min=SWAP_BLOCKS.ui_min, max=SWAP_BLOCKS.ui_max, step=1,
                             optional=True,
                             tooltip="With offload = block_swap: how many of the 60 blocks live in RAM (each bf16 "
                                     "block is ~0.4 GB of VRAM saved)."),
                io.Int.Input("gpus", default=1, min=GPUS.ui_min, max=max(1, availability.gpu_count()), step=1,
                             optional=True,
                             tooltip=distributed.GPU_TOOLTIP + " " + availability.GPU_HELP),
                io.Combo.Input("parallel", options=list(MODES), default="auto", optional=True,
                               tooltip=distributed.PARALLEL_TOOLTIP),
            ],
            outputs=[AvatarModel.Output(display_name="model")],
        )

    @classmethod
    def execute(cls, ckpt_name: str, weight_dtype: str, attention: str, emotion_weights: str = NO_AEM,
                offload: str = "none", swap_blocks: int = 20, gpus: int = 1, parallel: str = "auto") -> io.NodeOutput:
        gpus = GPUS.check("gpus", gpus, "Set the loader's gpus.")  # the rest: LoadSpec's specs, before any load
        path = folder_paths.get_full_path("diffusion_models", ckpt_name)
        if path is None:
            raise paths.missing_file_error("diffusion_models", ckpt_name, "Avatar checkpoint")
        aem = None
        if emotion_weights and emotion_weights != NO_AEM:
            aem = folder_paths.get_full_path(paths.EMOTION, emotion_weights)
            if aem is None:
                raise paths.missing_file_error(paths.EMOTION, emotion_weights, "Audio Emotion Module weights")
        budget = _vram_budget() if offload == AUTO_OFFLOAD else None
        spec = LoadSpec(path=path, weight_format=weight_dtype, attention=attention, emotion=aem, offload=offload,
                        swap_blocks=swap_blocks, vram_budget=budget)
        if gpus > 1:  # every worker builds the same spec: each input has its single-GPU effect
            return io.NodeOutput(distributed.load_pooled(spec, gpus, parallel))
        # A swapping model places itself (resident part on the GPU, blocks in pinned RAM); else ComfyUI moves it.
        runner = spec.build(mm.get_torch_device(), load_device=mm.unet_offload_device())
        if runner.info.offload != "none":
            logging.info("Avatar model: offload=%s, %d of %d blocks streamed from RAM", runner.info.offload,
                         runner.info.swapped_blocks, runner.diffusion_model.cfg.depth_double
                         + runner.diffusion_model.cfg.depth_single)
        return io.NodeOutput(_patcher(runner, swapping=runner.info.offload != "none"))


def _vram_budget() -> int | None:
    """GPU bytes the model may use for offload=auto: ComfyUI's view of the card (its --reserve-vram taken off),
    within torch's per-process memory fraction. None on a CPU device (nothing to plan)."""
    device = mm.get_torch_device()
    if device.type != "cuda":
        return None
    budget = mm.get_total_memory(device) - mm.extra_reserved_memory()
    fraction = getattr(torch.cuda, "get_per_process_memory_fraction", lambda d: 1.0)(device)
    return int(min(budget, torch.cuda.get_device_properties(device).total_memory * fraction))


def _whisper_choices() -> list[str]:
    return folder_paths.get_filename_list("audio_encoders")


class AvatarWhisperLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AvatarWhisperLoader", display_name="Load Whisper (Avatar audio)", category="HunyuanVideo-Avatar",
            description="Loads the whisper-tiny encoder the Avatar model was trained with (fp32, local files only).",
            inputs=[io.Combo.Input("whisper_name", options=_whisper_choices(),
                                   tooltip="whisper-tiny weights in models/audio_encoders: a .safetensors file, or "
                                           "model.safetensors inside a whisper-tiny folder (its config.json is read).")],
            outputs=[WhisperEncoder.Output(display_name="whisper")],
        )

    @classmethod
    def execute(cls, whisper_name: str) -> io.NodeOutput:
        path = folder_paths.get_full_path("audio_encoders", whisper_name)
        if path is None:
            raise paths.missing_file_error("audio_encoders", whisper_name, "Whisper model")
        folder = os.path.dirname(path)
        if os.path.basename(path) == "model.safetensors" and os.path.isfile(os.path.join(folder, "config.json")):
            path = folder
        encoder = load_whisper_encoder(path, device=mm.text_encoder_offload_device())
        return io.NodeOutput(comfy.model_patcher.CoreModelPatcher(
            Holder(encoder), load_device=mm.text_encoder_device(), offload_device=mm.text_encoder_offload_device()))


def _detector_choices() -> list[str]:
    """Installed detectors only: TorchScript files of models/face_detection first (the official detface.pt),
    then InsightFace packs."""
    return paths.face_detection_files() + paths.insightface_models()


def _choose_detector(model_name: str) -> model_files.DetectorChoice:
    return model_files.choose_face_detector(model_name, paths.face_detection_files(), paths.insightface_models())


class AvatarInsightFaceLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        choices = _detector_choices()
        official = model_files.DETFACE.name
        return io.Schema(
            node_id="AvatarInsightFaceLoader", display_name="Load Face Detector (Avatar faces)",
            category="HunyuanVideo-Avatar",
            description="Face detector for the character masks: the official detface.pt from models/face_detection "
                        "(the default; the official masks), else InsightFace from models/insightface/models/<name> "
                        "(a fallback: the node says so when it runs).",
            inputs=[
                io.Combo.Input("model_name", options=choices,
                               default=official if official in choices or not choices else choices[0],
                               tooltip=f"{official} (the official detector, models/face_detection; download: "
                                       f"{model_files.DETFACE.url}) or an installed InsightFace pack (buffalo_l, "
                                       f"antelopev2). When {official} is chosen but absent, an installed InsightFace "
                                       "pack is used instead and the node says so."),
                io.Combo.Input("provider", options=availability.detector_providers(), default="CPU",
                               tooltip="Where detection runs. Detection runs once per reference image, so CPU is fast "
                                       "enough; detface.pt uses torch (CUDA when torch sees a GPU). "
                                       + availability.PROVIDER_HELP),
                io.Int.Input("det_size", default=640, min=DETECTOR_SIZE.ui_min, max=DETECTOR_SIZE.ui_max, step=32,
                             tooltip="InsightFace input size in pixels (default 640). detface.pt always uses the "
                                     "official 416 (short side)."),
            ],
            outputs=[FaceDetector.Output(display_name="face_detector")],
        )

    @classmethod
    def validate_inputs(cls, model_name: str) -> bool | str:
        """Replaces ComfyUI's "value not in list" check of model_name: detface.pt may be named and absent when
        an InsightFace pack can stand in (the templates name the official detector)."""
        try:
            _choose_detector(model_name)
        except ValueError as e:
            return str(e)
        return True

    @classmethod
    def execute(cls, model_name: str, provider: str, det_size: int) -> io.NodeOutput:
        det_size = DETECTOR_SIZE.check("det_size", det_size, "Set the face detector loader's det_size.")
        choice = _choose_detector(model_name)
        tell_ui(choice.note, "Load Face Detector", logging.INFO if choice.official else logging.WARNING)
        if choice.kind == "detface":
            device = "cpu" if provider == "CPU" else mm.get_torch_device()
            return io.NodeOutput(DetFaceDetector(folder_paths.get_full_path(paths.FACE_DETECTION, choice.name), device))
        try:
            detector = InsightFaceDetector(paths.insightface_root(), pack=choice.name, providers=PROVIDERS[provider],
                                           det_size=det_size)
        except ImportError as e:
            raise RuntimeError("insightface is not installed: run `python install.py` in this pack's folder "
                               "(it installs insightface and exactly one onnxruntime flavour).") from e
        return io.NodeOutput(detector)
