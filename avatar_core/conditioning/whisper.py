"""Whisper encoder: local loading (folder or one safetensors file) and hidden states of any length.

Long audio: the official code encodes only the first 30 s (one Whisper window). Audio that fits in one
window goes through exactly the official computation (same window, feature extractor and encoder call).
Longer audio is encoded in 30 s windows (1500 positions at 50 Hz, 320 samples each) that overlap by 10 s:
each position is taken from the window in which it has at least 5 s of audio context on both sides (only the
clip's own ends have less), so Whisper's self-attention never sees a cut right next to a kept position.
Window k starts at a whole number of positions, so its position p is global position start_k + p: the time
axis stays exact, and the per-frame windows are cut from the joined sequence afterwards (see audio.py).

Official fp16 roundings (``official_fp16``, on by default): the official dataset stores the log-mel features as
float16 (audio_dataset.py: ``audio_prompts.to(dtype=torch.float16)``), ``predict`` widens them back to the fp32
encoder's dtype, and casts the stacked hidden states to float16 again (``.to(dtype=weight_dtype)``, the mel's
dtype) before the transformer. Both roundings are reproduced here; the states stay in a float32 tensor (every
float16 value is exact in float32).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..weight_files import WHISPER, WHISPER_CONFIG, WeightFileNotFound, check_layout, read_json, read_tensors, refuse
from .waveform import WHISPER_SAMPLE_RATE

CHUNK_SAMPLES = 30 * WHISPER_SAMPLE_RATE  # one Whisper window (official: 750 * 640)
POSITIONS_PER_CHUNK = 1500  # encoder positions per 30 s chunk (50 Hz)
SAMPLES_PER_POSITION = CHUNK_SAMPLES // POSITIONS_PER_CHUNK  # 320
CONTEXT_POSITIONS = 250  # 5 s: context every kept position has on each side when audio spans several windows


def chunk_plan(num_positions: int, chunk: int = POSITIONS_PER_CHUNK,
               margin: int = CONTEXT_POSITIONS) -> list[tuple[int, int, int]]:
    """Whisper windows covering `num_positions` positions: (start, keep_from, keep_to), global positions.

    One window when the audio fits (the official case). Otherwise consecutive windows overlap by 2 * margin
    and each keeps [keep_from, keep_to): every kept position lies at least `margin` inside its window, except
    at the very start and end of the clip. The kept ranges tile [0, num_positions) exactly once.
    """
    if num_positions <= chunk:
        return [(0, 0, num_positions)]
    plan, keep_from, start = [], 0, 0
    while keep_from < num_positions:
        last = start + chunk >= num_positions
        keep_to = num_positions if last else start + chunk - margin
        plan.append((start, keep_from, keep_to))
        keep_from, start = keep_to, keep_to - margin
    return plan

def _encoder_state(state: dict[str, torch.Tensor], source: Path) -> dict[str, torch.Tensor]:
    """Keep the encoder keys, accepting WhisperModel ('encoder.') and ForConditionalGeneration ('model.encoder.')."""
    out = {}
    for key, value in state.items():
        for prefix in ("model.encoder.", "encoder."):
            if key.startswith(prefix):
                out[key[len(prefix) :]] = value
                break
    if "conv1.weight" not in out:
        raise refuse(WHISPER, source, "no Whisper encoder weights found (expected keys like 'encoder.conv1.weight')",
                     "Point the loader at a whisper-tiny folder or its model.safetensors.")
    return out


def _config_from_state(state: dict[str, torch.Tensor], source: Path) -> dict[str, Any]:
    """Width and depth read off the weight shapes (to name a larger Whisper before the key-by-key check)."""
    width = int(state["conv1.weight"].shape[0]) if state["conv1.weight"].dim() == 3 else -1
    layer_ids = [int(k.split(".")[1]) for k in state if k.startswith("layers.") and k.split(".")[1].isdigit()]
    return {"d_model": width, "encoder_layers": 1 + max(layer_ids, default=-1)}


# whisper-tiny's encoder, the one the Avatar model was trained with (its audio input is 5 x 384); the numbers of
# the official checkpoint's config (transformers WhisperConfig defaults == whisper-tiny), checked against
# /work/shared/reference/whisper_tiny_config.json and whisper_tiny_keys.tsv by tests/test_weight_files.py.
TINY_CONFIG: dict[str, Any] = {"d_model": 384, "encoder_layers": 4, "encoder_attention_heads": 6,
                               "encoder_ffn_dim": 1536, "num_mel_bins": 80, "max_source_positions": 1500,
                               "activation_function": "gelu"}
TINY_WIDTH, TINY_LAYERS = TINY_CONFIG["d_model"], TINY_CONFIG["encoder_layers"]
_NAMES_BY_WIDTH = {384: "tiny", 512: "base", 768: "small", 1024: "medium", 1280: "large"}


def tiny_layout(cfg: dict[str, Any] = TINY_CONFIG) -> dict[str, tuple[int, ...]]:
    """Encoder key -> shape of whisper-tiny (keys without the 'encoder.' prefix)."""
    d, f = cfg["d_model"], cfg["encoder_ffn_dim"]
    out: dict[str, tuple[int, ...]] = {
        "conv1.weight": (d, cfg["num_mel_bins"], 3), "conv1.bias": (d,), "conv2.weight": (d, d, 3), "conv2.bias": (d,),
        "embed_positions.weight": (cfg["max_source_positions"], d), "layer_norm.weight": (d,), "layer_norm.bias": (d,)}
    for i in range(cfg["encoder_layers"]):
        p = f"layers.{i}."
        out |= {p + f"self_attn.{n}_proj.weight": (d, d) for n in ("k", "v", "q", "out")}
        out |= {p + f"self_attn.{n}_proj.bias": (d,) for n in ("v", "q", "out")}  # k_proj has no bias
        out |= {p + f"{n}.{w}": (d,) for n in ("self_attn_layer_norm", "final_layer_norm") for w in ("weight", "bias")}
        out |= {p + "fc1.weight": (f, d), p + "fc1.bias": (f,), p + "fc2.weight": (d, f), p + "fc2.bias": (d,)}
    return out


def _read_weights(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None, Path]:
    """(state dict, config.json dict or None, the weight file) from a folder or a single weight file."""
    if not path.is_dir():
        if not path.exists():
            raise WeightFileNotFound(f"Whisper weights not found at {path}: give a whisper-tiny folder or a "
                                     f".safetensors file. {WHISPER.fix}")
        return read_tensors(path, WHISPER)[0], None, path
    config_file = path / "config.json"
    config = read_json(config_file, WHISPER_CONFIG) if config_file.exists() else None
    for name in ("model.safetensors", "model.sft", "pytorch_model.bin"):
        if (path / name).exists():
            return read_tensors(path / name, WHISPER)[0], config, path / name
    raise WeightFileNotFound(f"Whisper folder {path}: neither model.safetensors nor pytorch_model.bin is in it. "
                             f"{WHISPER.fix}")


def _check_is_tiny(cfg: dict[str, Any], source: Path) -> None:
    """The Avatar audio projection takes 5 hidden states of width 384: only whisper-tiny's encoder fits."""
    width, layers = cfg["d_model"], cfg["encoder_layers"]
    if (width, layers) != (TINY_WIDTH, TINY_LAYERS):
        raise refuse(WHISPER, source, f"this Whisper encoder has width {width} and {layers} layers, but the Avatar "
                                      f"model was trained on whisper-tiny ({TINY_WIDTH} wide, {TINY_LAYERS} layers; "
                                      "base and small are larger)",
                     "Download and use whisper-tiny (openai/whisper-tiny model.safetensors).")


