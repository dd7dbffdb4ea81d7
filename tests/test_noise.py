"""The sampler's noise modes: "cpu" (device-independent) and "official" (the official pipeline's CUDA draw).

The official draw, written out from the official code (Tencent-Hunyuan/HunyuanVideo-Avatar @ fd59436):
sample_inference_audio.py makes ``generator = torch.Generator(device="cuda").manual_seed(seed)``; the pipeline
(pipeline_hunyuan_video_audio.py) calls ``prepare_latents`` with ``infer_length = (A // 128 + 1) * 32 + 1`` latent
frames (A = audio frames after predict's padding: 129 when F <= 129, else F + 5) and ``dtype =
prompt_embeds.dtype`` (the fp16 text encoder); diffusers' ``randn_tensor`` with one CUDA generator and a CUDA device
is ``torch.randn(shape, generator=g, device="cuda", dtype=fp16)``; no ``init_noise_sigma`` scaling (the flow
scheduler has none); a clip with ``video_length == 33`` (A // 4 * 4 + 1 frames -> (.. - 1) // 4 + 1 latents) or
``infer_length == 33`` keeps the first 33 latent frames.

GPU check (the integrator runs it on a CUDA machine): python -m pytest tests/test_noise.py -q; against the official
`prepare_latents` itself (read from the official file at run time): python bench/official_noise.py --hva HVA
(bench/results/2026-12-07_h100_presets: 15/15 bitwise equal on an H100).
"""

from __future__ import annotations

import pytest
import torch

from avatar_core.errors import InputError
from avatar_core.sampling import DeepCacheConfig, sample_avatar
from avatar_core.sampling.sampler import NOISE_MODES, SamplerConfig, initial_noise
from avatar_core.sampling.windows import plan_clip

CUDA = pytest.mark.skipif(not torch.cuda.is_available(),
                          reason="noise='official' is the official CUDA generator's draw: needs a CUDA GPU")


def _official_draw(frames: int, h: int, w: int, seed: int) -> torch.Tensor:
    """The official pipeline's initial latents for ``frames`` audio frames (module docstring), on cuda."""
    audio = 129 if frames <= 129 else frames + 5
    infer_length = (audio // 128 + 1) * 32 + 1
    video_length = ((audio // 4 * 4 + 1) - 1) // 4 + 1
    g = torch.Generator(device="cuda").manual_seed(seed)
    latents = torch.randn((1, 16, infer_length, h, w), generator=g, device="cuda", dtype=torch.float16)
    if video_length == 33 or infer_length == 33:
        latents = latents[:, :, :33]
    return latents


@CUDA
@pytest.mark.parametrize("frames", [100, 129, 130, 300, 517])
@pytest.mark.parametrize("seed", [0, 128, 2**63 + 5])
def test_official_noise_is_the_official_cuda_draw_bit_for_bit(frames, seed):
    h, w = 88, 76  # a 704 x 608 video
    like = torch.zeros(1, 16, 33, h, w, device="cuda")
    ours = initial_noise(plan_clip(frames), like, seed, mode="official")
    ref = _official_draw(frames, h, w, seed)
    assert ours.dtype == torch.float16 and ours.device.type == "cuda"
    assert ours.shape == ref.shape and torch.equal(ours, ref)
    cpu = initial_noise(plan_clip(frames), like.cpu(), seed)
    assert not torch.equal(ours.float().cpu(), cpu)  # the other mode really is another draw


@CUDA
def test_official_noise_equals_diffusers_randn_tensor_where_installed():
    utils = pytest.importorskip("diffusers.utils.torch_utils")
    plan = plan_clip(300)
    like = torch.zeros(1, 16, 33, 40, 24, device="cuda")
    g = torch.Generator(device="cuda").manual_seed(7)
    ref = utils.randn_tensor((1, 16, plan.noise_frames, 40, 24), generator=g, device=torch.device("cuda"),
                             dtype=torch.float16)[:, :, : plan.ring_frames]
    assert torch.equal(initial_noise(plan, like, 7, mode="official"), ref)


def test_cpu_noise_is_a_cpu_float32_draw_of_the_uncut_shape():
    plan = plan_clip(100)  # one window: 65 frames drawn, 33 kept
    like = torch.zeros(1, 4, 33, 2, 3)
    full = torch.randn((1, 4, 65, 2, 3), generator=torch.Generator().manual_seed(11))
    assert torch.equal(initial_noise(plan, like, 11), full[:, :, :33])
    assert torch.equal(initial_noise(plan, like, 11, mode="cpu"), full[:, :, :33])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_official_noise_without_cuda_is_refused_with_the_fix():
    with pytest.raises(InputError, match="noise='official'.*CUDA.*noise='cpu'"):
        initial_noise(plan_clip(100), torch.zeros(1, 4, 33, 2, 2), 0, mode="official")


def test_unknown_noise_mode_is_refused_by_the_config_and_the_draw():
    assert set(NOISE_MODES) == {"cpu", "official"}
    with pytest.raises(InputError, match=r"noise: 'gpu' is not one of \['cpu', 'official'\].*official pipeline"):
        SamplerConfig(noise="gpu")
    with pytest.raises(InputError, match="noise='gpu'"):
        initial_noise(plan_clip(100), torch.zeros(1, 4, 33, 2, 2), 0, mode="gpu")
    assert SamplerConfig().noise == "cpu"


def _toy(x: torch.Tensor, t: torch.Tensor, **kw) -> torch.Tensor:
    return -0.5 * x + 0.001 * t.view(-1, 1, 1, 1, 1)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_sampler_refuses_official_noise_on_cpu_before_any_model_call():
    from test_sampling_loop import small_cond
    calls = []
    with pytest.raises(InputError, match="noise='official'"):
        sample_avatar(lambda x, t, **kw: calls.append(1) or _toy(x, t), small_cond(100),
                      SamplerConfig(steps=2, noise="official"))
    assert calls == []


@CUDA
def test_sampler_starts_from_the_official_draw_on_cuda():
    from test_sampling_loop import small_cond
    cond = small_cond(300)
    cond.ref_latents = cond.ref_latents.cuda()
    cond.face_mask = cond.face_mask.cuda()
    seen = []

    def first(x, t, **kw):
        seen.append(x[:1].clone())
        return _toy(x, t)

    sample_avatar(first, cond, SamplerConfig(steps=1, seed=5, noise="official", deep_cache=DeepCacheConfig(enabled=False)))
    g = torch.Generator(device="cuda").manual_seed(5)
    ring = plan_clip(300).ring_frames
    draw = torch.randn((1, 4, plan_clip(300).noise_frames, 2, 2), generator=g, device="cuda", dtype=torch.float16)
    assert torch.equal(seen[0], draw[:, :, :33].float())  # window 0 of step 0 = the first 33 ring frames
    assert ring == 97
