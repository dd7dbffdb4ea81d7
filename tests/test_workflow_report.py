"""bench/workflow_report.py and bench/workflow_probe.call_times: the derived 50-step clip from measured calls.

Expected values are worked out by hand from the synthetic rows (closed form), not read from the code.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import workflow_report as wr  # noqa: E402
from workflow_probe import call_times  # noqa: E402


def test_call_times_merge_repeats_and_start_from_the_loop():
    progress = [[5.0, 1, 4], [5.2, 1, 4], [8.0, 2, 4], [12.5, 3, 4]]  # a preview re-sends value 1
    assert call_times(progress, start=2.0) == [3.0, 3.0, 4.5]


def node(run, cls, s, **kw):
    return {"run": run, "class": cls, "stage": cls, "node": cls, "s": s, **kw}


ROWS = [
    {"setup": True, "tag": "t", "device": "GPU"},
    node("cold", "AvatarModelLoader", 20.0),
    node("cold", "AvatarSampler", 100.0, calls=3, first_call_s=30.0, later_call_s=[25.0, 25.0],
         substages=[["VAE encode (reference)", 0.0, 5.0], ["ComfyUI loads models to the GPU", 5.0, 10.0],
                    ["sampling loop", 15.0, 80.0]]),
    node("new_seed", "AvatarSampler", 60.0, calls=2, first_call_s=25.0, later_call_s=[26.0],
         substages=[["sampling loop", 9.0, 51.0]]),
    node("new_seed", "VAEDecodeTiled", 10.0),
]


def test_the_50_step_clip_is_derived_from_the_steady_calls():
    n = wr.clip_numbers(ROWS)
    full = 25.0  # median of the steady calls 25, 25 (cold, after the first), 25, 26 (warm)
    loop50 = 30 * full + 20 * wr.CACHED_RATIO * full
    assert n["full_call_s"] == full and n["calls"] == 4
    assert n["cold"]["around_s"] == pytest.approx(120.0 - 80.0)           # loader + sampler node - its loop
    assert n["cold"]["loop_s"] == pytest.approx(loop50 + (30.0 - 25.0))   # + the first call's warm-up
    assert n["new_seed"]["around_s"] == pytest.approx(70.0 - 51.0)
    assert n["new_seed"]["whole_s"] == pytest.approx(19.0 + loop50)
    assert n["new_seed"]["around_share"] == pytest.approx(19.0 / (19.0 + loop50))


def test_long_clips_scale_the_loop_by_windows():
    assert wr.project_loop(10.0, windows=4) == pytest.approx(4 * wr.project_loop(10.0))
    long_rows = ROWS + [node("windows_2", "AvatarSampler", 50.0, calls=2, first_call_s=24.0, later_call_s=[26.0],
                             substages=[["sampling loop", 0.0, 50.0]]),
                        {"run": "windows_2", "summary": True, "windows": 2, "video_s": 10.0}]
    table = "\n".join(wr.long_table(long_rows))
    whole = 0.0 + wr.project_loop(25.0, 2)  # nothing around the loop in this run; mean call 25
    assert f"| {whole:.0f} | {whole / 10.0:.1f} |" in table


def test_the_stage_table_splits_the_sampler_node():
    table = "\n".join(wr.stage_table(ROWS))
    assert "| sampler: reference VAE encode | 5.00 | 0.00 |" in table
    assert "| sampler: model to GPU | 10.00 | 0.00 |" in table
    assert "| sampler: other | 5.00 | 9.00 |" in table      # 100 - 5 - 10 - 80; 60 - 51
    assert "| AvatarModelLoader | 20.00 | cached |" in table
