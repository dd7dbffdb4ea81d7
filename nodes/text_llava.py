"""ComfyUI's own loaded LLaVA models as the core's `LlavaRunner`: no second 8B model, no transformers.

The LLaMA is the one of a `hunyuan_video` CLIP (DualCLIPLoader: clip_l + llava_llama3), the vision tower and
projector the ones of a llava_llama3_vision CLIP_VISION. ComfyUI's own HunyuanVideo wrapper cannot produce the
official sequence (its template puts the suffix and image before the user <|eot_id|>, its crop stops there,
it parses prompt weights and gives no position ids), so the core builds the inputs and this drives the models.
"""

from __future__ import annotations

import comfy.model_management as mm
import torch
from comfy.text_encoders.hunyuan_video import HunyuanVideoClipModel

from ..avatar_core.errors import InputError


def check_models(clip, clip_vision) -> None:
    if clip is None or not isinstance(getattr(clip, "cond_stage_model", None), HunyuanVideoClipModel):
        raise InputError("clip: Avatar Text Encode needs the HunyuanVideo text encoders: DualCLIPLoader with "
                         "clip_l.safetensors + llava_llama3_fp16.safetensors, type hunyuan_video.")
    model = getattr(clip_vision, "model", None)
    if model is None or getattr(model, "multi_modal_projector", None) is None:
        raise InputError("clip_vision: load llava_llama3_vision.safetensors with Load CLIP Vision (a CLIP vision "
                         "model with the LLaVA projector); other CLIP vision files have no LLaVA projection.")


class ComfyLlava:
    """LLaMA (layer -3, no final norm) + CLIP vision + projector of ComfyUI's loaded models, float32 results."""

    def __init__(self, clip, clip_vision):
        check_models(clip, clip_vision)
        self.clip, self.clip_vision = clip, clip_vision
        self.llama = clip.cond_stage_model.llama.transformer  # comfy.text_encoders.llama.Llama2

    @property
    def tokenizer(self):
        """ComfyUI's Llama-3 BPE (comfy/text_encoders/llama_tokenizer), called like transformers' tokenizer."""
        return self.clip.tokenizer.llama.tokenizer

    def _device(self) -> torch.device:
        self.clip.cond_stage_model.reset_clip_options()
        self.clip.load_model()  # ComfyUI's memory management: loads / offloads as for its own encoders
        return self.clip.patcher.load_device

    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        mm.load_model_gpu(self.clip_vision.patcher)
        device = self.clip_vision.load_device
        out = self.clip_vision.model(pixel_values=pixels.to(device, torch.float32), intermediate_output=-2)
        return out[3].float()  # projector on CLIP hidden_states[-2] with CLS dropped: (1, 576, D)

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        return self.llama.get_input_embeddings()(ids.to(self._device()), out_dtype=torch.float32)

    def hidden_states(self, embeds: torch.Tensor, mask: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        device = self._device()
        with mm.cuda_device_context(device):
            _, states = self.llama(None, mask.to(device), embeds=embeds.to(device), intermediate_output=-3,
                                   final_layer_norm_intermediate=False, dtype=torch.float32,
                                   position_ids=position_ids.to(device))[:2]
        return states.float()

    def pooled(self, text: str) -> torch.Tensor:
        """CLIP-L pooled output of `text`, as ComfyUI's HunyuanVideo encoder computes it."""
        device = self._device()
        self.clip.cond_stage_model.set_clip_options({"execution_device": device})
        tokens = self.clip.tokenizer.clip_l.tokenize_with_weights(text)
        with mm.cuda_device_context(device):
            pooled = self.clip.cond_stage_model.clip_l.encode_token_weights(tokens)[1]
        self.clip.cond_stage_model.reset_clip_options()
        return pooled.float()
