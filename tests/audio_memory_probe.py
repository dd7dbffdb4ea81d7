"""Peak host memory of encoding a long clip for one character (run in its own process by test_audio_memory.py).

Usage: python tests/audio_memory_probe.py SECONDS RATE CHANNELS -> one JSON line. The encoder is a random
whisper-tiny of the real shape (4 layers, width 384, 80 mel bins, 1500 positions): memory does not depend on
the weight values.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # Linux reports KiB


def main() -> None:
    seconds, rate, channels = float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    from avatar_core.conditioning.audio import encode_audio

    torch.set_num_threads(2)
    cfg = WhisperConfig(d_model=384, encoder_layers=4, encoder_attention_heads=6, encoder_ffn_dim=1536,
                        num_mel_bins=80, max_source_positions=1500)
    encoder = WhisperEncoder(cfg).eval()
    before_audio = rss_gb()
    g = torch.Generator().manual_seed(0)
    wav = torch.empty(1, channels, int(seconds * rate)).uniform_(-0.3, 0.3, generator=g)  # ComfyUI AUDIO layout
    with_audio = rss_gb()
    start = time.time()
    feats = encode_audio(encoder, wav, rate)
    print(json.dumps({"seconds": seconds, "rate": rate, "channels": channels, "frames": feats.shape[0],
                      "peak_rss_gb": round(rss_gb(), 3), "rss_before_audio_gb": round(before_audio, 3),
                      "rss_with_input_gb": round(with_audio, 3),
                      "input_gb": round(wav.numel() * 4 / 1e9, 3),
                      "features_storage_gb": round(feats.untyped_storage().nbytes() / 1e9, 3),
                      "features_as_copy_gb": round(feats.numel() * 4 / 1e9, 3),
                      "encode_s": round(time.time() - start, 1)}))


if __name__ == "__main__":
    main()
