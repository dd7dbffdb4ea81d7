"""The Avatar sampler (a native LATENT out, decoded by native VAEDecodeTiled) and its long-video settings."""

from __future__ import annotations

import traceback

import comfy.latent_formats
import comfy.model_management as mm
import comfy.utils
import latent_preview
import torch
from comfy_api.latest import io

from ..avatar_core.conditioning.emotion import emotion_warning
from ..avatar_core.conditioning.faces import face_mask_for_model, to_latent
from ..avatar_core.conditioning.reference import REFERENCE_MODES
from ..avatar_core.conditioning.text import check_official_conditioning
from ..avatar_core.errors import InputError
from ..avatar_core.runner import Runner
from ..avatar_core.sampling.deepcache import DeepCacheConfig
from ..avatar_core.sampling.guidance import GuidanceConfig
from ..avatar_core.sampling.sampler import (
    NOISE_MODES,
    AvatarConditioning,
    SamplerCallbacks,
    SamplerConfig,
    SamplingCancelled,
    TextConditioning,
)
from ..avatar_core.sampling.solvers import SOLVERS
from ..avatar_core.sampling.stepcache import StepCacheConfig
from ..avatar_core.sampling.windows import OFFICIAL_OFFSET, OFFICIAL_WINDOW, WindowConfig, plan_clip
from ..avatar_core.specs.concepts import (
    CFG,
    FLOW_SHIFT,
    MOTION,
    SEED,
    STEP_CACHE_THRESHOLD,
    STEPS,
    VIDEO_SIZE,
    WINDOW,
    WINDOW_STRIDE,
)
from ..avatar_core.specs.tensors import IMAGE, MASK
from .convert import MOTION_EXP, MOTION_POSE, motion_tensor, official_size, resize_masks
from .lora import attached_loras
from .memory import does_not_fit, out_of_memory
from .messages import tell_ui
from .reference import reference_latents
from .reference_cache import ReferenceCache
from .resume import resume_config
from .types import AudioFeatures, AvatarModel, CharacterMasks, Emotion, LongVideo, Resume

LATENT = comfy.latent_formats.HunyuanVideo()
SWAP_HEADROOM_BYTES = 12 * 2**30  # low-memory peak at 704x704 is 7.6 GiB; more for larger frames
REFERENCE = ReferenceCache()  # a rerun with the same image, VAE and size skips the reference encode (129 frames), any seed


class AvatarLongVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AvatarLongVideo", display_name="Avatar Long-Video Windows", category="HunyuanVideo-Avatar",
            description="Window stitching for clips longer than one window: the clip is a ring of latent frames "
                        "denoised window by window, the window grid shifting every step (official 33 / 10).",
            inputs=[
                io.Int.Input("window", default=OFFICIAL_WINDOW, min=WINDOW.ui_min, max=WINDOW.ui_max, step=1,
                             tooltip="Latent frames per model call (33 = 129 video frames, what the model was trained on)."),
                io.Int.Input("stride", default=OFFICIAL_OFFSET, min=WINDOW_STRIDE.ui_min, max=WINDOW_STRIDE.ui_max,
                             step=1, optional=True,
                             tooltip="Latent frames the window grid moves each denoising step, so seams never stay "
                                     "in place (official 10). Not the sampler's flow `shift`."),
                # Before the rename this input was called `shift`; API prompts saved then still carry it (UI
                # workflows store widget values by position and load as they are). A socket only, no widget.
                io.Int.Input("shift", min=WINDOW_STRIDE.ui_min, max=WINDOW_STRIDE.ui_max, optional=True,
                             force_input=True, advanced=True,
                             tooltip="Old name of `stride`, kept so that saved API prompts run; when given it wins."),
            ],
            outputs=[LongVideo.Output(display_name="long_video")],
        )

    @classmethod
    def execute(cls, window: int, stride: int = OFFICIAL_OFFSET, shift: int | None = None) -> io.NodeOutput:
        hint = "Set Avatar Long-Video Windows' inputs."
        window = WINDOW.check("window", window, hint)
        stride = WINDOW_STRIDE.check("stride" if shift is None else "shift", stride if shift is None else shift, hint)
        return io.NodeOutput(WindowConfig(window=window, offset=stride))  # + the stride < window rule


