"""LoRA and training nodes in a real ComfyUI Python (COMFYUI_PATH / COMFYUI_PYTHON): chained LoRAs on a patcher
clone, applied by runner.sample() as the sampler node calls it, other branches restored bit for bit, a pooled
model given the file list through the same call."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
COMFYUI_PATH = os.environ.get("COMFYUI_PATH")
pytestmark = [pytest.mark.comfy, pytest.mark.skipif(
    not COMFYUI_PATH, reason="set COMFYUI_PATH to a ComfyUI checkout (and COMFYUI_PYTHON to its Python) to run")]

SCRIPT = textwrap.dedent("""
    import importlib, sys, types
    comfy_path, repo, tmp = sys.argv[1:4]
    sys.path[:0] = [comfy_path, repo]
    import comfy.cli_args
    comfy.cli_args.args.cpu = True           # this machine has no GPU
    import folder_paths, torch
    import comfy.model_patcher
    from safetensors.torch import save_file
    folder_paths.add_model_folder_path("loras", tmp, is_default=True)
    pkg = types.ModuleType("hyavatar_pack"); pkg.__path__ = [repo]; sys.modules["hyavatar_pack"] = pkg
    node = importlib.import_module("hyavatar_pack.nodes.lora")
    AvatarConfig = importlib.import_module("hyavatar_pack.avatar_core.config").AvatarConfig
    build_random_transformer = importlib.import_module("hyavatar_pack.avatar_core.loading").build_random_transformer
    model = build_random_transformer(AvatarConfig.tiny(), dtype=torch.bfloat16, seed=2)
    base = {k: v.clone() for k, v in model.state_dict().items()}
    D = model.cfg.hidden_size
    for name, layer in (("a", "double_blocks.0.img_attn_qkv"), ("b", "lora_unet_single_blocks_1_linear2")):
        w = model.get_submodule(layer.replace("lora_unet_", "").replace("_linear", ".linear").replace("blocks_", "blocks.")).weight
        key = ("diffusion_model." + layer) if name == "a" else layer
        save_file({key + ".lora_down.weight": torch.randn(2, w.shape[1]), key + ".lora_up.weight": torch.randn(w.shape[0], 2)},
                  f"{tmp}/{name}.safetensors")
    runner_mod = importlib.import_module("hyavatar_pack.avatar_core.runner")
    runner = runner_mod.RunChoices(weight_format="bf16").finish(model, "cpu")  # what the loader hands over
    seen = []  # the weights the sampler was called with (runner.sample puts the LoRAs on, then samples)
    runner_mod.sample_avatar = lambda *a, **kw: seen.append({k: v.clone() for k, v in model.state_dict().items()})

    def sample(patcher):  # what the sampler node does with its patcher
        return patcher.model.sample(None, None, loras=node.attached_loras(patcher))
    patcher = comfy.model_patcher.CoreModelPatcher(runner, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))
    assert node._lora_files() == ["a.safetensors", "b.safetensors"], node._lora_files()
    one = node.AvatarLoraLoader.execute(patcher, "a.safetensors", 0.5).result[0]
    two = node.AvatarLoraLoader.execute(one, "b.safetensors", 1.0).result[0]
    assert [s for _, s in two.get_attachment(node.ATTACHMENT)] == [0.5, 1.0]
    assert patcher.get_attachment(node.ATTACHMENT) is None
    sample(two)
    sd = seen[-1]
    changed = sorted(k for k in sd if not torch.equal(sd[k], base[k]))
    assert changed == ["double_blocks.0.img_attn_qkv.weight", "single_blocks.1.linear2.weight"], changed
    sample(patcher)                          # another branch without LoRA: the base weights, bit for bit
    assert all(torch.equal(v, base[k]) for k, v in seen[-1].items())
    # A multi-GPU model: checked against the released model's layout, then handed to the workers as files.
    save_file({"diffusion_model.double_blocks.3.img_attn_qkv.lora_down.weight": torch.randn(2, 3072),
               "diffusion_model.double_blocks.3.img_attn_qkv.lora_up.weight": torch.randn(9216, 2)}, f"{tmp}/c.safetensors")
    PooledRunner = importlib.import_module("hyavatar_pack.avatar_core.distributed.pool").PooledRunner
    sent = []  # what the pool would send its workers
    fake_pool = types.SimpleNamespace(info=runner_mod.RunnerInfo(False, "none", "bf16", gpus=2,
                                                                 config=AvatarConfig.avatar_13b()),
                                      sample_avatar=lambda *a, loras, **k: sent.append(loras))
    pool_model = PooledRunner(pool=fake_pool)
    pooled = comfy.model_patcher.CoreModelPatcher(pool_model, load_device=torch.device("cpu"),
                                                  offload_device=torch.device("cpu"))
    try:
        node.AvatarLoraLoader.execute(pooled, "a.safetensors", 1.0)
        raise SystemExit("a tiny-model LoRA was accepted for the 13B pool")
    except ValueError as e:
        assert "another size or family" in str(e), e
    with_lora = node.AvatarLoraLoader.execute(pooled, "c.safetensors", 0.25).result[0]
    sample(with_lora)                        # the sampler node's call: the pool gets the file list
    files = sent[-1]
    assert files == ((f"{tmp}/c.safetensors", 0.25),), files
    sample(pooled)
    assert sent[-1] == ()
    print("LORA_NODE_OK")
