"""Audio encode: one native AUDIO per character -> whisper-tiny window features for the sampler."""

from __future__ import annotations

import comfy.model_management as mm
from comfy_api.latest import io

from ..avatar_core.conditioning.audio import CharacterAudio, encode_character_audio
from ..avatar_core.errors import InputError
from ..avatar_core.specs.concepts import CHARACTERS, DURATION, VIDEO_FPS
from .convert import AudioFeatures as Features
from .convert import parse_offsets
from .types import AudioFeatures, WhisperEncoder
from .ui_payloads import audio_ui

MAX_CHARACTERS = CHARACTERS.ui_max
FPS_OPTIONS = {f"{fps:g}": fps for fps in VIDEO_FPS.values()}  # the combo's text -> frames per second


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
                io.Combo.Input("fps", options=list(FPS_OPTIONS), default="25",
                               tooltip="Video frame rate. The model was trained at 25 fps."),
                io.Float.Input("duration", default=0.0, min=DURATION.ui_min, max=DURATION.ui_max, step=0.04,
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
            raise InputError("Avatar Audio Encode: connect at least one AUDIO (audio_0).")
        duration = DURATION.check("duration", duration, "Set Avatar Audio Encode's duration.")
        if fps not in FPS_OPTIONS:
            raise InputError(f"fps: {fps!r} is not one of {list(FPS_OPTIONS)}. {VIDEO_FPS.fix}")
        offsets = parse_offsets(start_offsets, len(clips))
        rate = FPS_OPTIONS[fps]
        for name, a in clips:
            if not isinstance(a, dict) or "waveform" not in a or "sample_rate" not in a:
                raise InputError(f"{name}: expected ComfyUI AUDIO (a dict with waveform and sample_rate), got "
                                 f"{type(a).__name__}; connect Load Audio.")
        # Each clip checks itself (specs): waveform layout and values, sample rate in Hz, start offset.
        tracks = [CharacterAudio(a["waveform"], a["sample_rate"], off, f"{name} (character {k + 1})")
                  for k, ((name, a), off) in enumerate(zip(clips, offsets))]
        num_frames = int(round(duration * rate)) if duration > 0 else None
        if num_frames == 0:
            raise InputError(f"duration: {duration} s is shorter than one video frame at {fps} fps; give 0 (as long "
                             "as the audio) or at least one frame.")
        mm.load_model_gpu(whisper)
        features = encode_character_audio(whisper.model.inner, tracks, fps=rate, num_frames=num_frames)
        return io.NodeOutput(Features(features, rate), features.shape[1], ui=audio_ui(clips))
