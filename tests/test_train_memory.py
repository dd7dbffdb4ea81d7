"""Training on the cards people own (#26): lr warmup + cosine, aspect-ratio buckets, an fp8 base, block swap
and gradient checkpointing, each against an independent reference (closed forms, a plain base, no swap)."""

from __future__ import annotations

import math

import pytest
import torch

from avatar_core.config import AvatarConfig
from avatar_core.loading import build_random_transformer
from avatar_core.model.fp8 import FP8, FP8Linear, FP8Linears
from avatar_core.model.linear import Linear, WeightOwner, block_linear_names, store_blocks_
from avatar_core.model.offload import BlockSwap
from avatar_core.train import ClipFolder, TrainConfig, train
from avatar_core.train.adapters import add_lora, enable_gradient_checkpointing
from avatar_core.train.data import write_clip
from avatar_core.train.loss import StepDraw, flow_loss
from avatar_core.train.lr import lr_factor
from avatar_core.train.synthetic import synthetic_clip, write_synthetic_folder

CFG = AvatarConfig.tiny()
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_synthetic_folder(tmp_path_factory.mktemp("clips"), CFG, clips=2)


@pytest.fixture(scope="module")
def two_buckets(tmp_path_factory):
    """Three landscape clips (4x6 latents, 3 frames) and three portrait ones (6x4, 2 frames)."""
    folder = tmp_path_factory.mktemp("buckets")
    for i in range(3):
        write_clip(folder / f"wide{i}.safetensors", synthetic_clip(CFG, 3, 4, 6, seed=i))
        write_clip(folder / f"tall{i}.safetensors", synthetic_clip(CFG, 2, 6, 4, seed=10 + i))
    return folder


def _config(data, out, **kw) -> TrainConfig:
    base = dict(data=str(data), output=str(out), random_model="tiny", dtype="fp32", lr=3e-3, lora_rank=4,
                lora_alpha=4.0, save_every=1000, progress=False, device="cpu")
    return TrainConfig(**{**base, **kw})


# ---------------------------------------------------------------- learning-rate schedule
def _closed_form(s: int, steps: int, warmup: int, cosine: bool) -> float:
    if s < warmup:
        return (s + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (s - warmup) / (steps - warmup))) if cosine else 1.0


@pytest.mark.parametrize("steps, warmup, cosine", [(10, 3, True), (10, 0, True), (7, 2, False), (1, 0, True)])
def test_lr_factor_is_the_closed_form(steps, warmup, cosine):
    got = [lr_factor(s, steps, warmup, "cosine" if cosine else "constant") for s in range(steps)]
    assert got == pytest.approx([_closed_form(s, steps, warmup, cosine) for s in range(steps)], abs=1e-12)


def test_the_optimizer_steps_with_the_scheduled_lr(data, tmp_path, monkeypatch):
    seen = []
    step = torch.optim.AdamW.step

    def spy(self, *a, **k):
        seen.append([g["lr"] for g in self.param_groups])
        return step(self, *a, **k)
    monkeypatch.setattr(torch.optim.AdamW, "step", spy)
    train(_config(data, tmp_path, steps=6, lr=1e-3, lr_warmup=2, lr_schedule="cosine", lora_blocks="single"))
    expected = [1e-3 * _closed_form(s, 6, 2, True) for s in range(6)]
    assert [row[0] for row in seen] == pytest.approx(expected, rel=1e-12)
    assert seen[0][0] == pytest.approx(0.5e-3) and seen[-1][0] < 0.15e-3   # warmup from lr/2, cosine to ~0


