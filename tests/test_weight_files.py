"""Bad weight files of every kind, tried as a new user would: each is refused with a message that names the file,
the key where there is one, what the file really is, and the fix (never blaming another file), or, where the file
is fine but oddly named (.sft, a .pt renamed), it loads. tests/test_bad_inputs.py has the older transformer /
Whisper cases; this file covers the classes of issue #21 (format by content, dtypes, NaN/inf, folders vs files,
configs that came with the weights)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from avatar_core.conditioning import saved_text
from avatar_core.conditioning.detface import DetFaceDetector
from avatar_core.conditioning.faces import find_insightface_detector
from avatar_core.conditioning.whisper import TINY_CONFIG, load_whisper_encoder, tiny_layout
from avatar_core.config import AvatarConfig
from avatar_core.errors import InputError
from avatar_core.loading import build_random_transformer, load_emotion_module, load_transformer, save_transformer
from avatar_core.lora import load_lora
from avatar_core.model.emotion import AudioEmotionModule, EmotionConfig
from avatar_core.train.data import ClipFolder, read_clip
from avatar_core.train.synthetic import write_synthetic_folder
from avatar_core.weight_files import sniff

CFG = AvatarConfig.tiny()
SHARED = Path(os.environ.get("HYAVATAR_SHARED", Path(__file__).resolve().parents[2] / "shared"))
REFERENCE = SHARED / "reference"


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/hyavatar_pwned",))


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return build_random_transformer(CFG, seed=3)


@pytest.fixture(scope="module")
def dit(model, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("dit") / "avatar.safetensors"
    save_transformer(model, path)
    return path


@pytest.fixture(scope="module")
def whisper_state() -> dict[str, torch.Tensor]:
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder
    torch.manual_seed(0)
    return {"encoder." + k: v.contiguous() for k, v in WhisperEncoder(WhisperConfig(**TINY_CONFIG)).state_dict().items()}


def _same(loaded: torch.nn.Module, want: torch.nn.Module) -> bool:
    ref = want.state_dict()
    return all(torch.equal(v.float(), ref[k].float()) for k, v in loaded.state_dict().items())


# ---------------------------------------------------------------- format by content
def test_a_sft_transformer_and_a_renamed_pt_load_by_content(model, dit, tmp_path) -> None:
    sft = tmp_path / "avatar.sft"  # an extension ComfyUI lists for safetensors
    sft.write_bytes(dit.read_bytes())
    assert _same(load_transformer(sft, dtype=torch.float32), model)
    renamed = tmp_path / "avatar_pt.safetensors"  # a torch.save file under a .safetensors name
    torch.save({"module": model.state_dict()}, renamed)
    assert sniff(renamed) == "torch"
    assert _same(load_transformer(renamed, config=CFG, dtype=torch.float32), model)


@pytest.mark.parametrize("content,told", [
    (b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 123\n", "Git LFS pointer"),
    (b"<!DOCTYPE html><html><body>Sign in</body></html>", "web page"),
    (b"", "empty file"),
    (bytes(range(256)) * 8, "no known weight format"),
])
def test_what_a_non_weight_file_really_is_is_said(tmp_path, content: bytes, told: str) -> None:
    path = tmp_path / "avatar.safetensors"
    path.write_bytes(content)
    with pytest.raises(InputError, match=rf"Avatar checkpoint avatar\.safetensors: is .*{told}.*re-download it"):
        load_transformer(path, config=CFG)


@pytest.mark.parametrize("where", ["in the tensors", "in the header"])
def test_a_truncated_safetensors_is_named_as_truncated(dit, tmp_path, where: str) -> None:
    path = tmp_path / "cut.safetensors"
    keep = dit.stat().st_size - 1000 if where == "in the tensors" else 8 + 100
    path.write_bytes(dit.read_bytes()[:keep])
    told = r"its header lists \d+ bytes of tensors" if where == "in the tensors" else r"its header alone claims \d+ bytes"
    with pytest.raises(InputError, match=rf"cut\.safetensors: is truncated: {told}.*re-download it"):
        load_transformer(path, config=CFG)


@pytest.mark.parametrize("kind", ["transformer", "whisper", "emotion", "lora", "detector"])
def test_pickled_code_is_never_run_for_any_kind(model, tmp_path, kind: str) -> None:
    marker = Path("/tmp/hyavatar_pwned")
    marker.unlink(missing_ok=True)
    path = tmp_path / "evil.pt"
    torch.save({"x": Evil()}, path)
    load = {"transformer": lambda: load_transformer(path, config=CFG),
            "whisper": lambda: load_whisper_encoder(path), "emotion": lambda: load_emotion_module(model, path),
            "lora": lambda: load_lora(path, model), "detector": lambda: DetFaceDetector(path)}[kind]
    with pytest.raises(InputError, match=r"evil\.pt: .*(pickled Python objects|torch\.save archive)"):
        load()
    assert not marker.exists(), "the pickle's code ran"


# ---------------------------------------------------------------- dtypes and NaN / inf
def test_a_whisper_file_with_integer_weights_is_refused_naming_the_key(whisper_state, tmp_path) -> None:
    sd = dict(whisper_state)
    sd["encoder.layers.1.fc1.weight"] = (sd["encoder.layers.1.fc1.weight"] * 100).to(torch.int32)
    save_file(sd, str(tmp_path / "whisper_int.safetensors"))
    with pytest.raises(InputError, match=r"Whisper file whisper_int\.safetensors: weight encoder\.layers\.1\.fc1\.weight "
                                         r"is stored as int32.*openai/whisper-tiny"):
        load_whisper_encoder(tmp_path / "whisper_int.safetensors")


def test_a_half_precision_whisper_file_loads(whisper_state, tmp_path) -> None:
    save_file({k: v.half() for k, v in whisper_state.items()}, str(tmp_path / "w16.safetensors"))
    assert load_whisper_encoder(tmp_path / "w16.safetensors").conv1.weight.dtype == torch.float32


def test_a_lora_with_an_inf_is_refused_naming_the_key(model, tmp_path) -> None:
    down, up = torch.zeros(4, 64), torch.zeros(192, 4)
    up[3, 1] = float("inf")
    save_file({"diffusion_model.double_blocks.0.img_attn_qkv.lora_down.weight": down,
               "diffusion_model.double_blocks.0.img_attn_qkv.lora_up.weight": up}, str(tmp_path / "style.safetensors"))
    with pytest.raises(InputError, match=r"LoRA file style\.safetensors: weight diffusion_model\.double_blocks\.0\."
                                         r"img_attn_qkv\.lora_up\.weight holds NaN/inf.*re-download it"):
        load_lora(tmp_path / "style.safetensors", model)


def test_a_lora_pt_renamed_to_safetensors_is_named_for_what_it_is(model, tmp_path) -> None:
    torch.save({"a.lora_down.weight": torch.zeros(4, 64)}, tmp_path / "lora.safetensors")
    with pytest.raises(InputError, match=r"lora\.safetensors: is a torch\.save archive.*whatever its \.safetensors name "
                                         r"says.*never loaded"):
        load_lora(tmp_path / "lora.safetensors", model)


def test_a_transformer_with_integer_weights_is_refused(dit, tmp_path) -> None:
    sd = load_file(str(dit))
    sd["img_in.proj.bias"] = sd["img_in.proj.bias"].to(torch.int64)
    save_file(sd, str(tmp_path / "int.safetensors"))
    with pytest.raises(InputError, match=r"int\.safetensors: weight img_in\.proj\.bias is stored as int64"):
        load_transformer(tmp_path / "int.safetensors", config=CFG)


# ---------------------------------------------------------------- the emotion module
@pytest.fixture
def aem_file(tmp_path) -> Path:
    aem = AudioEmotionModule(EmotionConfig(hidden_size=CFG.hidden_size, num_heads=2, after_double=(0,)))
    from avatar_core.loading import save_emotion_module
    save_emotion_module(aem, tmp_path / "aem.safetensors")
    return tmp_path / "aem.safetensors"


def test_a_folder_given_as_the_aem_file_is_named_a_folder(model, tmp_path) -> None:
    (tmp_path / "aem").mkdir()
    with pytest.raises(InputError, match=r"Audio Emotion Module file aem: is a folder .*one file is expected.*"
                                         r"models/avatar_emotion"):
        load_emotion_module(model, tmp_path / "aem")


@pytest.mark.parametrize("damage,told", [
    ("nan", r"weight \S+ holds NaN/inf"),
    ("other width", r"AEM width 128 does not match the loaded transformer's 64"),
    ("other depth", r"AEM layers after double blocks \[7\], but the model has"),
    ("no metadata", r"is not an Audio Emotion Module file \(its metadata format is None"),
    ("missing key", r"does not match the Audio Emotion Module its config describes: 1 missing keys"),
])
def test_a_bad_aem_file_is_blamed_not_the_transformer(model, aem_file, damage: str, told: str) -> None:
    sd = load_file(str(aem_file))
    meta = {"format": "hyavatar-aem", "config": json.dumps(
        {"hidden_size": CFG.hidden_size, "num_heads": 2, "latent_channels": 16, "patch": 2, "after_double": [0]})}
    if damage == "nan":
        key = next(iter(sd))
        sd[key] = torch.full_like(sd[key], float("nan"))
    elif damage in ("other width", "other depth"):
        cfg = json.loads(meta["config"])
        cfg.update(hidden_size=128) if damage == "other width" else cfg.update(after_double=[7])
        meta["config"] = json.dumps(cfg)
    elif damage == "no metadata":
        meta = {}
    else:
        sd.pop(next(iter(sd)))
    save_file(sd, str(aem_file), metadata=meta)
    with pytest.raises(InputError, match=r"^Audio Emotion Module file aem\.safetensors: " + told) as err:
        load_emotion_module(model, aem_file)
    assert "mp_rank_00_model_states" not in str(err.value) and "models/avatar_emotion" in str(err.value)


# ---------------------------------------------------------------- Whisper layout and config
def test_whisper_layout_is_whisper_tiny_of_the_reference() -> None:
    """Our key/shape table against the official checkpoint's (reference/whisper_tiny_keys.tsv) and its config."""
    keys, config = REFERENCE / "whisper_tiny_keys.tsv", REFERENCE / "whisper_tiny_config.json"
    if not keys.is_file():
        pytest.skip(f"reference not found at {REFERENCE} (set HYAVATAR_SHARED)")
    rows = [line.split("\t") for line in keys.read_text().splitlines()[1:]]
    official = {k.removeprefix("encoder."): tuple(json.loads(shape)) for k, shape, *_ in rows if k.startswith("encoder.")}
    assert tiny_layout() == official
    stated = next(v for k, v in json.loads(config.read_text()).items() if k.startswith("config"))
    assert {k: stated[k] for k in TINY_CONFIG} == TINY_CONFIG


