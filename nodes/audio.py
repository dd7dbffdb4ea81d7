"""Audio encode: one native AUDIO per character -> whisper-tiny window features for the sampler."""

from __future__ import annotations

import comfy.model_management as mm
from comfy_api.latest import io

from ..avatar_core.conditioning.audio import CharacterAudio, encode_character_audio
from ..avatar_core.validation import check_number
from .convert import AudioFeatures as Features
from .types import AudioFeatures, WhisperEncoder
from .ui_payloads import audio_ui

MAX_CHARACTERS = 8


def parse_offsets(text: str, count: int) -> list[float]:
    """'0, 2.5' -> [0.0, 2.5]; missing entries are 0. Errors name the input and the bad value."""
    parts = [p.strip() for p in text.replace(";", ",").split(",") if p.strip()]
    if len(parts) > count:
        raise ValueError(f"start_offsets has {len(parts)} values but only {count} audio inputs are connected.")
    try:
        values = [float(p) for p in parts]
    except ValueError as e:
        raise ValueError(f"start_offsets must be seconds separated by commas, e.g. '0, 2.5'; got {text!r}.") from e
    if any(v < 0 for v in values):
        raise ValueError(f"start_offsets must be >= 0 seconds, got {text!r}.")
    return values + [0.0] * (count - len(values))


class AvatarAudioEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AvatarAudioEncode", display_name="Avatar Audio Encode", category="HunyuanVideo-Avatar",
            description="Whisper features per character. Character k speaks audio_k; its clip starts at the k-th "
                        "start offset on a shared timeline as long as the video.",
            inputs=[
                WhisperEncoder.Input("whisper", tooltip="From 'Load Whisper (Avatar audio)': whisper-tiny, the encoder the model was trained with."),
                io.Autogrow.Input("audio", template=io.Autogrow.TemplatePrefix(
                    io.Audio.Input("audio"), prefix="audio_", min=1, max=MAX_CHARACTERS),
                    tooltip="One AUDIO per character, in the same order as the character masks."),
                io.String.Input("start_offsets", default="0",
                                tooltip="Start of each character's clip in the video, in seconds, comma separated "
                                        "(e.g. '0, 3.2'). Missing values are 0."),
                io.Combo.Input("fps", options=["25", "12.5"], default="25",
                               tooltip="Video frame rate. The model was trained at 25 fps."),
                io.Float.Input("duration", default=0.0, min=0.0, max=3600.0, step=0.04,
                               tooltip="Video length in seconds; 0 = until the last clip ends."),
            ],
            outputs=[AudioFeatures.Output(display_name="audio_features"),
                     io.Int.Output(display_name="num_frames")],
        )

    @classmethod
    def execute(cls, whisper, audio: io.Autogrow.Type, start_offsets: str, fps: str, duration: float) -> io.NodeOutput:
        clips = [(name, audio[name]) for name in sorted(audio, key=lambda n: int(n.rsplit("_", 1)[1]))
                 if audio[name] is not None]
        if not clips:
            raise ValueError("Avatar Audio Encode: connect at least one AUDIO (audio_0).")
        check_number("duration", duration, lo=0.0, hi=3600.0, fix="Set Avatar Audio Encode's duration in seconds (0 = "
                     "until the last clip ends).")
        offsets = parse_offsets(start_offsets, len(clips))
        rate = float(fps)
        tracks = [CharacterAudio(a["waveform"][0], int(a["sample_rate"]), off, name)
                  for (name, a), off in zip(clips, offsets)]
        num_frames = int(round(duration * rate)) if duration > 0 else None
        mm.load_model_gpu(whisper)
        features = encode_character_audio(whisper.model.inner, tracks, fps=rate, num_frames=num_frames)
        return io.NodeOutput(Features(features.cpu(), rate), features.shape[1], ui=audio_ui(clips))