def test_resume_with_schedule_buckets_and_batches_is_exact(two_buckets, tmp_path, monkeypatch):
    import avatar_core.train.trainer as trainer
    kw = dict(steps=4, lr_warmup=2, lr_schedule="cosine", batch_size=2, save_every=2, lora_blocks="double:0")
    straight = train(_config(two_buckets, tmp_path / "a", **kw))
    step = trainer._optimizer_step

    def crash_at_step_3(model, data, params, opt, cfg, i, *a):
        if i == 2:
            raise KeyboardInterrupt  # the run stops after its step-2 checkpoint
        return step(model, data, params, opt, cfg, i, *a)
    monkeypatch.setattr(trainer, "_optimizer_step", crash_at_step_3)
    with pytest.raises(KeyboardInterrupt):
        train(_config(two_buckets, tmp_path / "b", **kw))
    monkeypatch.setattr(trainer, "_optimizer_step", step)
    resumed = train(_config(two_buckets, tmp_path / "b", resume="latest", **kw))
    assert resumed.losses == straight.losses


# ---------------------------------------------------------------- aspect-ratio buckets
def test_clips_of_two_aspect_ratios_train_in_batches_of_one_bucket(two_buckets, tmp_path):
    folder = ClipFolder(two_buckets)
    assert sorted(len(b) for b in folder.buckets) == [3, 3]
    model = build_random_transformer(CFG, seed=0)
    shapes = []
    model.register_forward_pre_hook(lambda m, args: shapes.append(tuple(args[0].shape)))
    train(_config(two_buckets, tmp_path, steps=12, batch_size=2, lora_blocks="double:0"), model=model)
    assert len(shapes) == 12 and all(s[0] == 2 for s in shapes)             # one batch of 2 per step
    assert set(shapes) == {(2, 16, 3, 4, 6), (2, 16, 2, 6, 4)}              # each batch one bucket, both seen


def test_a_batch_never_repeats_a_clip_and_is_capped_by_its_bucket(two_buckets):
    from avatar_core.train.loss import draw_batch
    folder = ClipFolder(two_buckets)
    for step in range(30):
        draws = draw_batch(0, step, folder.buckets, folder.bucket_of, 5, 7.0, 0.0)
        clips = [d.clip for d in draws]
        assert len(clips) == 3 and len(set(clips)) == 3                      # the whole bucket, no repeats
        assert len({folder.bucket_of[c] for c in clips}) == 1


# ---------------------------------------------------------------- fp8 base
def _seeded_adapters(model, blocks="double:1,single:0"):
    adapters = add_lora(model, blocks, rank=2)
    with torch.no_grad():
        for i, d in enumerate(adapters.values()):
            d.up.normal_(0, 0.1, generator=torch.Generator().manual_seed(i))
            d.down.copy_(torch.linspace(-0.1, 0.1, d.down.numel()).reshape(d.down.shape))
    return adapters


def _adapter_grads(model, adapters, clip) -> torch.Tensor:
    flow_loss(model, clip, StepDraw(0, 0.5, 7, False), CPU).backward()
    return torch.cat([torch.cat([d.up.grad.flatten(), d.down.grad.flatten()]) for d in adapters.values()])


def test_lora_gradients_on_an_fp8_base_equal_those_of_a_plain_base_with_the_fp8_rounded_weights(data):
    clip = ClipFolder(data)[0]
    fp8 = store_blocks_(build_random_transformer(CFG, seed=0), FP8Linears)
    rounded = build_random_transformer(CFG, seed=0)     # plain fp32 base holding exactly the fp8 weights' values
    for name in block_linear_names(rounded):
        rounded.get_submodule(name).write_weight(fp8.get_submodule(name).read_weight())
    assert all(fp8.get_submodule(n).weight.dtype == FP8 for n in block_linear_names(fp8))
    g_fp8 = _adapter_grads(fp8, _seeded_adapters(fp8), clip)
    g_rounded = _adapter_grads(rounded, _seeded_adapters(rounded), clip)
    g_unrounded = _adapter_grads(*(lambda m: (m, _seeded_adapters(m)))(build_random_transformer(CFG, seed=0)), clip)
    assert g_fp8.abs().sum() > 0
    # same values, same fp32 operations: equal up to summation order (none differs here)
    torch.testing.assert_close(g_fp8, g_rounded, rtol=1e-6, atol=1e-9)
    assert (g_fp8 - g_unrounded).abs().max() > 100 * (g_fp8 - g_rounded).abs().max() + 1e-7  # fp8 rounding seen


