"""Run by tests/test_comfy_node_specs.py in ComfyUI's Python: every node widget's range is its spec's, and bad
inputs given to the nodes' execute() (as an API prompt can: NaN, kHz, 0..255 masks, ...) are refused naming the
input and the fix before any model, encoder or VAE is touched (those are None or stand-ins that fail).

    python tests/comfy_node_specs_check.py COMFYUI_PATH REPO   -> prints NODE_SPECS_OK
"""

from __future__ import annotations

import importlib
import re
import sys
import types

comfy_path, repo = sys.argv[1:3]
sys.path[:0] = [comfy_path, repo]
import comfy.cli_args  # noqa: E402

comfy.cli_args.args.cpu = True  # this machine has no GPU
import torch  # noqa: E402
from comfy_api.latest import io  # noqa: E402

pkg = types.ModuleType("hyavatar_pack")
pkg.__path__ = [repo]
sys.modules["hyavatar_pack"] = pkg
C = importlib.import_module("hyavatar_pack.avatar_core.specs.concepts")
nodes = {m: importlib.import_module(f"hyavatar_pack.nodes.{m}") for m in
         ("sampler", "audio", "faces", "emotion", "resume", "training", "text", "loaders", "lora")}
AudioFeatures = importlib.import_module("hyavatar_pack.nodes.convert").AudioFeatures
importlib.import_module("hyavatar_pack.nodes.paths").register_folders()  # what the extension does at start

# Every number widget of every node and the spec it is read from (a new widget must be added here).
WIDGETS = {
    ("AvatarLongVideo", "window"): C.WINDOW, ("AvatarLongVideo", "stride"): C.WINDOW_STRIDE,
    ("AvatarLongVideo", "shift"): C.WINDOW_STRIDE, ("AvatarSampler", "image_size"): C.VIDEO_SIZE,
    ("AvatarSampler", "steps"): C.STEPS, ("AvatarSampler", "cfg"): C.CFG, ("AvatarSampler", "shift"): C.FLOW_SHIFT,
    ("AvatarSampler", "seed"): C.SEED, ("AvatarSampler", "motion_exp"): C.MOTION,
    ("AvatarSampler", "motion_pose"): C.MOTION, ("AvatarSampler", "step_cache"): C.STEP_CACHE_THRESHOLD,
    ("AvatarAudioEncode", "duration"): C.DURATION, ("AvatarFaceMasks", "characters"): C.CHARACTERS,
    ("AvatarFaceMasks", "face_scale"): C.FACE_SCALE, ("AvatarFaceMasks", "image_size"): C.VIDEO_SIZE,
    ("AvatarEmotionEncode", "image_size"): C.EMOTION_SIZE,
    ("AvatarResume", "every_minutes"): C.RESUME_MINUTES, ("AvatarTrainingClip", "image_size"): C.VIDEO_SIZE,
    ("AvatarTextEncode", "image_size"): C.VIDEO_SIZE, ("AvatarModelLoader", "swap_blocks"): C.SWAP_BLOCKS,
    ("AvatarModelLoader", "gpus"): C.GPUS, ("AvatarInsightFaceLoader", "det_size"): C.DETECTOR_SIZE,
    ("AvatarLoraLoader", "strength"): C.LORA_STRENGTH,
    ("AvatarTrainingDatasetFromFolder", "clip_frames"): C.CLIP_FRAMES,
    ("AvatarTrainingDatasetFromFolder", "image_size"): C.VIDEO_SIZE,
    ("AvatarTrainingDatasetFromFolder", "max_clips"): C.MAX_CLIPS,
    ("AvatarTrainingDatasetFromFolder", "min_side"): C.MIN_SIDE,
}
NODE_CLASSES = [obj for mod in nodes.values() for obj in vars(mod).values()
                if isinstance(obj, type) and issubclass(obj, io.ComfyNode) and obj is not io.ComfyNode
                and obj.__module__ == mod.__name__]
