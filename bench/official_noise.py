"""noise="official" against the official pipeline's own `prepare_latents`, bit for bit (CUDA).

    python bench/official_noise.py --hva HVA [--out noise.json]

Runs the official `HunyuanVideoAudioPipeline.prepare_latents` (its source, read from the official file at run time
and compiled alone: importing the pipeline module pulls the text encoder, VAE and their dependencies) with
diffusers' `randn_tensor`, and calls it as the official pipeline does: a CUDA generator seeded with the seed
(sample_inference_audio.py), fp16 (the text encoder's dtype), `infer_length` latent frames, the official
FlowMatchDiscreteScheduler as the pipeline's scheduler (its `init_noise_sigma` scaling, if any, applies), then the
cut to 33 latent frames the pipeline makes for short clips. The pipeline's frame bookkeeping (infer_length, the cut)
is written out here from its __call__ (the lines are not a function of their own); tests/test_noise.py checks the
same draw against diffusers' `randn_tensor`. Exit code 1 when any case differs.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import torch

REPO = Path(__file__).resolve().parents[1]
CASES = [(frames, seed) for frames in (100, 129, 130, 300, 517) for seed in (0, 128, 2**63 + 5)]


def official_function(path: Path, name: str):
    """The function `name` defined in `path` (a method is taken as a plain function of `self`), compiled alone
    with diffusers' `randn_tensor` and torch as its globals."""
    from diffusers.utils.torch_utils import randn_tensor
    tree = ast.parse(path.read_text(), filename=str(path))
    node = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == name)
    scope = {"torch": torch, "randn_tensor": randn_tensor}
    exec(compile(ast.Module(body=[node], type_ignores=[]), str(path), "exec"), scope)  # noqa: S102
    return scope[name]


def load_file(path: Path):
    """A module from one official file (its imports are diffusers' and torch's only)."""
    spec = importlib.util.spec_from_file_location(f"official_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def official_draw(prepare_latents, scheduler, frames: int, seed: int, h: int, w: int) -> torch.Tensor:
    """The official pipeline's initial latents for `frames` audio frames (predict's padding, then __call__'s)."""
    audio = 129 if frames <= 129 else frames + 5
    infer_length = (audio // 128 + 1) * 32 + 1
    video_length = ((audio // 4 * 4 + 1) - 1) // 4 + 1
    pipe = SimpleNamespace(vae_scale_factor=8, scheduler=scheduler)
    g = torch.Generator(device="cuda").manual_seed(seed)
    latents = prepare_latents(pipe, 1, 16, h * 8, w * 8, infer_length, torch.float16, torch.device("cuda"), g)
    return latents[:, :, :33] if video_length == 33 or infer_length == 33 else latents


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hva", required=True, help="official root (holds hymm_sp/)")
    ap.add_argument("--out", type=Path)
    opt = ap.parse_args()
    sys.path.insert(0, str(REPO))
    hymm = Path(opt.hva) / "hymm_sp" / "diffusion"
    prepare_latents = official_function(hymm / "pipelines" / "pipeline_hunyuan_video_audio.py", "prepare_latents")
    FlowMatchDiscreteScheduler = load_file(hymm / "schedulers" / "scheduling_flow_match_discrete.py") \
        .FlowMatchDiscreteScheduler  # noqa: N806
    from avatar_core.sampling.sampler import initial_noise  # noqa: E402
    from avatar_core.sampling.windows import plan_clip  # noqa: E402

    scheduler = FlowMatchDiscreteScheduler(shift=5.0, reverse=True, solver="euler")
    h, w = 88, 76   # a 704 x 608 video
    like = torch.zeros(1, 16, 33, h, w, device="cuda")
    rows = []
    for frames, seed in CASES:
        ref = official_draw(prepare_latents, scheduler, frames, seed, h, w)
        ours = initial_noise(plan_clip(frames), like, seed, mode="official")
        same = ours.dtype == ref.dtype and ours.shape == ref.shape and bool(torch.equal(ours, ref))
        rows.append(dict(frames=frames, seed=seed, shape=list(ref.shape), dtype=str(ref.dtype), bitwise_equal=same))
        print(f"official_noise frames={frames} seed={seed} shape={list(ref.shape)} bitwise_equal={same}", flush=True)
    res = dict(gpu=torch.cuda.get_device_name(), torch=torch.__version__,
               scheduler_has_init_noise_sigma=hasattr(scheduler, "init_noise_sigma"), cases=rows)
    if opt.out:
        opt.out.write_text(json.dumps(res, indent=1))
    ok = all(r["bitwise_equal"] for r in rows)
    print(f"official_noise: {sum(r['bitwise_equal'] for r in rows)}/{len(rows)} bitwise equal", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