def test_fp8_base_training_keeps_the_base_in_fp8_and_its_lora_loads_on_a_plain_base(data, tmp_path):
    from avatar_core.lora import load_lora
    model = build_random_transformer(CFG, seed=0)
    result = train(_config(data, tmp_path, steps=3, fp8_base=True), model=model)
    assert all(model.get_submodule(n).weight.dtype == FP8 for n in block_linear_names(model))
    lora = load_lora(result.lora, build_random_transformer(CFG, seed=0))
    assert lora.unmatched == () and lora.matched > 0


# ---------------------------------------------------------------- block swap + gradient checkpointing
def _spy_weight_rows(monkeypatch, classes, record) -> None:
    """Call `record(member)` at every use of a member's weight (patched on each member class, so a class that
    holds its own weight_rows attribute is spied on too)."""
    for cls in classes:
        def spy(self, *a, _rows=cls.weight_rows, **k):
            record(self)
            return _rows(self, *a, **k)
        monkeypatch.setattr(cls, "weight_rows", spy)


def test_block_swap_step_gives_the_same_gradients_and_stages_every_use_in_forward_and_backward(data, monkeypatch):
    clip = ClipFolder(data)[0]
    plain = build_random_transformer(CFG, seed=0)
    enable_gradient_checkpointing(plain)
    g_plain = _adapter_grads(plain, _seeded_adapters(plain, "all"), clip)

    model = store_blocks_(build_random_transformer(CFG, seed=0), FP8Linears)
    rounded = build_random_transformer(CFG, seed=0)
    for name in block_linear_names(rounded):
        rounded.get_submodule(name).write_weight(model.get_submodule(name).read_weight())
    enable_gradient_checkpointing(rounded)
    g_rounded = _adapter_grads(rounded, _seeded_adapters(rounded, "all"), clip)

    swap = BlockSwap(model, CPU, resident=1, blocks=5)                       # 4 double + 1 single swapped
    swapped = {id(m) for b in swap.swapped for m in b.modules() if isinstance(m, WeightOwner)}
    adapters = _seeded_adapters(model, "all")
    enable_gradient_checkpointing(model, swap)
    uses = {"forward": [], "backward": []}
    phase = ["forward"]
    _spy_weight_rows(monkeypatch, {type(m) for m in model.modules() if isinstance(m, WeightOwner)},
                     lambda m: id(m) in swapped and uses[phase[0]].append(m._home is not None))
    entered = {"forward": [], "backward": []}
    enter = swap._enter

    def enter_spy(i, ahead=1):
        entered[phase[0]].append((i, i in swap._inflight))                  # (block, its copy was prefetched)
        enter(i, ahead)
    swap._enter = enter_spy
    loss = flow_loss(model, clip, StepDraw(0, 0.5, 7, False), CPU)
    phase[0] = "backward"
    loss.backward()
    g_swap = torch.cat([torch.cat([d.up.grad.flatten(), d.down.grad.flatten()]) for d in adapters.values()])
    assert len(uses["forward"]) > 0 and all(uses["forward"])
    assert len(uses["backward"]) == len(uses["forward"]) and all(uses["backward"])   # every block recomputed
    assert all(m._home is None for b in swap.swapped for m in b.modules() if isinstance(m, WeightOwner))
    assert not swap._inflight                                                # nothing left staged or in flight
    assert entered["forward"] == [(0, False)] + [(i, True) for i in range(1, 5)]   # streamed one block ahead
    assert entered["backward"] == [(4, False)] + [(i, True) for i in (3, 2, 1, 0)]  # and one block behind
    torch.testing.assert_close(g_swap, g_rounded, rtol=1e-6, atol=1e-9)
    assert not torch.allclose(g_swap, g_plain, rtol=1e-6, atol=1e-9)         # the fp8 base is the one trained


