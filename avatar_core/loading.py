"""Checkpoint loading for the Avatar transformer: official .pt, official fp8 .pt + _map.pt, safetensors.

The model is built on the meta device and the checkpoint tensors are assigned into it (never
materialised twice). Every file is validated against the expected keys and shapes before any memory is
allocated for the model, and errors name the file and what is missing.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .checkpoint_checks import fp8_scales_missing, strip_comfy_prefix
from .config import AvatarConfig
from .model import AvatarTransformer
from .model.fp8 import FP8, FP8FastLinears, FP8Linears
from .model.linear import Linears, Operations, stored_linear_names
from .weight_files import (
    EMOTION,
    FP8_MAP,
    TRANSFORMER,
    FileKind,
    WeightFileError,
    check_layout,
    layout_problems,
    read_tensors,
    refuse,
    sniff,
)

AVATAR_ONLY_PREFIXES = ("audio_proj.", "audio_adapter_blocks.", "ref_in.", "before_proj.", "motion_exp.", "fps_proj.")
SAFETENSORS_FORMAT = "hyavatar"


# The transformer's errors are weight-file errors (InputError, ValueError): old `except CheckpointError` still works.
CheckpointError = WeightFileError


def read_state_dict(path: str | Path, kind: FileKind = TRANSFORMER) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors (+ safetensors metadata) of a checkpoint, checked by weight_files (format by content, safe load,
    dtypes, finiteness)."""
    return read_tensors(path, kind)


def read_fp8_scales(path: Path) -> dict[str, torch.Tensor]:
    """The official fp8 checkpoint keeps per-layer scales in `<name>_map.pt` beside it."""
    map_path = path.with_name(path.stem + "_map.pt")
    if not map_path.is_file():
        raise CheckpointError(f"{path.name} holds fp8 weights but its scale map {map_path.name} is missing; "
                              f"put {map_path.name} in the same folder ({path.parent})")
    scales, _ = read_state_dict(map_path, FP8_MAP)
    return scales


def infer_config(sd: dict[str, torch.Tensor], metadata: dict[str, str], path: Path) -> AvatarConfig:
    """Config from safetensors metadata, else from the tensor shapes (official head layout)."""
    if "config" in metadata:
        try:
            return AvatarConfig.from_dict(json.loads(metadata["config"]))
        except (ValueError, TypeError, KeyError) as e:
            raise refuse(TRANSFORMER, path, f"its metadata 'config' is not a valid Avatar config ({e})") from e
    _check_is_avatar(sd, path)
    hidden = sd["img_in.proj.weight"].shape[0]
    head_dim = sd["double_blocks.0.img_attn_q_norm.weight"].shape[0]
    if head_dim != 128:
        raise CheckpointError(f"{path.name}: head_dim {head_dim} needs an explicit config (rope split unknown): convert "
                              "it with save_transformer, which stores the config in the file's metadata")
    count = lambda p: len({k.split(".")[1] for k in sd if k.startswith(p)})  # noqa: E731
    return AvatarConfig(
        hidden_size=hidden, num_heads=hidden // head_dim,
        depth_double=count("double_blocks."), depth_single=count("single_blocks."),
        text_dim=sd["txt_in.input_embedder.weight"].shape[1], text_pooled_dim=sd["vector_in.in_layer.weight"].shape[1],
        audio_proj_dim=sd["audio_proj.proj1.weight"].shape[0], adapter_dim=sd["audio_adapter_blocks.0.to_q.weight"].shape[0],
        adapter_after_double=tuple(range(1, 2 * count("audio_adapter_blocks."), 2)),
    )


def _check_is_avatar(sd: dict[str, torch.Tensor], path: Path) -> None:
    missing = [p for p in AVATAR_ONLY_PREFIXES if not any(k.startswith(p) for k in sd)]
    if "img_in.proj.weight" not in sd:
        raise CheckpointError(f"{path.name}: not a HunyuanVideo transformer (no img_in.proj.weight); "
                              "choose the Avatar DiT file mp_rank_00_model_states.pt")
    if missing:
        raise CheckpointError(f"{path.name}: a HunyuanVideo transformer but not HunyuanVideo-Avatar (missing "
                              f"{', '.join(p.rstrip('.') for p in missing)}); plain T2V/I2V checkpoints cannot drive "
                              "audio. Use hunyuan-video-t2v-720p/transformers/mp_rank_00_model_states.pt from "
                              "tencent/HunyuanVideo-Avatar")


def _validate(expected: dict[str, torch.Tensor], sd: dict[str, torch.Tensor], path: Path) -> None:
    """Keys and shapes of `sd` against the model's (meta) state dict; fp8 scale keys are not compared."""
    want = {k: tuple(v.shape) for k, v in expected.items() if not k.endswith(".scale_weight")}
    got = {k: v for k, v in sd.items() if not k.endswith(".scale_weight")}
    parts = layout_problems(got, want)
    if not parts:
        return
    _check_is_avatar(sd, path)
    raise CheckpointError(f"{path.name}: does not match the Avatar transformer: " + "; ".join(parts) + ". Choose the "
                          "13B Avatar DiT (mp_rank_00_model_states.pt, its fp8 version, or a .safetensors converted "
                          "from it); a file with other sizes needs its config (write it with save_transformer).")


