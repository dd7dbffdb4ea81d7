"""Markdown tables from bench/workflow_gpu.py rows: per stage (cold / warm), the 50-step clip, long clips, VAE, cards.

    python bench/workflow_report.py workflow.jsonl [--tag fast_704] > table.md

The runs measure the sampler at a few steps (2 for one window, 1 for longer clips); the 50-step clip is
derived from the measured seconds per model call: official plan = 30 full steps + 20 deep-cache steps per
window. Deep-cache steps only run in schedules of >= 20 steps, so their time is CACHED_RATIO x a full call
(0.160 s / 9.40 s, measured on an H200 with the fast preset, bench/README.md runs 6-7), stated in the output.
Everything in a run that is not a model call (loaders, encoders, face detection, the reference VAE encode and
moving the model inside the sampler node, VAE decode, video) counts as "around the sampler".
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path

FULL_STEPS, CACHED_STEPS = 30, 20       # the official 50-step plan (avatar_core/sampling/deepcache.py)
CACHED_RATIO = 0.160 / 9.40             # a deep-cache call / a full call (fast preset, H200, 704x704)
SAMPLER = "AvatarSampler"


def load(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def by_tag(rows: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        out[r.get("tag", "")].append(r)
    return out


def nodes(rows: list[dict], run: str) -> list[dict]:
    return [r for r in rows if r.get("run") == run and "class" in r]


def loop_s(node: dict) -> float:
    return sum(s[2] for s in node.get("substages", []) if s[0] == "sampling loop")


def call_stats(rows: list[dict]) -> dict:
    """Seconds per model call: the first of the process (kernel warm-up included) and the steady ones."""
    cold = [r for r in nodes(rows, "cold") if r["class"] == SAMPLER and "calls" in r]
    warm = [r for r in rows if r.get("class") == SAMPLER and "calls" in r and r.get("run") != "cold"
            and not str(r.get("run", "")).startswith("windows_")]
    steady = [c for r in cold for c in r["later_call_s"]] + [c for r in warm for c in [r["first_call_s"]] +
                                                            r["later_call_s"]]
    first = cold[0]["first_call_s"] if cold else None
    return {"first": first, "full": statistics.median(steady) if steady else None, "n": len(steady)}


def project_loop(full: float, windows: int = 1, first_extra: float = 0.0) -> float:
    """Seconds of the 50-step sampling loop: windows x (30 full + 20 deep-cache calls), + a cold first call's extra."""
    return windows * (FULL_STEPS * full + CACHED_STEPS * CACHED_RATIO * full) + first_extra


def stage_table(rows: list[dict]) -> list[str]:
    runs = [r for r in ("cold", "new_seed", "same") if nodes(rows, r) or any(
        x.get("run") == r and x.get("summary") for x in rows)]
    per: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    peaks: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
    for run in runs:
        for r in nodes(rows, run):
            parts = [(r["stage"], r["s"])]
            if r["class"] == SAMPLER:
                subs = r.get("substages", [])
                enc = sum(s[2] for s in subs if s[0].startswith("VAE encode"))
                move = sum(s[2] for s in subs if s[0].startswith("ComfyUI loads"))
                parts = [("sampler: reference VAE encode", enc), ("sampler: model to GPU", move),
                         (f"sampler: sampling loop ({r.get('calls', 0)} calls)", loop_s(r)),
                         ("sampler: other", r["s"] - enc - move - loop_s(r))]
            for stage, s in parts:
                per[stage][run] += s
                p = peaks[stage]
                p[0] = max(p[0], r.get("peak_alloc_gib") or 0)
                p[1] = max(p[1], r.get("device_used_peak_gib") or 0)
                p[2] = max(p[2], r.get("rss_peak_gib") or 0)
    head = "| stage | " + " | ".join(f"{r} s" for r in runs) + " | peak alloc GiB | device used GiB | host RSS GiB |"
    lines = [head, "|" + "---|" * (len(runs) + 4)]
    for stage, secs in per.items():
        cells = " | ".join(f"{secs.get(r, 0):.2f}" if r in secs else "cached" for r in runs)
        p = peaks[stage]
        lines.append(f"| {stage} | {cells} | {p[0]:.1f} | {p[1]:.1f} | {p[2]:.1f} |")
    totals = " | ".join(f"**{sum(v.get(r, 0) for v in per.values()):.1f}**" for r in runs)
    lines.append(f"| **total (nodes that ran)** | {totals} | | | |")
    return lines


