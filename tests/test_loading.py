"""Checkpoint formats: official .pt, official fp8 .pt + map, our safetensors; bad files; the AEM file."""

from __future__ import annotations

import pytest
import torch
from test_model import call, tiny_inputs

from avatar_core.config import AvatarConfig
from avatar_core.convert import convert
from avatar_core.loading import (
    CheckpointError,
    build_random_transformer,
    load_emotion_module,
    load_transformer,
    save_emotion_module,
    save_transformer,
)
from avatar_core.model.emotion import AudioEmotionModule, EmotionConfig
from avatar_core.model.fp8 import FP8, FP8Linear, fp8_linear_names

CFG = AvatarConfig.tiny()


@pytest.fixture(scope="module")
def ref_model():
    return build_random_transformer(CFG, seed=7)


@pytest.fixture(scope="module")
def official_pt(tmp_path_factory, ref_model):
    path = tmp_path_factory.mktemp("ckpt") / "mp_rank_00_model_states.pt"
    torch.save({"module": ref_model.state_dict()}, path)
    return path


def test_official_pt_loads_and_round_trips_through_safetensors(tmp_path, ref_model, official_pt):
    m = load_transformer(official_pt, config=CFG, dtype=torch.float32)
    inp = tiny_inputs()
    assert torch.equal(call(m, inp), call(ref_model, inp))
    save_transformer(m, tmp_path / "avatar.safetensors")
    m2 = load_transformer(tmp_path / "avatar.safetensors", dtype=torch.float32)  # config from metadata
    assert m2.cfg == CFG
    assert all(torch.equal(a, b) for a, b in zip(m2.state_dict().values(), ref_model.state_dict().values()))
    # safetensors tensors are not 64-byte aligned, so CPU kernels may differ in the last bit
    assert torch.allclose(call(m2, inp), call(ref_model, inp), atol=1e-6, rtol=1e-6)


def test_converter_writes_bf16_and_fp8_safetensors(tmp_path, ref_model, official_pt):
    bf16 = load_transformer(convert(official_pt, tmp_path / "a_bf16.safetensors", "bf16", config=CFG), dtype=torch.bfloat16)
    fp8 = load_transformer(convert(official_pt, tmp_path / "a_fp8.safetensors", "fp8", config=CFG), dtype=torch.bfloat16)
    assert bf16.double_blocks[0].img_mlp.fc1.weight.dtype == torch.bfloat16
    assert bf16.audio_proj.proj1.weight.dtype == torch.float32          # official fp32 modules stay fp32
    assert fp8.double_blocks[0].img_mlp.fc1.weight.dtype == FP8
    assert (tmp_path / "a_fp8.safetensors").stat().st_size < 0.8 * (tmp_path / "a_bf16.safetensors").stat().st_size
    inp = tiny_inputs()
    a, b, ref = call(bf16, inp), call(fp8, inp), call(ref_model, inp)
    assert (a - ref).abs().mean() < 0.05 * ref.abs().mean() and (b - ref).abs().mean() < 0.1 * ref.abs().mean()


def _official_fp8_files(tmp_path, ref_model):
    """Build an fp8 checkpoint the way the official one is laid out: fp8 block linears + {'module': scales}."""
    sd = dict(ref_model.state_dict())
    scales = {}
    for name in fp8_linear_names(ref_model):
        w = sd[name + ".weight"]
        scales[name] = (w.abs().max() / 448.0).to(torch.bfloat16)
        sd[name + ".weight"] = (w / scales[name].float()).to(FP8)
    pt = tmp_path / "mp_rank_00_model_states_fp8.pt"
    torch.save({"module": sd}, pt)
    torch.save({"module": scales}, tmp_path / "mp_rank_00_model_states_fp8_map.pt")
    return pt, sd, scales


def test_fp8_checkpoint_equals_dequantised_reference(tmp_path, ref_model):
    pt, sd, scales = _official_fp8_files(tmp_path, ref_model)
    deq = {k: (v.float() * scales[k[:-7]].float() if v.dtype == FP8 else v) for k, v in sd.items()}
    reference = build_random_transformer(CFG, seed=0)
    reference.load_state_dict(deq)
    kept = load_transformer(pt, config=CFG, dtype=torch.float32)            # fp8 kept, dequantised per call
    assert isinstance(kept.double_blocks[0].img_attn_qkv, FP8Linear)
    assert kept.double_blocks[0].img_attn_qkv.weight.dtype == FP8
    dense = load_transformer(pt, config=CFG, dtype=torch.float32, fp8="dequant")
    inp = tiny_inputs()
    want = call(reference, inp)
    assert torch.allclose(call(kept, inp), want, atol=1e-5, rtol=1e-5)
    assert torch.allclose(call(dense, inp), want, atol=1e-5, rtol=1e-5)
    # fp8 really lost precision against the bf16/fp32 original (the test is not vacuous)
    assert not torch.allclose(want, call(ref_model, inp), atol=1e-5)


def test_fp8_without_map_names_the_missing_file(tmp_path, ref_model):
    pt, _, _ = _official_fp8_files(tmp_path, ref_model)
    (tmp_path / "mp_rank_00_model_states_fp8_map.pt").unlink()
    with pytest.raises(CheckpointError, match="mp_rank_00_model_states_fp8_map.pt"):
        load_transformer(pt, config=CFG)


