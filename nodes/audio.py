"""Audio encode: one native AUDIO per speaking character -> whisper-tiny window features for the sampler.

Roles: audio_k drives character k + 1 (a speaker); a character whose input is not connected is a listener
(Whisper's features of silence: mouth closed, natural idle), as is every character after the last connected
input (the sampler gives one to each mask without a track).
"""

from __future__ import annotations

import comfy.model_management as mm
from comfy_api.latest import io

from ..avatar_core.conditioning.audio import encode_character_audio, listener_features
from ..avatar_core.errors import InputError
from ..avatar_core.specs.concepts import CHARACTERS, DURATION, VIDEO_FPS
from .convert import AudioFeatures as Features
from .convert import character_tracks
from .types import AudioFeatures, WhisperEncoder
from .ui_payloads import audio_ui

MAX_CHARACTERS = CHARACTERS.ui_max
FPS_OPTIONS = {f"{fps:g}": fps for fps in VIDEO_FPS.values()}  # the combo's text -> frames per second


class AvatarAudioEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AvatarAudioEncode", display_name="Avatar Audio Encode", category="HunyuanVideo-Avatar",
            description="Whisper features per character. Character k + 1 speaks audio_k; its clip starts at the "
                        "k-th start offset on a shared timeline as long as the video, silence elsewhere. A "
                        "character whose audio is not connected listens (Whisper of silence: mouth closed).",
            inputs=[
                WhisperEncoder.Input("whisper", tooltip="From 'Load Whisper (Avatar audio)': whisper-tiny, the encoder the model was trained with."),
                io.Autogrow.Input("audio", template=io.Autogrow.TemplatePrefix(
                    io.Audio.Input("audio"), prefix="audio_", min=0, max=MAX_CHARACTERS),
                    tooltip="One AUDIO per speaking character, in the same order as the character masks (audio_0 = "
                            "character 1, numbered left to right). Leave a character's input unconnected and it "
                            "listens: mouth closed, natural idle."),
                io.String.Input("start_offsets", default="0",
                                tooltip="Start of each character's clip in the video, in seconds, comma separated, one "
                                        "per character (e.g. '0, 3.2'; a listener's is ignored). Missing values are 0."),
                io.Combo.Input("fps", options=list(FPS_OPTIONS), default="25",
                               tooltip="Video frame rate. The model was trained at 25 fps."),
                io.Float.Input("duration", default=0.0, min=DURATION.ui_min, max=DURATION.ui_max, step=0.04,
                               tooltip="Video length in seconds; 0 = until the last clip ends (needed when nobody "
                                       "speaks). The whole clips are still heard by Whisper (as in the official "
                                       "code); only the video is cut."),
            ],
            outputs=[AudioFeatures.Output(display_name="audio_features"),
                     io.Int.Output(display_name="num_frames")],
        )

    @classmethod
    def execute(cls, whisper, audio: io.Autogrow.Type, start_offsets: str, fps: str, duration: float) -> io.NodeOutput:
        duration = DURATION.check("duration", duration, "Set Avatar Audio Encode's duration.")
        connected = {name: a for name, a in (audio or {}).items() if a is not None}
        if not connected and duration == 0:
            raise InputError("Avatar Audio Encode: no audio connected, so nothing sets the video's length; connect "
                             "a speaker's AUDIO (audio_0 = character 1) or set duration for a video where every "
                             "character listens.")
        if fps not in FPS_OPTIONS:
            raise InputError(f"fps: {fps!r} is not one of {list(FPS_OPTIONS)}. {VIDEO_FPS.fix}")
        rate = FPS_OPTIONS[fps]
        for name, a in connected.items():
            if not isinstance(a, dict) or "waveform" not in a or "sample_rate" not in a:
                raise InputError(f"{name}: expected ComfyUI AUDIO (a dict with waveform and sample_rate), got "
                                 f"{type(a).__name__}; connect Load Audio.")
        # Each clip checks itself (specs): waveform layout and values, sample rate in Hz, start offset.
        tracks = character_tracks(connected, start_offsets, MAX_CHARACTERS)
        num_frames = int(round(duration * rate)) if duration > 0 else None
        if num_frames == 0:
            raise InputError(f"duration: {duration} s is shorter than one video frame at {fps} fps; give 0 (as long "
                             "as the audio) or at least one frame.")
        mm.load_model_gpu(whisper)
        features = encode_character_audio(whisper.model.inner, tracks, fps=rate, num_frames=num_frames)
        listener = listener_features(whisper.model.inner, rate, features.shape[1])
        clips = sorted(connected.items(), key=lambda item: int(item[0].rsplit("_", 1)[1]))
        return io.NodeOutput(Features(features, rate, listener), features.shape[1], ui=audio_ui(clips))
