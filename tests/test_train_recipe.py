"""The training recipe, each choice against its closed form (never our own output): the straight flow-matching
path and its velocity target, the shifted logit-normal timestep draw, audio dropout at its rate, the LoRA's
alpha / rank in the saved file (merged with ComfyUI's formula by hand), and gradient checkpointing that really
recomputes the blocks in backward. Each test fails when its choice is dropped (see the comments)."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file

from avatar_core.config import AvatarConfig
from avatar_core.loading import build_random_transformer
from avatar_core.train import ClipFolder, TrainConfig, train
from avatar_core.train.adapters import add_lora, enable_gradient_checkpointing
from avatar_core.train.loss import StepDraw, draw_step, flow_loss
from avatar_core.train.synthetic import write_synthetic_folder

CFG = AvatarConfig.tiny()
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_synthetic_folder(tmp_path_factory.mktemp("clips"), CFG, clips=2)


def _config(data, out, **kw) -> TrainConfig:
    base = dict(data=str(data), output=str(out), random_model="tiny", dtype="fp32", lr=1e-3, lora_rank=2,
                lora_alpha=2.0, lora_blocks="double:0", save_every=1000, progress=False, device="cpu")
    return TrainConfig(**{**base, **kw})


def _record_calls(model: torch.nn.Module) -> list[dict]:
    """Every model call's timestep and audio (a forward pre-hook: the model itself runs unchanged)."""
    calls: list[dict] = []
    model.register_forward_pre_hook(lambda m, args, kw: calls.append(dict(t=args[1].detach().clone(),
                                                                          audio=kw["audio"].detach().clone())),
                                    with_kwargs=True)
    return calls


# --- the loss: path x_t = (1 - sigma) x0 + sigma noise, target v = noise - x0, model time t = 1000 sigma ------

@pytest.mark.parametrize("sigma", [0.3, 0.85])
def test_the_target_is_the_velocity_noise_minus_x0_on_the_straight_path(data, sigma):
    """An oracle that knows x0 answers (x_t - x0) / sigma, which IS noise - x0 on the straight path: the loss is
    zero. A flipped sign (x0 - noise) or the noise as the target gives a loss of the size of the latents."""
    clip = ClipFolder(data)[0]
    x0 = clip.latents[None].float()                                                 # (1, 16, T, h, w)
    seen = {}

    def oracle(x_t, t, **kw):
        seen.update(x_t=x_t, t=t)
        return (x_t - x0) / sigma

    loss = flow_loss(oracle, clip, StepDraw(0, sigma, 123, False), CPU)
    assert float(loss) < 1e-10, float(loss)
    assert torch.allclose(seen["t"], torch.tensor([1000.0 * sigma]))
    # the noise the path mixed in, recovered by hand: standard normal and independent of x0
    noise = (seen["x_t"] - (1 - sigma) * x0) / sigma
    assert abs(float(noise.mean())) < 0.1 and abs(float(noise.std()) - 1) < 0.1
    assert abs(float(torch.corrcoef(torch.stack([noise.flatten(), x0.flatten()]))[0, 1])) < 0.1
    v = noise - x0
    wrong_sign = flow_loss(lambda x_t, t, **kw: -(x_t - x0) / sigma, clip, StepDraw(0, sigma, 123, False), CPU)
    torch.testing.assert_close(wrong_sign, 4 * (v ** 2).mean(), rtol=1e-4, atol=0)


def test_dropped_audio_is_the_samplers_unconditional_zero_audio(data):
    clip = ClipFolder(data)[0]
    seen = []
    model = lambda x_t, t, **kw: seen.append(kw["audio"]) or torch.zeros_like(x_t)  # noqa: E731
    flow_loss(model, clip, StepDraw(0, 0.5, 1, True), CPU)
    flow_loss(model, clip, StepDraw(0, 0.5, 1, False), CPU)
    assert not seen[0].any()
    torch.testing.assert_close(seen[1], clip.audio[None].float(), rtol=0, atol=0)


# --- the timestep draw: sigma = shift * s / (1 + (shift - 1) s), s = sigmoid(n), n ~ N(0, 1) ------------------