def _keeps_fp32(key: str, model: AvatarTransformer) -> bool:
    return any(key.startswith(p + ".") for p in model.FP32_MODULES)


def load_transformer(path: str | Path, *, config: AvatarConfig | None = None, dtype: torch.dtype = torch.bfloat16,
                     device: str | torch.device = "cpu", fp8: str = "auto", fast: bool = False,
                     operations: Operations | None = None) -> AvatarTransformer:
    """Load an Avatar transformer checkpoint (weights and structure only; run choices: model/options.py).

    operations: the linear family of the block linears (a weight format's, model/formats.py); its storage
    holds them, converted from whatever the file holds. Without it, fp8 picks: "auto" keeps fp8 weights of
    an fp8 file as fp8 (weight-only, dequantised in forward), "dequant" turns them into `dtype`, "quantize"
    stores the block linears of a bf16 file in fp8 (saves ~12 GB); fast: fp8 matmuls (model/fp8.py).
    """
    if fp8 not in ("auto", "dequant", "quantize"):
        raise ValueError(f"fp8={fp8!r}: use 'auto' (keep an fp8 file's weights), 'dequant' or 'quantize'")
    path = Path(path)
    sd, meta = read_state_dict(path)
    sd = strip_comfy_prefix(sd)  # ComfyUI-repackaged files
    cfg = config or infer_config(sd, meta, path)
    scales = _collect_scales(sd, path)
    if operations is None:
        has_fp8 = any(v.dtype == FP8 for v in sd.values())
        keep_fp8 = bool((fp8 == "auto" and has_fp8) or fp8 == "quantize")
        operations = (FP8FastLinears if fast else FP8Linears) if keep_fp8 else Linears
    with torch.device("meta"):
        model = AvatarTransformer(cfg, operations=operations)
    _validate(model.state_dict(), sd, path)
    plain = {k: v for k, v in sd.items() if not k.endswith(".scale_weight")}
    final = _convert(model, plain, scales, operations, dtype, device)
    model.load_state_dict(final, strict=True, assign=True)
    return model.eval().requires_grad_(False)


def _collect_scales(sd, path: Path) -> dict[str, torch.Tensor]:
    """Scales keyed by linear module name: from `.scale_weight` tensors (ours) or, for fp8 weights without
    them, the official _map.pt beside the file."""
    own = {k[: -len(".scale_weight")]: v for k, v in sd.items() if k.endswith(".scale_weight")}
    if own or not any(v.dtype == FP8 for v in sd.values()):
        return own
    if sniff(path) == "safetensors":  # the _map.pt only ever accompanies the official fp8 .pt (by content: .sft too)
        raise CheckpointError(fp8_scales_missing(path))
    return {k: (v if isinstance(v, torch.Tensor) else torch.tensor(v)) for k, v in read_fp8_scales(path).items()}


def _convert(model, sd, scales, operations: Operations, dtype, device) -> dict[str, torch.Tensor]:
    """The file's tensors in the model's layout: the block linears in the family's storage (kept when the file
    already holds that storage, else dequantised and quantised), the rest in `dtype` (fp32 where official)."""
    storage = operations.storage
    stored = {n + ".weight" for n in stored_linear_names(model)}
    out: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        mod = k.rsplit(".", 1)[0]
        scale = scales.get(mod) if k.endswith(".weight") else None   # a quantised weight in the file
        if v.dtype == FP8 and scale is None:
            raise CheckpointError(f"fp8 weight {k} has no scale in the scale map: the _map.pt does not belong to "
                                  "this checkpoint; put the matching official _map.pt beside it")
        if k in stored and v.dtype == storage.dtype and (scale is not None) == (storage.scale != "none"):
            out[k] = v.to(device)                                     # the file holds this storage: kept as is
            if scale is not None:
                out[mod + ".scale_weight"] = scale.float().reshape(storage.scale_shape(v.shape[0])).to(device)
        elif k in stored:
            w = v.to(device) if scale is None else v.to(device).float() * scale.float().to(device)
            out[k], new_scale = storage.quantise(w)
            if new_scale is not None:
                out[mod + ".scale_weight"] = new_scale
        elif scale is not None:  # dequantise as the official forward does
            out[k] = v.to(device=device, dtype=dtype) * scale.to(device=device, dtype=dtype)
        else:
            out[k] = v.to(device=device, dtype=torch.float32 if _keeps_fp32(k, model) else dtype)
    return out


