"""Training on the tiny config (CPU): the loss goes down, artefacts load back and act, resume is exact."""

from __future__ import annotations

import os

import pytest
import torch
from safetensors.torch import load_file

from avatar_core.config import AvatarConfig
from avatar_core.loading import build_random_transformer, load_emotion_module
from avatar_core.lora import load_lora, set_loras
from avatar_core.train import ClipFolder, TrainConfig, train
from avatar_core.train.__main__ import main as cli_main
from avatar_core.train.adapters import add_lora, enable_gradient_checkpointing
from avatar_core.train.loss import StepDraw, flow_loss, model_inputs
from avatar_core.train.synthetic import write_synthetic_folder

CFG = AvatarConfig.tiny()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_synthetic_folder(tmp_path_factory.mktemp("clips"), CFG, clips=2, emotion=True)


def _base():
    return build_random_transformer(CFG, seed=0)  # what random_model="tiny", seed=0 builds


def _config(data, out, **kw) -> TrainConfig:
    base = dict(data=str(data), output=str(out), random_model="tiny", dtype="fp32", lr=3e-3, lora_rank=4,
                lora_alpha=4.0, save_every=1000, progress=False, device="cpu")
    return TrainConfig(**{**base, **kw})


def _eval_loss(model, data, use_emotion=False) -> float:
    """Mean loss over fixed draws (no dropout): comparable before and after training."""
    clips = ClipFolder(data)
    with torch.no_grad():
        losses = [flow_loss(model, clips[c], StepDraw(c, s, 100 + c, False), torch.device("cpu"), use_emotion)
                  for c in range(len(clips)) for s in (0.3, 0.6, 0.9)]
    return float(torch.stack(losses).mean())


def _output(model, clip, use_emotion=False):
    kw = model_inputs(clip, torch.device("cpu"), use_emotion)
    with torch.no_grad():
        return model(clip.latents[None].float(), torch.tensor([600.0]), **kw)


@pytest.fixture(scope="module")
def lora_run(data, tmp_path_factory):
    model = _base()
    before = _eval_loss(model, data)
    result = train(_config(data, tmp_path_factory.mktemp("lora"), steps=30), model=model)
    return model, before, result


def test_lora_training_lowers_the_loss(lora_run, data):
    model, before, _ = lora_run
    after = _eval_loss(model, data)
    assert after < 0.8 * before, (before, after)


def test_saved_lora_loads_in_the_loader_and_reproduces_the_trained_model(lora_run, data):
    trained, _, result = lora_run
    sd = load_file(str(result.lora))
    assert all(k.startswith("diffusion_model.") for k in sd)
    base = _base()
    clip = ClipFolder(data)[0]
    base_out = _output(base, clip)
    lora = load_lora(result.lora, base)
    assert lora.unmatched == () and lora.matched == len(sd) // 3
    set_loras(base, [(lora, 1.0)])
    out = _output(base, clip)
    assert (out - base_out).abs().max() > 1e-2
    torch.testing.assert_close(out, _output(trained, clip), rtol=1e-2, atol=2e-2)  # saved in bf16


def test_aem_training_lowers_the_loss_and_the_file_loads(data, tmp_path):
    model = _base()
    result = train(_config(data, tmp_path, steps=30, train_lora=False, train_aem=True), model=model)
    assert result.lora is None and result.aem is not None
    fresh = _base()
    clip = ClipFolder(data)[0]
    without = _output(fresh, clip, use_emotion=True)                   # no AEM yet: emotion ignored
    load_emotion_module(fresh, result.aem)
    assert fresh.aem is not None
    with_aem = _output(fresh, clip, use_emotion=True)
    assert (with_aem - without).abs().max() > 1e-3
    torch.testing.assert_close(with_aem, _output(model, clip, use_emotion=True), rtol=1e-4, atol=1e-4)
    assert _eval_loss(model, data, use_emotion=True) < _eval_loss(_base(), data, use_emotion=True)


def test_resume_continues_bit_for_bit(data, tmp_path):
    straight = train(_config(data, tmp_path / "a", steps=4, save_every=2))
    train(_config(data, tmp_path / "b", steps=2, save_every=2))
    resumed = train(_config(data, tmp_path / "b", steps=4, save_every=2, resume="latest"))
    assert resumed.losses == straight.losses
    a, b = load_file(str(straight.lora)), load_file(str(resumed.lora))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_gradient_checkpointing_gives_the_same_gradients(data):
    clip = ClipFolder(data)[0]
    draw = StepDraw(0, 0.5, 7, False)
    grads = []
    for ckpt in (False, True):
        model = _base()
        adapters = add_lora(model, "double:1,single:0", rank=2)
        with torch.no_grad():
            for d in adapters.values():
                d.up.normal_(0, 0.1, generator=torch.Generator().manual_seed(1))
                d.down.copy_(torch.linspace(-0.1, 0.1, d.down.numel()).reshape(d.down.shape))
        if ckpt:
            enable_gradient_checkpointing(model)
        flow_loss(model, clip, draw, torch.device("cpu")).backward()
        grads.append(torch.cat([torch.cat([d.up.grad.flatten(), d.down.grad.flatten()]) for d in adapters.values()]))
    assert grads[0].abs().sum() > 0
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-7)


