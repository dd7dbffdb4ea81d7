"""The example workflows, as compact graphs. `scripts/build_workflows.py` realises them in the real ComfyUI
frontend and saves what it serialises to example_workflows/ (the UI format the Templates browser opens).

A node is (key, type, column, row, {widget: value}, title); a link is (from_key, output_slot, to_key, input_name).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from avatar_core import model_files as mf  # noqa: E402

DIT, WHISPER, VAE = mf.AVATAR.name, mf.WHISPER.name, mf.VAE.name
CLIP_L, LLAVA, LLAVA_VISION = mf.CLIP_L.name, mf.LLAVA.name, mf.LLAVA_VISION.name  # fp16 LLaVA, as the official
FACES, DETFACE = mf.FACES.name, mf.DETFACE.name
NEGATIVE = ("Aerial view, aerial view, overexposed, low quality, deformation, a poor composition, bad hands, "
            "bad teeth, bad eyes, bad limbs, distortion, blurring, Lens changes")

MODEL_NOTE = f"""Model files (the Missing Models panel links each; README "Model files" has the table):
- models/diffusion_models/{DIT}: CONVERT the official mp_rank_00_model_states.pt (python -m avatar_core.convert ...; the .pt and the fp8 .pt load too)
- models/audio_encoders/whisper-tiny/model.safetensors (openai/whisper-tiny; its config.json beside it is optional: {mf.HF}/openai/whisper-tiny/resolve/main/config.json)
- models/vae/{VAE}
- models/text_encoders/{CLIP_L} and {LLAVA} (fp16, as the official; llava_llama3_fp8_scaled also works, see the README)
- models/clip_vision/{LLAVA_VISION}
- models/face_detection/{DETFACE}: the official face detector (official masks). Without it an InsightFace pack in
  models/insightface/models/ ({FACES}.zip unzipped) stands in, and Load Face Detector says so.