seen = set()
for cls in NODE_CLASSES:
    schema = cls.define_schema()
    for inp in schema.inputs:
        if isinstance(inp, (io.Int.Input, io.Float.Input)):
            key = (schema.node_id, inp.id)
            assert key in WIDGETS, f"{key}: a number widget without a spec; read its min/max from avatar_core/specs"
            spec = WIDGETS[key]
            if key == ("AvatarModelLoader", "gpus"):  # its max is the GPUs this machine has
                assert inp.min == spec.ui_min, (key, inp.min)
            else:
                assert (inp.min, inp.max) == (spec.ui_min, spec.ui_max), (key, inp.min, inp.max, spec)
            seen.add(key)
assert seen == set(WIDGETS), set(WIDGETS) - seen

NAN, INF = float("nan"), float("inf")
IMG = torch.full((1, 64, 64, 3), 0.5)
NAN_IMG = IMG.clone()
NAN_IMG[0, 3, 3, 0] = NAN
HUGE = torch.zeros(1, 1, 1, 3).expand(1, 100_000, 100_000, 3)
LOUD = torch.full((1, 1, 32000), 0.5)
FEATS = AudioFeatures(torch.zeros(1, 100, 10, 5, 384), 25.0)


def audio(**kw):
    return {"audio_0": {"waveform": LOUD, "sample_rate": 16000, **kw}}


def encode(**kw):
    args = dict(whisper=None, audio=audio(), start_offsets="0", fps="25", duration=0.0) | kw
    return nodes["audio"].AvatarAudioEncode.execute(**args)


def sample(**kw):
    args = dict(model=None, positive=None, negative=None, image=IMG, vae=None, audio_features=FEATS) | kw
    return nodes["sampler"].AvatarSampler.execute(**args)


def masks(**kw):
    return nodes["faces"].AvatarFaceMasks.execute(**(dict(image=IMG, characters=1, face_scale=3.0) | kw))


