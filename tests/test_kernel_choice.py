"""Which attention kernel runs, by the registry's rule written out here: the named record when it is available and
supports the call, else the first record of "auto" (FlashAttention-3, then SDPA) that does; an unavailable name
resolves to "auto". Records are stood in for (available, `supports` by dtype / head size) so the
GPU-only choices are exercised on the CPU, and a spy shows the blocks call what was picked."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from test_model import call, tiny_inputs

from avatar_core.config import AvatarConfig
from avatar_core.loading import build_random_transformer
from avatar_core.model import attention as A
from avatar_core.model.options import RunOptions


def _q(dtype=torch.float32, head_dim: int = 8) -> torch.Tensor:
    return torch.zeros(1, 4, 2, head_dim, dtype=dtype)


@pytest.fixture()
def stand_ins(monkeypatch: pytest.MonkeyPatch) -> dict[str, list]:
    """flash_attn: installed, fp32 only; fa3: installed, head size 8 only, no varlen; sage: not installed.
    Each records the calls it gets."""
    calls: dict[str, list] = {"flash_attn": [], "fa3": [], "sage": []}

    def spy(name):
        def dense(q, k, v):
            calls[name].append(tuple(q.shape))
            return A.KERNELS["sdpa"].dense(q, k, v)
        return dense
    monkeypatch.setitem(A.KERNELS, "flash_attn", replace(A.KERNELS["flash_attn"], available=lambda: True,
                        supports=lambda q: q.dtype == torch.float32, dense=spy("flash_attn"), varlen=None))
    monkeypatch.setitem(A.KERNELS, "fa3", replace(A.KERNELS["fa3"], available=lambda: True,
                        supports=lambda q: q.shape[-1] == 8, dense=spy("fa3"), varlen=None))
    monkeypatch.setitem(A.KERNELS, "sage", replace(A.KERNELS["sage"], available=lambda: False, supports=lambda q: True,
                                                   dense=spy("sage")))
    return calls


def test_the_named_kernel_when_it_can_else_the_first_auto_kernel_that_can(stand_ins):
    assert A.pick("flash_attn", _q()).name == "flash_attn"
    assert A.pick("flash_attn", _q(torch.bfloat16)).name == "fa3"          # not supported: auto, FA3 first
    assert A.pick("flash_attn", _q(torch.bfloat16, 16)).name == "sdpa"     # FA3 cannot either: SDPA
    assert A.pick("auto", _q()).name == "fa3" and A.pick("auto", _q(head_dim=16)).name == "sdpa"
    assert A.pick("sage", _q()).name == "fa3"                               # not installed: auto
    assert A.pick("sdpa", _q()).name == "sdpa"                              # SDPA named: SDPA, not auto's FA3


def test_an_unavailable_name_resolves_to_auto(stand_ins):
    assert A.resolve_backend("sage") == "auto"
    assert A.resolve_backend("flash_attn") == "flash_attn" and A.resolve_backend(None) == "auto"
    assert RunOptions(attention="sage").attention == "auto"


def test_the_blocks_call_the_kernel_that_was_picked(stand_ins):
    model = build_random_transformer(AvatarConfig.tiny(), seed=1)          # fp32, head size 32
    inp = tiny_inputs()
    base = call(model, inp, options=RunOptions(attention="sdpa"))
    assert not any(stand_ins.values())
    out = call(model, inp, options=RunOptions(attention="flash_attn"))
    cfg = model.cfg
    assert len(stand_ins["flash_attn"]) >= cfg.depth_double + cfg.depth_single and not stand_ins["fa3"]
    torch.testing.assert_close(out, base, rtol=0, atol=0)                   # the stand-in computes SDPA
