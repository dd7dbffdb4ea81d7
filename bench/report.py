"""Markdown report of bench/run_all.py rows (also usable on a saved results.json: python -m bench.report FILE)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

OFFICIAL = {"704x704x129f": (18.10, 0.330, 49.3, 550), "704x1216x129f": (45.61, 0.831, 66.8, 1385)}  # s, s, GiB, clip s


def _fmt(v, f="{:.2f}"):
    return "-" if v is None else f.format(v)


def write_report(rows: list[dict], path: Path | None = None) -> str:
    lines = []
    head = next((r for r in rows if "device" in r), {})
    lines.append(f"Device: {head.get('device')}, torch {head.get('torch')}, {head.get('date')}; 13B random weights, "
                 "one 129-frame window (33 latent frames), CFG batch 2.\n")
    ceil = {(r["shape"], r["fp8"]): r for r in rows if r["kind"] == "ceiling"}
    lines += ["| run | shape | full step s | vs official | vs ceiling | TFLOP/s | deep-cache s | peak alloc / reserved GiB | rel. err vs bf16 |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "full_s" not in r:
            continue
        off = OFFICIAL.get(r["shape"], (None,))[0]
        c = ceil.get((r["shape"], False))
        lines.append(f"| {r['kind']} | {r['shape']} | {r['full_s']:.2f} | {_fmt(off and off / r['full_s'], '{:.2f}x')} | "
                     f"{_fmt(c and r['full_s'] / c['ceiling_s'], '{:.2f}x')} | {r['tflops']:.0f} | {r['cached_s']:.3f} | "
                     f"{r['peak_alloc_gib']:.1f} / {r['peak_reserved_gib']:.1f} | {_fmt(r.get('rel_err_vs_bf16'), '{:.2e}')} |")
    if ceil:
        lines += ["", "| kernel ceiling | shape | GEMMs s | attention s | total s |", "|---|---|---|---|---|"]
        for (shape, fp8), r in ceil.items():
            lines.append(f"| {'fp8' if fp8 else 'bf16'} GEMMs + SDPA | {shape} | {r['gemm_s']:.2f} | {r['attention_s']:.2f} | {r['ceiling_s']:.2f} |")
    for r in rows:
        if r["kind"] == "bf16":
            clip = 30 * r["full_s"] + 20 * r["cached_s"]
            lines.append(f"\nProjected 50-step window (official plan: 30 full + 20 deep-cache steps) at {r['shape']}: "
                         f"{clip:.0f} s (official projection ~{OFFICIAL.get(r['shape'], (0, 0, 0, 0))[3]} s).")
    sc = [r for r in rows if r["kind"] == "stepcache"]
    if sc:
        lines += ["", "| step cache threshold | shape | steps | total s | speed-up | full calls skipped | rel. deviation |",
                  "|---|---|---|---|---|---|---|"]
        base = sc[0]["total_s"]
        for r in sc:
            skipped = "-" if r["skipped"] is None else f"{r['skipped']} / {r['full_calls']}"
            lines.append(f"| {_fmt(r['threshold'])} | {r['shape']} | {r['steps']} | {r['total_s']:.1f} | "
                         f"{base / r['total_s']:.2f}x | {skipped} | {r['rel_dev']:.2e} |")
    chk = next((r for r in rows if r["kind"] == "checks"), None)
    if chk:
        lines += ["", "Accuracy checks: " + ", ".join(f"{k} = {v:.3g}" if isinstance(v, float) else f"{k} = {v}"
                                                   for k, v in chk.items() if k not in ("kind", "device", "torch", "date"))]
    text = "\n".join(lines) + "\n"
    if path is not None:
        path.write_text(text)
    return text


if __name__ == "__main__":  # python -m bench.report OUT.md RESULTS.json...
    rows = [r for f in sys.argv[2:] for r in json.loads(Path(f).read_text())]
    print(write_report(rows, Path(sys.argv[1])))
