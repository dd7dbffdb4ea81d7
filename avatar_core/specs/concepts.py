"""The pack's input concepts, each declared once: core configs, CLIs and nodes check (and size widgets) with these.

Tensor concepts (IMAGE, MASK, WAVEFORM, latents) are in specs/tensors.py (they need torch); choices whose
options are a registry (solvers, attention kernels, weight formats) are declared beside their registry.
"""

from __future__ import annotations

import re

from .fields import Choice, Int, Number, SampleRate, Text

# ------------------------------------------------------------------ sampling
STEPS = Int(1, 10_000, unit="steps", widget=(1, 200), fix="Use 50 (official) or fewer for drafts.")
FLOW_SHIFT = Number(0.0, 1e4, above=True, widget=(0.0, 20.0),
                    fix="Use the official flow shift 5.0 (the trainer's default is 7.0).")
SEED_MAX = 2**64 - 1  # torch.Generator.manual_seed accepts 0 .. 2**64 - 1
SEED = Int(0, SEED_MAX, fix="Use a seed between 0 and 2**64 - 1.")
CFG = Number(0.0, 100.0, widget=(1.0, 20.0),
             fix="Use the official 7.5 (1 = no guidance; a negative scale pushes the video away from the prompt).")
GUIDANCE_SCALE = Number(0.0, 100.0, fix="Keep the official GuidanceConfig defaults.")
MASK_SCALE = Number(0.0, 100.0, fix="Keep the official face-mask factors (0.6 early, 1.0 late).")
SWITCH_STEP = Int(0, 10_000, fix="The official audio-only guidance starts at step 10.")
MAX_WINDOW = 256  # latent frames per call (1021 video frames): activations grow with it, the official is 33
WINDOW = Int(2, MAX_WINDOW, unit="latent frames", widget=(2, 64),
             fix="Use the official 33 (129 video frames), what the model was trained on.")
WINDOW_STRIDE = Int(0, MAX_WINDOW - 1, unit="latent frames", widget=(0, 63),
                    fix="Use the official 10: the window grid moves this much per step, less than one window.")
STEP_CACHE_THRESHOLD = Number(0.0, None, widget=(0.0, 2.0), fix="0 = off; start low (e.g. 0.05).")
STEP_CACHE_SKIPS = Int(0, 1000, fix="Keep 3: a computed call at least every 4 calls.")
FRACTION = Number(0.0, 1.0, fix="Give a fraction of the steps between 0 and 1.")
DEEP_CACHE_INTERVAL = Int(1, 1000, unit="steps", fix="The official plan runs one step in 5 fully.")
MOTION = Int(0, 255, fix="Official: motion_exp 30, motion_pose 25 (lower = calmer).")

# ------------------------------------------------------------------ audio and video length
SAMPLE_RATE = SampleRate(4000, 768_000, unit="Hz",
                         fix="Give the rate in Hz, e.g. 16000, 44100 or 48000 (ComfyUI's AUDIO sample_rate).")
VIDEO_FPS = Choice((25.0, 12.5), fix="The model was trained on 25 fps (12.5 also works, as in the official code); "
                                     "resample the video afterwards if needed.")
MAX_VIDEO_SECONDS = 4 * 3600  # audio features of one character take ~1.4 GB per hour of video: longer, in parts
MAX_FRAMES = int(MAX_VIDEO_SECONDS * VIDEO_FPS.values()[0])
FRAME_COUNT = Int(1, MAX_FRAMES, unit="video frames",
                  fix="Give at least one frame; videos longer than 4 hours are rendered in parts.")
START_OFFSET = Number(0.0, MAX_VIDEO_SECONDS, unit="s",
                      fix="Give where this clip starts in the video, in seconds (e.g. 0 or 2.5; at most 4 hours).")
DURATION = Number(0.0, MAX_VIDEO_SECONDS, unit="s", widget=(0.0, 3600.0),
                  fix="Give the video length in seconds (0 = as long as the audio; at most 4 hours).")
CHARACTERS = Int(1, 64, widget=(1, 8), fix="Give one per speaking character (one audio and one mask each).")

# ------------------------------------------------------------------ images and faces
VIDEO_SIZE = Int(64, 2048, unit="px", multiple=64, widget=(128, 1280),
                 fix="The video's short side: official 704 (sides are multiples of 64).")
EMOTION_SIZE = Int(64, 2048, unit="px", multiple=64, widget=(128, 1024),
                   fix="The emotion image's short side (512 keeps the emotion tokens cheap).")
FACE_SCALE = Number(0.0, 16.0, above=True, widget=(1.0, 8.0),
                    fix="The face box is grown this many times (official 3.0) so the mask covers the moving head.")