def _unshift(sigma: torch.Tensor, shift: float) -> torch.Tensor:
    """The inverse of the SD3 time shift, written out: s = sigma / (shift - (shift - 1) sigma)."""
    return sigma / (shift - (shift - 1) * sigma)


@pytest.mark.parametrize("shift", [1.0, 3.0, 7.0])
def test_the_timestep_draw_is_the_shifted_logit_normal(shift):
    """Undo the shift and the sigmoid by hand: what is left must be N(0, 1). Ignoring the shift (or shifting
    twice) moves the mean by log(shift): -1.1 for shift 3, -1.9 for 7."""
    sigmas = torch.tensor([draw_step(0, i, 3, shift, 0.0).sigma for i in range(3000)], dtype=torch.float64)
    assert bool(((sigmas > 0) & (sigmas < 1)).all())
    n = torch.logit(_unshift(sigmas, shift))
    assert abs(float(n.mean())) < 0.08 and abs(float(n.std()) - 1) < 0.06, (float(n.mean()), float(n.std()))


def test_audio_is_dropped_at_the_configured_rate_and_clips_drawn_evenly():
    draws = [draw_step(5, i, 3, 7.0, 0.25) for i in range(3000)]
    rate = sum(d.drop_audio for d in draws) / len(draws)
    assert abs(rate - 0.25) < 0.03, rate                               # binomial sd 0.008
    counts = torch.bincount(torch.tensor([d.clip for d in draws]), minlength=3)
    assert counts.min() > 900 and counts.sum() == 3000, counts
    assert not any(d.drop_audio for d in (draw_step(5, i, 3, 7.0, 0.0) for i in range(200)))
    assert all(d.drop_audio for d in (draw_step(5, i, 3, 7.0, 1.0) for i in range(200)))


def test_the_trainer_draws_with_its_configured_shift_and_audio_dropout(data, tmp_path):
    """Two runs of one seed draw the same n: their sigmas must be the SAME s shifted by 50 and by 0.02 (read
    back from the timesteps the model got), and audio dropout 1 / 0 reaches every / no call."""
    runs = {}
    for shift, dropout in ((50.0, 1.0), (0.02, 0.0)):
        model = build_random_transformer(CFG, seed=0)
        calls = _record_calls(model)
        train(_config(data, tmp_path / str(shift), steps=3, shift=shift, audio_dropout=dropout), model=model)
        runs[shift] = calls
    s = {shift: _unshift(torch.cat([c["t"] for c in calls]).double() / 1000, shift) for shift, calls in runs.items()}
    assert len(s[50.0]) == 3
    torch.testing.assert_close(s[50.0], s[0.02], rtol=1e-4, atol=1e-6)
    assert all(not c["audio"].any() for c in runs[50.0])
    assert all(c["audio"].abs().sum() > 0 for c in runs[0.02])


# --- the saved LoRA: alpha as configured (not the rank), merged by ComfyUI's formula ------------------------

def test_the_saved_lora_carries_its_alpha_and_merges_by_comfyuis_formula(data, tmp_path):
    """rank 4, alpha 1: ComfyUI merges W + strength * (alpha / rank) * up @ down, rank = lora_down's rows.
    Merged by hand into a fresh base, the file must give the trained model's output (a file whose alpha is the
    rank scales the update 4x)."""
    model = build_random_transformer(CFG, seed=0)
    result = train(_config(data, tmp_path, steps=3, lr=3e-2, lora_rank=4, lora_alpha=1.0,
                           lora_blocks="double:1,single:0"), model=model)
    sd = load_file(str(result.lora))
    fresh = build_random_transformer(CFG, seed=0)
    weights = fresh.state_dict()
    merged = 0
    for key in [k for k in sd if k.endswith(".lora_down.weight")]:
        base = key.removesuffix(".lora_down.weight")
        down, up, alpha = sd[key].float(), sd[base + ".lora_up.weight"].float(), float(sd[base + ".alpha"])
        assert alpha == 1.0 and down.shape[0] == 4
        name = base.removeprefix("diffusion_model.") + ".weight"
        weights[name] = weights[name] + 1.0 * (alpha / down.shape[0]) * (up @ down)
        merged += 1
    assert merged > 0
    fresh.load_state_dict(weights)
    clip = ClipFolder(data)[0]
    draw = StepDraw(0, 0.6, 4, False)
    with torch.no_grad():
        trained, by_hand, base = (float(flow_loss(m, clip, draw, CPU))
                                  for m in (model, fresh, build_random_transformer(CFG, seed=0)))
    assert abs(trained - base) > 1e-4 * base                          # the LoRA changed the model
    assert abs(by_hand - trained) < 1e-3 * abs(trained - base), (trained, by_hand, base)  # saved in bf16


