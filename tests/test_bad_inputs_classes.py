"""Bad inputs of the classes issue #21 names, tried through the public core API as a new user would: each must be
refused with InputError that names the input, the value's problem and the fix, before any model call.

Classes: numbers outside physical sense (sample rates in kHz / MHz, absurd frame counts and offsets, a window
stride above the window, images and masks in the wrong unit or size, NaN pixels), training settings (zero
gradient accumulation, negative shift, dropout above 1, wrong types) and clips that are bad somewhere in a
dataset (found before step 1). The same classes through the nodes: tests/test_comfy_node_specs.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from test_sampling_loop import small_cond

from avatar_core.conditioning.audio import CharacterAudio, encode_audio, window_features
from avatar_core.conditioning.emotion import encode_emotion_image
from avatar_core.conditioning.faces import character_masks
from avatar_core.conditioning.image import official_video_size
from avatar_core.config import AvatarConfig
from avatar_core.distributed.group import ParallelConfig
from avatar_core.errors import InputError
from avatar_core.runner import LoadSpec, RandomSpec
from avatar_core.sampling import DeepCacheConfig, GuidanceConfig, SamplerConfig, WindowConfig, sample_avatar
from avatar_core.sampling.resume import ResumeConfig
from avatar_core.sampling.stepcache import StepCacheConfig
from avatar_core.train import TrainConfig, train
from avatar_core.train.data import write_clip
from avatar_core.train.synthetic import synthetic_clip, write_synthetic_folder

REPO = Path(__file__).resolve().parents[1]
NAN = float("nan")


def _never(*a: Any, **k: Any) -> Any:
    pytest.fail("a model / encoder / detector ran before the bad input was refused")


class Never(torch.nn.Module):
    def forward(self, *a: Any, **k: Any) -> Any:
        _never()


class NeverDetector:
    detect = staticmethod(_never)


LOUD = torch.full((32000,), 0.5)
IMG = torch.full((1, 64, 64, 3), 0.5)


def _nan_image() -> torch.Tensor:
    img = IMG.clone()
    img[0, 10, 10, 1] = NAN
    return img


def _cond(**changes: Any):
    cond = small_cond(100)
    for k, v in changes.items():
        setattr(cond, k, v)
    return cond


def _train(**kw: Any) -> TrainConfig:
    return TrainConfig(**{"data": "clips", "output": "run", "random_model": "tiny", "device": "cpu", **kw})


HUGE = torch.zeros(1, 1, 1, 3).expand(1, 100_000, 100_000, 3)  # a view: nothing allocated unless converted

CASES = [  # (case, call, pattern naming the input ... and the fix)
    # ------------------------------------------------ sample rates, lengths, offsets
    ("sample rate 44.1 (kHz)", lambda: encode_audio(Never(), LOUD, 44.1),
     r"sample_rate: 44\.1 looks like kHz.*= 44100 Hz.*Give the rate in Hz"),
    ("sample rate 16 (kHz, whole)", lambda: encode_audio(Never(), LOUD, 16), r"sample_rate: 16 looks like kHz.*16000 Hz"),
    ("sample rate 0.048 (MHz)", lambda: encode_audio(Never(), LOUD, 0.048), r"0\.048 looks like MHz.*48000 Hz"),
    ("sample rate 48e6", lambda: encode_audio(Never(), LOUD, 48_000_000), r"sample_rate: 48000000 is out of range.*Hz"),
    ("sample rate '16000'", lambda: encode_audio(Never(), LOUD, "16000"), r"sample_rate: expected a whole number.*Hz"),
    ("fps 0", lambda: encode_audio(Never(), LOUD, 16000, fps=0), r"fps: 0 is not one of \[25\.0, 12\.5\]"),
    ("fps 30", lambda: encode_audio(Never(), LOUD, 16000, fps=30), r"fps: 30 is not one of.*25 fps"),
    ("negative frame count", lambda: encode_audio(Never(), LOUD, 16000, num_frames=-5),
     r"num_frames: -5 is out of range.*at least one frame"),
    ("absurd frame count", lambda: encode_audio(Never(), LOUD, 16000, num_frames=10**9),
     r"num_frames: 1000000000 is out of range.*4 hours.*in parts"),
    ("frame count 2.5", lambda: encode_audio(Never(), LOUD, 16000, num_frames=2.5), r"num_frames: expected a whole"),
    ("start offset 1e12 s", lambda: CharacterAudio(LOUD, 16000, 1e12, "audio_1"),
     r"audio_1: start_s: 1000000000000\.0 is out of range.*14400.*s\..*Give where this clip starts"),
    ("start offset '2'", lambda: CharacterAudio(LOUD, 16000, "2", "audio_1"), r"audio_1: start_s: expected a number"),
    ("waveform as a list", lambda: encode_audio(Never(), [0.5] * 100, 16000), r"waveform: .*must be a torch\.Tensor"),
    ("window features fps 0", lambda: window_features(torch.zeros(20, 1, 1), 0, 3), r"fps: 0 is not one of"),
    # ------------------------------------------------ windows
    ("stride 40 > window 33", lambda: WindowConfig(33, 40), r"offset / window: the stride 40 is not less than the "
                                                            r"window 33.*below the window"),
    ("window 10**6", lambda: WindowConfig(10**6, 10), r"window: 1000000 is out of range.*latent frames.*official 33"),
    ("window 33.5", lambda: WindowConfig(33.5, 10), r"window: expected a whole number, got 33\.5"),
    # ------------------------------------------------ images and masks
    ("100000x100000 image", lambda: character_masks(HUGE, 1, NeverDetector()),
     r"image: 100000x100000 \(10000 megapixels\) is larger than.*downscale"),
    ("NaN pixels to the face detector", lambda: character_masks(_nan_image(), 1, NeverDetector()),
     r"image: holds NaN or inf pixels"),
    ("image in 0..255", lambda: character_masks(IMG * 255, 1, NeverDetector()),
     r"image: pixels must be in 0\.\.1; values reach 127\.5: this looks like 0\.\.255; divide by 255"),
    ("image in -1..1", lambda: character_masks(IMG * 2 - 1.5, 1, NeverDetector()), r"looks like -1\.\.1"),
    ("uint8 image tensor", lambda: character_masks((IMG * 255).to(torch.uint8), 1, NeverDetector()),
     r"pixels are torch\.uint8.*image\.float\(\) / 255"),
    ("channels-first image", lambda: character_masks(IMG.permute(0, 3, 1, 2), 1, NeverDetector()),
     r"channels-first.*permute\(0, 2, 3, 1\)"),
    ("uint8 mask", lambda: character_masks(IMG, 1, NeverDetector(), [torch.full((64, 64), 255, dtype=torch.uint8)]),
     r"user_masks\[0\]: mask values are torch\.uint8.*mask\.float\(\) / 255"),
    ("mask in 0..255", lambda: character_masks(IMG, 1, NeverDetector(), [torch.full((64, 64), 255.0)]),
     r"user_masks\[0\]: mask values must be in 0\.\.1; values reach 255: this looks like 0\.\.255; divide by 255"),
    ("NaN mask", lambda: character_masks(IMG, 1, NeverDetector(), [torch.full((64, 64), NAN)]),
     r"user_masks\[0\]: holds NaN"),
    ("characters '2'", lambda: character_masks(IMG, "2", NeverDetector()), r"num_characters: expected a whole number"),
    ("face scale 0", lambda: character_masks(IMG, 1, NeverDetector(), area=0), r"area: 0\.0 is out of range.*official 3\.0"),
    ("emotion image NaN", lambda: encode_emotion_image(_nan_image(), _never), r"image: holds NaN or inf pixels"),
    ("emotion size (100, 64)", lambda: encode_emotion_image(IMG, _never, size=(100, 64)),
     r"size\[0\]: 100 is not a multiple of 16"),
    ("reference of 100000 px", lambda: official_video_size(100_000, 512, 704), r"height: 100000 is out of range"),
    ("video size 700", lambda: official_video_size(512, 512, 700), r"image_size: 700 is not a multiple of 64"),
    # ------------------------------------------------ sampler settings and conditioning
    ("steps '50'", lambda: SamplerConfig(steps="50"), r"steps: expected a whole number, got '50'.*Use 50"),
    ("negative shift", lambda: SamplerConfig(shift=-5.0), r"shift: -5\.0 is out of range.*official flow shift 5\.0"),
    ("cfg as text", lambda: GuidanceConfig(cfg="7.5"), r"guidance\.cfg: expected a number, got str"),
    ("deep cache step 0", lambda: DeepCacheConfig(cached_steps=(0, 5)), r"cached_steps\[0\]: 0 is out of range.*Step 0"),
    ("step cache NaN", lambda: StepCacheConfig(threshold=NAN), r"step_cache\.threshold: got nan.*0 = off"),
    ("solver typo", lambda: SamplerConfig(solver="eular"), r"solver: 'eular' is not one of \['euler'"),
    ("face masks 0..255 in the conditioning", lambda: sample_avatar(_never, _cond(face_mask=torch.full((1, 1, 1, 2, 2),
                                                                                                      255.0))),
     r"face_mask: mask values must be in 0\.\.1.*divide by 255"),
    ("motion 1000", lambda: sample_avatar(_never, _cond(motion_exp=torch.full((1, 4), 1000))),
     r"motion_exp: got \[\[1000.*values must be between 0 and 255"),
    ("NaN noise", lambda: sample_avatar(_never, small_cond(100), noise=torch.full((1, 4, 65, 2, 2), NAN)),
     r"noise: \d+ of \d+ values are NaN.*torch\.randn"),
    ("config of the wrong type", lambda: sample_avatar(_never, small_cond(100), {"steps": 2}),
     r"config: expected .*SamplerConfig.*got dict"),
    ("resume every -1 s", lambda: ResumeConfig("dir", interval_s=-1), r"resume\.interval_s: -1\.0 is out of range"),
    # ------------------------------------------------ loader choices, GPUs
    ("swap blocks 0", lambda: LoadSpec(path="m.safetensors", offload="block_swap", swap_blocks=0),
     r"swap_blocks: 0 is out of range"),
    ("empty checkpoint path", lambda: LoadSpec(path=""), r"path: is empty"),
    ("chunk tokens 0", lambda: RandomSpec(config=AvatarConfig.tiny(), chunk_tokens=0), r"chunk_tokens: 0 is out of range"),
    ("3 GPUs for cfg", lambda: ParallelConfig.from_gpus(3, "cfg"), r"mode 'cfg' uses exactly 2 GPUs"),
    ("0 GPUs", lambda: ParallelConfig.from_gpus(0), r"gpus: 0 is out of range"),
    # ------------------------------------------------ training settings
    ("grad_accum 0", lambda: _train(grad_accum=0), r"grad_accum: 0 is out of range.*1 = no accumulation"),
    ("negative shift (training)", lambda: _train(shift=-1.0), r"shift: -1\.0 is out of range"),
    ("audio dropout 1.5", lambda: _train(audio_dropout=1.5), r"audio_dropout: 1\.5 is out of range.*between 0 and 1"),
    ("lr 0", lambda: _train(lr=0.0), r"lr: 0\.0 is out of range; it must be > 0"),
    ("steps '100'", lambda: _train(steps="100"), r"steps: expected a whole number, got '100'"),
    ("rank 0.5", lambda: _train(lora_rank=0.5), r"lora_rank: expected a whole number, got 0\.5"),
    ("optimizer sgd", lambda: _train(optimizer="sgd"), r"optimizer: 'sgd' is not one of.*adamw or adamw8bit"),
    ("device gpu", lambda: _train(device="gpu"), r"device: 'gpu' is not a device name.*cpu, cuda"),
    ("lora_blocks typo", lambda: _train(lora_blocks="doubel"), r"lora_blocks: 'doubel'.*not a block selection"),
    ("lora_layers bad regex", lambda: _train(lora_layers="(attn"), r"lora_layers: '\(attn' is not a regular expression"),
    ("both base models", lambda: _train(checkpoint="m.pt"), r"checkpoint / random_model: give exactly one"),
    ("save_every 0", lambda: _train(save_every=0), r"save_every: 0 is out of range"),
    ("gradient_checkpointing 'yes'", lambda: _train(gradient_checkpointing="yes"),
     r"gradient_checkpointing: expected True or False, got str"),
]


@pytest.mark.parametrize("case,call,message", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_clearly(case: str, call: Any, message: str) -> None:
    with pytest.raises(InputError, match=message):
        call()


@pytest.mark.parametrize("damage,message", [
    ("nan", r"clip001\.safetensors: weight latents holds NaN/inf values"),  # weight_files' check of the file
    ("mask 0..255", r"clip001\.safetensors: face_mask: mask values must be in 0\.\.1.*divide by 255"),
    ("fps 0", r"clip001\.safetensors: fps: got 0\.0; values must be > 0"),
    ("one without emotion", r"clips: 1 clips have an emotion latent and 1 do not"),
    ("none with emotion", r"clips: train_aem needs clips with an `emotion` latent; clip000\.safetensors has none"),
    ("text size", r"clip001\.safetensors: text / pooled / audio sizes .* do not match the model's"),
    ("first clip 1 frame, sampled", r"clip000\.safetensors: latent frames \(the clip that sample_every samples\): "
                                    r"1 is out of range"),
])
def test_a_bad_clip_anywhere_in_the_dataset_stops_training_before_step_1(tmp_path: Path, damage: str,
                                                                           message: str) -> None:
    """The SECOND clip is bad: found by the check of every clip before the first step, not when drawn."""
    cfg = AvatarConfig.tiny()
    emotion = damage != "none with emotion"
    data = write_synthetic_folder(tmp_path / "clips", cfg, clips=1, emotion=emotion,
                                  frames=1 if damage.startswith("first clip") else 3)
    clip = synthetic_clip(cfg, 3, 4, 6, seed=1, emotion=emotion and damage != "one without emotion", text_len=8)
    if damage == "nan":
        clip.latents[0, 0, 0, 0] = NAN
    elif damage == "mask 0..255":
        clip.face_mask = clip.face_mask * 255
    elif damage == "fps 0":
        clip.fps = torch.tensor(0.0)
    elif damage == "text size":
        clip = synthetic_clip(AvatarConfig(**{**vars(cfg), "text_dim": cfg.text_dim + 1}), 3, 4, 6, emotion=True)
    from safetensors.torch import save_file
    tensors = {k: v.contiguous() for k, v in vars(clip).items() if isinstance(v, torch.Tensor)}
    save_file(tensors, str(data / "clip001.safetensors"), metadata={"format": "hyavatar-train-clip", "version": "1"})
    config = TrainConfig(data=str(data), output=str(tmp_path / "run"), random_model="tiny", dtype="fp32", device="cpu",
                         steps=5, progress=False, train_aem=damage.endswith("emotion"),
                         sample_every=2 if damage.startswith("first clip") else 0)
    model = Never()
    model.cfg = cfg
    with pytest.raises(InputError, match=message):
        train(config, model=model)  # the stand-in model fails the test if a step runs
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_write_clip_refuses_a_bad_clip(tmp_path: Path) -> None:
    clip = synthetic_clip(AvatarConfig.tiny(), 3, 4, 6)
    clip.audio = clip.audio[:5]  # not 4T-3 rows
    with pytest.raises(InputError, match=r"x\.safetensors: latents / ref_latents / audio / face_mask / text_states: "
                                         r"audio must be \[\(N,\) 9, 10, 5, 384\]"):
        write_clip(tmp_path / "x.safetensors", clip)
    assert not (tmp_path / "x.safetensors").exists()


@pytest.mark.parametrize("argv,message", [
    (["--grad-accum", "0"], "grad_accum: 0 is out of range"),
    (["--audio-dropout", "2"], "audio_dropout: 2.0 is out of range"),
    (["--shift", "-3"], "shift: -3.0 is out of range"),
])
def test_train_cli_refuses_bad_settings_with_usage_not_a_traceback(tmp_path: Path, argv: list[str], message: str,
                                                                    capsys) -> None:
    from avatar_core.train.__main__ import main
    with pytest.raises(SystemExit) as exit_:  # argparse's error(): usage + message on stderr, status 2
        main(["--data", str(tmp_path), "--output", str(tmp_path / "run"), "--random-model", "tiny", "--device", "cpu",
              *argv])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and message in err and "usage:" in err, err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("argv,message", [
    (["--steps", "0"], "--steps: 0 is out of range"),
    (["--image-size", "700"], "--image-size: 700 is not a multiple of 64"),
    (["--workflow", "avatar_singel_portrait"], "--workflow 'avatar_singel_portrait': no such example workflow"),
])
def test_run_avatar_refuses_bad_numbers_before_starting_comfyui(argv: list[str], message: str) -> None:
    run = subprocess.run([sys.executable, str(REPO / "scripts" / "run_avatar.py"), "--smoke", *argv],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and message in run.stderr and "Traceback" not in run.stderr, run.stderr
