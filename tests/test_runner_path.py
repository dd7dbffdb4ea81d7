"""One runner path: LoRAs always travel through Runner.sample(loras=...), on one process and on a pool alike.

The pool's own plumbing (workers serving requests with LocalRunner.sample) is run for real by test_lora_pool,
test_pool_inputs and test_distributed; here the parts that need no processes: what a LocalRunner does with the
loras it is given, what a PooledRunner sends its workers, and the pool's LoRA check against its workers' sizes.
"""

from __future__ import annotations

import types

import pytest
import torch
from safetensors.torch import load_file, save_file

from avatar_core.config import AvatarConfig
from avatar_core.distributed.pool import PooledRunner
from avatar_core.errors import InputError
from avatar_core.lora import LoraError, load_lora
from avatar_core.runner import RandomSpec, RunnerInfo

CFG = AvatarConfig.tiny()
D = CFG.hidden_size


def _lora(path, rows: int = 3 * D, cols: int = D, seed: int = 1) -> str:
    g = torch.Generator().manual_seed(seed)
    save_file({"diffusion_model.double_blocks.0.img_attn_qkv.lora_down.weight": torch.randn(2, cols, generator=g),
               "diffusion_model.double_blocks.0.img_attn_qkv.lora_up.weight": torch.randn(rows, 2, generator=g)},
              str(path))
    return str(path)


@pytest.fixture
def runner(monkeypatch):
    """A LocalRunner whose sampler call records the weights it is called with (no sampling is run)."""
    import avatar_core.runner as runner_mod
    built = RandomSpec(config=CFG, weight_format="bf16").build("cpu")
    built.seen = []
    monkeypatch.setattr(runner_mod, "sample_avatar",
                        lambda *a, **k: built.seen.append(built.diffusion_model.double_blocks[0].img_attn_qkv
                                                          .weight.detach().clone()))
    return built


def test_local_runner_carries_exactly_the_loras_it_is_given(runner, tmp_path):
    base = runner.diffusion_model.double_blocks[0].img_attn_qkv.weight.detach().clone()
    path = _lora(tmp_path / "a.safetensors")
    lora = runner.load_lora(path)
    up, down = lora.patches[0].patch.up, lora.patches[0].patch.down
    expected = (base.float() + 0.5 * up.float() @ down.float()).to(base.dtype)   # closed form, alpha absent: scale 1
    runner.sample(None, loras=((lora, 0.5),))
    assert torch.equal(runner.seen[-1], expected)
    runner.sample(None, loras=((path, 0.5),))                # the same LoRA as a file path (a pool worker's request)
    assert torch.equal(runner.seen[-1], expected)
    runner.sample(None)                                       # no LoRA: the base weights, bit for bit
    assert torch.equal(runner.seen[-1], base)
    with pytest.raises(InputError, match="loras: .*mixes"):
        runner.sample(None, loras=((lora, 0.5), (path, 1.0)))


def test_pooled_runner_sends_the_files_and_checks_against_the_workers_sizes(tmp_path):
    sent = []
    pool = types.SimpleNamespace(info=RunnerInfo(False, "none", "bf16", gpus=2, config=CFG),
                                 sample_avatar=lambda *a, loras, **k: sent.append(loras))
    pooled = PooledRunner(pool)
    path = _lora(tmp_path / "a.safetensors")
    lora = pooled.load_lora(path)                            # the tiny workers' layout, on the meta device
    pooled.sample(None, loras=((lora, 0.25), (path, 1)))
    assert sent[-1] == ((path, 0.25), (path, 1.0))
    pooled.sample(None)
    assert sent[-1] == ()
    with pytest.raises(LoraError, match="another size or family"):
        pooled.load_lora(_lora(tmp_path / "big.safetensors", rows=9216, cols=3072))
    from_dict = load_lora(load_file(path), _layout(CFG))
    with pytest.raises(InputError, match="loras: .*state dict.*safetensors"):
        pooled.sample(None, loras=((from_dict, 1.0),))


def _layout(cfg: AvatarConfig):
    from avatar_core.model import AvatarTransformer
    with torch.device("meta"):
        return AvatarTransformer(cfg)