# --- gradient checkpointing: the blocks run again in backward -----------------------------------------------

def _forward_calls_in_backward(model: torch.nn.Module, data) -> tuple[int, int]:
    """(linear calls in forward, linear calls during backward) inside the transformer blocks."""
    phase, counts = ["forward"], {"forward": 0, "backward": 0}
    linears = [m for b in (*model.double_blocks, *model.single_blocks) for m in b.modules()
               if isinstance(m, torch.nn.Linear)]
    hooks = [m.register_forward_hook(lambda *_: counts.__setitem__(phase[0], counts[phase[0]] + 1))
             for m in linears]
    loss = flow_loss(model, ClipFolder(data)[0], StepDraw(0, 0.5, 7, False), CPU)
    phase[0] = "backward"
    loss.backward()
    for h in hooks:
        h.remove()
    return counts["forward"], counts["backward"]


def test_gradient_checkpointing_recomputes_every_block_in_backward(data):
    """Equal gradients alone cannot tell checkpointing from a no-op: count the blocks' linear calls."""
    plain = build_random_transformer(CFG, seed=0)
    add_lora(plain, "all", rank=2)
    fwd, bwd = _forward_calls_in_backward(plain, data)
    assert fwd > 0 and bwd == 0                                         # nothing runs twice without it
    ckpt = build_random_transformer(CFG, seed=0)
    add_lora(ckpt, "all", rank=2)
    enable_gradient_checkpointing(ckpt)
    fwd2, bwd2 = _forward_calls_in_backward(ckpt, data)
    assert fwd2 == fwd and bwd2 == fwd                                  # every block recomputed once


def test_the_trainer_turns_gradient_checkpointing_on_and_off(data, tmp_path):
    for on in (True, False):
        model = build_random_transformer(CFG, seed=0)
        train(_config(data, tmp_path / str(on), steps=1, gradient_checkpointing=on), model=model)
        fwd, bwd = _forward_calls_in_backward(model, data)
        assert (bwd == fwd) if on else (bwd == 0), (on, fwd, bwd)


def test_checkpointed_audio_injection_is_recomputed_too(data):
    """The audio adapters after the double blocks are checkpointed as well (their activations are video-sized)."""
    model = build_random_transformer(CFG, seed=0)
    add_lora(model, "all", rank=2)
    model.requires_grad_(False)
    for p in model.audio_adapter_blocks.parameters():
        p.requires_grad_(True)
    enable_gradient_checkpointing(model)
    phase, counts = ["forward"], {"forward": 0, "backward": 0}
    for m in model.audio_adapter_blocks.modules():
        if isinstance(m, torch.nn.Linear):
            m.register_forward_hook(lambda *_: counts.__setitem__(phase[0], counts[phase[0]] + 1))
    loss = flow_loss(model, ClipFolder(data)[0], StepDraw(0, 0.5, 7, False), CPU)
    phase[0] = "backward"
    loss.backward()
    assert counts["forward"] > 0 and counts["backward"] == counts["forward"], counts
    assert math.isfinite(float(loss.detach()))


# --- the rest of the trainer's contract, from the mutation baseline's survivors ------------------------------

def test_lora_blocks_select_exactly_the_named_blocks_and_down_starts_like_nn_linear():
    model = build_random_transformer(CFG, seed=0)
    adapters = add_lora(model, "double:1-2,single:1", rank=4, layers="img_attn_qkv|linear1")
    assert set(adapters) == {"double_blocks.1.img_attn_qkv", "double_blocks.2.img_attn_qkv", "single_blocks.1.linear1"}
    for delta in adapters.values():
        fan_in = delta.down.shape[1]
        bound = 1 / math.sqrt(fan_in)              # kaiming_uniform(a=sqrt(5)), nn.Linear's default: U(-1/sqrt(in), ..)
        top = float(delta.down.detach().abs().max())
        assert 0.95 * bound < top <= bound                # 4 x 64+ draws: the largest is near the bound
        assert not delta.up.any()                   # up = 0: training starts from exactly the base model