@pytest.mark.parametrize("change,told", [
    ({"d_model": 512, "encoder_layers": 6, "encoder_attention_heads": 8, "encoder_ffn_dim": 2048}, "looks like base"),
    ({"encoder_attention_heads": 8}, r"encoder_attention_heads 8 \(whisper-tiny: 6\)"),
    ({"activation_function": "relu"}, "activation_function 'relu'"),
    ({"model_type": "wav2vec2"}, "config of a 'wav2vec2' model"),
])
def test_a_config_of_another_model_is_refused_not_used(whisper_state, tmp_path, change: dict, told: str) -> None:
    folder = tmp_path / "whisper-tiny"
    folder.mkdir()
    save_file(whisper_state, str(folder / "model.safetensors"))
    assert load_whisper_encoder(folder).config.encoder_attention_heads == 6  # no config.json: fine
    (folder / "config.json").write_text(json.dumps({"model_type": "whisper", **TINY_CONFIG, "vocab_size": 51864}))
    load_whisper_encoder(folder)  # tiny.en's config (another vocabulary, the same encoder): fine
    (folder / "config.json").write_text(json.dumps({"model_type": "whisper", **TINY_CONFIG, **change}))
    with pytest.raises(InputError, match=rf"Whisper config config\.json: .*{told}.*whisper-tiny's config\.json"):
        load_whisper_encoder(folder)


