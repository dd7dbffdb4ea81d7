"""Avatar Text Encode (the official LLaVA text conditioning on ComfyUI's own loaded encoders), Save / Load."""

from __future__ import annotations

import logging

import comfy.model_management as mm
import folder_paths
import torch
from comfy_api.latest import io

from ..avatar_core.conditioning import saved_text
from ..avatar_core.conditioning.llava_image import llava_pixels
from ..avatar_core.conditioning.text import (
    NEGATIVE_PROMPT,
    PROMPT_PREFIX,
    check_official_conditioning,
    encode_official,
    tokenize_prompt,
    with_prefix,
)
from ..avatar_core.errors import InputError
from ..avatar_core.specs.concepts import VIDEO_SIZE
from ..avatar_core.specs.fields import Flag, Text
from ..avatar_core.specs.tensors import IMAGE
from . import paths
from .text_llava import ComfyLlava, check_models

OLD_INPUT_MESSAGE = (
    "Avatar Text Encode now makes the official LLaVA image itself: connect 'Load CLIP Vision' "
    "(llava_llama3_vision.safetensors) to clip_vision and the reference image to image. The CLIPVisionEncode "
    "node of older workflows is no longer used (delete it).")


def _conditioning(states: torch.Tensor, mask: torch.Tensor, pooled: torch.Tensor) -> list:
    return [[states[None].cpu() if states.ndim == 2 else states.cpu(),
             {"pooled_output": pooled.cpu(), "attention_mask": (mask[None] if mask.ndim == 1 else mask).cpu()}]]


@torch.no_grad()  # ComfyUI runs nodes without autograd too; a direct call must not build a graph
def encode(clip, clip_vision, image: torch.Tensor, prompts: dict[str, str], image_size: int) -> list[list]:
    """Official conditioning of each prompt ({input name: full text}), all tokenised before any model runs."""
    llava = ComfyLlava(clip, clip_vision)
    tokens = {name: tokenize_prompt(llava.tokenizer, text, name) for name, text in prompts.items()}
    pixels = llava_pixels(image[0], image_size).half()  # official: float16 pixel values given to LLaVA
    features = llava.image_features(pixels[None])[0]  # (576, D)
    out = []
    for name, text in prompts.items():
        mm.throw_exception_if_processing_interrupted()
        states, mask = encode_official(llava, tokens[name], features)  # (831, D), (831,)
        out.append(_conditioning(states, mask, llava.pooled(text)))
    return out


class AvatarTextEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AvatarTextEncode", display_name="Avatar Text Encode", category="HunyuanVideo-Avatar",
            description="The official text conditioning (LLaVA-Llama-3 with the reference image, 831 positions) "
                        "computed with ComfyUI's own text encoders (DualCLIPLoader, type hunyuan_video) and "
                        "LLaVA vision model (Load CLIP Vision: llava_llama3_vision).",
            inputs=[
                io.Clip.Input("clip", tooltip="DualCLIPLoader: clip_l + llava_llama3_fp16, type hunyuan_video."),
                io.ClipVision.Input("clip_vision", optional=True,
                                    tooltip="Load CLIP Vision: llava_llama3_vision.safetensors."),
                io.Image.Input("image", optional=True,
                               tooltip="The reference image (the sampler's image): LLaVA sees it at the video "
                                       "size, squashed to 336x336, as in the official code."),
                io.String.Input("prompt", multiline=True, default="A person is talking.",
                                tooltip="What happens in the video."),
                io.String.Input("negative_prompt", multiline=True, default=NEGATIVE_PROMPT,
                                tooltip="Default: the official negative prompt."),
                io.Boolean.Input("official_prefix", default=True,
                                 tooltip=f"Prepend '{PROMPT_PREFIX}' to the prompt as the official code does."),
                io.Int.Input("image_size", default=704, min=VIDEO_SIZE.ui_min, max=VIDEO_SIZE.ui_max, step=64,
                             optional=True,
                             tooltip="The sampler's image_size: the reference is resized to the video size "
                                     "before LLaVA sees it (official)."),
                io.ClipVisionOutput.Input("clip_vision_output", optional=True,
                                          tooltip="Older workflows only, not used: connect clip_vision and image."),
            ],
            outputs=[io.Conditioning.Output(display_name="positive"), io.Conditioning.Output(display_name="negative")],
        )

    @classmethod
    def execute(cls, clip, prompt: str, negative_prompt: str, official_prefix: bool, clip_vision=None,
                image=None, image_size: int = 704, clip_vision_output=None) -> io.NodeOutput:
        if clip_vision is None or image is None:
            missing = " and ".join(n for n, v in (("clip_vision", clip_vision), ("image", image)) if v is None)
            raise InputError(f"Avatar Text Encode: {missing} not connected. " + OLD_INPUT_MESSAGE)
        hint = "Set Avatar Text Encode's inputs."
        IMAGE.check("image", image)
        image_size = VIDEO_SIZE.check("image_size", image_size, hint)
        prompt, negative_prompt = Text().check("prompt", prompt, hint), Text().check("negative_prompt", negative_prompt, hint)
        official_prefix = Flag().check("official_prefix", official_prefix, hint)
        check_models(clip, clip_vision)
        prompts = {"prompt": with_prefix(prompt, official_prefix), "negative_prompt": negative_prompt}
        positive, negative = encode(clip, clip_vision, image, prompts, image_size)
        return io.NodeOutput(positive, negative)


