"""The bad-input table, core level: one test per case, each asserting the message names the input and the fix.

Classes: numbers (NaN / inf / out of range / wrong type), tensors (non-finite conditioning), a step that
produces non-finite latents, checkpoint files (ComfyUI prefix, fp8 without scales, NaN weights, pickled,
wrong content) and Whisper files (truncated, random bytes, pickled, not tiny). The same cases through a real
ComfyUI are in tests/test_comfy_bad_inputs.py.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file
from test_sampling_loop import small_cond, toy_model

from avatar_core.checkpoint_checks import first_non_finite
from avatar_core.conditioning.whisper import load_whisper_encoder
from avatar_core.config import AvatarConfig
from avatar_core.errors import InputError
from avatar_core.loading import CheckpointError, build_random_transformer, load_transformer, save_transformer
from avatar_core.model.fp8 import FP8
from avatar_core.sampling import GuidanceConfig, SamplerConfig, TextConditioning, sample_avatar
from avatar_core.specs.fields import Int, Number
from avatar_core.validation import NonFiniteLatents

NAN, INF = float("nan"), float("inf")
NEVER = lambda *a, **k: pytest.fail("the model was called before the bad input was refused")  # noqa: E731


def _config_case(**kw: Any) -> SamplerConfig:
    guidance = {k: kw.pop(k) for k in list(kw) if k in ("cfg", "late_end")}
    return SamplerConfig(steps=kw.pop("steps", 2), guidance=GuidanceConfig(**guidance), **kw)


# (case, SamplerConfig, pattern naming the input ... and the fix)
NUMBER_CASES = [
    ("cfg NaN", dict(cfg=NAN), r"cfg: got nan, which is not a finite number.*official 7\.5"),
    ("cfg inf", dict(cfg=INF), r"cfg: got inf.*official 7\.5"),
    ("cfg negative", dict(cfg=-2.0), r"cfg: -2\.0 is out of range.*between 0\.0 and 100\.0.*official 7\.5"),
    ("shift NaN", dict(shift=NAN), r"shift: got nan.*official flow shift 5\.0"),
    ("shift 0", dict(shift=0.0), r"shift: 0\.0 is out of range.*5\.0"),
    ("steps 0", dict(steps=0), r"steps: 0 is out of range.*Use 50"),
    ("seed negative", dict(seed=-1), r"seed: -1 is out of range.*2\*\*64 - 1"),
    ("seed fraction", dict(seed=1.5), r"seed: expected a whole number, got 1\.5.*2\*\*64 - 1"),
    ("guidance NaN", dict(late_end=NAN), r"guidance\.late_end: got nan.*GuidanceConfig defaults"),
]


@pytest.mark.parametrize("case,kw,message", NUMBER_CASES, ids=[c[0] for c in NUMBER_CASES])
def test_bad_sampler_number(case: str, kw: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        sample_avatar(NEVER, small_cond(100), _config_case(**kw))


def _poison(tensor: torch.Tensor, value: float = NAN) -> torch.Tensor:
    out = tensor.clone().float()
    out.view(-1)[0] = value
    return out


def _text(cond, which: str, part: str, value: float) -> None:
    text = getattr(cond, which)
    setattr(cond, which, replace(text, **{part: _poison(getattr(text, part), value)}))


TENSOR_CASES = [
    ("ref_latents NaN", lambda c: setattr(c, "ref_latents", _poison(c.ref_latents)),
     r"ref_latents: 1 of \d+ values are NaN or inf.*bf16 HunyuanVideo VAE"),
    ("audio features NaN", lambda c: setattr(c, "audio", _poison(c.audio)),
     r"audio: 1 of \d+ values.*Re-encode the audio with Avatar Audio Encode"),
    ("positive text inf", lambda c: _text(c, "text", "states", INF), r"states: 1 of \d+ values.*Re-encode the prompt"),
    ("negative pooled NaN", lambda c: _text(c, "negative_text", "pooled", NAN), r"pooled: 1 of \d+.*Re-encode"),
    ("positive text inf, changed in place", lambda c: setattr(c.text, "states", _poison(c.text.states, INF)),
     r"text\.states: 1 of \d+ values.*Re-encode the prompt"),
    ("face mask NaN", lambda c: setattr(c, "face_mask", _poison(c.face_mask)), r"face_mask.*values in 0\.\.1"),
    ("motion NaN", lambda c: setattr(c, "motion_exp", _poison(c.motion_exp)), r"motion_exp.*official: motion 30"),
    ("emotion NaN", lambda c: setattr(c, "emotion", _poison(c.emotion)), r"emotion.*Avatar Emotion Encode"),
    ("fps 0", lambda c: setattr(c, "fps", torch.tensor([0.0])), r"fps: got \[0\.0\]; values must be > 0.*official 25"),
]


@pytest.mark.parametrize("case,mutate,message", TENSOR_CASES, ids=[c[0] for c in TENSOR_CASES])
def test_non_finite_conditioning(case: str, mutate: Any, message: str) -> None:
    cond = small_cond(100, emotion=True)
    with pytest.raises(InputError, match=message):  # a replaced TextConditioning refuses itself at once
        mutate(cond)
        sample_avatar(NEVER, cond, SamplerConfig(steps=2))


def test_step_with_non_finite_latents_stops_and_says_where_and_what_to_try() -> None:
    calls = []

    def overflowing(x: torch.Tensor, t: torch.Tensor, **kw: Any) -> Any:
        calls.append(1)
        out = toy_model(x, t, **kw)
        return out * INF if len(calls) == 4 else out  # step 2, window 2 overflows

    cond = small_cond(150)  # two windows per step
    with pytest.raises(NonFiniteLatents, match=r"step 2/3, window 2/2 \(latent frames .*NaN/inf latents.*weight_dtype "
                                               r"bf16.*lower cfg \(now 7\.5\).*re-download"):
        sample_avatar(overflowing, cond, SamplerConfig(steps=3, deep_cache=replace(SamplerConfig().deep_cache,
                                                                                     enabled=False)))
    assert len(calls) == 4, "the run must stop at the first bad window"


def test_number_specs_refuse_strings_and_bools() -> None:
    with pytest.raises(ValueError, match=r"cfg: expected a number, got str '7'.*fix it"):
        Number(fix="fix it").check("cfg", "7")
    with pytest.raises(ValueError, match=r"steps: expected a whole number, got True"):
        Int(1, 10).check("steps", True)


# ---------------------------------------------------------------- checkpoint files
CFG = AvatarConfig.tiny()


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory) -> tuple[torch.nn.Module, Path]:
    model = build_random_transformer(CFG, seed=3)
    path = tmp_path_factory.mktemp("ckpt") / "avatar_tiny.safetensors"
    save_transformer(model, path)
    return model, path


def test_comfyui_prefixed_checkpoint_loads(tiny_file, tmp_path: Path) -> None:
    model, path = tiny_file
    sd = {"model.diffusion_model." + k: v for k, v in load_file(str(path)).items()}
    save_file(sd, str(tmp_path / "repackaged.safetensors"))  # no config metadata: shapes decide, as for real files
    loaded = load_transformer(tmp_path / "repackaged.safetensors", config=CFG, dtype=torch.float32)
    want = model.state_dict()
    assert all(torch.equal(v.float(), want[k].float()) for k, v in loaded.state_dict().items())


def test_fp8_safetensors_without_scales_says_what_to_load(tiny_file, tmp_path: Path) -> None:
    _, path = tiny_file
    sd = {k: (v.to(FP8) if v.dim() == 2 and "double_blocks" in k else v) for k, v in load_file(str(path)).items()}
    save_file(sd, str(tmp_path / "avatar_fp8.safetensors"))
    with pytest.raises(CheckpointError, match=r"avatar_fp8\.safetensors holds fp8 weights but no per-layer scales.*"
                                              r"weight_dtype fp8_e4m3fn") as err:
        load_transformer(tmp_path / "avatar_fp8.safetensors", config=CFG)
    assert "is missing" not in str(err.value)


@pytest.mark.parametrize("where", ["small tensor", "tail of a large tensor"])
def test_checkpoint_with_nan_weights_is_refused(tiny_file, tmp_path: Path, where: str, monkeypatch) -> None:
    _, path = tiny_file
    sd = load_file(str(path))
    key = "img_in.proj.bias" if where == "small tensor" else "double_blocks.0.img_mlp.fc1.weight"
    if where != "small tensor":
        monkeypatch.setattr("avatar_core.weight_files.SMALL", 16)  # the tiny matrix counts as large here
    sd[key] = sd[key].clone()
    sd[key].view(-1)[-1] = NAN
    save_file(sd, str(tmp_path / "damaged.safetensors"))
    with pytest.raises(CheckpointError, match=rf"damaged\.safetensors: weight {key} holds NaN/inf.*re-download it"):
        load_transformer(tmp_path / "damaged.safetensors", config=CFG)


def test_finite_check_cost_on_the_tiny_file(tiny_file) -> None:
    """Measured for the report: the sampled check's time for the tiny file and its per-tensor cost."""
    sd = load_file(str(tiny_file[1]))
    start = time.perf_counter()
    assert first_non_finite(sd) is None
    took = time.perf_counter() - start
    print(f"finite check: {len(sd)} tensors, {sum(v.numel() for v in sd.values())} elements, {1000 * took:.1f} ms")
    assert took < 5