def test_a_whisper_file_missing_a_layer_key(whisper_state, tmp_path) -> None:
    sd = {k: v for k, v in whisper_state.items() if k != "encoder.layers.2.fc2.bias"}
    save_file(sd, str(tmp_path / "w.safetensors"))
    with pytest.raises(InputError, match=r"w\.safetensors: does not match whisper-tiny's encoder: 1 missing keys "
                                         r"\(e\.g\. \['layers\.2\.fc2\.bias'\]\)"):
        load_whisper_encoder(tmp_path / "w.safetensors")


# ---------------------------------------------------------------- face detectors
class _Net(torch.nn.Module):
    def forward(self, x: torch.Tensor, grids: list[torch.Tensor]) -> torch.Tensor:
        return torch.zeros(1, 0, 16)


def test_a_renamed_torchscript_detector_loads_and_an_onnx_is_named(tmp_path) -> None:
    renamed = tmp_path / "detface.safetensors"
    torch.jit.script(_Net()).save(str(renamed))
    assert sniff(renamed) == "torchscript" and DetFaceDetector(renamed).detect(
        __import__("numpy").zeros((64, 64, 3), "uint8")) == []
    onnx = tmp_path / "det_10g.pt"
    onnx.write_bytes(b"\x08\x07\x12\x07pytorch\x1a\x032.0")
    with pytest.raises(InputError, match=r"face detector det_10g\.pt: is an ONNX model, not a TorchScript archive.*"
                                         r"ckpts/det_align/detface\.pt"):
        DetFaceDetector(onnx)
    with pytest.raises(InputError, match=r"face detector det: is a folder"):
        (tmp_path / "det").mkdir()
        DetFaceDetector(tmp_path / "det")