Inputs: example_inputs/ of this pack, copied to ComfyUI/input when ComfyUI starts.
Out of memory? weight_dtype fp8_e4m3fn, a smaller image_size, or save the text conditioning once (Avatar Save Conditioning) and load it."""


def base(image: str, audio: str, prompt: str, image_size: int = 704, weight_dtype: str = "bf16",
         prefix: str = "avatar/avatar") -> tuple[list, list]:
    """Single character: image + speech -> mp4 with the speech. Returns (nodes, links)."""
    nodes = [
        ("model", "AvatarModelLoader", 0, 0, {"ckpt_name": DIT, "weight_dtype": weight_dtype, "attention": "auto"}, None),
        ("whisper", "AvatarWhisperLoader", 0, 1, {"whisper_name": WHISPER}, None),
        ("vae", "VAELoader", 0, 2, {"vae_name": VAE}, None),
        ("clip", "DualCLIPLoader", 0, 3, {"clip_name1": CLIP_L, "clip_name2": LLAVA, "type": "hunyuan_video"}, None),
        ("clip_vision", "CLIPVisionLoader", 0, 4, {"clip_name": LLAVA_VISION}, None),
        ("faces", "AvatarInsightFaceLoader", 0, 5, {"model_name": DETFACE, "provider": "CPU", "det_size": 640}, None),
        ("image", "LoadImage", 1, 0, {"image": image}, "Reference image"),
        ("audio", "LoadAudio", 1, 2, {"audio": audio}, "Speech"),
        ("encode", "AvatarAudioEncode", 2, 0, {"start_offsets": "0", "fps": "25", "duration": 0.0}, None),
        ("masks", "AvatarFaceMasks", 2, 1, {"characters": 1, "face_scale": 3.0, "image_size": image_size}, None),
        ("text", "AvatarTextEncode", 2, 3, {"prompt": prompt, "negative_prompt": NEGATIVE, "official_prefix": True,
                                            "image_size": image_size}, None),
        ("sampler", "AvatarSampler", 3, 0, {"image_size": image_size, "steps": 50, "cfg": 7.5, "shift": 5.0, "seed": 128,
                                            "control_after_generate": "fixed", "motion_exp": 30, "motion_pose": 25,
                                            "deep_cache": True, "noise": "cpu", "reference_encode": "official"}, None),
        ("decode", "VAEDecodeTiled", 4, 0, {"tile_size": 256, "overlap": 64, "temporal_size": 64,
                                            "temporal_overlap": 8}, None),
        ("trim", "ImageFromBatch", 4, 1, {"batch_index": 0, "length": 1}, "Trim to the audio"),
        ("video", "CreateVideo", 4, 2, {"fps": 25.0}, None),
        ("save", "SaveVideo", 5, 0, {"filename_prefix": prefix, "format": "mp4", "format.codec": "h264",
                                     "format.codec.encoding": "re-encode", "format.codec.encoding.crf": 17.0}, None),
        ("note", "Note", 5, 2, {"text": MODEL_NOTE}, "Model files"),
    ]
    links = [
        ("whisper", 0, "encode", "whisper"), ("audio", 0, "encode", "audio.audio_0"),
        ("image", 0, "masks", "image"), ("faces", 0, "masks", "face_detector"),
        ("clip_vision", 0, "text", "clip_vision"), ("image", 0, "text", "image"), ("clip", 0, "text", "clip"),
        ("model", 0, "sampler", "model"), ("text", 0, "sampler", "positive"), ("text", 1, "sampler", "negative"),
        ("image", 0, "sampler", "image"), ("vae", 0, "sampler", "vae"), ("encode", 0, "sampler", "audio_features"),
        ("masks", 0, "sampler", "character_masks"),
        ("sampler", 0, "decode", "samples"), ("vae", 0, "decode", "vae"),
        ("decode", 0, "trim", "image"), ("encode", 1, "trim", "length"),
        ("trim", 0, "video", "images"), ("audio", 0, "video", "audio"), ("video", 0, "save", "video"),
    ]
    return nodes, links


def _set(nodes: list, key: str, **widgets) -> list:
    return [(k, t, c, r, {**w, **widgets} if k == key else w, title) for k, t, c, r, w, title in nodes]


def single_portrait():
    nodes, links = base("portrait.jpg", "speech.wav", "A person is talking to the camera.", prefix="avatar/portrait")
    return nodes, links, "Single portrait: one face and one speech track -> a lip-synced mp4 (704 px, 25 fps)."


def full_body():
    nodes, links = base("full_body.jpg", "speech.wav", "A person stands and talks, moving their hands naturally.",
                        weight_dtype="fp8_e4m3fn", prefix="avatar/full_body")
    nodes = _set(nodes, "masks", face_scale=3.0)
    nodes = _set(nodes, "sampler", motion_pose=25, image_size=704)
    nodes = _set(nodes, "masks", image_size=704)
    return nodes, links, "Full body: a whole figure with a small face -> a 704x1152 talking video (fp8 weights)."


def two_character_dialogue():
    nodes, links = base("two_people.jpg", "speaker_left.wav", "Two people are having a conversation.",
                        prefix="avatar/dialogue")
    nodes = _set(nodes, "masks", characters=2)
    nodes = _set(nodes, "encode", start_offsets="0, 0")
    nodes = [n for n in nodes if n[0] != "note"] + [
        ("audio2", "LoadAudio", 1, 3, {"audio": "speaker_right.wav"}, "Speech of character 2 (right)"),
        ("mix", "AudioMerge", 3, 2, {"merge_method": "add"}, "Soundtrack: both speakers"),
        ("mask1", "LoadImageMask", 1, 5, {"image": "two_people_mask_left.png", "channel": "red"},
         "Mask of character 1 (left)"),
        ("mask2", "LoadImageMask", 1, 6, {"image": "two_people_mask_right.png", "channel": "red"},
         "Mask of character 2 (right)"),
        ("note", "Note", 5, 2, {"text": MODEL_NOTE + DIALOGUE_NOTE}, "Model files / how it works"),
    ]
    nodes = _retitle(nodes, "audio", "Speech of character 1 (left)")
    links = [ln for ln in links if ln[2:] != ("video", "audio")] + [
        ("audio2", 0, "encode", "audio.audio_1"), ("mask1", 0, "masks", "masks.mask_0"),
        ("mask2", 0, "masks", "masks.mask_1"), ("audio", 0, "mix", "audio1"), ("audio2", 0, "mix", "audio2"),
        ("mix", 0, "video", "audio")]
    return nodes, links, "Two-character dialogue: one speech track and one mask per character, numbered left to right."


DIALOGUE_NOTE = """

