"""Our LoRA arithmetic and key spellings against ComfyUI's own code (a real ComfyUI: COMFYUI_PATH / COMFYUI_PYTHON):
the same weights and LoRA tensors go through comfy.lora.load_lora + calculate_weight there and set_loras here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from avatar_core.config import AvatarConfig
from avatar_core.loading import build_random_transformer
from avatar_core.lora import load_lora, set_loras
from avatar_core.lora.format import alias_table, resolve
from avatar_core.model.linear import members

REPO = Path(__file__).resolve().parents[1]
COMFYUI_PATH = os.environ.get("COMFYUI_PATH")
pytestmark = [pytest.mark.comfy, pytest.mark.skipif(
    not COMFYUI_PATH, reason="set COMFYUI_PATH to a ComfyUI checkout (and COMFYUI_PYTHON to its Python) to run")]
CFG = AvatarConfig.tiny()
D, R = CFG.hidden_size, 4

SCRIPT = textwrap.dedent("""
    import json, sys, types
    comfy_path, tmp = sys.argv[1:3]
    sys.path.insert(0, comfy_path)
    import comfy.cli_args
    comfy.cli_args.args.cpu = True
    import torch, comfy.lora, comfy.lora_convert, comfy.model_base, comfy.ops
    from comfy.ldm.hunyuan_video.model import HunyuanVideo
    from safetensors.torch import load_file, save_file
    cases, tensors, out = json.load(open(f"{tmp}/cases.json")), load_file(f"{tmp}/inputs.safetensors"), {}
    for c in cases:
        lora = {k[len(c["name"]) + 1:]: v for k, v in tensors.items() if k.startswith(c["name"] + "/")}
        if c["bfl"]:  # ComfyUI reads lora_B.bias in its BFL-control conversion (a diff_b): run that conversion
            lora.update({"img_in.lora_A.weight": torch.zeros(1, 4), "img_in.lora_B.weight": torch.zeros(4, 1)})
            lora = comfy.lora_convert.convert_lora_bfl_control(lora)
        base = "diffusion_model." + c["base"] if c["bfl"] else c["base"]   # (the conversion adds the prefix)
        patches = comfy.lora.load_lora(lora, {base: "w.weight"})
        for key, name in (("w.weight", "weight"), ("w.bias", "bias")):
            if key in patches:
                w = tensors[c["name"] + "." + name].clone()
                out[c["name"] + "." + name] = comfy.lora.calculate_weight([(c["strength"], patches[key], 1.0, None, None)], w, key)
    save_file(out, f"{tmp}/outputs.safetensors")
    # ComfyUI's key map for its HunyuanVideo (the module names it applies a LoRA to), with the weights' shapes
    p = json.load(open(f"{tmp}/config.json"))
    net = HunyuanVideo(in_channels=16, out_channels=16, vec_in_dim=p["pooled"], context_in_dim=p["text"], hidden_size=p["D"],
                       mlp_ratio=p["mlp_ratio"], num_heads=p["heads"], depth=p["double"], depth_single_blocks=p["single"],
                       axes_dim=p["rope"], theta=256, patch_size=[1, 2, 2], qkv_bias=True, guidance_embed=False, byt5=False,
                       meanflow=False, use_cond_type_embedding=False, vision_in_dim=None, meanflow_sum=False, device="meta",
                       operations=comfy.ops.disable_weight_init)
    linears = {"diffusion_model." + n + ".weight": list(m.weight.shape) for n, m in net.named_modules()
               if isinstance(m, torch.nn.Linear)}
    fake = comfy.model_base.HunyuanVideo.__new__(comfy.model_base.HunyuanVideo)
    fake.state_dict = lambda: {k: torch.empty(s, device="meta") for k, s in linears.items()}
    fake.model_config = types.SimpleNamespace(unet_config={})
    key_map = {k: v for k, v in comfy.lora.model_lora_keys_unet(fake, {}).items() if isinstance(v, str) and v in linears}
    json.dump({"linears": linears, "key_map": key_map}, open(f"{tmp}/names.json", "w"))
    print("COMFY_LORA_MATH_OK")