def test_plain_hunyuanvideo_checkpoint_is_refused(tmp_path, ref_model):
    sd = {k: v for k, v in ref_model.state_dict().items()
          if not k.startswith(("audio_", "ref_in", "before_proj", "motion_", "fps_proj"))}
    path = tmp_path / "hunyuan_video_t2v.pt"
    torch.save(sd, path)
    with pytest.raises(CheckpointError, match="hunyuan_video_t2v.pt.*not HunyuanVideo-Avatar.*audio_proj"):
        load_transformer(path, config=CFG)


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_truncated_file_is_refused_with_its_name(tmp_path, ref_model, suffix):
    path = tmp_path / f"broken{suffix}"
    if suffix == ".pt":
        torch.save({"module": ref_model.state_dict()}, path)
    else:
        save_transformer(ref_model, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=f"broken{suffix}"):
        load_transformer(path, config=CFG)


def test_pickled_code_is_never_executed(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))
    path = tmp_path / "evil.pt"
    torch.save({"module": {"x": Evil()}}, path)
    with pytest.raises(CheckpointError, match="evil.pt"):
        load_transformer(path, config=CFG)


def test_emotion_module_absent_or_gated_off_is_bit_identical(tmp_path, ref_model):
    inp = tiny_inputs()
    emotion = torch.randn(1, 16, 1, 4, 6)
    base = call(ref_model, inp)
    assert torch.equal(call(ref_model, inp, emotion=emotion), base)   # no AEM loaded: ignored
    aem = AudioEmotionModule(EmotionConfig(hidden_size=64, num_heads=2, after_double=(0, 2)))
    save_emotion_module(aem, tmp_path / "aem.safetensors")
    m = load_emotion_module(load_transformer_copy(ref_model), tmp_path / "aem.safetensors")
    assert torch.equal(call(m, inp, emotion=emotion), base)            # fresh AEM: gates at zero


def test_emotion_module_is_trainable_and_steers_output(ref_model):
    m = load_transformer_copy(ref_model)
    m.aem = AudioEmotionModule(EmotionConfig(hidden_size=64, num_heads=2, after_double=(0, 2)))
    inp = tiny_inputs()
    x, t = inp.pop("x"), inp.pop("t")
    out = m(x, t, **inp, emotion=torch.randn(1, 16, 1, 4, 6))
    out.square().mean().backward()
    assert all(layer.gate.grad is not None and layer.gate.grad.abs() > 0 for layer in m.aem.layers)
    with torch.no_grad():
        for layer in m.aem.layers:
            layer.gate.fill_(0.5)
    changed = call(m, dict(inp, x=x, t=t), emotion=torch.randn(1, 16, 1, 4, 6))
    assert not torch.allclose(changed, call(ref_model, dict(inp, x=x, t=t)))


def load_transformer_copy(model):
    copy = build_random_transformer(CFG, seed=0)
    copy.load_state_dict(model.state_dict())
    return copy


def test_an_official_pt_without_a_config_gets_its_shape_from_the_tensors(tmp_path):
    """The official file carries no config: every size is read from a tensor's shape. A small model with the
    official head layout (head_dim 128) and every width different, so that a size read from the wrong tensor or
    the wrong axis shows."""
    cfg = AvatarConfig(hidden_size=256, num_heads=2, depth_double=4, depth_single=3, text_dim=48,
                       text_pooled_dim=24, audio_proj_dim=40, adapter_dim=72, adapter_after_double=(1, 3))
    model = build_random_transformer(cfg, seed=3)
    path = tmp_path / "mp_rank_00_model_states.pt"
    torch.save({"module": model.state_dict()}, path)
    loaded = load_transformer(path, dtype=torch.float32)
    assert loaded.cfg == cfg
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))


@pytest.mark.parametrize("fast", [False, True])
def test_an_fp8_file_keeps_fp8_weights_with_the_asked_matmul(tmp_path, ref_model, fast):
    pt, _, _ = _official_fp8_files(tmp_path, ref_model)
    layer = load_transformer(pt, config=CFG, dtype=torch.float32, fast=fast).double_blocks[0].img_attn_qkv
    assert isinstance(layer, FP8Linear) and layer.weight.dtype == FP8 and layer.fast is fast


def test_random_weights_follow_the_documented_recipe():
    """init_random_'s rule (its docstring, the parity fixtures' rule): matrices N(0, (g / sqrt(fan_in))^2) with
    g = 0.5 for modulation layers, norm weights 1 + N(0, 0.01), other vectors N(0, 0.01); measured per group."""
    from avatar_core.loading import init_random_
    model = build_random_transformer(CFG, seed=11)
    groups: dict[str, list[torch.Tensor]] = {"mod": [], "matrix": [], "norm": [], "vector": []}
    for name, p in model.state_dict().items():
        if p.dim() >= 2:
            g = 0.5 if ("_mod." in name or "modulation" in name) else 1.0
            groups["mod" if g == 0.5 else "matrix"].append(p.float().flatten() * p[0].numel() ** 0.5 / g)
        elif "norm" in name and name.endswith("weight"):
            groups["norm"].append(p.float() - 1)
        else:
            groups["vector"].append(p.float())
    for group, std in (("mod", 1.0), ("matrix", 1.0), ("norm", 0.1), ("vector", 0.1)):
        values = torch.cat(groups[group])
        assert values.numel() > 2000, group
        assert abs(float(values.std()) / std - 1) < 0.1 and abs(float(values.mean())) < 0.1 * std, group
    again = init_random_(build_random_transformer(CFG, seed=0), 11)    # the CPU generator by default
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), model.state_dict().values()))
