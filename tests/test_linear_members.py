"""The linear family's members (avatar_core/model/linear.py, model/fp8.py) on the paths the model tests do not
take: storing twice, building on meta, another compute dtype than the input's, bias-free layers with an adapter,
the backup's size, the float32 bias copy. Written after a mutation run of model/linear.py; expectations are the
members' documented contract (docstrings) and closed-form arithmetic.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from avatar_core.config import AvatarConfig
from avatar_core.loading import build_random_transformer
from avatar_core.model.fp8 import FP8, FP8_E4M3, FP8_E4M3_ROWS, FP8FastLinears, FP8Linears
from avatar_core.model.linear import PLAIN, Family, Linear, store_blocks_


def test_storing_a_stored_model_again_keeps_its_weights_and_scales_bit_for_bit():
    model = store_blocks_(build_random_transformer(AvatarConfig.tiny(), seed=2), FP8Linears)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    store_blocks_(model, FP8Linears)
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k].view(torch.uint8) if before[k].dtype == FP8 else before[k],
                           after[k].view(torch.uint8) if after[k].dtype == FP8 else after[k]) for k in before)


def test_a_family_builds_members_with_its_own_matmul_choice():
    assert Family(FP8_E4M3_ROWS, fast=True).Linear(4, 8).fast is True
    assert Family(FP8_E4M3_ROWS).Linear(4, 8).fast is False
    assert FP8FastLinears.Linear(4, 8).fast is True and FP8Linears.Linear(4, 8).fast is False


def test_each_storage_states_its_scale_shape():
    assert (PLAIN.scale_shape(8), FP8_E4M3.scale_shape(8), FP8_E4M3_ROWS.scale_shape(8)) == (None, (), (8, 1))


def test_a_member_built_on_meta_holds_no_memory_anywhere():
    layer = FP8Linears.Linear(4, 8, bias=True, device="meta")
    assert {t.device.type for t in (layer.weight, layer.bias, layer.scale_weight)} == {"meta"}


def test_an_fp8_member_computes_in_the_inputs_dtype():
    """forward: the weight dequantised to the input's dtype (w.to(dtype) * scale, the official rule), then F.linear."""
    layer = FP8Linears.Linear(16, 8)
    w = torch.randn(8, 16)
    layer.write_weight(w, torch.randn(8))
    x = torch.randn(3, 16, dtype=torch.bfloat16)
    want = F.linear(x, layer.weight.to(torch.bfloat16) * layer.scale_weight.to(torch.bfloat16),
                    layer.bias.to(torch.bfloat16))
    got = layer(x)
    assert got.dtype == torch.bfloat16 and torch.equal(got, want)


class AddOne:
    """A patch (model/patches.py's interface): weight + strength, the bias unchanged."""

    def patch_weight(self, w, strength):
        return w + strength

    def patch_bias(self, b, strength):
        return b


def test_a_bias_free_layer_takes_an_adapter():
    layer = Linear(4, 3, bias=False)
    x = torch.randn(2, 4)
    plain = F.linear(x, layer.weight)
    layer.add_adapter(AddOne())
    assert torch.allclose(layer(x), plain + x.sum(-1, keepdim=True))


def test_a_merged_patch_keeps_a_backup_of_exactly_the_stored_tensors():
    layer = Linear(4, 3, dtype=torch.bfloat16)
    layer.set_patches([(AddOne(), 1.0)])
    assert layer.backup_bytes() == (12 + 3) * 2   # weight 3x4 + bias 3, bf16
    layer.set_patches([])
    assert layer.backup_bytes() == 0


def test_the_bias_is_read_as_a_float32_copy():
    layer = Linear(4, 3, dtype=torch.bfloat16)
    b = layer.read_bias()
    assert b.dtype == torch.float32 and torch.equal(b, layer.bias.float())
    b += 1
    assert not torch.equal(b, layer.bias.float())