def test_the_trainer_runs_the_configured_attention_kernel(data, tmp_path, monkeypatch):
    """The run's kernel reaches every training forward: a stand-in "flash_attn" record (installed, any tensor)
    that records its calls computes SDPA."""
    from dataclasses import replace

    from avatar_core.model import attention as A
    calls = []
    sdpa = A.KERNELS["sdpa"].dense
    monkeypatch.setitem(A.KERNELS, "flash_attn", replace(A.KERNELS["flash_attn"], available=lambda: True,
                        supports=lambda q: True, varlen=None, dense=lambda q, k, v: calls.append(1) or sdpa(q, k, v)))
    train(_config(data, tmp_path, steps=1, attention="flash_attn", gradient_checkpointing=False),
          model=build_random_transformer(CFG))
    assert len(calls) >= CFG.depth_double + CFG.depth_single


def test_a_resumed_training_runs_only_the_remaining_steps_and_reports_the_losses_it_trained(data, tmp_path):
    first = train(_config(data, tmp_path, steps=2, save_every=2), model=build_random_transformer(CFG, seed=0))
    resumed = train(_config(data, tmp_path, steps=3, save_every=2, resume="latest"),
                    model=build_random_transformer(CFG, seed=0))
    assert len(first.seconds) == 2 and len(resumed.seconds) == 1 and resumed.step == 3
    assert resumed.losses[:2] == first.losses and len(resumed.losses) == 3
    # step 0's loss is the base model's (up = 0) flow loss at the first draw, recomputed here
    cfg, clips = _config(data, tmp_path), ClipFolder(data)
    draw = draw_step(cfg.seed, 0, len(clips), cfg.shift, cfg.audio_dropout)
    with torch.no_grad():
        want = float(flow_loss(build_random_transformer(CFG, seed=0), clips[draw.clip], draw, CPU))
    assert first.losses[0] == pytest.approx(want, rel=1e-5)


def test_the_trainer_builds_the_configured_random_base_in_its_dtype(data, tmp_path):
    built = train(_config(data, tmp_path / "a", steps=1, dtype="bf16"))
    given = train(_config(data, tmp_path / "b", steps=1, dtype="bf16"),
                  model=build_random_transformer(CFG, dtype=torch.bfloat16, seed=0))
    assert built.losses == given.losses


def test_clip_caches_round_trip_and_a_bad_reference_latent_is_refused(tmp_path):
    import json

    from avatar_core.train.data import read_clip, write_clip
    from avatar_core.train.synthetic import synthetic_clip
    clip = synthetic_clip(CFG, 3, 4, 6, seed=7)
    clip.caption = "a person speaking"
    write_clip(tmp_path / "c.safetensors", clip)
    back = read_clip(tmp_path / "c.safetensors")
    assert back.caption == "a person speaking" and torch.equal(back.latents, clip.latents)
    # one clip, so one bucket of one clip (the landed buckets: clips of one shape)
    assert json.loads(ClipFolder(tmp_path).describe()) == {"folder": str(tmp_path), "clips": 1, "buckets": [1]}
    again = synthetic_clip(CFG, 3, 4, 6, seed=7)
    assert torch.equal(again.latents, clip.latents) and not torch.equal(synthetic_clip(CFG, 3, 4, 6, seed=8).latents,
                                                                        clip.latents)
    clip.ref_latents = torch.zeros(8, 1, 4, 6)                        # 8 channels, the rest of the shape right
    with pytest.raises(ValueError, match="ref_latents"):
        write_clip(tmp_path / "bad.safetensors", clip)


def test_a_warmup_as_long_as_the_run_is_refused(data, tmp_path):
    """lr warmup ramps up to the learning rate over lr_warmup steps: a run of that many steps never trains at it."""
    _config(data, tmp_path / "ok", steps=5, lr_warmup=4)
    for warmup in (5, 9):
        with pytest.raises(ValueError, match="lr_warmup") as err:
            _config(data, tmp_path / "bad", steps=5, lr_warmup=warmup)
        assert f"a warmup of {warmup} steps never reaches the learning rate in a run of 5" in str(err.value)
