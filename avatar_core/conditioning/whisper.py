"""Whisper encoder: local loading (folder or one safetensors file) and hidden states of any length.

Long audio: the official code encodes only the first 30 s (one Whisper window). Audio that fits in one
window goes through exactly the official computation (same window, feature extractor and encoder call).
Longer audio is encoded in 30 s windows (1500 positions at 50 Hz, 320 samples each) that overlap by 10 s:
each position is taken from the window in which it has at least 5 s of audio context on both sides (only the
clip's own ends have less), so Whisper's self-attention never sees a cut right next to a kept position.
Window k starts at a whole number of positions, so its position p is global position start_k + p: the time
axis stays exact, and the per-frame windows are cut from the joined sequence afterwards (see audio.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

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

# Whisper's head count is not visible in the weight shapes: the standard sizes by model width.
_HEADS_BY_WIDTH = {384: 6, 512: 8, 768: 12, 1024: 16, 1280: 20}


def _encoder_state(state: dict[str, torch.Tensor], source: Path) -> dict[str, torch.Tensor]:
    """Keep the encoder keys, accepting WhisperModel ('encoder.') and ForConditionalGeneration ('model.encoder.')."""
    out = {}
    for key, value in state.items():
        for prefix in ("model.encoder.", "encoder."):
            if key.startswith(prefix):
                out[key[len(prefix) :]] = value
                break
    if "conv1.weight" not in out:
        raise ValueError(
            f"{source}: no Whisper encoder weights found (expected keys like 'encoder.conv1.weight'). "
            "Point the loader at a whisper-tiny folder or its model.safetensors."
        )
    return out


def _config_from_state(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Whisper encoder hyper-parameters read off the weight shapes (for a bare safetensors file)."""
    d_model, n_mels = state["conv1.weight"].shape[:2]
    n_layers = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("layers."))
    return {
        "d_model": int(d_model),
        "num_mel_bins": int(n_mels),
        "encoder_layers": n_layers,
        "encoder_attention_heads": _HEADS_BY_WIDTH.get(int(d_model), int(d_model) // 64),
        "encoder_ffn_dim": int(state["layers.0.fc1.weight"].shape[0]),
        "max_source_positions": int(state["embed_positions.weight"].shape[0]),
    }


def _read_weights(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """(state dict, config.json dict or None) from a folder or a single weight file."""
    from safetensors.torch import load_file

    if path.is_file():
        return load_file(str(path)), None
    if not path.is_dir():
        raise FileNotFoundError(f"Whisper weights not found at {path}: give a whisper-tiny folder or a .safetensors file.")
    config_file = path / "config.json"
    config = json.loads(config_file.read_text()) if config_file.is_file() else None
    if (path / "model.safetensors").is_file():
        return load_file(str(path / "model.safetensors")), config
    if (path / "pytorch_model.bin").is_file():
        return torch.load(path / "pytorch_model.bin", map_location="cpu", weights_only=True), config
    raise FileNotFoundError(f"{path}: neither model.safetensors nor pytorch_model.bin is in this Whisper folder.")


def load_whisper_encoder(path: str | Path, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Load a transformers ``WhisperEncoder`` in fp32 from local files only (never from a hub).

    ``path``: a folder (config.json + model.safetensors or pytorch_model.bin, e.g. openai/whisper-tiny) or one
    .safetensors file with WhisperModel keys ('encoder.conv1.weight', ...; decoder keys are ignored).
    """
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    path = Path(path)
    state, config = _read_weights(path)
    enc_state = _encoder_state(state, path)
    shape_cfg = _config_from_state(enc_state)
    if config is not None:  # a config.json wins for what shapes cannot tell (head count)
        shape_cfg.update({k: config[k] for k in ("encoder_attention_heads", "activation_function") if k in config})
    cfg = WhisperConfig(**shape_cfg)
    encoder = WhisperEncoder(cfg)
    missing, unexpected = encoder.load_state_dict(enc_state, strict=False)
    # embed_positions is a fixed sinusoid some exports omit; everything else must be present.
    missing = [k for k in missing if k != "embed_positions.weight"]
    if missing or unexpected:
        raise ValueError(f"{path}: Whisper encoder weights do not fit: missing {missing[:5]}, unexpected {unexpected[:5]}.")
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
                          offset: int = 0) -> torch.Tensor:
    """All encoder hidden states of a mono 16 kHz waveform, in overlapping 30 s windows (module docstring).

    Returns [num_positions, L + 1, D] fp32 at 50 Hz (whisper-tiny: [P, 5, 384]: embedding output, then each
    layer, the last one after the final LayerNorm). The clip starts `offset` samples into the timeline; every
    window holds all of the clip's samples it covers (the official code encodes the whole clip, not only the
    video frames' span) and zeros elsewhere, exactly as Whisper's own padding to 30 s. The states are written
    into `out` when given (no second copy of an hour of features; a callable gets (layers, dim) once the
    first window has run and returns the [num_positions, layers, dim] tensor to fill), else into a new tensor.
    """
    n_mels = encoder.config.num_mel_bins if hasattr(encoder, "config") else 80
    extractor = _feature_extractor(n_mels)
    wav = wav16k.cpu()
    param = next(encoder.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    for start, keep_from, keep_to in chunk_plan(num_positions):
        chunk = timeline_samples(wav, offset, start * SAMPLES_PER_POSITION, CHUNK_SAMPLES).numpy()
        mel = extractor(chunk, sampling_rate=WHISPER_SAMPLE_RATE, return_tensors="pt").input_features  # [1, M, 3000]
        states = encoder(mel.to(device, torch.float32), output_hidden_states=True).hidden_states
        if not isinstance(out, torch.Tensor):
            shape = (len(states), states[0].shape[-1])
            out = out(*shape) if out is not None else torch.empty(num_positions, *shape)
        for layer, state in enumerate(states):  # [1, 1500, D] each
            out[keep_from:keep_to, layer] = state[0, keep_from - start : keep_to - start].float().cpu()
    return out