Two characters: audio_0 and mask_0 are character 1 (the LEFT one), audio_1 and mask_1 character 2. Each track is that
speaker alone, as long as the dialogue (silence while the other speaks), or shorter with its start in start_offsets
("0, 3.2": character 2 starts at 3.2 s). The masks come from LoadImageMask (white = that character, red channel;
paint your own in any editor at the reference image's size); disconnect them and the detector numbers the two largest faces left to right instead.
AudioMerge adds the two tracks into the video's soundtrack; with start offsets other than 0, connect a mixed
file to CreateVideo's audio instead."""


def long_clip():
    nodes, links = base("portrait.jpg", "speech_long.ogg", "A person is giving a talk, speaking calmly.",
                        prefix="avatar/long")
    nodes = [n for n in nodes if n[0] != "note"] + [
        ("long", "AvatarLongVideo", 2, 5, {"window": 33, "stride": 10}, None),
        ("note", "Note", 5, 2, {"text": MODEL_NOTE + LONG_NOTE}, "Model files / long clips"),
    ]
    return nodes, links + [("long", 0, "sampler", "long_video")], ("Long clip: a 61 s talk -> one video as long as "
                                                                    "the audio (window stitching, bounded memory).")


LONG_NOTE = """

Long clips: the video is as long as the audio (here a 61 s talk = 1517 frames). The sampler denoises a ring of latent frames
window by window (33 latent frames = 129 video frames per model call), shifting the window grid 10 latent frames each
step (Avatar Long-Video Windows: window 33, stride 10) so seams never stay in place. Time grows linearly with length
(about 12 windows per step for 61 s); memory does not. VAEDecodeTiled decodes 64 frames at a time."""


def emotion_reference():
    nodes, links = base("portrait.jpg", "speech.wav", "A person is talking with a big smile.", prefix="avatar/emotion")
    nodes = _set(nodes, "model", emotion_weights="none")
    nodes = [n for n in nodes if n[0] != "note"] + [
        ("emotion_image", "LoadImage", 1, 6, {"image": "emotion_smile.jpg"}, "Emotion reference"),
        ("emotion", "AvatarEmotionEncode", 2, 5, {"image_size": 512}, None),
        ("note", "Note", 5, 2, {"text": MODEL_NOTE + EMOTION_NOTE}, "Model files / emotion"),
    ]
    links = links + [("emotion_image", 0, "emotion", "image"), ("vae", 0, "emotion", "vae"),
                     ("emotion", 0, "sampler", "emotion")]
    return nodes, links, "Emotion reference: a face showing the wanted expression steers it (needs AEM weights)."


EMOTION_NOTE = """

Emotion: needs Audio Emotion Module (AEM) weights, a .safetensors file in models/avatar_emotion chosen in the model
loader's emotion_weights. The public HunyuanVideo-Avatar release has none: with "none" the sampler says (in the log
and on the node) that the emotion input has no effect, and renders as without it."""


def four_speakers():
    nodes, links = base("four_people.jpg", "speaker_1.flac", "Four people are talking in turn in a meeting.",
                        prefix="avatar/four")
    nodes = _set(nodes, "masks", characters=4)
    nodes = _set(nodes, "encode", start_offsets="0, 0, 0, 0")
    nodes = _retitle(nodes, "audio", "Speech of character 1 (left)")
    speakers = [(f"audio{k}", "LoadAudio", 1, k + 1, {"audio": f"speaker_{k}.flac"}, f"Speech of character {k}")
                for k in (2, 3, 4)]
    mixes = [("mix12", "AudioMerge", 3, 2, {"merge_method": "add"}, "Soundtrack: 1 + 2"),
             ("mix123", "AudioMerge", 3, 3, {"merge_method": "add"}, "Soundtrack: 1 + 2 + 3"),
             ("mix", "AudioMerge", 3, 4, {"merge_method": "add"}, "Soundtrack: all four")]
    nodes = [n for n in nodes if n[0] != "note"] + speakers + mixes + [
        ("note", "Note", 5, 2, {"text": MODEL_NOTE + FOUR_NOTE}, "Model files / four speakers")]
    links = [ln for ln in links if ln[2:] != ("video", "audio")] + [
        ("audio2", 0, "encode", "audio.audio_1"), ("audio3", 0, "encode", "audio.audio_2"),
        ("audio4", 0, "encode", "audio.audio_3"),
        ("audio", 0, "mix12", "audio1"), ("audio2", 0, "mix12", "audio2"), ("mix12", 0, "mix123", "audio1"),
        ("audio3", 0, "mix123", "audio2"), ("mix123", 0, "mix", "audio1"), ("audio4", 0, "mix", "audio2"),
        ("mix", 0, "video", "audio")]
    return nodes, links, "Four speakers: one speech track per face (left to right); a face without audio listens."


FOUR_NOTE = """

Four characters: audio_k drives character k + 1, and the detector numbers the faces LEFT TO RIGHT (with more faces
than characters, the largest are kept). Each track is that speaker alone, as long as the conversation, silent while
the others speak. Roles: disconnect a character's audio_k and that character LISTENS (Whisper's features of
silence: mouth closed, natural idle); a character after the last connected audio listens too. Where grown face boxes
overlap, 'nearest face' gives each spot to one character, so no audio drives another's face. The soundtrack is the
four tracks added (AudioMerge)."""


def _retitle(nodes: list, key: str, title: str) -> list:
    return [(k, t, c, r, w, title if k == key else ti) for k, t, c, r, w, ti in nodes]


WORKFLOWS = {
    "avatar_single_portrait": single_portrait,
    "avatar_full_body": full_body,
    "avatar_two_character_dialogue": two_character_dialogue,
    "avatar_long_clip": long_clip,
    "avatar_emotion_reference": emotion_reference,
    "avatar_four_speakers": four_speakers,
}
