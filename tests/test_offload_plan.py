"""offload="auto": the plan the loader picks from the GPU memory it may use (avatar_core/offload_plan.py).

Expected plans are worked out here in closed form from the rule (whole model + work + margin fits -> none; else the
fewest streamed blocks k with rest + 2 blocks in flight + work + margin <= budget -> block_swap k; else low_memory),
not read back from the code.
"""

from __future__ import annotations

import math

import pytest

from avatar_core.config import AvatarConfig
from avatar_core.offload_plan import GIB, MARGIN_BYTES, WORK_BYTES, choose_offload, model_bytes
from avatar_core.runner import RandomSpec

MIB = 2**20
RESIDENT, BLOCK, N = 2 * GIB, 400 * MIB, 60          # a 13B-like model: 26.4 GiB of weights in 60 equal blocks
EXTRA = WORK_BYTES + MARGIN_BYTES


def expected_k(budget: int) -> int:
    """Fewest k with RESIDENT + (N - k) * BLOCK + 2 * BLOCK + EXTRA <= budget."""
    return math.ceil((RESIDENT + (N + 2) * BLOCK + EXTRA - budget) / BLOCK)


@pytest.mark.parametrize("budget_gib, plan", [(80, "none"), (40, "none"), (24, "block_swap"), (16, "block_swap"),
                                              (12, "block_swap"), (9, "low_memory"), (6, "low_memory")])
def test_the_plan_follows_the_budget(budget_gib, plan):
    budget = budget_gib * GIB
    choice = choose_offload(RESIDENT, [BLOCK] * N, budget)
    assert choice.offload == plan, choice.reason
    if plan == "block_swap":
        assert choice.swap_blocks == expected_k(budget)
        assert 1 <= choice.swap_blocks < N


def test_the_boundaries_are_exact():
    whole = RESIDENT + N * BLOCK
    assert choose_offload(RESIDENT, [BLOCK] * N, whole + EXTRA).offload == "none"
    one_short = choose_offload(RESIDENT, [BLOCK] * N, whole + EXTRA - 1)
    # streaming k blocks saves k - 2 of them (two are on the GPU while they run): 3 is the first that saves one
    assert (one_short.offload, one_short.swap_blocks) == ("block_swap", 3)
    # the largest budget where even N - 1 streamed blocks do not fit: RESIDENT + 3 blocks + EXTRA - 1 byte
    assert choose_offload(RESIDENT, [BLOCK] * N, RESIDENT + 3 * BLOCK + EXTRA - 1).offload == "low_memory"
    assert choose_offload(RESIDENT, [BLOCK] * N, RESIDENT + 3 * BLOCK + EXTRA).swap_blocks == N - 1


def test_in_flight_memory_is_the_largest_streamed_block():
    blocks = [BLOCK] * 20 + [BLOCK // 2] * 40  # double blocks first, larger (as in the 13B model)
    whole = RESIDENT + sum(blocks)
    k = 30  # 20 large + 10 small streamed: 2 large in flight
    budget = whole - (20 * BLOCK + 10 * (BLOCK // 2)) + 2 * BLOCK + EXTRA
    assert choose_offload(RESIDENT, blocks, budget).swap_blocks == k
    small_first = [BLOCK // 2] * 10 + [BLOCK] * 50  # the largest streamed block is not the first one
    whole = RESIDENT + sum(small_first)
    budget = whole - (10 * (BLOCK // 2) + 5 * BLOCK) + 2 * BLOCK + EXTRA  # exactly k = 15 (10 small + 5 large)
    assert choose_offload(RESIDENT, small_first, budget).swap_blocks == 15


def test_model_bytes_split_the_loaded_model():
    cfg = AvatarConfig.tiny()
    model = RandomSpec(config=cfg, weight_format="fp32").build("cpu").diffusion_model
    resident, blocks = model_bytes(model)
    total = sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))
    assert len(blocks) == cfg.depth_double + cfg.depth_single
    assert resident + sum(blocks) == total and resident > 0 and min(blocks) > 0


@pytest.mark.parametrize("room_blocks, offload", [(None, "none"), (3, "block_swap"), (0, "low_memory")])
def test_a_spec_with_offload_auto_loads_with_the_chosen_plan(room_blocks, offload):
    cfg = AvatarConfig.tiny()
    probe = RandomSpec(config=cfg, weight_format="fp32").build("cpu").diffusion_model
    resident, blocks = model_bytes(probe)
    if room_blocks is None:
        budget = 10 * GIB + resident + sum(blocks)
    else:  # room for the resident part, `room_blocks` blocks (2 of them in flight) and the work, no more
        budget = resident + room_blocks * max(blocks) + EXTRA
    runner = RandomSpec(config=cfg, weight_format="fp32", offload="auto", vram_budget=budget).build("cpu")
    assert runner.info.offload == offload
    if offload == "block_swap":  # the rule restated: the fewest streamed blocks whose rest + 2 in flight fit
        k = next(k for k in range(1, len(blocks))
                 if resident + sum(blocks[k:]) + 2 * max(blocks[:k]) + EXTRA <= budget)
        assert runner.info.swapped_blocks == k
        assert runner.offload is not None and len(runner.offload.swapped) == k


def test_auto_on_a_cpu_device_without_a_budget_is_none():
    runner = RandomSpec(config=AvatarConfig.tiny(), weight_format="fp32", offload="auto").build("cpu")
    assert runner.info.offload == "none"


def test_an_unknown_offload_is_refused_by_name():
    with pytest.raises(ValueError, match="offload: 'sometimes' is not one of .*'auto'"):
        RandomSpec(config=AvatarConfig.tiny(), offload="sometimes")


@pytest.mark.parametrize("budget_gib, reason", [
    (19, "12.0 GiB of weights + 7 GiB to work fit in 19.0 GiB usable"),
    (17, "12.0 GiB of weights + 7 GiB to work exceed 17.0 GiB usable: 4 blocks streamed, 10.0 GiB stay"),
    (8, "even with 9 blocks streamed the model needs more than 8.0 GiB usable: every block streamed, work chunked"),
])
def test_the_logged_reason_states_the_sums(budget_gib, reason):
    """2 GiB resident + 10 blocks of 1 GiB, 6 + 1 GiB to work: by hand, streaming k blocks keeps 12 - k + 2 GiB."""
    choice = choose_offload(2 * GIB, [GIB] * 10, budget_gib * GIB)
    assert choice.reason == reason


def test_the_loaders_swap_count_is_kept_when_no_blocks_are_streamed():
    assert choose_offload(GIB, [GIB] * 4, 100 * GIB).swap_blocks == 20           # the loader's default
    assert choose_offload(GIB, [GIB] * 4, 100 * GIB, default_swap=7).swap_blocks == 7
    low = choose_offload(GIB, [GIB] * 4, 2 * GIB, default_swap=7)
    assert (low.offload, low.swap_blocks) == ("low_memory", 7)