def test_gradient_checkpointing_recomputes_every_block_in_backward_with_fp8_and_swap(data, monkeypatch):
    from avatar_core.model.blocks import DoubleStreamBlock, SingleStreamBlock
    calls = []
    for cls in (DoubleStreamBlock, SingleStreamBlock):
        forward = cls.forward
        monkeypatch.setattr(cls, "forward", lambda self, *a, _f=forward, **k: calls.append(self) or _f(self, *a, **k))
    clip = ClipFolder(data)[0]
    counts = {}
    for ckpt in (False, True):
        model = store_blocks_(build_random_transformer(CFG, seed=0), FP8Linears)
        swap = BlockSwap(model, CPU, resident=1, blocks=3) if ckpt else None
        _seeded_adapters(model, "all")
        if ckpt:
            enable_gradient_checkpointing(model, swap)
        loss = flow_loss(model, clip, StepDraw(0, 0.5, 7, False), CPU)
        calls.clear()
        loss.backward()
        counts[ckpt] = len(calls)
    n = CFG.depth_double + CFG.depth_single
    assert counts == {False: 0, True: n}


def test_the_trainer_swaps_blocks_in_forward_and_backward_of_an_fp8_base(data, tmp_path, monkeypatch):
    model = build_random_transformer(CFG, seed=0)
    uses = []
    _spy_weight_rows(monkeypatch, (Linear, FP8Linear), lambda m: uses.append((m, m._home is not None)))
    result = train(_config(data, tmp_path, steps=3, fp8_base=True, block_swap=4, batch_size=2, lr_warmup=1,
                           lr_schedule="cosine"), model=model)
    assert result.step == 3 and all(math.isfinite(v) for v in result.losses)
    swapped = [b for b in [*model.double_blocks, *model.single_blocks] if b._forward_pre_hooks]
    assert swapped == list(model.double_blocks)                              # the first 4 blocks in run order
    members = {id(m) for b in swapped for m in b.modules() if isinstance(m, WeightOwner)}
    staged = [s for m, s in uses if id(m) in members]
    assert len(staged) > 0 and all(staged)                                   # never computed from the CPU home
    assert all(model.get_submodule(n).weight.dtype == FP8 for n in block_linear_names(model))


# ---------------------------------------------------------------- settings
@pytest.mark.parametrize("kw, message", [
    (dict(lr_schedule="linear"), "lr_schedule: 'linear' is not one of \\['constant', 'cosine'\\]"),
    (dict(lr_warmup=-1), "lr_warmup: -1 is out of range"),
    (dict(lr_warmup=5, steps=5), "lr_warmup / steps: a warmup of 5 steps never reaches"),
    (dict(batch_size=0), "batch_size: 0 is out of range"),
    (dict(block_swap=2, gradient_checkpointing=False), "block_swap / gradient_checkpointing: block swap without"),
    (dict(block_swap=-1), "block_swap: -1 is out of range"),
    (dict(block_swap=6), "use at most 5"),
    (dict(fp8_base=True, dtype="fp16"), "fp8_base / dtype: an fp8 base computes in bf16 or fp32"),
])
def test_bad_memory_settings_fail_before_training(data, tmp_path, kw, message):
    from avatar_core.errors import InputError
    with pytest.raises(InputError, match=message):
        train(_config(data, tmp_path / "out", **{"steps": 2, **kw}))
    assert not (tmp_path / "out" / "checkpoints").exists()


def test_the_13b_benchmark_runs_the_24gb_preset_on_the_tiny_config():
    from bench.train_13b import main as bench_main
    row = bench_main(["--preset", "24gb", "--config", "tiny", "--size", "48", "--video-frames", "5", "--steps", "2",
                      "--rank", "4", "--text-len", "8", "--device", "cpu", "--block-swap", "3"])
    assert row["fp8_base"] is True and row["block_swap"] == 3 and row["memory_cap_gib"] == 23.0   # explicit wins
    assert row["latent_frames"] == 2 and len(row["step_s"]) == 2 and all(v == v for v in row["losses"])