def text_conditioning(cond, name: str, device) -> TextConditioning:
    if not cond:
        raise InputError(f"{name}: empty CONDITIONING; connect Avatar Text Encode or Avatar Load Conditioning.")
    states, extra = cond[0]
    if extra.get("pooled_output") is None:
        raise InputError(f"{name}: no pooled CLIP-L output; use a hunyuan_video DualCLIPLoader.")
    check_official_conditioning(states, extra.get("attention_mask"), name)  # 831 states + positional mask
    return TextConditioning(states.to(device), extra["attention_mask"].to(device), extra["pooled_output"].to(device))


class AvatarSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AvatarSampler", display_name="Avatar Sampler", category="HunyuanVideo-Avatar",
            description="Generates the video latents (as long as the audio). Decode with native VAEDecodeTiled.",
            inputs=[
                AvatarModel.Input("model", tooltip="From 'Load HunyuanVideo-Avatar Model'."),
                io.Conditioning.Input("positive", tooltip="Prompt from Avatar Text Encode (or Avatar Load Conditioning)."),
                io.Conditioning.Input("negative", tooltip="Negative prompt; the official one by default in Avatar Text "
                                                          "Encode. Used for the first steps only (then audio-only CFG)."),
                io.Image.Input("image", tooltip="Reference image of the character(s)."),
                io.Vae.Input("vae", tooltip="Native HunyuanVideo VAE; encodes the reference as the official code does."),
                AudioFeatures.Input("audio_features", tooltip="From Avatar Audio Encode: one track per character; "
                                                              "the video is as long as this audio."),
                CharacterMasks.Input("character_masks", optional=True,
                                     tooltip="One mask per character; a character without an audio track listens. "
                                             "Default: one character, the whole frame."),
                Emotion.Input("emotion", optional=True, tooltip="Emotion reference (needs AEM weights)."),
                LongVideo.Input("long_video", optional=True, tooltip="Window / stride; default official 33 / 10."),
                Resume.Input("resume", optional=True, tooltip="From Avatar Resume; default: checkpoints in "
                                                              "output/avatar_resume every 10 minutes."),
                io.Int.Input("image_size", default=704, min=VIDEO_SIZE.ui_min, max=VIDEO_SIZE.ui_max, step=64,
                             tooltip="Short side of the VIDEO (official 704); sides are multiples of 64. The "
                                     "Emotion Reference's image_size (512) is a different thing: the size of its "
                                     "reference image only."),
                io.Int.Input("steps", default=50, min=STEPS.ui_min, max=STEPS.ui_max, step=1,
                             tooltip="Denoising steps (official 50)."),
                io.Float.Input("cfg", default=7.5, min=CFG.ui_min, max=CFG.ui_max, step=0.1,
                               tooltip="Text+audio guidance of the first steps (official 7.5)."),
                io.Float.Input("shift", default=5.0, min=FLOW_SHIFT.ui_min, max=FLOW_SHIFT.ui_max, step=0.1,
                               tooltip="Flow-matching time shift of the noise schedule (official 5). Not the window "
                                       "stride of Avatar Long-Video Windows."),
                io.Int.Input("seed", default=128, min=SEED.ui_min, max=SEED.ui_max, control_after_generate=True,
                             tooltip="Noise seed. With noise 'cpu' (default) the same seed gives the same noise on "
                                     "any GPU; 'official' draws it as the official pipeline does (see noise)."),
                io.Int.Input("motion_exp", default=MOTION_EXP, min=MOTION.ui_min, max=MOTION.ui_max, step=1,
                             tooltip="Expression motion bucket (official 30); lower = calmer face."),
                io.Int.Input("motion_pose", default=MOTION_POSE, min=MOTION.ui_min, max=MOTION.ui_max, step=1,
                             tooltip="Head pose motion bucket (official 25); lower = steadier head."),
                io.Boolean.Input("deep_cache", default=True,
                                 tooltip="The OFFICIAL speed-up, on by default: on a FIXED list of steps (20 of 50) the "
                                         "deep blocks are not run and their output from the last full step is "
                                         "reused (~35% faster, the official result). Which steps is fixed in "
                                         "advance; compare step_cache."),
                io.Float.Input("step_cache", default=0.0, min=STEP_CACHE_THRESHOLD.ui_min,
                               max=STEP_CACHE_THRESHOLD.ui_max, step=0.01, optional=True,
                               tooltip="NOT official, opt-in (0 = off): ADAPTIVE skipping on the steps deep_cache "
                                       "computes fully. After the first block, if its output changed less than this "
                                       "threshold (accumulated relative change) since the last computed step, the "
                                       "rest of the step is approximated from the cache. Random-weight tests: 0.5 "
                                       "gave 1.9x. Higher = faster, less faithful; start low."),
                # Last and optional: workflows saved before them keep their widget values in place.
                io.Combo.Input("noise", options=list(NOISE_MODES), default="cpu", optional=True,
                               tooltip="How the seed becomes the initial noise. cpu (default): a CPU generator, so a "
                                       "seed gives the same video on any GPU, in a pool of GPUs and on the CPU. "
                                       "official: the official pipeline's draw (CUDA generator, float16): the official "
                                       "run's noise for the same seed and size on the same GPU model (PyTorch's CUDA "
                                       "random numbers depend on the GPU's SM count); needs a CUDA GPU."),
                io.Combo.Input("reference_encode", options=list(REFERENCE_MODES), default="comfyui", optional=True,
                               tooltip="How the reference image becomes the reference latent. comfyui (default): "
                                       "ComfyUI's VAE encode (untiled, the posterior mean). official: as the official "
                                       "code (tiled 256 px / 64 frames, a posterior SAMPLE with float16 noise seeded "
                                       "by the seed): a little randomness in the identity latent. README "
                                       "'Differences' has the measured sizes."),
                io.Combo.Input("solver", options=list(SOLVERS), default="euler", optional=True,
                               tooltip=_solver_tooltip()),
            ],
            outputs=[io.Latent.Output(display_name="latent")],
        )

    @classmethod
    def execute(cls, model, positive, negative, image, vae, audio_features, character_masks=None, emotion=None,
                long_video=None, image_size=704, steps=50, cfg=7.5, shift=5.0, seed=128, motion_exp=MOTION_EXP,
                motion_pose=MOTION_POSE, deep_cache=True, step_cache=0.0, resume=None, noise="cpu",
                reference_encode="comfyui", solver="euler") -> io.NodeOutput:
        IMAGE.check("image", image)
        widgets = _check_widgets(image_size=image_size, steps=steps, cfg=cfg, shift=shift, seed=seed,
                                 motion_exp=motion_exp, motion_pose=motion_pose, step_cache=step_cache)
        image_size, steps, cfg, shift, seed, motion_exp, motion_pose, step_cache = widgets
        checkpoints = resume_config(resume)
        windows = long_video or WindowConfig()
        h, w = official_size(image.shape[1], image.shape[2], image_size)
        masks = character_masks if character_masks is not None else torch.ones(1, h, w)
        MASK.check("character_masks", masks)
        feats = audio_features.for_characters(masks.shape[0])  # a mask without a track: a listener
        device = mm.get_torch_device()
        # Deep-cache tokens are kept per latent frame of the whole clip: on the GPU for up to two windows
        # (~1.5 GB at 704x704), in system RAM beyond, so VRAM does not grow with the clip length.
        long_clip = plan_clip(feats.shape[1], windows).windows_per_step > 2
        # Built here, before the VAE runs: its declared specs check the noise and solver an API prompt sends.
        config = SamplerConfig(steps=steps, shift=shift, seed=seed, noise=noise, guidance=GuidanceConfig(cfg=cfg),
                               solver=solver,
                               deep_cache=DeepCacheConfig(enabled=deep_cache), windows=windows,
                               cache_device=mm.unet_offload_device() if long_clip else None,
                               step_cache=StepCacheConfig(threshold=step_cache) if step_cache > 0 else None)
        _check_modes(noise, reference_encode, device)
        if tuple(masks.shape[-2:]) != (h, w) and character_masks is not None:
            tell_ui(f"the character masks are {masks.shape[-1]}x{masks.shape[-2]}, the video {w}x{h}: set Avatar "
                    "Character Masks' image_size to the sampler's so faces are found at the video size.", "Avatar Sampler")
        ref = reference_latents(image, vae, w, h, windows.audio_rows, reference_encode, seed,  # [1, 16, window, h/8, w/8]
                                cache=REFERENCE)
        runner: Runner = model.model  # the loader's runner (one process, or a pool of GPU workers) in its patcher
        warning = emotion_warning(runner.info.emotion, emotion is not None)
        if warning:
            tell_ui(warning, "Avatar Sampler")
            emotion = None
        audio = feats[None]                                                                   # [1, N, F, 10, 5, 384]
        cond = AvatarConditioning(
            ref_latents=ref.to(device), text=text_conditioning(positive, "positive", device),
            negative_text=text_conditioning(negative, "negative", device), audio=audio,  # stays in RAM: windows move
            face_mask=face_mask_for_model(to_latent(resize_masks(masks, (h, w)), tuple(ref.shape[-2:]))).to(device),
            motion_exp=motion_tensor(motion_exp).to(device), motion_pose=motion_tensor(motion_pose).to(device),
            fps=torch.tensor([audio_features.fps], device=device),
            emotion=emotion.to(device) if emotion is not None else None)  # checks itself: before the model loads
        swapping = runner.info.offload != "none"
        if not swapping and device.type == "cuda":  # the whole model goes to the GPU: fail now, not mid-load
            problem = does_not_fit(model.model_size(), mm.get_total_memory(device), runner.info.weight_format)
            if problem:
                raise InputError(problem)
        try:
            if not swapping:
                mm.load_models_gpu([model], force_full_load=True)
            else:  # it streams its own blocks: only make room for the resident part and the activations
                mm.free_memory(SWAP_HEADROOM_BYTES, device)
            # this branch's LoRAs (or none): the runner puts them on the shared weights for this run
            result = runner.sample(cond, config, callbacks=_callbacks(device), loras=attached_loras(model),
                                   resume=checkpoints)
        except SamplingCancelled:
            raise mm.InterruptProcessingException() from None
        except torch.OutOfMemoryError as e:  # ComfyUI unloads every model on this type; say what to change
            traceback.clear_frames(e.__traceback__)  # the failed frames' tensors go now, not with the exception
            raise torch.OutOfMemoryError(out_of_memory(h, w, windows.audio_rows, runner.info.offload,
                                                       runner.info.weight_format)) from e
        finally:
            del cond
            mm.soft_empty_cache()
        return io.NodeOutput({"samples": (result.latents / LATENT.scale_factor).float().cpu()})