DETECTOR_SIZE = Int(128, 1280, unit="px", multiple=32, fix="InsightFace's default is 640.")
LORA_STRENGTH = Number(-100.0, 100.0, widget=(-4.0, 4.0), fix="1 = the LoRA as trained, 0 = off.")

# ------------------------------------------------------------------ runs, checkpoints, GPUs
RESUME_INTERVAL = Number(0.0, 7 * 24 * 3600.0, unit="s", fix="Seconds between resume checkpoints (0: every step).")
RESUME_MINUTES = Number(0.0, 600.0, unit="minutes", fix="Minutes between checkpoints (default 10; 0: every step).")
SWAP_BLOCKS = Int(1, 1000, unit="blocks", widget=(1, 59),
                  fix="How many of the model's blocks stream from RAM with offload = block_swap (e.g. 20).")
CHUNK_TOKENS = Int(1, 2**24, unit="tokens", fix="Official-size runs use 16384 (low memory: 4096).")
GPUS = Int(1, 64, fix="Give how many GPUs to use (1: this process).")
DEGREE = Int(1, 64, fix="Parallel degrees multiply to the number of GPUs.")

# ------------------------------------------------------------------ training
TRAIN_STEPS = Int(1, 10**8, unit="steps", fix="Give how many optimizer steps to train (e.g. 1000).")
LEARNING_RATE = Number(0.0, 1.0, above=True, fix="LoRA learning rates are around 1e-4 (default 2e-4).")
WEIGHT_DECAY = Number(0.0, 1.0, fix="AdamW weight decay, default 0.01.")
GRAD_ACCUM = Int(1, 4096, unit="micro-steps", fix="1 = no accumulation; each step averages this many clips.")
GRAD_NORM = Number(0.0, 1e6, fix="Gradient-norm clipping, default 1.0 (0 = off).")
PROBABILITY = Number(0.0, 1.0, fix="Give a probability between 0 and 1 (default 0.1).")
LORA_RANK = Int(1, 4096, fix="Common ranks are 16..128 (default 32).")
LORA_ALPHA = Number(0.0, 1e6, above=True, fix="Usually equal to the rank (default 32).")
EVERY = Int(1, None, unit="steps", fix="Give a positive number of steps.")
EVERY_OR_OFF = Int(0, None, unit="steps", fix="Give a number of steps (0 = off).")
AEM_EVERY = Int(1, 1000, unit="blocks", fix="One emotion layer after every n-th double block (default 2).")
BATCH_SIZE = Int(1, 4096, unit="clips", fix="Clips per micro-step, all of one aspect-ratio bucket (default 1).")
LR_WARMUP = Int(0, 10**8, unit="steps", fix="Steps of linear warmup to the learning rate (0 = none).")
LR_SCHEDULE = Choice(("constant", "cosine"), fix="constant, or cosine (down to zero at the last step).")
CLIP_FRAMES = Int(5, 4 * MAX_WINDOW - 3, unit="video frames", widget=(5, 257),
                  fix="Frames per training clip, 4k+1: 33 (1.3 s at 25 fps), 65, or 129 (the sampler's window).")
MAX_CLIPS = Int(0, 10**6, unit="clips", fix="Clips per video at most (0 = as many as fit).")
MIN_SIDE = Int(0, 8192, unit="px", fix="Videos whose shorter side is smaller are skipped (default 256).")
CAPTION = Text(nonempty=True, fix="Give the caption of videos without a <name>.txt, e.g. 'A person is talking.'")
TRAIN_BLOCK_SWAP = Int(0, 1000, unit="blocks",
                       fix="Blocks whose weights stream from CPU memory during training (0 = none; 13B has 60).")
NAME = Text(nonempty=True, fix="Give a name.")
PATH = Text(nonempty=True, paths=True, fix="Give a file or folder path.")
_BLOCKS = re.compile(r"(all|double|single)(:\d+(-\d+)?)?")


def _blocks_problem(text: str) -> str:
    bad = [p.strip() for p in text.split(",") if p.strip() and not _BLOCKS.fullmatch(p.strip())]
    return f"{bad[0]!r} in {text!r} is not a block selection" if bad else ""


def _regex_problem(text: str) -> str:
    try:
        re.compile(text)
    except re.error as e:
        return f"{text!r} is not a regular expression ({e})"
    return ""


LORA_BLOCKS = Text(nonempty=True, validate=_blocks_problem,
                   fix="Use all, double, single, or ranges such as double:0-9,single:20-39.")
LORA_LAYERS = Text(nonempty=True, validate=_regex_problem,
                   fix="Give a regular expression on the linear's name inside a block, e.g. '.*attn.*|linear1'.")