def clip_numbers(rows: list[dict]) -> dict:
    """The 50-step one-window clip per run (cold, new_seed): seconds around the sampler, of the loop, in all."""
    stats = call_stats(rows)
    if stats["full"] is None:
        return {}
    full = stats["full"]
    loop50, out = project_loop(full), {"full_call_s": full, "first_call_s": stats["first"], "calls": stats["n"]}
    for run in ("cold", "new_seed"):
        ran = nodes(rows, run)
        if not ran:
            continue
        around = sum(r["s"] for r in ran) - sum(loop_s(r) for r in ran)
        loop = loop50 + ((stats["first"] - full) if run == "cold" and stats["first"] else 0.0)
        out[run] = {"around_s": around, "loop_s": loop, "whole_s": around + loop, "around_share": around / (around + loop)}
    return out


def clip_projection(rows: list[dict]) -> list[str]:
    n = clip_numbers(rows)
    if not n:
        return ["(no sampler calls measured)"]
    full = n["full_call_s"]
    lines = [f"Seconds per model call (one window, CFG batch): first of the process {n['first_call_s']}, steady "
             f"{full:.3f} (median of {n['calls']}); deep-cache call {CACHED_RATIO * full:.3f} (assumed: "
             f"{CACHED_RATIO:.4f} x full, the H200 ratio). 50-step loop: 30 x {full:.2f} + 20 x "
             f"{CACHED_RATIO * full:.3f} = {project_loop(full):.1f} s.", "",
             "| run | around the sampler s | sampling loop (50 steps, derived) s | whole clip s | around / whole |",
             "|---|---|---|---|---|"]
    for run in ("cold", "new_seed"):
        if run in n:
            r = n[run]
            lines.append(f"| {run} | {r['around_s']:.1f} | {r['loop_s']:.1f} | {r['whole_s']:.1f} | "
                         f"{100 * r['around_share']:.1f}% |")
    return lines


def long_table(rows: list[dict]) -> list[str]:
    runs = sorted({r["run"] for r in rows if str(r.get("run", "")).startswith("windows_") and r.get("summary")})
    if not runs:
        return []
    full = call_stats(rows)["full"]
    lines = ["| run | windows | video s | s per call (measured) | around the sampler s | peak alloc GiB | "
             "device used GiB | 50-step clip s (derived) | GPU s per video s |", "|---|---|---|---|---|---|---|---|---|"]
    for run in runs:
        summ = next(r for r in rows if r.get("run") == run and r.get("summary"))
        if summ.get("skipped"):
            lines.append(f"| {run} | | | skipped: {summ['skipped']} | | | | | |")
            continue
        ran = nodes(rows, run)
        sampler = next((r for r in ran if r["class"] == SAMPLER), None)
        calls = ([sampler["first_call_s"]] + sampler["later_call_s"]) if sampler and "calls" in sampler else []
        per_call = statistics.mean(calls) if calls else full
        around = sum(r["s"] for r in ran) - sum(loop_s(r) for r in ran)
        k, video = summ.get("windows", 1), summ.get("video_s") or 0
        whole = around + project_loop(per_call, k)
        lines.append(f"| {run} | {k} | {video} | {per_call:.2f} | {around:.1f} | {summ.get('peak_alloc_gib')} | "
                     f"{summ.get('device_used_peak_gib')} | {whole:.0f} | {whole / video:.1f} |" if video else
                     f"| {run} | {k} | ? | {per_call:.2f} | {around:.1f} | | | {whole:.0f} | |")
    return lines


def vae_table(rows: list[dict]) -> list[str]:
    vae = [r for r in rows if r.get("vae_bench") and "config" in r]
    if not vae:
        return []
    lines = ["| decode config | settings | s | peak alloc GiB | device used GiB | note |", "|---|---|---|---|---|---|"]
    for r in vae:
        note = r.get("skipped") or r.get("error") or ("ComfyUI fell back to tiles" if r.get("fell_back_to_tiled") else "")
        lines.append(f"| {r['config']} | {r.get('settings', '')} | {r.get('s', '')} | {r.get('peak_alloc_gib', '')} | "
                     f"{r.get('device_used_peak_gib', '')} | {note} |")
    return lines


def report(rows: list[dict], tag: str | None = None) -> str:
    out = []
    for name, group in by_tag(rows).items():
        if tag is not None and name != tag:
            continue
        setup = next((r for r in group if r.get("setup")), {})
        loader = next((r for r in group if "offload_choice" in r), None)
        out += [f"### {name or '(no tag)'}: {setup.get('device')}, preset {setup.get('preset')}, "
                f"card {setup.get('card_gib') or 'whole GPU'}, FA3 {setup.get('fa3')}, cache {setup.get('cache')}", ""]
        if loader:
            out += [f"offload=auto chose {loader['offload_choice']['offload']} "
                    f"({loader['offload_choice']['swap_blocks']} blocks): {loader['offload_choice']['reason']}", ""]
        for part in (stage_table(group), clip_projection(group), long_table(group), vae_table(group)):
            out += part + ([""] if part else [])
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("jsonl", type=Path)
    ap.add_argument("--tag")
    args = ap.parse_args(argv)
    print(report(load(args.jsonl), args.tag))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