""")


def _r(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 0.3


def _cases() -> list[tuple[dict, dict[str, torch.Tensor]]]:
    """(case, its LoRA tensors); `base` is the key's module part, `layer` our layer."""
    def lowrank(layer, out_rows, n_in, seed, alpha=True, up="lora_up.weight", down="lora_down.weight"):
        sd = {up: _r(out_rows, R, seed=seed), down: _r(R, n_in, seed=seed + 1)}
        return {**sd, "alpha": torch.tensor(8.0)} if alpha else sd
    qkv = lowrank("", 3 * D, D, 7, alpha=False, up="lora_B.weight", down="lora_A.weight")
    return [
        (dict(name="lora", base="diffusion_model.double_blocks.0.img_attn_proj", layer="double_blocks.0.img_attn_proj",
              strength=0.7, bfl=False), lowrank("", D, D, 1)),
        (dict(name="dora_rows", base="diffusion_model.double_blocks.1.img_attn_proj",
              layer="double_blocks.1.img_attn_proj", strength=1.0, bfl=False),
         {**lowrank("", D, D, 3), "dora_scale": _r(D, 1, seed=5).abs() + 0.5}),
        (dict(name="dora_rows_half", base="diffusion_model.double_blocks.1.img_attn_proj",
              layer="double_blocks.1.img_attn_proj", strength=0.6, bfl=False),
         {**lowrank("", D, D, 3), "dora_scale": _r(D, 1, seed=5).abs() + 0.5}),
        (dict(name="dora_columns", base="diffusion_model.double_blocks.2.img_mlp.fc2",
              layer="double_blocks.2.img_mlp.fc2", strength=0.6, bfl=False),
         {**lowrank("", D, CFG.mlp_hidden, 9), "dora_scale": _r(1, CFG.mlp_hidden, seed=11).abs() + 0.5}),
        (dict(name="diff", base="diffusion_model.final_layer.linear", layer="final_layer.linear", strength=0.5,
              bfl=False), {"diff": _r(64, D, seed=13), "diff_b": _r(64, seed=14)}),
        (dict(name="peft_named", base="transformer.double_blocks.3.txt_attn_proj", layer="double_blocks.3.txt_attn_proj",
              strength=0.8, bfl=False), {"lora_A.default.weight": _r(R, D, seed=15), "lora_B.default.weight": _r(D, R, seed=16)}),
        (dict(name="lora_b_bias", base="double_blocks.0.txt_attn_qkv", layer="double_blocks.0.txt_attn_qkv",
              strength=0.9, bfl=True), {**qkv, "lora_B.bias": _r(3 * D, seed=17)}),
    ]


def test_our_lora_math_equals_comfyuis(tmp_path):
    model = build_random_transformer(CFG, dtype=torch.float32, seed=11)
    inputs, specs = {}, []
    for case, lora in _cases():
        layer = model.get_submodule(case["layer"])
        inputs[case["name"] + ".weight"] = layer.weight.detach().clone()
        inputs[case["name"] + ".bias"] = layer.bias.detach().clone()
        inputs.update({f"{case['name']}/{case['base']}.{k}": v for k, v in lora.items()})
        specs.append(case)
    save_file(inputs, str(tmp_path / "inputs.safetensors"))
    (tmp_path / "cases.json").write_text(json.dumps(specs))
    (tmp_path / "config.json").write_text(json.dumps(dict(pooled=CFG.text_pooled_dim, text=CFG.text_dim, D=D,
                                          mlp_ratio=CFG.mlp_ratio, heads=CFG.num_heads, double=CFG.depth_double,
                                          single=CFG.depth_single, rope=list(CFG.rope_dims))))
    (tmp_path / "check.py").write_text(SCRIPT)
    run = subprocess.run([os.environ.get("COMFYUI_PYTHON", sys.executable), str(tmp_path / "check.py"), COMFYUI_PATH,
                          str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert "COMFY_LORA_MATH_OK" in run.stdout, run.stdout[-2000:] + run.stderr[-4000:]
    theirs = load_file(str(tmp_path / "outputs.safetensors"))
    for case, lora in _cases():
        ours = build_random_transformer(CFG, dtype=torch.float32, seed=11)
        loaded = load_lora({f"{case['base']}.{k}": v for k, v in lora.items()}, ours)
        assert loaded.unmatched == (), (case["name"], loaded.unmatched)
        set_loras(ours, [(loaded, case["strength"])])
        layer = ours.get_submodule(case["layer"])
        expected = [n for n in ("weight", "bias") if f"{case['name']}.{n}" in theirs]
        assert expected, f"ComfyUI applied nothing for {case['name']}"
        for n in ("weight", "bias"):
            want = theirs.get(f"{case['name']}.{n}", inputs_of(model, case, n))
            torch.testing.assert_close(getattr(layer, n).detach(), want, rtol=1e-5, atol=1e-6, msg=case["name"])
    _check_names(json.loads((tmp_path / "names.json").read_text()), model)


def inputs_of(model, case, name) -> torch.Tensor:
    return getattr(model.get_submodule(case["layer"]), name).detach()


def _check_names(names: dict, model) -> None:
    """Every linear ComfyUI's HunyuanVideo has resolves here to a layer of its shape, and every pair of spellings
    ComfyUI's key map sends to one module (its own name, the diffusion-pipe / official one) reaches one layer here."""
    layers = members(model)
    dotted, underscore = alias_table(list(layers), model.cfg)
    for key, shape in names["linears"].items():
        target = resolve(key[: -len(".weight")], dotted, underscore)
        assert target is not None, f"ComfyUI's {key} has no layer here"
        assert list(layers[target.module].weight.shape) == shape, (key, target)
    by_module: dict[str, set[str]] = {}
    for lora_key, comfy_key in names["key_map"].items():
        target = resolve(lora_key, dotted, underscore)
        by_module.setdefault(comfy_key, set()).add(None if target is None else target.module)
    split = {k: v for k, v in by_module.items() if len(v) != 1 or None in v}
    assert not split, split