def test_insightface_pack_folder_versus_file(tmp_path) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "buffalo_l").write_bytes(b"\x08\x07\x12\x07pytorch")  # the .onnx put where the folder goes
    with pytest.raises(InputError, match=r"InsightFace model pack buffalo_l: is a file \(an ONNX model\), but an "
                                         r"InsightFace pack is a folder.*models/insightface/models/<pack>/"):
        find_insightface_detector(tmp_path, "buffalo_l")
    (tmp_path / "models" / "buffalo_l").unlink()
    (tmp_path / "models" / "buffalo_l").mkdir()
    (tmp_path / "models" / "buffalo_l" / "det_10g.onnx").write_text("version https://git-lfs.github.com/spec/v1\n")
    with pytest.raises(InputError, match=r"det_10g\.onnx: is a Git LFS pointer"):
        find_insightface_detector(tmp_path, "buffalo_l")


# ---------------------------------------------------------------- caches and saved conditioning
def test_training_clips_are_all_checked_before_training(tmp_path) -> None:
    folder = write_synthetic_folder(tmp_path / "set", CFG, clips=3)
    last = sorted(folder.glob("*.safetensors"))[-1]
    sd, meta = load_file(str(last)), None
    from safetensors import safe_open
    with safe_open(str(last), "pt") as f:
        meta = f.metadata()
    sd["audio"] = sd["audio"].clone()
    sd["audio"].view(-1)[5] = float("nan")
    save_file(sd, str(last), metadata=meta)
    with pytest.raises(InputError, match=rf"training clip cache {last.name}: weight audio holds NaN/inf.*Avatar "
                                         r"Training Clip node"):
        ClipFolder(folder)  # the last clip: found at the start, not when the trainer first draws it
    sd["audio"] = torch.zeros_like(sd["audio"], dtype=torch.int16)
    save_file(sd, str(last), metadata=meta)
    with pytest.raises(InputError, match=r"weight audio is stored as int16"):
        read_clip(last)


def test_saved_conditioning_with_nan_states_is_refused(tmp_path) -> None:
    mask = torch.zeros(1, 831, dtype=torch.int64)
    mask[:, :30] = 1
    mask[:, 256:] = 1
    prompt = (torch.randn(1, 831, 8), mask, torch.randn(1, 4))
    path = saved_text.write_new(tmp_path, "p", prompt, prompt)
    sd = load_file(str(path))
    sd["neg.pooled"][0, 2] = float("-inf")
    save_file(sd, str(path), metadata={"format": saved_text.FORMAT, "version": saved_text.VERSION})
    with pytest.raises(InputError, match=r"Avatar conditioning file p_00001\.safetensors: weight neg\.pooled holds "
                                         r"NaN/inf.*Avatar Save Conditioning"):
        saved_text.read(path)
