"""`python -m avatar_core.parity DIR`: check this implementation against official-code fixtures.

DIR has the layout of shared/fixtures/parity (any tiny sizes): `tiny_config.json`, `tiny_weights.safetensors`,
`fwd_*.safetensors` forward cases, `preproc.safetensors`, `sampler_*.safetensors` (+ .json). Every check
found is run and printed as one line; the exit code is 1 if any check is outside tolerance.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import torch

from .config import AvatarConfig
from .loading import load_transformer
from .model import AvatarTransformer
from .parity_common import CheckResult, compare, load_fixture

FWD_ATOL = FWD_RTOL = 1e-4   # README tolerance for forward outputs (fp32, different op order)


def load_fixture_model(fixture_dir: Path) -> AvatarTransformer:
    cfg = AvatarConfig.from_fixture_json(fixture_dir / "tiny_config.json")
    return load_transformer(fixture_dir / "tiny_weights.safetensors", config=cfg, dtype=torch.float32)


def _call(model: AvatarTransformer, f: dict[str, torch.Tensor], prefix: str, **kw):
    def get(name: str) -> torch.Tensor:
        return f.get(prefix + name, f["in." + name])
    freqs = (f["in.freqs_cos"], f["in.freqs_sin"]) if "in.freqs_cos" in f else None
    return model(get("x"), kw.pop("t", None) if "t" in kw else get("t"), ref_latents=get("ref_latents"),
                 text_states=get("text_states"), text_mask=get("text_mask"), text_pooled=get("text_states_2"),
                 motion_exp=get("motion_exp"), motion_pose=get("motion_pose"), fps=get("fps"),
                 audio=get("audio_prompts"), face_mask=get("face_mask"), freqs=freqs, **kw)


def forward_checks(model: AvatarTransformer, path: Path) -> list[CheckResult]:
    """One fwd_*.safetensors file: the main call, `<variant>.in.*` variants, the cached call, guided outputs."""
    f = load_fixture(path)
    case = path.stem
    results = []
    with torch.no_grad():
        out = _call(model, f, "in.")
        results.append(compare(f"{case}: out.x", out, f["out.x"], FWD_ATOL, FWD_RTOL))
        variants = {k.split(".")[0] for k in f if k.endswith(".out.x") and k.split(".")[0] not in ("cached",)}
        for v in sorted(variants):
            got = _call(model, f, f"{v}.in.")
            results.append(compare(f"{case}: {v}.out.x", got, f[f"{v}.out.x"], FWD_ATOL, FWD_RTOL))
        if "cached.in.cache_out" in f:
            _, cache = _call(model, f, "in.", return_cache=True)
            results.append(compare(f"{case}: cache tokens (input of last single block)", cache,
                                   f["cached.in.cache_out"], FWD_ATOL, FWD_RTOL))
            got = _call(model, f, "in.", t=f["cached.in.t"], cached_tokens=f["cached.in.cache_out"])
            results.append(compare(f"{case}: cached.out.x", got, f["cached.out.x"], FWD_ATOL, FWD_RTOL))
        results += _guided_checks(case, out, f)
    return results


def _guided_checks(case: str, out: torch.Tensor, f: dict[str, torch.Tensor]) -> list[CheckResult]:
    from .sampling.guidance import combine, step_guidance
    results = []
    for key in f:
        m = re.fullmatch(r"out\.guided_x_step_idx_(\d+)", key)
        if m:  # the fixtures' early-step CFG at step index i of the official 50-step run
            g = step_guidance(int(m.group(1)), 50).scale
            results.append(compare(f"{case}: {key}", combine(out, g), f[key], FWD_ATOL, FWD_RTOL))
    return results


def run_all(fixture_dir: Path) -> list[CheckResult]:
    model = load_fixture_model(fixture_dir)
    results: list[CheckResult] = []
    for path in sorted(fixture_dir.glob("fwd_*.safetensors")):
        results += forward_checks(model, path)
    results += _optional_checks("avatar_core.conditioning_parity", fixture_dir)
    results += _optional_checks("avatar_core.sampling_parity", fixture_dir, model=model)
    return results


def _optional_checks(module: str, fixture_dir: Path, model: AvatarTransformer | None = None) -> list[CheckResult]:
    import importlib
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name != module:
            raise
        return [CheckResult(f"{module}: not available", 0.0, 0.0, False, "module missing")]
    return mod.checks(fixture_dir, model=model) if model is not None else mod.checks(fixture_dir)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Check avatar_core against official-code parity fixtures.")
    ap.add_argument("fixture_dir", type=Path)
    args = ap.parse_args(argv)
    if not (args.fixture_dir / "tiny_config.json").is_file():
        print(f"{args.fixture_dir}: no tiny_config.json (not a parity fixture folder)", file=sys.stderr)
        return 2
    # Fixture models are tiny: thread start-up costs more than the math (10x slower on a busy 2-core box).
    torch.set_num_threads(1)
    results = run_all(args.fixture_dir)
    for r in results:
        print(r.line())
    failed = [r for r in results if not r.ok]
    print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed or not results else 0


if __name__ == "__main__":
    raise SystemExit(main())