def test_cli_runs(data, tmp_path, capsys):
    cli_main(["--data", str(data), "--output", str(tmp_path), "--random-model", "tiny", "--dtype", "fp32",
              "--steps", "2", "--lora-blocks", "single", "--lora-rank", "2", "--no-progress", "--device", "cpu",
              "--sample-every", "2", "--sample-steps", "2", "--train-aem"])
    out = capsys.readouterr().out.splitlines()   # the files it wrote, each on its own line
    assert f"LoRA: {tmp_path / 'lora.safetensors'}" in out and f"AEM: {tmp_path / 'aem.safetensors'}" in out
    assert (tmp_path / "samples" / "step-000002.safetensors").is_file()
    assert (tmp_path / "checkpoints" / "step-000002" / "state.json").is_file()


@pytest.mark.parametrize("kw, message", [
    (dict(train_lora=False), "nothing to train"),
    (dict(optimizer="sgd"), "adamw or adamw8bit"),
    (dict(lora_blocks="double:0-99"), "goes past"),
    (dict(lora_layers="nope"), "matches no linear"),
])
def test_bad_settings_fail_clearly(data, tmp_path, kw, message):
    with pytest.raises(ValueError, match=message):
        train(_config(data, tmp_path, steps=1, **kw))


def test_not_a_clip_cache_fails_clearly(tmp_path):
    from safetensors.torch import save_file
    save_file({"x": torch.zeros(1)}, str(tmp_path / "x.safetensors"))
    with pytest.raises(ValueError, match="not a training clip cache"):
        train(_config(tmp_path, tmp_path / "out", steps=1))


def test_adamw8bit_without_bitsandbytes_says_so(data, tmp_path):
    pytest.importorskip("torch")
    try:
        import bitsandbytes  # noqa: F401
        pytest.skip("bitsandbytes is installed here")
    except ImportError:
        pass
    with pytest.raises(ValueError, match="bitsandbytes"):
        train(_config(data, tmp_path, steps=1, optimizer="adamw8bit"))


def test_13b_training_benchmark_runs_on_the_tiny_config():
    from bench.train_13b import main as bench_main
    row = bench_main(["--config", "tiny", "--size", "48", "--video-frames", "5", "--steps", "2", "--rank", "4",
                      "--text-len", "8", "--device", "cpu"])
    assert row["latent_frames"] == 2 and len(row["step_s"]) == 2 and row["s_per_step"] > 0
    assert all(v == v for v in row["losses"])  # finite, not NaN


def test_sample_video_is_written_when_a_decoder_is_given(data, tmp_path):
    import av

    from avatar_core.train.samples import write_sample
    model, clip = _base(), ClipFolder(data)[0]
    seen = []

    def decoder(latents):  # stands in for the VAE: 4x time, 8x space
        seen.append(tuple(latents.shape))
        return torch.rand(4 * latents.shape[2] - 3, 8 * latents.shape[3], 8 * latents.shape[4], 3)
    path = write_sample(model, clip, tmp_path, 7, _config(data, tmp_path, sample_steps=2), decoder)
    assert path.name == "step-000007.mp4" and seen == [(1, 16, clip.frames, 4, 6)]
    with av.open(str(path)) as c:
        assert sum(1 for _ in c.decode(video=0)) == 4 * clip.frames - 3


def test_resume_from_a_missing_checkpoint_fails_clearly(data, tmp_path):
    with pytest.raises(ValueError, match="not a checkpoint folder"):
        train(_config(data, tmp_path, steps=1, resume=str(tmp_path / "nope")))


def test_cli_uses_expandable_segments_unless_the_user_chose(monkeypatch):
    """The 24 GB training setting ran out of memory with PyTorch's default allocator (README table): the CLI turns
    on expandable segments before any CUDA allocation, and keeps a user's own allocator setting."""
    monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF", raising=False)
    with pytest.raises(SystemExit):
        cli_main(["--help"])
    assert os.environ["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "max_split_size_mb:128")
    with pytest.raises(SystemExit):
        cli_main(["--help"])
    assert os.environ["PYTORCH_CUDA_ALLOC_CONF"] == "max_split_size_mb:128"
