"""Avatar LoRA: chainable LoRA loader for the Avatar model (HunyuanVideo LoRAs: ComfyUI, diffusers, musubi-tuner).

Like ComfyUI's LoraLoader the node only declares: it clones the model patcher and attaches (LoRA, strength).
The sampler makes the shared model's weights match its own patcher's list right before sampling
(`apply_attached_loras`): other branches of the graph, with other LoRAs or none, get their own weights back
(restored bit for bit from the backup). A multi-GPU model gets the file list, and every worker does the same.
"""

from __future__ import annotations

import logging

import comfy.model_management as mm
import folder_paths
import torch
from comfy_api.latest import io

from ..avatar_core.config import AvatarConfig
from ..avatar_core.lora import load_lora, set_loras
from ..avatar_core.model import AvatarTransformer
from ..avatar_core.specs.concepts import LORA_STRENGTH
from . import paths
from .types import AvatarModel

ATTACHMENT = "hyavatar_loras"  # ((LoraFile, strength), ...) on a ModelPatcher clone


def _lora_files() -> list[str]:
    return [f for f in folder_paths.get_filename_list("loras") if f.endswith(".safetensors")]


class AvatarLoraLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AvatarLoraLoader", display_name="Avatar LoRA", category="HunyuanVideo-Avatar",
            description="Applies a HunyuanVideo LoRA (.safetensors in models/loras; ComfyUI, diffusers or "
                        "musubi-tuner keys, or one trained with python -m avatar_core.train) to the Avatar model. "
                        "Chain several. Works with bf16, fp8, offloaded and multi-GPU models.",
            inputs=[
                AvatarModel.Input("model", tooltip="From 'Load HunyuanVideo-Avatar Model' (or another Avatar LoRA: "
                                                   "chain them)."),
                io.Combo.Input("lora_name", options=_lora_files(),
                               tooltip="LoRA file in models/loras (.safetensors only)."),
                io.Float.Input("strength", default=1.0, min=LORA_STRENGTH.ui_min, max=LORA_STRENGTH.ui_max, step=0.01,
                               tooltip="Multiplier of the LoRA's change to the weights; 0 = off."),
            ],
            outputs=[AvatarModel.Output(display_name="model")],
        )

    @classmethod
    def execute(cls, model, lora_name: str, strength: float) -> io.NodeOutput:
        strength = LORA_STRENGTH.check("strength", strength, "Set Avatar LoRA's strength.")  # NaN passes ComfyUI
        path = folder_paths.get_full_path("loras", lora_name)
        if path is None:
            raise paths.missing_file_error("loras", lora_name, "LoRA")
        # Keys and shapes checked now, before any sampling (a pool's weights are in its workers: the layout of
        # the released model on the meta device stands in for them; the workers check again).
        lora = load_lora(path, _layout_model() if _pooled(model.model) else model.model.diffusion_model)
        logging.info("Avatar LoRA: %s (strength %.2f)", lora.summary(), strength)
        clone = model.clone()
        clone.set_attachments(ATTACHMENT, tuple(model.get_attachment(ATTACHMENT) or ()) + ((lora, float(strength)),))
        return io.NodeOutput(clone)


def apply_attached_loras(patcher) -> tuple[tuple[str, float], ...]:
    """Give the patcher's model exactly the LoRAs attached to this patcher (none: the base weights).
    A pool's workers apply them at the run: returns the (file, strength) pairs for `runner.sample(loras=)`."""
    attached = patcher.get_attachment(ATTACHMENT) or ()
    if _pooled(patcher.model):
        return tuple((lora.path, strength) for lora, strength in attached)
    set_loras(patcher.model.diffusion_model, attached, compute_device=mm.get_torch_device())
    return ()


def _layout_model() -> torch.nn.Module:
    with torch.device("meta"):
        return AvatarTransformer(AvatarConfig.avatar_13b())


def _pooled(runner) -> bool:
    return runner.info.gpus > 1  # the weights live in worker processes