def _prompt_tensors(cond, name: str) -> saved_text.Prompt:
    if not cond:
        raise InputError(f"{name}: empty CONDITIONING; connect Avatar Text Encode.")
    states, extra = cond[0]
    check_official_conditioning(states, extra.get("attention_mask"), name)
    if extra.get("pooled_output") is None:
        raise InputError(f"{name}: no pooled CLIP-L output; connect Avatar Text Encode.")
    return states, extra["attention_mask"], extra["pooled_output"]


class AvatarConditioningSave(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AvatarConditioningSave", display_name="Avatar Save Conditioning", category="HunyuanVideo-Avatar",
            description="Saves encoded positive/negative conditioning to models/avatar_conditioning as a NEW "
                        "numbered file (<filename>_00001.safetensors, ...; never overwrites), so later runs load "
                        "it instead of keeping the 8B text encoder.",
            inputs=[io.Conditioning.Input("positive", tooltip="Encoded prompt to keep (from Avatar Text Encode)."),
                    io.Conditioning.Input("negative", tooltip="Encoded negative prompt to keep."),
                    io.String.Input("filename", default="avatar_prompt",
                                    tooltip="File name prefix; a number is added (_00001, _00002, ...).")],
            outputs=[], is_output_node=True,
        )

    @classmethod
    def execute(cls, positive, negative, filename: str) -> io.NodeOutput:
        name = saved_text_name(filename)
        path = saved_text.write_new(paths.conditioning_folder(), name, _prompt_tensors(positive, "positive"),
                                    _prompt_tensors(negative, "negative"))
        logging.info("Avatar Save Conditioning: wrote %s", path)
        return io.NodeOutput(ui={"text": [f"saved models/{paths.CONDITIONING}/{path.name}"]})


def saved_text_name(filename: str) -> str:
    name = "".join(c for c in filename.strip().replace("\\", "/").split("/")[-1] if c not in '<>:"|?*')
    return name.removesuffix(".safetensors") or "avatar_prompt"


class AvatarConditioningLoad(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AvatarConditioningLoad", display_name="Avatar Load Conditioning", category="HunyuanVideo-Avatar",
            description="Loads conditioning written by 'Avatar Save Conditioning'.",
            inputs=[io.Combo.Input("conditioning_name", options=folder_paths.get_filename_list(paths.CONDITIONING),
                                   tooltip="A .safetensors file in models/avatar_conditioning.")],
            outputs=[io.Conditioning.Output(display_name="positive"), io.Conditioning.Output(display_name="negative")],
        )

    @classmethod
    def execute(cls, conditioning_name: str) -> io.NodeOutput:
        path = folder_paths.get_full_path(paths.CONDITIONING, conditioning_name)
        if path is None:
            raise paths.missing_file_error(paths.CONDITIONING, conditioning_name, "Saved conditioning")
        positive, negative = saved_text.read(path)
        return io.NodeOutput(_conditioning(*positive), _conditioning(*negative))