@pytest.mark.parametrize("content,message", [
    ("pickled code", r"evil\.pt: holds pickled Python objects, which are never loaded.*\.safetensors"),
    ("tensor list", r"list\.pt: holds a list, not a state dict of named tensors.*mp_rank_00_model_states\.pt"),
    ("random bytes", r"random\.safetensors: is of no known weight format.*re-download it"),
])
def test_unusable_checkpoint_file(tmp_path: Path, content: str, message: str) -> None:
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    if content == "pickled code":
        path = tmp_path / "evil.pt"
        torch.save({"module": {"x": Evil()}}, path)
    elif content == "tensor list":
        path = tmp_path / "list.pt"
        torch.save([torch.zeros(2)], path)
    else:
        path = tmp_path / "random.safetensors"
        path.write_bytes(torch.randint(0, 256, (4096,), dtype=torch.uint8).numpy().tobytes())
    with pytest.raises(CheckpointError, match=message):
        load_transformer(path, config=CFG)


def test_checkpoint_of_another_size_names_the_file_and_the_fix(tiny_file, tmp_path: Path) -> None:
    sd = load_file(str(tiny_file[1]))
    del sd["final_layer.linear.weight"]
    save_file(sd, str(tmp_path / "partial.safetensors"))
    with pytest.raises(CheckpointError, match=r"partial\.safetensors: does not match.*missing keys.*Choose the 13B "
                                              r"Avatar DiT"):
        load_transformer(tmp_path / "partial.safetensors", config=CFG)


