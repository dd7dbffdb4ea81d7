"""Transformer forward parity (``fwd_*.safetensors`` of shared/fixtures/parity) and the fixture config reader."""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from ..config import AvatarConfig
from ..loading import load_transformer
from ..model import AvatarTransformer
from .common import CheckResult, compare, load_fixture

FWD_ATOL = FWD_RTOL = 1e-4   # README tolerance for forward outputs (fp32, different op order)


def config_from_fixture(path: str | Path) -> AvatarConfig:
    """Read a parity fixture's `tiny_config.json` (the official constructor arguments)."""
    raw = json.loads(Path(path).read_text())
    ctor, args = raw["constructor"], raw.get("args", {})
    rebuilt = raw.get("audio_modules_rebuilt_with_official_classes", {})
    dim_head = _parse_int_kwarg(rebuilt.get("audio_adapter_blocks", ""), "dim_head")
    inter = _parse_int_kwarg(rebuilt.get("audio_proj", ""), "intermediate_dim")
    kw = dict(
        in_channels=ctor["in_channels"], out_channels=ctor["out_channels"], hidden_size=ctor["hidden_size"],
        num_heads=ctor["num_heads"], mlp_ratio=float(ctor["mlp_width_ratio"]),
        depth_double=ctor["depth_double_blocks"], depth_single=ctor["depth_single_blocks"],
        patch_size=tuple(ctor["patch_size"]), rope_dims=tuple(ctor["rope_dim_list"]),
        qkv_bias=ctor.get("qkv_bias", True), text_dim=args.get("text_states_dim", 4096),
        text_pooled_dim=args.get("text_states_dim_2", 768), rope_theta=float(args.get("rope_theta", 256)),
    )
    if dim_head:
        kw["adapter_dim"] = dim_head
    if inter:
        kw["audio_proj_dim"] = inter
    if "double_stream_list" in raw:
        kw["adapter_after_double"] = tuple(raw["double_stream_list"])
    return AvatarConfig(**kw)


def _parse_int_kwarg(text: str, name: str) -> int | None:
    """Pull `name=123` out of a constructor string such as 'PerceiverAttentionCA(dim=64, dim_head=32)'."""
    key = name + "="
    if key not in text:
        return None
    tail = text.split(key, 1)[1]
    digits = "".join(ch for ch in tail.split(",")[0].split(")")[0] if ch.isdigit())
    return int(digits) if digits else None


def load_fixture_model(fixture_dir: Path) -> AvatarTransformer:
    cfg = config_from_fixture(fixture_dir / "tiny_config.json")
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
    from ..sampling.guidance import combine, step_guidance
    results = []
    for key in f:
        m = re.fullmatch(r"out\.guided_x_step_idx_(\d+)", key)
        if m:  # the fixtures' early-step CFG at step index i of the official 50-step run
            g = step_guidance(int(m.group(1)), 50).scale
            results.append(compare(f"{case}: {key}", combine(out, g), f[key], FWD_ATOL, FWD_RTOL))
    return results


def checks(fixture_dir: Path) -> list[CheckResult]:
    """Every check of a shared/fixtures/parity-style folder: forward, conditioning pre-processing, sampler."""
    from . import conditioning, sampling
    model = load_fixture_model(fixture_dir)
    results: list[CheckResult] = []
    for path in sorted(fixture_dir.glob("fwd_*.safetensors")):
        results += forward_checks(model, path)
    results += conditioning.checks(fixture_dir)
    results += sampling.checks(fixture_dir, model=model)
    return results