def _check_modes(noise: str, reference_encode: str, device: torch.device) -> None:
    """What SamplerConfig's specs cannot see, before the VAE or the model runs: an unknown reference_encode (an API
    prompt can send any string) and the CUDA-only noise on another device."""
    if reference_encode not in REFERENCE_MODES:
        raise InputError(f"reference_encode={reference_encode!r}: choose one of {list(REFERENCE_MODES)}.")
    if noise == "official" and device.type != "cuda":
        raise InputError(f"noise='official' is the official pipeline's CUDA draw, but ComfyUI runs on {device.type}: "
                         "set the Avatar Sampler's noise to 'cpu' (the same noise on any device).")


def _solver_tooltip() -> str:
    """From the solver registry's records (a solver registered later is described too)."""
    lines = "; ".join(f"{s.name}: {s.note}" for s in SOLVERS.values())
    return ("How each step moves the latents along the model's velocity. euler is the OFFICIAL one and the default; "
            f"the others are not official. {lines}.")


_WIDGETS = {"image_size": VIDEO_SIZE, "steps": STEPS, "cfg": CFG, "shift": FLOW_SHIFT, "seed": SEED,
            "motion_exp": MOTION, "motion_pose": MOTION, "step_cache": STEP_CACHE_THRESHOLD}


def _check_widgets(**values: float) -> list:
    """ComfyUI's range check lets NaN through (every comparison with NaN is False): the specs check every widget."""
    return [_WIDGETS[name].check(name, value, f"Set the Avatar Sampler's {name} widget.") for name, value in values.items()]


def _callbacks(device) -> SamplerCallbacks:
    pbar = comfy.utils.ProgressBar(1)
    previewer = latent_preview.get_previewer(device, LATENT)
    state = {"done": 0, "total": 1}

    def on_progress(p) -> None:
        state.update(done=p.calls_done, total=p.calls_total)
        pbar.update_absolute(p.calls_done, p.calls_total)

    def on_preview(step: int, latents: torch.Tensor) -> None:
        if previewer is not None:
            preview = previewer.decode_latent_to_preview_image("JPEG", latents[:, :, latents.shape[2] // 2:][:, :, :1])
            pbar.update_absolute(state["done"], state["total"], preview)

    return SamplerCallbacks(on_progress=on_progress, on_preview=on_preview, should_cancel=mm.processing_interrupted)