# ---------------------------------------------------------------- Whisper files
def _whisper_encoder_state(d_model: int, layers: int) -> dict[str, torch.Tensor]:
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder
    cfg = WhisperConfig(d_model=d_model, encoder_layers=layers, encoder_attention_heads=d_model // 64,
                        encoder_ffn_dim=4 * d_model, num_mel_bins=80, max_source_positions=1500)
    torch.manual_seed(0)
    return {"encoder." + k: v.contiguous() for k, v in WhisperEncoder(cfg).state_dict().items()}


@pytest.fixture(scope="module")
def whisper_tiny_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("whisper") / "whisper_tiny.safetensors"
    save_file(_whisper_encoder_state(384, 4), str(path))
    return path


def test_random_tiny_whisper_file_loads(whisper_tiny_file: Path) -> None:
    assert load_whisper_encoder(whisper_tiny_file).config.d_model == 384


@pytest.mark.parametrize("damage", ["truncated", "random bytes"])
def test_damaged_whisper_file(whisper_tiny_file: Path, tmp_path: Path, damage: str) -> None:
    data = whisper_tiny_file.read_bytes()
    path = tmp_path / "model.safetensors"
    path.write_bytes(data[: len(data) // 2] if damage == "truncated" else bytes(range(256)) * 64)
    told = "is truncated: its header lists" if damage == "truncated" else "is of no known weight format"
    with pytest.raises(ValueError, match=rf"Whisper file model\.safetensors: {told}.*"
                                         r"openai/whisper-tiny's model\.safetensors again"):
        load_whisper_encoder(path)


def test_pickled_whisper_file_is_never_loaded(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    folder = tmp_path / "whisper-tiny"
    folder.mkdir()
    torch.save({"encoder.conv1.weight": Evil()}, folder / "pytorch_model.bin")
    with pytest.raises(ValueError, match=r"pytorch_model\.bin: holds pickled Python objects.*Use model\.safetensors"):
        load_whisper_encoder(folder)


@pytest.mark.parametrize("name,d_model,layers", [("whisper_base", 512, 6), ("whisper_small", 768, 2)])
def test_larger_whisper_is_refused_at_load(tmp_path: Path, name: str, d_model: int, layers: int) -> None:
    path = tmp_path / f"{name}.safetensors"
    save_file(_whisper_encoder_state(d_model, layers), str(path))
    with pytest.raises(ValueError, match=rf"{name}\.safetensors: this Whisper encoder has width {d_model} and "
                                         rf"{layers} layers.*use whisper-tiny"):
        load_whisper_encoder(path)


def test_file_without_whisper_weights(tmp_path: Path) -> None:
    save_file({"conv.weight": torch.zeros(2, 2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match=r"other\.safetensors: no Whisper encoder weights.*whisper-tiny folder"):
        load_whisper_encoder(tmp_path / "other.safetensors")


def test_sampler_text_shapes_still_checked() -> None:
    cond = small_cond(100)
    cond.negative_text = TextConditioning(torch.ones(1, 4, 2), torch.ones(1, 4), torch.ones(1, 2))
    with pytest.raises(InputError, match="same shape.*pad both"):
        sample_avatar(NEVER, cond, SamplerConfig(steps=2))


def test_converter_never_overwrites_and_names_bad_arguments(tiny_file, tmp_path: Path) -> None:
    from avatar_core.convert import convert
    _, path = tiny_file
    existing = tmp_path / "mine.safetensors"
    existing.write_bytes(b"user data")
    with pytest.raises(FileExistsError, match=r"mine\.safetensors already exists; choose another name or pass "
                                              r"--overwrite"):
        convert(path, existing, config=CFG)
    assert existing.read_bytes() == b"user data"
    with pytest.raises(ValueError, match=r"out\.pt: must end in \.safetensors; give a name like out\.safetensors"):
        convert(path, tmp_path / "out.pt", config=CFG)
    with pytest.raises(InputError, match=r"dtype: 'fp16' is not one of \['bf16', 'fp8'\]. Use 'bf16'.*or 'fp8'"):
        convert(path, tmp_path / "out.safetensors", "fp16", config=CFG)


def test_unknown_fp8_mode_is_refused(tiny_file) -> None:
    with pytest.raises(ValueError, match=r"fp8='quantise': use 'auto'.*'quantize'"):
        load_transformer(tiny_file[1], config=CFG, fp8="quantise")
