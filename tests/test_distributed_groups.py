"""The process-group mesh written out: rank = (c * window + w) * sequence + s, and every sub-group is the ranks that
differ in one coordinate only. torch.distributed is stood in for (in this process), so the groups every rank
would create are read without starting processes; every rank must create the same groups in the same order."""

from __future__ import annotations

import itertools

import pytest
import torch.distributed as dist

from avatar_core.distributed import ParallelConfig, build_groups


def _by_hand(config: ParallelConfig, axis: str) -> set[tuple[int, ...]]:
    """The groups along `axis` from the layout formula, written out."""
    rank = lambda c, w, s: (c * config.window + w) * config.sequence + s  # noqa: E731
    ranges = {"cfg": range(config.cfg), "window": range(config.window), "sequence": range(config.sequence)}
    groups = set()
    for c, w, s in itertools.product(*ranges.values()):
        here = {"cfg": c, "window": w, "sequence": s}
        groups.add(tuple(rank(**{**{k[0]: v for k, v in here.items()}, axis[0]: i}) for i in ranges[axis]))
    return groups


@pytest.mark.parametrize("config", [ParallelConfig(cfg=2, window=3, sequence=2), ParallelConfig(window=2, sequence=3),
                                    ParallelConfig(cfg=2, sequence=4), ParallelConfig(cfg=2)])
def test_every_rank_builds_the_mesh_groups_in_one_order(config: ParallelConfig, monkeypatch: pytest.MonkeyPatch):
    created: dict[int, list[tuple[int, ...]]] = {}
    current = {"rank": 0}

    def new_group(members):
        created.setdefault(current["rank"], []).append(tuple(members))
        return ("group", tuple(members))
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda: config.world)
    monkeypatch.setattr(dist, "get_rank", lambda: current["rank"])
    monkeypatch.setattr(dist, "new_group", new_group)
    for rank in range(config.world):
        current["rank"] = rank
        groups = build_groups(config)
        c, w, s = groups.coords
        assert rank == (c * config.window + w) * config.sequence + s
        for axis, got in (("cfg", groups.cfg_group), ("window", groups.window_group),
                          ("sequence", groups.sequence_group)):
            if getattr(config, axis) == 1:
                assert got is None, (axis, rank)
            else:
                assert rank in got[1] and got[1] in _by_hand(config, axis), (axis, rank, got)
    orders = list(created.values())
    assert all(order == orders[0] for order in orders)                    # the same calls on every rank
    made = set(orders[0])
    want = set().union(*(_by_hand(config, a) for a in ("cfg", "window", "sequence") if getattr(config, a) > 1))
    assert made == want and len(orders[0]) == len(want)


def test_groups_need_an_initialised_group_of_the_right_size(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    with pytest.raises(RuntimeError, match="not initialised"):
        build_groups(ParallelConfig(cfg=2))
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda: 3)
    with pytest.raises(RuntimeError, match="3 ranks"):
        build_groups(ParallelConfig(cfg=2))


def test_a_degree_that_does_not_divide_the_heads_is_refused_naming_the_ones_that_do():
    from avatar_core.distributed.ulysses import check_degree
    for degree in (1, 2, 4):
        check_degree(4, degree)
    for heads, degree, divisors in ((4, 3, "[1, 2, 4]"), (6, 4, "[1, 2, 3, 6]"), (4, 0, "[1, 2, 4]")):
        with pytest.raises(ValueError, match=rf"degree {degree} does not divide the model's {heads} attention heads; "
                                             rf"use one of \[{divisors[1:-1]}\]"):
            check_degree(heads, degree)


def test_a_request_moves_every_tensor_of_nested_dataclasses_and_tuples_to_the_workers_device():
    from dataclasses import dataclass

    import torch

    from avatar_core.distributed.pool import _move

    @dataclass
    class Inner:
        rope: tuple
        name: str

    @dataclass
    class Outer:
        x: torch.Tensor
        inner: Inner
        none: object = None

    moved = _move(Outer(torch.ones(2), Inner((torch.zeros(3), torch.ones(1)), "a")), torch.device("meta"))
    assert moved.x.device.type == "meta" and [t.device.type for t in moved.inner.rope] == ["meta", "meta"]
    assert (moved.inner.name, moved.none, moved.x.shape, moved.inner.rope[0].shape) == ("a", None, (2,), (3,))
