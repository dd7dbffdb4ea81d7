"""Run by tests/test_comfy_text.py with ComfyUI's Python: Avatar Text Encode on ComfyUI's own classes.

argv: COMFYUI_PATH REPO FIXTURE_DIR TOKENIZER_DIR. The fixtures' tiny LLaVA weights go into ComfyUI's own
`Llama2` (inside a real `comfy.sd.CLIP` of a HunyuanVideo text-encoder model, shrunk to the tiny sizes) and its
own `CLIPVisionModelProjection` (llava3 projector); the node's `execute` then encodes every fixture prompt.
Prints one JSON line per prompt: max |diff| of the 831 states, mask equality, token equality.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

COMFY, REPO, FIXTURES, TOKDIR = sys.argv[1:5]
sys.path[:0] = [COMFY, str(Path(REPO) / "scripts")]
sys.argv = [sys.argv[0], "--cpu", "--fp32-text-enc"]
import comfy.options  # noqa: E402

comfy.options.enable_args_parsing()
import comfy.clip_model  # noqa: E402
import comfy.clip_vision  # noqa: E402
import comfy.sd  # noqa: E402
import comfy.text_encoders.llama as llama  # noqa: E402
import numpy as np  # noqa: E402
import smoke_assets  # noqa: E402
import torch  # noqa: E402
from comfy import sd1_clip  # noqa: E402
from comfy.text_encoders.bpe_tokenizer import LlamaTokenizerFast  # noqa: E402
from comfy.text_encoders.hunyuan_video import HunyuanVideoClipModel, LLAMAModel  # noqa: E402
from PIL import Image  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

CFG = json.loads((Path(FIXTURES) / "tiny_llava_config.json").read_text())
T, V = CFG["text_config"], CFG["vision_config"]
WEIGHTS = {k: v.clone() for k, v in load_file(str(Path(FIXTURES) / "tiny_llava_weights.safetensors")).items()}
TINY_CLIP_L = {"hidden_act": "quick_gelu", "hidden_size": 16, "intermediate_size": 32, "num_attention_heads": 2,
               "num_hidden_layers": 2, "max_position_embeddings": 77, "vocab_size": 49408, "layer_norm_eps": 1e-5,
               "projection_dim": 16, "eos_token_id": 49407}


class TinyHunyuanClip(HunyuanVideoClipModel):
    """ComfyUI's HunyuanVideo text-encoder model with the fixtures' tiny LLaMA sizes (its real classes)."""

    def __init__(self, device="cpu", dtype=None, model_options={}):  # noqa: B006 (ComfyUI's signature)
        torch.nn.Module.__init__(self)
        llama.Llama2Config.head_dim = T["head_dim"]  # a class constant in ComfyUI (128); this process only
        sizes = {k: T[k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                                   "num_key_value_heads", "rope_theta", "rms_norm_eps", "vocab_size")}
        self.clip_l = sd1_clip.SDClipModel(device=device, dtype=dtype, return_projected_pooled=False,
                                           textmodel_json_config=dict(TINY_CLIP_L), model_options=model_options)
        self.llama = LLAMAModel(device=device, dtype=dtype, model_options={**model_options, "llama_model_config": sizes})
        self.dtypes = {dtype}


class TinyTokenizer:
    """ComfyUI's tokenizers (SD1 CLIP-L, its own Llama-3 BPE class) on the rebuilt llava tokenizer.json."""

    def __init__(self, embedding_directory=None, tokenizer_data={}):  # noqa: B006
        self.clip_l = sd1_clip.SDTokenizer(embedding_directory=embedding_directory)
        self.llama = sd1_clip.SDTokenizer(TOKDIR, pad_with_end=False, embedding_size=T["hidden_size"],
                                          embedding_key="llama", tokenizer_class=LlamaTokenizerFast,
                                          has_start_token=True, has_end_token=False, pad_to_max_length=False,
                                          max_length=99999999, pad_token=128258, min_length=1)

    def state_dict(self):
        return {}


class Target:
    params: dict = {}
    clip, tokenizer = TinyHunyuanClip, TinyTokenizer


