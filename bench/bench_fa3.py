"""FlashAttention-3 and the fast preset on a Hopper GPU (13B, RANDOM weights): kernels, per-step times, errors.

    python bench/bench_fa3.py --stages kernels step clip --shapes 704x704 704x1216 --out DIR

Stages (one process, one model; every row printed as a JSON line and saved to DIR/results.jsonl):
- kernels: one attention call of the Avatar's size (24 heads x 128, two segments), cuDNN SDPA vs FA3 bf16 vs
  FA3 fp8 (with its quantisation pass, and without it), and the fp8 error of our scales (per segment and head,
  keys smoothed) against naive per-tensor and per-head scales, all against float32 SDPA.
- step: one CFG-batch-2 forward of a 129-frame window per shape for bf16 + SDPA, bf16 + FA3, fp8 GEMMs + FA3
  bf16 ("fp8 GEMM only") and the fast preset (fp8 GEMMs + FA3 fp8); relative error of each output against
  bf16 + SDPA on the same inputs; peak memory.
- clip: a whole 50-step sampled clip (Euler, CFG 7.5, official deep-cache plan) at a small size for the same
  four configurations: final-latent error against bf16 + SDPA, wall time.
Not a test: it reports what it measured. Random weights: errors measure the arithmetic, not visual quality.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from avatar_core.config import AvatarConfig  # noqa: E402
from avatar_core.loading import build_random_transformer  # noqa: E402
from avatar_core.model import attention as A  # noqa: E402
from avatar_core.model import attention_fa3  # noqa: E402
from avatar_core.model.fp8 import enable_fp8_  # noqa: E402
from avatar_core.model.options import RunOptions  # noqa: E402
from bench.common import TEXT_LEN, TEXT_VALID, cuda_time, gib, make_inputs, parse_shape, timed  # noqa: E402

CONFIGS = (("bf16_sdpa", False, "sdpa"), ("bf16_fa3", False, "fa3"), ("fp8gemm_fa3", True, "fa3"),
           ("fast_separate", True, "fa3_fp8"), ("fast", True, "fa3_fp8"))   # name, fp8 GEMMs, attention kernel
# fast_separate: the fast preset with q and k quantised by their own pass after the qk-norm + RoPE pass (as
# before that pass wrote e4m3 itself): the same-run baseline of that fusion.
SELECTED = {c[0] for c in CONFIGS}                # --configs; the first one run is the error reference


@contextlib.contextmanager
def variant(name: str):
    """Run config `name`: fast_separate turns off the e4m3 writes of the qk-norm + RoPE pass."""
    from avatar_core.model import blocks
    real = blocks.fp8_heads_ready
    if name == "fast_separate":
        blocks.fp8_heads_ready = lambda *a: False
    try:
        yield
    finally:
        blocks.fp8_heads_ready = real


def selected(fp8_now: bool) -> list[tuple[str, str]]:
    """(name, attention kernel) of the --configs whose GEMM precision is the model's now."""
    return [(name, kern) for name, fp8, kern in CONFIGS if fp8 == fp8_now and name in SELECTED]


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def _qkv(L: int, seed: int = 0) -> list[torch.Tensor]:
    """q, k RMS-normalised with a norm weight (and a key offset), v plain: the model's attention inputs' shape."""
    g = torch.Generator("cuda").manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, device="cuda")  # noqa: E731
    q = F.rms_norm(r(L, 24, 128), (128,)) * (1 + 0.3 * r(128))
    k = F.rms_norm(r(L, 24, 128), (128,)) * (1 + 0.3 * r(128)) + 0.5 * r(1, 24, 128)
    return [t.to(torch.bfloat16) for t in (q, k, r(L, 24, 128))]


def _fp8_call(q, k, v, cu, mode: str) -> torch.Tensor:
    """FA3 fp8 with scales per 'ours' (segment x head, smoothed keys), 'head' (segment x head) or 'tensor'."""
    if mode == "ours":
        return attention_fa3.varlen_fp8(q, k, v, cu)
    from avatar_core.model.fused import quantize_segments_fp8
    qs = []
    for t in (q, k, v):
        if mode == "head":
            qs += list(quantize_segments_fp8(t, cu))
        else:
            s = (t.float().abs().amax() / 448.0).clamp_min(1e-12)
            qs += [(t.float() / s).to(torch.float8_e4m3fn), s.reshape(1, 1).expand(len(cu) - 1, t.shape[1]).contiguous()]
    cu_t = torch.tensor(cu, dtype=torch.int32, device=q.device)
    n = max(b - a for a, b in zip(cu[:-1], cu[1:]))
    out = attention_fa3._interface().flash_attn_varlen_func(qs[0], qs[2], qs[4], cu_t, cu_t, n, n, q_descale=qs[1],
                                                           k_descale=qs[3], v_descale=qs[5])
    return attention_fa3._first(out)