def check_config(config: dict[str, Any], source: Path) -> None:
    """A config.json beside the weights must describe whisper-tiny: another model's config is refused, never
    used (it would silently change the head count, and so every feature)."""
    if config.get("model_type", "whisper") != "whisper":
        raise refuse(WHISPER_CONFIG, source, f"is the config of a {config['model_type']!r} model, not Whisper")
    bad = [f"{k} {config[k]!r} (whisper-tiny: {v!r})" for k, v in TINY_CONFIG.items() if k in config and config[k] != v]
    if bad:
        name = _NAMES_BY_WIDTH.get(config.get("d_model"), "another Whisper size")
        raise refuse(WHISPER_CONFIG, source, f"describes another model than whisper-tiny (looks like {name}): "
                                             + "; ".join(bad))


def load_whisper_encoder(path: str | Path, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Load a transformers ``WhisperEncoder`` in fp32 from local files only (never from a hub).

    ``path``: a folder (config.json + model.safetensors or pytorch_model.bin, e.g. openai/whisper-tiny) or one
    weight file with WhisperModel keys ('encoder.conv1.weight', ...; decoder keys are ignored). Every file is
    checked by weight_files (format by content, dtypes, NaN/inf), the keys and shapes against whisper-tiny's,
    and a config.json against whisper-tiny's config.
    """
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    path = Path(path)
    state, config, file = _read_weights(path)
    enc_state = _encoder_state(state, file)
    _check_is_tiny(_config_from_state(enc_state, file), file)
    # embed_positions is a fixed sinusoid some exports omit; everything else must be present.
    check_layout(enc_state, tiny_layout(), file, WHISPER, optional=("embed_positions.weight",),
                 model="whisper-tiny's encoder")
    if config is not None:
        check_config(config, path / "config.json")
    encoder = WhisperEncoder(WhisperConfig(**TINY_CONFIG))
    encoder.load_state_dict(enc_state, strict=False)  # complete but for embed_positions (checked above)
    return encoder.to(device=device, dtype=torch.float32).eval()


def _feature_extractor(n_mels: int) -> Any:
    """Whisper's log-mel front end (80 bins, hop 160, 30 s windows): built locally, no download."""
    from transformers import WhisperFeatureExtractor

    return WhisperFeatureExtractor(feature_size=n_mels, sampling_rate=WHISPER_SAMPLE_RATE)


def timeline_samples(wav16k: torch.Tensor, offset: int, first: int, count: int) -> torch.Tensor:
    """Samples [first, first + count) of a timeline that is `offset` zeros, then `wav16k`, then zeros."""
    lo, hi = max(first - offset, 0), max(min(first + count - offset, wav16k.numel()), 0)
    piece = wav16k[lo:hi].to(torch.float32)
    before = min(max(offset - first, 0), count)
    return torch.nn.functional.pad(piece, (before, count - before - piece.numel()))


@torch.no_grad()
def whisper_hidden_states(encoder: torch.nn.Module, wav16k: torch.Tensor, num_positions: int,
                          out: torch.Tensor | Callable[[int, int], torch.Tensor] | None = None,
                          offset: int = 0, official_fp16: bool = True) -> torch.Tensor:
    """All encoder hidden states of a mono 16 kHz waveform, in overlapping 30 s windows (module docstring).

    Returns [num_positions, L + 1, D] fp32 at 50 Hz (whisper-tiny: [P, 5, 384]: embedding output, then each
    layer, the last one after the final LayerNorm). The clip starts `offset` samples into the timeline; every
    window holds all of the clip's samples it covers (the official code encodes the whole clip, not only the
    video frames' span) and zeros elsewhere, exactly as Whisper's own padding to 30 s. The states are written
    into `out` when given (no second copy of an hour of features; a callable gets (layers, dim) once the
    first window has run and returns the [num_positions, layers, dim] tensor to fill), else into a new tensor.
    ``official_fp16``: round the mel features and the states to float16 as the official code does (module
    docstring); False keeps them float32 (the encoder's own precision).
    """
    n_mels = encoder.config.num_mel_bins if hasattr(encoder, "config") else 80
    extractor = _feature_extractor(n_mels)
    wav = wav16k.cpu()
    param = next(encoder.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    for start, keep_from, keep_to in chunk_plan(num_positions):
        chunk = timeline_samples(wav, offset, start * SAMPLES_PER_POSITION, CHUNK_SAMPLES).numpy()
        mel = extractor(chunk, sampling_rate=WHISPER_SAMPLE_RATE, return_tensors="pt").input_features  # [1, M, 3000]
        mel = _official_round(mel, official_fp16)
        states = encoder(mel.to(device, torch.float32), output_hidden_states=True).hidden_states
        if not isinstance(out, torch.Tensor):
            shape = (len(states), states[0].shape[-1])
            out = out(*shape) if out is not None else torch.empty(num_positions, *shape)
        for layer, state in enumerate(states):  # [1, 1500, D] each
            out[keep_from:keep_to, layer] = _official_round(state[0, keep_from - start : keep_to - start],
                                                            official_fp16).cpu()
    return out


def _official_round(x: torch.Tensor, official_fp16: bool) -> torch.Tensor:
    """``x`` in float32, through float16 first when the official roundings are on (round to nearest even)."""
    return x.to(torch.float16).float() if official_fp16 else x.float()
