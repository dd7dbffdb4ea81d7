"""A pure-torch LLaVA-Llama-3 forward (Llama decoder, CLIP vision tower, projector) on HF-layout weights.

Reads a transformers `LlavaForConditionalGeneration` config.json + safetensors (the official
llava-llama-3-8b layout, or the fixtures' tiny model) without transformers. It implements `text.LlavaRunner`;
the parity check runs the official pipeline through it. Inside ComfyUI the node drives ComfyUI's own loaded
models instead (nodes/text_llava.py).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

LM, VT = "language_model.model.", "vision_tower.vision_model."


@dataclass(frozen=True)
class LlavaConfig:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    rope_theta: float
    rms_eps: float
    v_layers: int
    v_heads: int
    v_eps: float
    patch: int
    vision_layer: int = -2   # CLIP hidden_states index fed to the projector
    text_layer: int = -3     # LLM hidden_states index the official encoder keeps

    @classmethod
    def from_hf(cls, cfg: dict) -> LlavaConfig:
        """From a transformers LlavaConfig dict. A key the file leaves out takes transformers' own default (what
        `LlavaForConditionalGeneration` would run), and RoPE is read in both spellings: `rope_theta` /
        `rope_scaling` (transformers 4) and `rope_parameters` (transformers 5)."""
        t, v = cfg["text_config"], cfg["vision_config"]
        if v.get("hidden_act", "quick_gelu") != "quick_gelu" or cfg.get("projector_hidden_act", "gelu") != "gelu":
            raise ValueError("LLaVA config: only quick_gelu CLIP and a gelu projector (the official model) are supported")
        rope = t.get("rope_parameters") or {}
        scaled = t.get("rope_scaling") or rope.get("rope_type", "default") != "default"
        if cfg.get("vision_feature_select_strategy", "default") != "default" or scaled:
            raise ValueError("LLaVA config: CLS-dropping features and unscaled RoPE (the official model) only")
        heads = t["num_attention_heads"]
        theta = t.get("rope_theta") or rope.get("rope_theta") or 10000.0
        return cls(hidden=t["hidden_size"], layers=t["num_hidden_layers"], heads=heads,
                   kv_heads=t.get("num_key_value_heads") or heads, head_dim=t.get("head_dim") or t["hidden_size"] // heads,
                   rope_theta=float(theta), rms_eps=float(t.get("rms_norm_eps", 1e-6)),
                   v_layers=v["num_hidden_layers"], v_heads=v["num_attention_heads"],
                   v_eps=float(v.get("layer_norm_eps", 1e-5)), patch=v["patch_size"],
                   vision_layer=cfg.get("vision_feature_layer", -2))


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    x32 = x.float()  # statistics in float32 whatever the weights' dtype, as transformers' LlamaRMSNorm
    return weight * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def rope(x: torch.Tensor, position_ids: torch.Tensor, theta: float) -> torch.Tensor:
    """Llama RoPE (rotate-half form) of x [B, H, S, d] at integer positions [B, S]."""
    d = x.shape[-1]
    inv_freq = 1.0 / (theta ** (torch.arange(0, d, 2, dtype=torch.int64).float() / d))
    freqs = position_ids[:, :, None].float() * inv_freq.to(x.device)  # (B, S, d/2)
    emb = torch.cat([freqs, freqs], dim=-1)[:, None]  # (B, 1, S, d)
    x1, x2 = x[..., : d // 2], x[..., d // 2:]
    return x * emb.cos().to(x.dtype) + torch.cat([-x2, x1], dim=-1) * emb.sin().to(x.dtype)


class TorchLlava:
    """LLaVA forward on a state dict (HF names); float32 unless the weights say otherwise."""

    def __init__(self, config: LlavaConfig, weights: dict[str, torch.Tensor]):
        self.cfg, self.w = config, weights

    @classmethod
    def load(cls, config_json: str | Path, weights: str | Path) -> TorchLlava:
        cfg = LlavaConfig.from_hf(json.loads(Path(config_json).read_text()))
        return cls(cfg, {k: v.clone() for k, v in load_file(str(weights)).items()})  # clone: aligned tensors

    def _lin(self, x: torch.Tensor, name: str) -> torch.Tensor:
        return F.linear(x, self.w[name + ".weight"], self.w.get(name + ".bias"))

    # ---- language model ----
    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.w[LM + "embed_tokens.weight"])  # (1, L, D)

    def _attention(self, x: torch.Tensor, p: str, bias: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        c, (b, s, _) = self.cfg, x.shape
        q = self._lin(x, p + "q_proj").view(b, s, c.heads, c.head_dim).transpose(1, 2)  # (B, H, S, d)
        k = self._lin(x, p + "k_proj").view(b, s, c.kv_heads, c.head_dim).transpose(1, 2)  # (B, Hkv, S, d)
        v = self._lin(x, p + "v_proj").view(b, s, c.kv_heads, c.head_dim).transpose(1, 2)
        q, k = rope(q, pos, c.rope_theta), rope(k, pos, c.rope_theta)
        group = c.heads // c.kv_heads  # GQA: query head h reads kv head h // group
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # (B, H, S, d)
        return self._lin(out.transpose(1, 2).reshape(b, s, -1), p + "o_proj")

    def hidden_states(self, embeds: torch.Tensor, mask: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        """Causal LLM over `embeds` [1, S, D] with keys masked where `mask` is 0; output of HF hidden_states
        [text_layer] (decoder layer L-2 for -3), no final norm."""
        c, s = self.cfg, embeds.shape[1]
        keep = torch.ones(s, s, dtype=torch.bool, device=embeds.device).tril() & mask[:, None, None, :].bool()
        bias = torch.zeros(keep.shape, dtype=embeds.dtype, device=embeds.device).masked_fill(~keep, -math.inf)
        x = embeds
        for i in range(c.layers + 1 + c.text_layer):  # hidden_states[k] = output of layer L+1+k (1-based)
            p = f"{LM}layers.{i}."
            x = x + self._attention(rms_norm(x, self.w[p + "input_layernorm.weight"], c.rms_eps),
                                    p + "self_attn.", bias, position_ids)
            h = rms_norm(x, self.w[p + "post_attention_layernorm.weight"], c.rms_eps)
            x = x + self._lin(F.silu(self._lin(h, p + "mlp.gate_proj")) * self._lin(h, p + "mlp.up_proj"),
                              p + "mlp.down_proj")
        return x  # (1, S, D)

    # ---- vision ----
    def vision_hidden(self, pixels: torch.Tensor) -> torch.Tensor:
        """CLIP hidden_states[vision_layer] [B, 577, Dv] (CLS first) of pixel values [B, 3, 336, 336]."""
        c, w = self.cfg, self.w
        x = F.conv2d(pixels.to(w[VT + "embeddings.patch_embedding.weight"]), w[VT + "embeddings.patch_embedding.weight"],
                     stride=c.patch).flatten(2).transpose(1, 2)  # (B, 576, Dv)
        cls = w[VT + "embeddings.class_embedding"].expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + w[VT + "embeddings.position_embedding.weight"]  # (B, 577, Dv)
        x = F.layer_norm(x, x.shape[-1:], w[VT + "pre_layrnorm.weight"], w[VT + "pre_layrnorm.bias"], c.v_eps)
        for i in range(c.v_layers + 1 + c.vision_layer):  # hidden_states[0] is the embedding output
            x = self._clip_layer(x, f"{VT}encoder.layers.{i}.")
        return x

    def _clip_layer(self, x: torch.Tensor, p: str) -> torch.Tensor:
        c, (b, s, d) = self.cfg, x.shape
        h = F.layer_norm(x, (d,), self.w[p + "layer_norm1.weight"], self.w[p + "layer_norm1.bias"], c.v_eps)
        q, k, v = (self._lin(h, p + f"self_attn.{n}_proj").view(b, s, c.v_heads, -1).transpose(1, 2) for n in "qkv")
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, s, d)  # (B, 577, Dv)
        x = x + self._lin(a, p + "self_attn.out_proj")
        h = F.layer_norm(x, (d,), self.w[p + "layer_norm2.weight"], self.w[p + "layer_norm2.bias"], c.v_eps)
        h = self._lin(h, p + "mlp.fc1")
        return x + self._lin(h * torch.sigmoid(1.702 * h), p + "mlp.fc2")  # quick_gelu

    def project(self, vision_hidden: torch.Tensor) -> torch.Tensor:
        """Projector on the patch rows (CLS dropped): [B, 577, Dv] -> [B, 576, D]."""
        h = F.gelu(self._lin(vision_hidden[:, 1:], "multi_modal_projector.linear_1"))
        return self._lin(h, "multi_modal_projector.linear_2")

    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.project(self.vision_hidden(pixels))