def kernels_stage(shape) -> list[dict]:
    T, H, W = shape.latent
    L = (T + 1) * (H // 2) * (W // 2) + TEXT_LEN
    valid = L - TEXT_LEN + TEXT_VALID[1]
    q, k, v = _qkv(L)
    cu = [0, valid, L]
    with torch.no_grad():
        ref = torch.empty(L, 24, 128, device="cuda")
        for a, b in zip(cu[:-1], cu[1:]):
            ref[a:b] = F.scaled_dot_product_attention(*(t[None, a:b].float().transpose(1, 2) for t in (q, k, v)))[0].transpose(0, 1)
        row = dict(stage="kernels", shape=str(shape), L=L)
        for name in ("sdpa", "fa3", "fa3_fp8"):
            def fn(name=name):
                return A.segmented_attention(q[None], k[None], v[None], [valid], name)
            row[f"{name}_s"] = cuda_time(fn)
            row[f"{name}_rel_err_vs_fp32"] = rel(fn()[0], ref.flatten(1))
        from avatar_core.model.fused import quantize_segments_fp8
        q8, qs = quantize_segments_fp8(q, cu)
        k8, ks = quantize_segments_fp8(k, cu, smooth=True)
        v8, vs = quantize_segments_fp8(v, cu)
        cu_t = torch.tensor(cu, dtype=torch.int32, device="cuda")
        row["fa3_fp8_kernel_only_s"] = cuda_time(lambda: attention_fa3._interface().flash_attn_varlen_func(
            q8, k8, v8, cu_t, cu_t, valid, valid, q_descale=qs, k_descale=ks, v_descale=vs))
        row["quantise_qkv_s"] = cuda_time(lambda: [quantize_segments_fp8(t, cu, smooth=s) for t, s in ((q, 0), (k, 1), (v, 0))])
        for mode in ("ours", "head", "tensor"):
            row[f"fp8_scales_{mode}_rel_err_vs_fp32"] = rel(_fp8_call(q, k, v, cu, mode), ref)
        flops = 4 * 24 * 128 * (valid ** 2 + (L - valid) ** 2)
        row.update({f"{n}_tflops": flops / row[f"{n}_s"] / 1e12 for n in ("sdpa", "fa3", "fa3_fp8", "fa3_fp8_kernel_only")})
    return [row]


def step_stage(model, cfg, shapes, repeats: int, fp8_now: bool, refs: dict) -> list[dict]:
    rows = []
    for s in shapes:
        shape = parse_shape(s)
        inp = make_inputs(cfg, shape, 2, "cuda")
        x, t = inp.pop("x"), inp.pop("t")
        for name, kern in selected(fp8_now):
            inp["options"] = RunOptions(attention=kern)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            holder = {}

            def fwd(holder=holder, x=x, t=t, inp=inp):
                holder["out"], holder["cache"] = model(x, t, **inp, return_cache=True)
            with torch.no_grad(), variant(name):
                med, times = timed(fwd, repeats[s], warmup=1 if repeats[s] > 1 else 0)
                peak = gib(torch.cuda.max_memory_allocated())
                cache = holder.pop("cache")
                cached, _ = timed(lambda cache=cache, x=x, t=t, inp=inp: model(x, t, **inp, cached_tokens=cache), 3)
                del cache
            out = holder.pop("out").float().cpu()
            refs.setdefault(s, out)
            rows.append(dict(stage="step", shape=s, config=name, step_s=med, runs=times, deep_cache_step_s=cached,
                             peak_alloc_gib=peak, rel_err_vs_bf16_sdpa=rel(out, refs[s])))
            print(json.dumps(rows[-1]), flush=True)
    return rows


def clip_stage(model, cfg, size: str, steps: int, fp8_now: bool, refs: dict) -> list[dict]:
    from bench.stepcache_bench import sample
    inp = make_inputs(cfg, parse_shape(size), 2, "cuda")
    inp.pop("t")
    rows = []
    for name, kern in selected(fp8_now):
        inp["options"] = RunOptions(attention=kern)
        with torch.no_grad(), variant(name):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            out = sample(model, inp, steps).float().cpu()
            torch.cuda.synchronize()
        refs.setdefault("clip", out)
        rows.append(dict(stage="clip", shape=size, steps=steps, config=name, total_s=time.perf_counter() - t0,
                         rel_err_vs_bf16_sdpa=rel(out, refs["clip"])))
        print(json.dumps(rows[-1]), flush=True)
    return rows


GROUPS = (("attention", ("flash", "fmha", "sdpa", "cudnn", "attn")), ("fp8 quantise", ("_seg_", "_quant")),
          ("gemm", ("gemm", "sm90", "cutlass", "nvjet", "xmma")), ("qk-norm+rope", ("_heads",)),
          ("ln+modulate", ("_ln_mod",)), ("gelu", ("_gelu",)))


def profile_stage(model, cfg, shape: str, fp8_now: bool) -> list[dict]:
    """Kernel time of one CFG-batch-2 forward per selected config (torch.profiler, CUDA kernels only)."""
    from collections import defaultdict
    inp = make_inputs(cfg, parse_shape(shape), 2, "cuda")
    x, t = inp.pop("x"), inp.pop("t")
    rows = []
    for name, kern in selected(fp8_now):
        inp["options"] = RunOptions(attention=kern)
        with torch.no_grad(), variant(name):
            model(x, t, **inp)                                   # warm-up (Triton compiles, cuDNN plans)
            torch.cuda.synchronize()
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
                model(x, t, **inp)
                torch.cuda.synchronize()
        kernels: dict[str, float] = defaultdict(float)
        for ev in prof.key_averages():
            if ev.device_type == torch.autograd.DeviceType.CUDA:
                kernels[ev.key] += ev.self_device_time_total / 1e6
        groups: dict[str, float] = defaultdict(float)
        for k, sec in kernels.items():
            groups[next((g for g, keys in GROUPS if any(w in k.lower() for w in keys)), "other")] += sec
        top = dict(sorted(kernels.items(), key=lambda kv: -kv[1])[:12])
        rows.append(dict(stage="profile", shape=shape, config=name, kernel_total_s=sum(kernels.values()),
                         groups_s=dict(groups), top_kernels_s={k[:90]: v for k, v in top.items()}))
        print(json.dumps(rows[-1]), flush=True)
    return rows


def _capture(model, cfg, size: str, calls: tuple[int, ...]) -> list[tuple]:
    """q, k, v and valid of the given attention calls (in run order) of one bf16 forward."""
    from avatar_core.model import shard  # the single-process shard makes the model's segmented attention calls
    seen, kept, original = [0], [], shard.segmented_attention

    def spy(q, k, v, valid, backend="auto"):
        if seen[0] in calls:
            kept.append((seen[0], q[0].clone(), k[0].clone(), v[0].clone(), valid[0]))
        seen[0] += 1
        return original(q, k, v, valid, backend)
    inp = make_inputs(cfg, parse_shape(size), 2, "cuda")
    x, t = inp.pop("x"), inp.pop("t")
    shard.segmented_attention = spy
    try:
        with torch.no_grad():
            model(x, t, **inp)
    finally:
        shard.segmented_attention = original
    return kept


def _deq(t, cu, smooth):
    from avatar_core.model.fused import quantize_segments_fp8
    means = []
    t8, s = quantize_segments_fp8(t, cu, smooth=smooth, means=means)
    sizes = torch.tensor([b - a for a, b in zip(cu[:-1], cu[1:])], device=t.device)
    out = t8.float() * s.repeat_interleave(sizes, dim=0)[:, :, None]
    for (a, b), m in zip(zip(cu[:-1], cu[1:]), means):
        out[a:b] += m
    return out.to(t.dtype)


def decompose_stage(model, cfg, size: str, calls=(0, 19, 60, 118)) -> list[dict]:
    """Where the fp8 attention error comes from, on the model's own q, k, v (random weights)."""
    rows = []
    for i, q, k, v, valid in _capture(model, cfg, size, calls):
        L = q.shape[0]
        cu = [0, valid, L] if valid < L else [0, L]
        with torch.no_grad():
            ref = torch.empty(q.shape, device="cuda")
            for a, b in zip(cu[:-1], cu[1:]):
                ref[a:b] = F.scaled_dot_product_attention(*(t[None, a:b].float().transpose(1, 2) for t in (q, k, v)))[0].transpose(0, 1)
            row = dict(stage="decompose", shape=size, call=i)
            for name, t in (("q", q), ("k", k), ("v", v)):
                tf = t.float()
                row[f"{name}_mean_over_rms"] = (tf.mean(0).norm() / tf.pow(2).mean(0).sum().sqrt()).item()
            row["fa3_bf16"] = rel(attention_fa3.varlen(q, k, v, cu), ref)
            for sv in (False, True):
                attention_fa3.SMOOTH_V = sv
                row[f"fa3_fp8_smooth_v{int(sv)}"] = rel(attention_fa3.varlen_fp8(q, k, v, cu), ref)
            attention_fa3.SMOOTH_V = False
            row["fp8_qk_only"] = rel(attention_fa3.varlen(_deq(q, cu, False), _deq(k, cu, True), v, cu), ref)
            row["fp8_v_only"] = rel(attention_fa3.varlen(q, k, _deq(v, cu, False), cu), ref)
            row["fp8_v_smoothed_only"] = rel(attention_fa3.varlen(q, k, _deq(v, cu, True), cu), ref)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def variants_stage(model, cfg, size: str, refs: dict) -> list[dict]:
    """Whole-forward error (one forward each, after the fp8 conversion) of fast-preset variants."""
    inp = make_inputs(cfg, parse_shape(size), 2, "cuda")
    x, t = inp.pop("x"), inp.pop("t")
    rows, default = [], attention_fa3.SMOOTH_V
    for name, kern, sv in (("fp8gemm_fa3", "fa3", False), ("fast", "fa3_fp8", False), ("fast_smooth_v", "fa3_fp8", True)):
        inp["options"], attention_fa3.SMOOTH_V = RunOptions(attention=kern), sv
        with torch.no_grad():
            out = model(x, t, **inp).float().cpu()
        rows.append(dict(stage="variants", shape=size, config=name, rel_err_vs_bf16_sdpa=rel(out, refs[size])))
        print(json.dumps(rows[-1]), flush=True)
    attention_fa3.SMOOTH_V = default
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stages", nargs="+", default=["kernels", "step", "clip"],
                    help="kernels, step, clip, profile (kernel times of one forward); decompose / variants: where the "
                         "fp8 attention error comes from")
    ap.add_argument("--shapes", nargs="+", default=["704x704", "704x1216"])
    ap.add_argument("--repeats", nargs="+", type=int, default=[2, 1], help="timed forwards per shape (1: no warm-up)")
    ap.add_argument("--clip-size", default="256x256")
    ap.add_argument("--clip-steps", type=int, default=50)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--configs", nargs="+", default=[c[0] for c in CONFIGS])
    args = ap.parse_args()
    SELECTED.intersection_update(args.configs)
    assert attention_fa3.available(), "FlashAttention-3 does not load here (needs a Hopper GPU and tokenspeed-fa3)"
    rows, refs = [], {}
    repeats = dict(zip(args.shapes, args.repeats + [1] * len(args.shapes)))
    if "kernels" in args.stages:
        for s in args.shapes:
            rows += kernels_stage(parse_shape(s))
            print(json.dumps(rows[-1]), flush=True)
    cfg = AvatarConfig.avatar_13b()
    t0 = time.perf_counter()
    model = build_random_transformer(cfg, dtype=torch.bfloat16, device="cuda", seed=0)
    print(f"model ready in {time.perf_counter() - t0:.1f} s", flush=True)
    if "decompose" in args.stages:
        rows += decompose_stage(model, cfg, args.shapes[0])
    if "variants" in args.stages:
        inp = make_inputs(cfg, parse_shape(args.shapes[0]), 2, "cuda")
        inp["options"] = RunOptions(attention="sdpa")
        with torch.no_grad():
            refs[args.shapes[0]] = model(inp.pop("x"), inp.pop("t"), **inp).float().cpu()
        enable_fp8_(model, fast=True)
        rows += variants_stage(model, cfg, args.shapes[0], refs)
    for fp8_now in (False, True):
        if fp8_now:
            enable_fp8_(model, fast=True)           # a no-op for layers already fp8 (variants stage)
        if "step" in args.stages:
            rows += step_stage(model, cfg, args.shapes, repeats, fp8_now, refs)
        if "clip" in args.stages:
            rows += clip_stage(model, cfg, args.clip_size, args.clip_steps, fp8_now, refs)
        if "profile" in args.stages:
            rows += profile_stage(model, cfg, args.shapes[0], fp8_now)
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    meta = dict(device=torch.cuda.get_device_name(), torch=torch.__version__, date=time.strftime("%Y-%m-%d"),
                weights="random (seed 0)")
    print(json.dumps(meta))
    for r in rows:
        print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items() if k != "runs"}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
