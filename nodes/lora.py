"""Avatar LoRA: chainable LoRA loader for the Avatar model (HunyuanVideo LoRAs: ComfyUI, diffusers, musubi-tuner).

Like ComfyUI's LoraLoader the node only declares: it clones the model patcher and attaches (LoRA, strength).
The sampler passes its own patcher's list to `runner.sample(loras=...)` (`attached_loras`), which makes the
shared model's weights match it right before sampling: other branches of the graph, with other LoRAs or none,
get their own weights back (restored bit for bit from the backup). One GPU or a pool of them: the same call
(a pool's workers receive the files).
"""

from __future__ import annotations

import logging

import folder_paths
from comfy_api.latest import io

from ..avatar_core.lora import LoraFile
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
        # Keys and shapes checked now, before any sampling, against the runner's model (a pool checks against
        # its workers' layout; the workers check again).
        lora = model.model.load_lora(path)
        logging.info("Avatar LoRA: %s (strength %.2f)", lora.summary(), strength)
        clone = model.clone()
        clone.set_attachments(ATTACHMENT, tuple(model.get_attachment(ATTACHMENT) or ()) + ((lora, float(strength)),))
        return io.NodeOutput(clone)


def attached_loras(patcher) -> tuple[tuple[LoraFile, float], ...]:
    """The LoRAs attached to this patcher (none: the base weights): what the sampler passes to runner.sample()."""
    return tuple(patcher.get_attachment(ATTACHMENT) or ())
