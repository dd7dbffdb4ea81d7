"""Text conditioning through ComfyUI's own HunyuanVideo text encoders (LLaVA-Llama-3 + CLIP-L), and save/load."""

from __future__ import annotations

import os

import folder_paths
import torch
from comfy_api.latest import io
from safetensors.torch import load_file, save_file

from . import paths
from .convert import NEGATIVE_PROMPT, PERSON_SUFFIX, PROMPT_PREFIX


def encode(clip, clip_vision_output, prompt: str, add_prefix: bool):
    """One prompt -> CONDITIONING. LLaVA reads prefix + prompt + '\\nThe person looks like<image>' with the
    image tokens in place of <image> (official layout); CLIP-L reads the prompt alone."""
    text = (PROMPT_PREFIX if add_prefix else "") + prompt
    tokens = clip.tokenize(text + PERSON_SUFFIX, image_embeds=clip_vision_output.mm_projected, image_interleave=1)
    tokens["l"] = clip.tokenize(text)["l"]
    return clip.encode_from_tokens_scheduled(tokens)


class AvatarTextEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AvatarTextEncode", display_name="Avatar Text Encode", category="HunyuanVideo-Avatar",
            description="Official prompt handling with ComfyUI's HunyuanVideo text encoders (DualCLIPLoader, type "
                        "hunyuan_video) and the reference image's LLaVA tokens (CLIPVisionEncode of llava_llama3_vision).",
            inputs=[
                io.Clip.Input("clip", tooltip="DualCLIPLoader: clip_l + llava_llama3, type hunyuan_video."),
                io.ClipVisionOutput.Input("clip_vision_output",
                                          tooltip="CLIPVisionEncode (crop: none) of the reference image."),
                io.String.Input("prompt", multiline=True, default="A person is talking.",
                                tooltip="What happens in the video."),
                io.String.Input("negative_prompt", multiline=True, default=NEGATIVE_PROMPT,
                                tooltip="Default: the official negative prompt."),
                io.Boolean.Input("official_prefix", default=True,
                                 tooltip="Prepend 'Authentic, Realistic, Natural, High-quality, Lens-Fixed, ' as the "
                                         "official code does."),
            ],
            outputs=[io.Conditioning.Output(display_name="positive"), io.Conditioning.Output(display_name="negative")],
        )

    @classmethod
    def execute(cls, clip, clip_vision_output, prompt: str, negative_prompt: str, official_prefix: bool) -> io.NodeOutput:
        if clip_vision_output is None or getattr(clip_vision_output, "mm_projected", None) is None:
            raise ValueError("clip_vision_output has no LLaVA projection: load llava_llama3_vision.safetensors with "
                             "Load CLIP Vision and encode the reference image with CLIPVisionEncode (crop: none).")
        return io.NodeOutput(encode(clip, clip_vision_output, prompt, official_prefix),
                             encode(clip, clip_vision_output, negative_prompt, False))


def _pack(cond) -> dict[str, torch.Tensor]:
    states, extra = cond[0]
    tensors = {"states": states.contiguous().cpu(), "pooled": extra["pooled_output"].contiguous().cpu()}
    if extra.get("attention_mask") is not None:
        tensors["mask"] = extra["attention_mask"].contiguous().cpu()
    return tensors


def _unpack(t: dict[str, torch.Tensor], prefix: str):
    extra = {"pooled_output": t[prefix + "pooled"]}
    if prefix + "mask" in t:
        extra["attention_mask"] = t[prefix + "mask"]
    return [[t[prefix + "states"], extra]]


class AvatarConditioningSave(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AvatarConditioningSave", display_name="Avatar Save Conditioning", category="HunyuanVideo-Avatar",
            description="Saves encoded positive/negative conditioning to models/avatar_conditioning, so later runs "
                        "load it instead of keeping the 8B text encoder.",
            inputs=[io.Conditioning.Input("positive", tooltip="Encoded prompt to keep (from Avatar Text Encode)."),
                    io.Conditioning.Input("negative", tooltip="Encoded negative prompt to keep."),
                    io.String.Input("filename", default="avatar_prompt", tooltip="File name without extension.")],
            outputs=[], is_output_node=True,
        )

    @classmethod
    def execute(cls, positive, negative, filename: str) -> io.NodeOutput:
        name = os.path.basename(filename.strip()) or "avatar_prompt"
        folder = paths.conditioning_folder()
        os.makedirs(folder, exist_ok=True)
        pos = _pack(positive)
        neg = _pack(negative)
        tensors = {**{"pos." + k: v for k, v in pos.items()}, **{"neg." + k: v for k, v in neg.items()}}
        save_file(tensors, os.path.join(folder, name + ".safetensors"), metadata={"format": "hyavatar-conditioning"})
        return io.NodeOutput()


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
        t = load_file(path)
        if not {"pos.states", "pos.pooled", "neg.states", "neg.pooled"} <= set(t):
            raise ValueError(f"{path} is not an Avatar conditioning file (made by 'Avatar Save Conditioning').")
        return io.NodeOutput(_unpack(t, "pos."), _unpack(t, "neg."))