# ---------------------------------------------------------------- writing / random weights
def save_transformer(model: AvatarTransformer, path: str | Path) -> None:
    """Write our safetensors format: official key names (+ `.scale_weight` for fp8 layers), config in metadata."""
    from safetensors.torch import save_file
    sd = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(sd, str(path), metadata={"format": SAFETENSORS_FORMAT, "config": json.dumps(model.cfg.to_dict())})


def init_random_(model: torch.nn.Module, seed: int, generator_device: str = "cpu") -> torch.nn.Module:
    """Random weights with the parity fixtures' rule (no zero / identity init anywhere).

    Matrices: N(0, (g / sqrt(fan_in))^2), g = 0.5 for modulation layers; norm weights 1 + N(0, 0.01);
    every other vector N(0, 0.01). For tests, the smoke mode and benchmarks (never real weights).
    """
    gen = torch.Generator(generator_device).manual_seed(seed)
    with torch.no_grad():
        for name, p in model.state_dict(keep_vars=True).items():
            if p.dtype == FP8 or name.endswith(".scale_weight"):
                continue
            r = torch.randn(p.shape, generator=gen, device=generator_device, dtype=torch.float32)
            if p.dim() >= 2:
                g = 0.5 if any(m in name for m in ("_mod.", "modulation")) else 1.0
                r = r * (g / p[0].numel() ** 0.5)
            elif "norm" in name and name.endswith("weight"):
                r = 1 + 0.1 * r
            else:
                r = 0.1 * r
            p.copy_(r.to(p.dtype))
    return model


def build_random_transformer(cfg: AvatarConfig, *, dtype: torch.dtype = torch.float32, device: str = "cpu",
                             seed: int = 0) -> AvatarTransformer:
    """A randomly initialised transformer in the official dtype layout (fp32 modules kept fp32).

    Built on meta and allocated once in its final dtype (a 13B model never exists in fp32 on the GPU).
    """
    with torch.device("meta"):
        model = AvatarTransformer(cfg)
    for name, p in model.named_parameters():
        if not _keeps_fp32(name, model):
            p.data = p.data.to(dtype)
    model = model.to_empty(device=device)
    gen_device = "cuda" if str(device).startswith("cuda") else "cpu"
    return init_random_(model, seed, gen_device).eval().requires_grad_(False)


# ---------------------------------------------------------------- Audio Emotion Module weights
def save_emotion_module(aem, path: str | Path) -> None:
    """AEM weights in their own safetensors file, config in the metadata."""
    from safetensors.torch import save_file
    sd = {k: v.detach().contiguous().cpu() for k, v in aem.state_dict().items()}
    save_file(sd, str(path), metadata={"format": "hyavatar-aem", "config": json.dumps(aem.cfg.to_dict())})


def _emotion_config(meta: dict[str, str], path: Path, model: AvatarTransformer):
    """The AEM config stored in the file's metadata, checked against the loaded transformer."""
    from .model.emotion import EmotionConfig
    try:
        raw = json.loads(meta["config"])
        cfg = EmotionConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})
        ok = all(isinstance(getattr(cfg, k), int) and getattr(cfg, k) > 0
                 for k in ("hidden_size", "num_heads", "latent_channels", "patch"))
    except (KeyError, ValueError, TypeError, AttributeError) as e:
        raise refuse(EMOTION, path, f"its metadata 'config' is missing or not an emotion-module config ({e})") from e
    if not ok or cfg.hidden_size % cfg.num_heads:
        raise refuse(EMOTION, path, f"its metadata 'config' is not usable ({cfg})")
    if cfg.hidden_size != model.cfg.hidden_size:
        raise refuse(EMOTION, path, f"AEM width {cfg.hidden_size} does not match the loaded transformer's "
                                    f"{model.cfg.hidden_size} (an AEM trained for another model)")
    if any(not 0 <= i < model.cfg.depth_double for i in cfg.after_double):
        raise refuse(EMOTION, path, f"AEM layers after double blocks {list(cfg.after_double)}, but the model has "
                                    f"{model.cfg.depth_double} double blocks (an AEM trained for another model)")
    return cfg


def load_emotion_module(model: AvatarTransformer, path: str | Path) -> AvatarTransformer:
    """Attach AEM weights to a loaded transformer (emotion control needs them; the release has none).
    The file is checked as every weight file is (weight_files.EMOTION): errors name it, never the transformer."""
    from .model.emotion import AudioEmotionModule
    path = Path(path)
    sd, meta = read_state_dict(path, EMOTION)
    cfg = _emotion_config(meta, path, model)
    with torch.device("meta"):
        aem = AudioEmotionModule(cfg)
    check_layout(sd, {k: tuple(v.shape) for k, v in aem.state_dict().items()}, path, EMOTION,
                 model="the Audio Emotion Module its config describes")
    device = model.img_in.proj.weight.device
    dtype = model.img_in.proj.weight.dtype
    aem.load_state_dict({k: v.to(device=device, dtype=dtype) for k, v in sd.items()}, assign=True, strict=True)
    model.aem = aem.eval().requires_grad_(False)
    return model