CASES = [
    ("stride 40 > window 33", lambda: nodes["sampler"].AvatarLongVideo.execute(33, 40),
     r"the stride 40 is not less than the window 33"),
    ("window NaN", lambda: nodes["sampler"].AvatarLongVideo.execute(NAN), r"window: expected a whole number, got nan"),
    ("audio at 44.1 (kHz)", lambda: encode(audio=audio(sample_rate=44.1)),
     r"audio_0 \(character 1\): sample_rate: 44\.1 looks like kHz.*44100 Hz"),
    ("audio NaN", lambda: encode(audio=audio(waveform=torch.full((1, 1, 32000), NAN))), r"audio_0.*NaN or inf samples"),
    ("audio not AUDIO", lambda: encode(audio={"audio_0": torch.zeros(3)}), r"audio_0: expected ComfyUI AUDIO"),
    ("start offset 1e12", lambda: encode(start_offsets="1e12"), r"start_offsets: value 1 \('1e12'\): .*out of range"),
    ("duration 1e9", lambda: encode(duration=1e9), r"duration: 1000000000\.0 is out of range.*4 hours"),
    ("duration NaN", lambda: encode(duration=NAN), r"duration: got nan.*0 = as long as the audio"),
    ("duration 0.001 s", lambda: encode(duration=0.001), r"duration: 0\.001 s is shorter than one video frame"),
    ("fps 30", lambda: encode(fps="30"), r"fps: '30' is not one of \['25', '12\.5'\]"),
    ("masks: NaN image", lambda: masks(image=NAN_IMG), r"image: holds NaN or inf pixels"),
    ("masks: 100000x100000 image", lambda: masks(image=HUGE), r"image: 100000x100000.*larger than"),
    ("masks: image 0..255", lambda: masks(image=IMG * 255), r"image: pixels must be in 0\.\.1.*divide by 255"),
    ("masks: uint8 mask", lambda: masks(masks={"mask_0": torch.full((1, 64, 64), 255, dtype=torch.uint8)}),
     r"user_masks\[0\]: mask values are torch\.uint8.*/ 255"),
    ("masks: mask 0..255", lambda: masks(masks={"mask_0": torch.full((1, 64, 64), 255.0)}),
     r"user_masks\[0\]: mask values must be in 0\.\.1.*divide by 255"),
    ("masks: face_scale inf", lambda: masks(face_scale=INF), r"face_scale: got inf.*official 3\.0"),
    ("masks: characters 0", lambda: masks(characters=0), r"characters: 0 is out of range"),
    ("emotion: NaN image", lambda: nodes["emotion"].AvatarEmotionEncode.execute(NAN_IMG, None, 512), r"image: holds NaN"),
    ("emotion: size 100", lambda: nodes["emotion"].AvatarEmotionEncode.execute(IMG, None, 100),
     r"image_size: 100 is out of range|image_size: 100 is not a multiple of 64"),
    ("resume: minutes NaN", lambda: nodes["resume"].AvatarResume.execute("output", NAN), r"every_minutes: got nan"),
    ("resume: minutes -1", lambda: nodes["resume"].AvatarResume.execute("output", -1.0),
     r"every_minutes: -1\.0 is out of range"),
    ("sampler: cfg NaN", lambda: sample(cfg=NAN), r"cfg: got nan.*Avatar Sampler's cfg widget"),
    ("sampler: steps 0", lambda: sample(steps=0), r"steps: 0 is out of range.*Avatar Sampler's steps widget"),
    ("sampler: seed -1", lambda: sample(seed=-1), r"seed: -1 is out of range"),
    ("sampler: motion 300", lambda: sample(motion_exp=300), r"motion_exp: 300 is out of range"),
    ("sampler: image 0..255", lambda: sample(image=IMG * 255), r"image: pixels must be in 0\.\.1"),
    ("sampler: masks 0..255", lambda: sample(character_masks=torch.full((1, 64, 64), 255.0)),
     r"character_masks: mask values must be in 0\.\.1.*divide by 255"),
    # Combo values an API prompt can replace with any string: refused before the VAE (None here) is touched.
    ("sampler: noise unknown", lambda: sample(noise="gpu"), r"noise: 'gpu' is not one of \['cpu', 'official'\]"),
    ("sampler: solver unknown", lambda: sample(solver="heun"), r"solver: 'heun' is not one of \['euler'"),
    ("sampler: reference_encode unknown", lambda: sample(reference_encode="tiled"),
     r"reference_encode='tiled': choose one of \['comfyui', 'official'\]"),
    ("training clip: NaN frames", lambda: nodes["training"].AvatarTrainingClip.execute(
        NAN_IMG, FEATS, None, None, "c", "d", 704), r"frames: holds NaN"),
    ("training clip: empty name", lambda: nodes["training"].AvatarTrainingClip.execute(
        IMG, FEATS, None, None, " ", "d", 704), r"name: is empty"),
    ("text: image 0..255", lambda: nodes["text"].AvatarTextEncode.execute(
        None, "a", "b", True, clip_vision=object(), image=IMG * 255), r"image: pixels must be in 0\.\.1"),
    ("text: prompt not text", lambda: nodes["text"].AvatarTextEncode.execute(
        None, 5, "b", True, clip_vision=object(), image=IMG), r"prompt: expected text, got int"),
    ("LoRA strength NaN", lambda: nodes["lora"].AvatarLoraLoader.execute(None, "x.safetensors", NAN),
     r"strength: got nan.*Avatar LoRA's strength"),
    ("detector det_size 100", lambda: nodes["loaders"].AvatarInsightFaceLoader.execute("x", "CPU", 100),
     r"det_size: 100 is out of range"),
    ("loader gpus 0", lambda: nodes["loaders"].AvatarModelLoader.execute("x", "bf16", "auto", gpus=0),
     r"gpus: 0 is out of range"),
]

failures = []
for name, call, pattern in CASES:
    try:
        call()
        failures.append(f"{name}: accepted")
    except ValueError as e:  # InputError (a ValueError) of the pack's own module
        if type(e).__name__ != "InputError" or not re.search(pattern, str(e), re.S):
            failures.append(f"{name}: {type(e).__name__}: {e}")
    except Exception as e:  # noqa: BLE001 (a raw error is a failure of this check)
        failures.append(f"{name}: {type(e).__name__}: {e}")
assert not failures, "\n".join(failures)
print(f"{len(seen)} widgets, {len(CASES)} bad inputs")
print("NODE_SPECS_OK")