def make_clip():
    clip = comfy.sd.CLIP(Target(), model_options={"dtype": torch.float32})
    lm = {"model." + k[len("language_model.model."):]: v for k, v in WEIGHTS.items() if k.startswith("language_model.")}
    missing, unexpected = clip.cond_stage_model.llama.transformer.load_state_dict(lm, strict=False)
    assert not missing and not unexpected, (missing, unexpected)
    g = torch.Generator().manual_seed(0)
    for p in clip.cond_stage_model.clip_l.parameters():  # CLIP-L: random (only its pooled shape is checked)
        p.data.copy_(torch.randn(p.shape, generator=g) * 0.02)
    return clip


def make_clip_vision():
    config = {**{k: V[k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                                   "image_size", "patch_size", "num_channels", "hidden_act", "layer_norm_eps")},
              "model_type": "clip_vision_model", "projector_type": "llava3"}
    cv = comfy.clip_vision.ClipVisionModel(config)
    # ComfyUI's LlavaProjector hard-codes the 8B width 4096: rebuild it at the tiny width, same class.
    cv.model.multi_modal_projector = comfy.clip_model.LlavaProjector(
        V["hidden_size"], T["hidden_size"], torch.float32, "cpu", comfy.ops.manual_cast)
    sd = {("vision_model." + k[len("vision_tower.vision_model."):] if k.startswith("vision_tower.") else k): v
          for k, v in WEIGHTS.items() if not k.startswith("language_model.")}
    missing, _ = cv.load_sd(sd)
    assert not [m for m in missing if "visual_projection" not in m], missing
    return cv


def main() -> None:
    imp = smoke_assets._pack()
    text_node = imp("hyavatar_pack.nodes.text")
    core = imp("hyavatar_pack.avatar_core.conditioning.text")
    from safetensors.torch import load_file as load
    clip, cv = make_clip(), make_clip_vision()
    for case_json in sorted(Path(FIXTURES).glob("case_*.json")):
        meta = json.loads(case_json.read_text(encoding="utf-8"))
        f = load(str(case_json.with_suffix(".safetensors")))
        pil = Image.open(case_json.parent / meta["source_image"]["file"]).convert("RGB")
        image = torch.from_numpy(np.asarray(pil, dtype=np.float32) / 255)[None]  # as LoadImage makes it
        negative = next(p for p in meta["prompts"] if not meta["prompts"][p].get("meta_prompt_in_csv"))
        for name, p in meta["prompts"].items():
            prefixed = bool(p.get("meta_prompt_in_csv")) and core.with_prefix(p["meta_prompt_in_csv"], True) == p["prompt"]
            text = p["meta_prompt_in_csv"] if prefixed else p["prompt"]
            pos, neg = text_node.AvatarTextEncode.execute(
                clip=clip, clip_vision=cv, image=image, prompt=text, negative_prompt=meta["prompts"][negative]["prompt"],
                official_prefix=prefixed, image_size=704).args
            states, extra = pos[0]
            tokens = core.tokenize_prompt(clip.tokenizer.llama.tokenizer, p["prompt"], name)
            print(json.dumps({
                "case": case_json.stem, "prompt": name, "prefix_rule": prefixed,
                "tokens_equal": bool(torch.equal(tokens.input_ids, f[f"{name}.input_ids"])),
                "shape": list(states.shape), "pooled_shape": list(extra["pooled_output"].shape),
                "max_abs": float((states[0] - f[f"{name}.prompt_embeds"]).abs().max()),
                "allclose": bool(torch.allclose(states[0], f[f"{name}.prompt_embeds"], atol=1e-5, rtol=1e-5)),
                "mask_equal": bool(torch.equal(extra["attention_mask"][0], f[f"{name}.prompt_mask"])),
                "neg_allclose": bool(torch.allclose(neg[0][0][0], f[f"{negative}.prompt_embeds"], atol=1e-5, rtol=1e-5)),
            }), flush=True)

    errors = {}
    for label, kwargs in (("old_inputs", dict(clip_vision=None, image=None, clip_vision_output=object())),
                          ("too_long", dict(clip_vision=cv, image=image, prompt="word " * 400))):
        args = dict(clip=clip, prompt="A person is talking.", negative_prompt="bad", official_prefix=True) | kwargs
        try:
            text_node.AvatarTextEncode.execute(**args)
            errors[label] = None
        except ValueError as e:
            errors[label] = str(e)
    print(json.dumps({"errors": errors}), flush=True)


if __name__ == "__main__":
    main()
