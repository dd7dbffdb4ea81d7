"""Training with block swap on a CUDA GPU (pinned host weights, side-stream copies in forward and in the
backward recomputation) and an fp8 base: the adapters' gradients equal those of the same fp8 model with
every block on the GPU, and the swapped blocks' weights never stay on the GPU (CI has no GPU).

Run on the device: python -m pytest tests/test_gpu_train_swap.py -q
"""

from __future__ import annotations

import pytest
import torch

from avatar_core.config import AvatarConfig
from avatar_core.loading import build_random_transformer
from avatar_core.model.fp8 import FP8Linears
from avatar_core.model.linear import WeightOwner, store_blocks_
from avatar_core.model.offload import BlockSwap
from avatar_core.train.adapters import add_lora, enable_gradient_checkpointing
from avatar_core.train.loss import StepDraw, flow_loss
from avatar_core.train.synthetic import synthetic_clip

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (block swap's pinned-memory "
                                                                     "and side-stream path in backward)")
CFG = AvatarConfig.tiny()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_swapped_fp8_training_step_on_the_gpu_gives_the_unswapped_gradients(dtype):
    clip = synthetic_clip(CFG, 3, 8, 12, seed=3)
    grads = []
    for swap_blocks in (0, 5):
        model = store_blocks_(build_random_transformer(CFG, dtype=dtype, seed=0), FP8Linears)
        swap = None
        if swap_blocks:
            swap = BlockSwap(model, "cuda", resident=1, blocks=swap_blocks)
        else:
            model.cuda()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            adapters = add_lora(model, "all", rank=4, device="cuda")
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for d in adapters.values():
                d.up.copy_(0.05 * torch.randn(d.up.shape, generator=g))
        enable_gradient_checkpointing(model, swap)
        flow_loss(model, clip, StepDraw(0, 0.5, 7, False), torch.device("cuda")).backward()
        torch.cuda.synchronize()
        grads.append(torch.cat([torch.cat([d.up.grad.flatten(), d.down.grad.flatten()]) for d in adapters.values()]))
        if swap is not None:
            on_gpu = [m for b in swap.swapped for m in b.modules() if isinstance(m, WeightOwner) and m.weight.is_cuda]
            assert on_gpu == [] and not swap._inflight
    assert grads[0].abs().sum() > 0
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(grads[1].cpu(), grads[0].cpu(), rtol=tol, atol=tol * float(grads[0].abs().max()))
