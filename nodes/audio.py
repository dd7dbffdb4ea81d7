"""Audio encode: one native AUDIO per character -> whisper-tiny window features for the sampler."""

from __future__ import annotations

import math

import comfy.model_management as mm
from comfy_api.latest import io

from ..avatar_core.conditioning.audio import CharacterAudio, encode_character_audio
from .convert import AudioFeatures as Features
from .convert import parse_offsets
from .types import AudioFeatures, WhisperEncoder
from .ui_payloads import audio_ui

MAX_CHARACTERS = 8


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
                               tooltip="Video length in seconds; 0 = until the last clip ends. The whole clips are "
                                       "still heard by Whisper (as in the official code); only the video is cut."),
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
        if not math.isfinite(duration) or duration < 0:
            raise ValueError(f"duration must be seconds >= 0 (0 = as long as the audio), got {duration!r}.")
        offsets = parse_offsets(start_offsets, len(clips))
        rate = float(fps)
        # The whole [batch, channels, time] waveform goes to the core: it refuses batches and odd layouts by name.
        tracks = [CharacterAudio(a["waveform"], a["sample_rate"], off, f"{name} (character {k + 1})")
                  for k, ((name, a), off) in enumerate(zip(clips, offsets))]
        num_frames = int(round(duration * rate)) if duration > 0 else None
        mm.load_model_gpu(whisper)
        features = encode_character_audio(whisper.model.inner, tracks, fps=rate, num_frames=num_frames)
        return io.NodeOutput(Features(features, rate), features.shape[1], ui=audio_ui(clips))
