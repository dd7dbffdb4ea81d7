"""The fast preset's error against the OFFICIAL 13B forward, per choice of fp8 block linears: a frontier.

    python bench/fp8_frontier.py --tools ../shared/tools/official13b --hva HVA --out frontier.json \
        [--variants bf16 fast keep:mod keep:mod+txt only:mod only:img_qkv ... rowscale rowscale+keep:mod]

One GPU, random weights (the official N(0, 0.02) init of `bench_official.build_model`), one 33-latent-frame
window, CFG batch 2, the official inputs. The official forward (bf16 autocast, exact per-segment SDPA) is the
reference. Our model is loaded ONCE in bf16 from the official checkpoint it writes (`LoadSpec`, the path a user's
file takes); each variant then stores a chosen set of block linears in fp8 (quantised from those bf16 weights),
runs one untimed and one timed forward with the fast preset's fp8 attention, is compared with the reference
(relative L2, max abs, per CFG half) and the bf16 layers are put back. Variants:

  bf16              no fp8 linears (the attention kernel alone: fp8 attention's share of the error)
  bf16_fa3          no fp8 linears, bf16 FlashAttention-3 (the bf16 preset's time in the same run)
  fast              every block linear in fp8, per-tensor weight scale (today's fast preset)
  only:C[+C...]     only the named classes in fp8 (a class's own error: the sensitivity)
  keep:C[+C...]     every block linear in fp8 except the named classes (kept in bf16)
  rowscale[+keep:..] as fast / keep, with one weight scale per output channel instead of per tensor
  V/dq:C[+C...]     variant V, with its fp8 linears of the named classes dequantised per call (weight-only fp8,
                    bf16 GEMM: fp8_e4m3fn's numerics) instead of fp8 GEMMs
Classes: mod (all modulation linears), img_qkv, img_proj, img_fc1, img_fc2, txt (every text-stream linear of the
double blocks), single_l1, single_l2.
`--attention` picks the kernel of every variant but bf16_fa3 (default fa3_fp8, the fast preset's). `only:` variants
measure an error, so they run one forward without a warm-up (their time_s includes a first call's overheads).
Writes one JSON object (reference, per-variant rows); prints one line per variant.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn as nn

REPO = Path(__file__).resolve().parents[1]
CLASSES = {
    "mod": r"(img_mod|txt_mod|modulation)\.linear$",
    "img_qkv": r"img_attn_qkv$", "img_proj": r"img_attn_proj$",
    "img_fc1": r"img_mlp\.fc1$", "img_fc2": r"img_mlp\.fc2$",
    "txt": r"txt_(attn_qkv|attn_proj|mlp\.fc1|mlp\.fc2)$",
    "single_l1": r"single_blocks\.\d+\.linear1$", "single_l2": r"single_blocks\.\d+\.linear2$",
}
DEFAULT_VARIANTS = ["bf16", "fast", "only:mod", "only:txt", "only:img_qkv", "only:img_proj", "only:img_fc1",
                    "only:img_fc2", "only:single_l1", "only:single_l2", "keep:mod", "keep:mod+txt", "rowscale",
                    "rowscale+keep:mod+txt"]


def parse_dequant(text: str) -> tuple[str, set[str]]:
    """'keep:txt/dq:mod' -> ('keep:txt', {'mod'}): the classes whose fp8 linears run weight-only."""
    base, _, names = text.partition("/dq:")
    classes = set(names.split("+")) if names else set()
    if not classes <= set(CLASSES):
        raise SystemExit(f"variant {text!r}: /dq: takes classes of {list(CLASSES)}")
    return base, classes


def plan(text: str) -> tuple[bool, bool, set[str], set[str]]:
    """A variant -> (rowscale, only, classes, weight-only classes)."""
    base, dequant = parse_dequant(text)
    return (*parse_variant(base), dequant)


def parse_variant(text: str) -> tuple[bool, bool, set[str]]:
    """'keep:mod+txt' -> (rowscale, only, classes). Unknown classes are refused before anything runs."""
    rowscale = text.startswith("rowscale")
    rest = text.removeprefix("rowscale").lstrip("+")
    if text in ("bf16", "bf16_fa3", "fast") or rest == "":
        return rowscale, text.startswith("bf16"), set()
    kind, _, names = rest.partition(":")
    classes = set(names.split("+"))
    if kind not in ("only", "keep") or not classes <= set(CLASSES):
        raise SystemExit(f"variant {text!r}: use bf16, fast, only:C+C, keep:C+C, rowscale[+keep:C]; classes {list(CLASSES)}")
    return rowscale, kind == "only", classes


def selected(names: list[str], only: bool, classes: set[str]) -> list[str]:
    """The block linears a variant stores in fp8."""
    hit = lambda n: any(re.search(CLASSES[c], n) for c in classes)  # noqa: E731
    return [n for n in names if hit(n) == only]


def fp8_family(rowscale: bool):
    """The fast fp8 family: per-tensor weight scale (the fast preset), or one scale per output channel."""
    from avatar_core.model.fp8 import FP8_E4M3_ROWS, FP8FastLinears
    from avatar_core.model.linear import Family
    return Family(FP8_E4M3_ROWS, fast=True) if rowscale else FP8FastLinears


def swap(model: nn.Module, names: list[str], rowscale: bool) -> dict[str, nn.Module]:
    """Replace ``names`` by fp8 modules (quantised from their bf16 weights); returns the originals to put back."""
    from avatar_core.model.linear import store_blocks_
    originals = {name: model.get_submodule(name) for name in names}
    store_blocks_(model, fp8_family(rowscale), names)
    return originals


def restore(model: nn.Module, originals: dict[str, nn.Module]) -> None:
    for name, old in originals.items():
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, old)


def compare(got: torch.Tensor, ref: torch.Tensor) -> dict:
    def one(a, b):
        d = a.double() - b.double()
        return dict(rel_l2=float(d.norm() / b.double().norm()), max_abs=float(d.abs().max()))
    r = one(got, ref)
    r["halves"] = [one(got[i], ref[i])["rel_l2"] for i in range(ref.shape[0])]
    r["finite"] = bool(torch.isfinite(got).all())
    return r


def timed(fn, cuda: bool, warmup: int = 1):
    for _ in range(warmup):
        fn()
    if not cuda:
        t0 = time.perf_counter()
        return fn(), time.perf_counter() - t0, None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record()
    out = fn()
    e.record()
    torch.cuda.synchronize()
    return out, s.elapsed_time(e) / 1e3, round(torch.cuda.max_memory_allocated() / 2**30, 2)


def official_reference(bo, opt, cuda: bool):
    """(official model's state dict on the CPU, inputs, reference output, its record)."""
    args = bo.official_args()
    args.precision = "bf16" if cuda else "fp32"
    bo.AUTOCAST["enabled"] = cuda
    bo.patch_cu_seqlens_device(opt.device)
    depth = (None, None) if cuda else (2, 1)
    model = bo.build_model(args, opt.device, *depth, seed=0)
    h, w = (int(s) for s in opt.size.lower().split("x"))
    inp = bo.make_inputs(2, h, w, opt.device, model, args, "cpu")
    with torch.no_grad():
        out, secs, peak = timed(functools.partial(bo.forward, model, inp, False, opt.device), cuda)
    ref = out.float().cpu()
    model.cache_out = None
    sd = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    del model, out
    return sd, inp, ref, dict(time_s=secs, peak_GiB=peak, out_std=float(ref.std()))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tools", required=True, help="folder of bench_official.py (shared/tools/official13b)")
    ap.add_argument("--hva", required=True, help="official root (holds hymm_sp/)")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--size", default="704x704")
    ap.add_argument("--attention", default="fa3_fp8")
    ap.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS)
    ap.add_argument("--out", type=Path)
    opt = ap.parse_args()
    plans = {v: plan(v) for v in opt.variants}
    os.environ["HVA_ROOT"] = os.path.abspath(opt.hva)
    sys.path[:0] = [os.path.abspath(opt.tools), str(REPO)]
    import bench_official as bo  # noqa: E402  (stubs flash_attn, imports the official hymm_sp)

    from avatar_core.model.fp8 import fp8_linear_names
    from avatar_core.model.options import RunOptions
    from avatar_core.runner import LoadSpec

    cuda = opt.device == "cuda"
    res: dict = dict(argv=sys.argv, torch=torch.__version__, size=opt.size, attention=opt.attention, variants={})
    if cuda:
        res["gpu"] = torch.cuda.get_device_name()

    def dump() -> None:
        if opt.out:
            opt.out.write_text(json.dumps(res, indent=1))

    sd, inp, ref, res["official"] = official_reference(bo, opt, cuda)
    print(f"frontier official: time_s={res['official']['time_s']:.3f}", flush=True)
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
    tmp = tempfile.mkdtemp(prefix="frontier_", dir=shm)
    ckpt = os.path.join(tmp, "mp_rank_00_model_states.pt")
    torch.save({"module": sd}, ckpt)
    del sd
    gc.collect()
    try:
        runner = LoadSpec(path=ckpt, weight_format="bf16" if cuda else "fp32", attention="sdpa").build(opt.device)
    finally:
        os.unlink(ckpt)
        os.rmdir(tmp)
    model = runner.diffusion_model
    fast_options = RunOptions(attention=opt.attention if cuda else "sdpa")
    bf16_options = RunOptions(attention="fa3" if cuda else "sdpa")
    res["attention_used"] = fast_options.attention
    names = fp8_linear_names(model)
    a = inp["additional"]

    def forward(options: RunOptions) -> torch.Tensor:
        return model(inp["x"], inp["t"], ref_latents=inp["ref_latents"], text_states=inp["text_states"],
                     text_mask=inp["text_mask"], text_pooled=inp["text_states_2"], motion_exp=a["motion_exp"],
                     motion_pose=a["motion_pose"], fps=a["fps"], audio=a["audio_prompts"], face_mask=a["face_mask"],
                     freqs=(inp["freqs_cos"], inp["freqs_sin"]), options=options)

    for variant, (rowscale, only, classes, dequant) in plans.items():
        chosen = [] if variant.startswith("bf16") else selected(names, only, classes)
        options = bf16_options if variant == "bf16_fa3" else fast_options
        originals = swap(model, chosen, rowscale)
        weight_only = selected(chosen, True, dequant) if dequant else []
        for name in weight_only:
            model.get_submodule(name).fast = False
        try:
            with torch.no_grad():
                out, secs, peak = timed(functools.partial(forward, options), cuda,
                                        warmup=0 if variant.startswith("only:") else 1)
            rec = dict(fp8_linears=len(chosen), of=len(names), weight_only=len(weight_only),
                       attention=options.attention, time_s=secs, peak_GiB=peak, **compare(out.float().cpu(), ref))
            del out
        finally:
            restore(model, originals)
            del originals
            gc.collect()
            if cuda:
                torch.cuda.empty_cache()
        res["variants"][variant] = rec
        print(f"frontier {variant}: rel_l2={rec['rel_l2']:.3e} halves={[f'{x:.3e}' for x in rec['halves']]} "
              f"time_s={rec['time_s']:.3f} fp8={rec['fp8_linears']}/{rec['of']} weight_only={rec['weight_only']} "
              f"peak_GiB={peak}", flush=True)
        dump()
    dump()
    return 0


if __name__ == "__main__":
    sys.exit(main())