""")


def test_lora_node_chain_apply_and_restore(tmp_path):
    python = os.environ.get("COMFYUI_PYTHON", sys.executable)
    script = tmp_path / "check.py"
    script.write_text(SCRIPT)
    loras = tmp_path / "loras"
    loras.mkdir()
    run = subprocess.run([python, str(script), COMFYUI_PATH, str(REPO), str(loras)], capture_output=True,
                         text=True, timeout=300)
    assert "LORA_NODE_OK" in run.stdout, run.stdout[-2000:] + run.stderr[-4000:]


CACHE_SCRIPT = textwrap.dedent("""
    import importlib, sys, types
    comfy_path, repo, tmp = sys.argv[1:4]
    sys.path[:0] = [comfy_path, repo]
    import comfy.cli_args
    comfy.cli_args.args.cpu = True
    import torch
    pkg = types.ModuleType("hyavatar_pack"); pkg.__path__ = [repo]; sys.modules["hyavatar_pack"] = pkg
    node = importlib.import_module("hyavatar_pack.nodes.training")
    AudioFeatures = importlib.import_module("hyavatar_pack.nodes.convert").AudioFeatures
    data = importlib.import_module("hyavatar_pack.avatar_core.train.data")

    class Vae:  # stands in for the HunyuanVideo VAE: 8x space, causal 4x time
        def encode(self, px):
            t = (px.shape[0] - 1) // 4 + 1
            return px.mean() * torch.ones(1, 16, t, px.shape[1] // 8, px.shape[2] // 8)

    frames = torch.rand(23, 96, 128, 3)
    feats = AudioFeatures(torch.randn(1, 20, 10, 5, 384), 25.0)
    mask = torch.zeros(1, 831, dtype=torch.int64); mask[:, :30] = 1; mask[:, 256:] = 1  # official positional mask
    positive = [[torch.randn(1, 831, 4096), {"pooled_output": torch.randn(1, 768), "attention_mask": mask}]]
    path = node.AvatarTrainingClip.execute(frames, feats, positive, Vae(), "c0", tmp, 128,
                                           emotion=torch.randn(1, 16, 1, 12, 16)).result[0]
    clip = data.read_clip(path)
    assert clip.latents.shape[1] == 5 and clip.audio.shape[0] == 17, (clip.latents.shape, clip.audio.shape)
    assert clip.text_states.shape[0] == 831 and int(clip.text_mask.sum()) > 0
    assert clip.face_mask.shape[:2] == (1, 1) and clip.emotion is not None and float(clip.fps) == 25.0
    import os
    first = open(path, "rb").read()  # the same graph again: a new numbered file, the first clip untouched
    again = node.AvatarTrainingClip.execute(frames, feats, positive, Vae(), "c0", tmp, 128).result[0]
    names = [os.path.basename(p) for p in (path, again)]
    assert names == ["c0_00001.safetensors", "c0_00002.safetensors"], names
    assert open(path, "rb").read() == first, "the first clip must never be overwritten"
    try:
        node.AvatarTrainingClip.execute(frames, feats, positive, Vae(), "../c0", tmp, 128)
        raise AssertionError("a name with folder parts must be refused")
    except ValueError as e:
        assert "plain file name" in str(e), e
    blocker = os.path.join(tmp, "blocked")
    open(blocker, "w").write("x")
    encodes = []
    class CountingVae(Vae):
        def encode(self, px):
            encodes.append(1)
            return super().encode(px)
    try:  # a dataset "folder" that is a file: refused before the VAE work
        node.AvatarTrainingClip.execute(frames, feats, positive, CountingVae(), "c0", blocker, 128)
        raise AssertionError("a dataset path that is a file must be refused")
    except ValueError as e:
        assert "is a file, not a folder" in str(e) and encodes == [], (e, encodes)
    print("CACHE_NODE_OK")
""")


def test_training_clip_node_writes_a_cache_the_trainer_reads(tmp_path):
    python = os.environ.get("COMFYUI_PYTHON", sys.executable)
    script = tmp_path / "cache.py"
    script.write_text(CACHE_SCRIPT)
    run = subprocess.run([python, str(script), COMFYUI_PATH, str(REPO), str(tmp_path / "set")], capture_output=True,
                         text=True, timeout=300)
    assert "CACHE_NODE_OK" in run.stdout, run.stdout[-2000:] + run.stderr[-4000:]


KEYS_SCRIPT = """
import sys, types
comfy_path, repo = sys.argv[1:3]
sys.path[:0] = [comfy_path, repo]
import comfy.cli_args
comfy.cli_args.args.cpu = True
import torch
import comfy.lora, comfy.model_base, comfy.ops
from comfy.ldm.hunyuan_video.model import HunyuanVideo
from avatar_core.config import AvatarConfig
from avatar_core.loading import build_random_transformer
from avatar_core.train.adapters import add_lora, lora_state_dict
cfg = AvatarConfig.tiny()
net = HunyuanVideo(in_channels=16, out_channels=16, vec_in_dim=cfg.text_pooled_dim, context_in_dim=cfg.text_dim,
                   hidden_size=cfg.hidden_size, mlp_ratio=cfg.mlp_ratio, num_heads=cfg.num_heads, depth=cfg.depth_double,
                   depth_single_blocks=cfg.depth_single, axes_dim=list(cfg.rope_dims), theta=256, patch_size=[1, 2, 2],
                   qkv_bias=True, guidance_embed=False, byt5=False, meanflow=False, use_cond_type_embedding=False,
                   vision_in_dim=None, meanflow_sum=False, device="meta", operations=comfy.ops.disable_weight_init)
shapes = {"diffusion_model." + k: v.shape for k, v in net.state_dict().items()}
fake = comfy.model_base.HunyuanVideo.__new__(comfy.model_base.HunyuanVideo)
fake.state_dict = lambda: shapes
fake.model_config = types.SimpleNamespace(unet_config={})
key_map = comfy.lora.model_lora_keys_unet(fake, {})
sd = lora_state_dict(add_lora(build_random_transformer(cfg, seed=0), "all", rank=2))
bases = sorted({k.rsplit(".", 2)[0] for k in sd if k.endswith("lora_up.weight")})
missing = [b for b in bases if b not in key_map]
assert not missing, missing
for b in bases:
    target = key_map[b]
    assert shapes[target] == (sd[b + ".lora_up.weight"].shape[0], sd[b + ".lora_down.weight"].shape[1]), (b, target)
print("COMFY_KEYS_OK", len(bases))
"""


def test_trained_lora_keys_resolve_in_comfyuis_own_hunyuanvideo_lora_map(tmp_path):
    """Our saved layout against ComfyUI's real key map (comfy.lora) and its HunyuanVideo module shapes."""
    python = os.environ.get("COMFYUI_PYTHON", sys.executable)
    script = tmp_path / "keys.py"
    script.write_text(KEYS_SCRIPT)
    run = subprocess.run([python, str(script), COMFYUI_PATH, str(REPO)], capture_output=True, text=True, timeout=300)
    assert "COMFY_KEYS_OK" in run.stdout, run.stdout[-2000:] + run.stderr[-4000:]
