"""Resume checkpoints that are never trusted blindly: a damaged file (intact header, edited field, NaN, broken RNG
state, truncated) is reported, removed and the run starts afresh; the key holds the weights behind a bare
`denoise`, every SamplerConfig field and the run options; the folder is checked before the first step; a write
that fails mid-run (disk full) never kills the render."""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from test_resume import CONFIG, FIXTURES, Counting, conditioning

from avatar_core.errors import InputError
from avatar_core.parity.transformer import load_fixture_model
from avatar_core.sampling import SamplerCallbacks, SamplerConfig, SamplingCancelled, plan_clip, sample_avatar
from avatar_core.sampling import resume as resume_mod
from avatar_core.sampling.resume import ResumeConfig, content_hash, run_settings

pytestmark = pytest.mark.skipif(not (FIXTURES / "tiny_weights.safetensors").is_file(),
                                reason=f"parity fixtures not found at {FIXTURES} (set HYAVATAR_SHARED)")
PLAN = plan_clip(150, CONFIG.windows)
SHIFT_3 = (3 * PLAN.offset) % PLAN.window  # the shift before step 3, where the genuine checkpoint resumes
FULL_DISK = lambda path: type("Usage", (), {"total": 10**9, "used": 10**9, "free": 10**5})()  # noqa: E731


@pytest.fixture(scope="module")
def tiny() -> torch.nn.Module:
    return load_fixture_model(FIXTURES)


@pytest.fixture(scope="module")
def reference(tiny: torch.nn.Module) -> torch.Tensor:
    return sample_avatar(tiny, conditioning(), CONFIG).ring_latents


def _cancel_after(calls: int, steps: list[int] | None = None) -> SamplerCallbacks:
    seen: list[int] = []

    def on_progress(p: Any) -> None:
        seen.append(p.step)
        if steps is not None:
            steps.append(p.step)

    return SamplerCallbacks(on_progress=on_progress, should_cancel=lambda: len(seen) >= calls)


@pytest.fixture(scope="module")
def saved(tiny: torch.nn.Module, tmp_path_factory) -> tuple[Path, bytes]:
    """The bytes of a genuine checkpoint written before step 4 (cancelled in step 4)."""
    folder = tmp_path_factory.mktemp("genuine")
    with pytest.raises(SamplingCancelled):
        sample_avatar(tiny, conditioning(), CONFIG, callbacks=_cancel_after(7), resume=ResumeConfig(folder, 0))
    (path,) = list(folder.iterdir())
    return path, path.read_bytes()


def _first_step(model: Any, folder: Path, **kw: Any) -> int:
    """The step the next run starts with (it is cancelled after its first model call)."""
    steps: list[int] = []
    with pytest.raises(SamplingCancelled):
        sample_avatar(model, conditioning(), CONFIG, callbacks=_cancel_after(1, steps),
                      resume=ResumeConfig(folder, 0, **kw))
    return steps[0]


def _rewrite(src: bytes, dst: Path, rehash: bool = True, latents: Any = None, rng: Any = None, **meta: str) -> None:
    """A copy of the genuine checkpoint with some content changed; `rehash`: its stored hash recomputed, so
    only the field's own check can catch it."""
    dst.write_bytes(src)
    with safe_open(str(dst), framework="pt") as f:
        old_meta, t = dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}
    t["latents"] = t["latents"] if latents is None else latents(t["latents"])
    t["rng_cpu"] = t["rng_cpu"] if rng is None else rng(t["rng_cpu"])
    new_meta = {**old_meta, **meta}
    if rehash:
        new_meta["content_sha256"] = content_hash(t["latents"], t["rng_cpu"], new_meta)
    save_file(t, str(dst), metadata=new_meta)


def test_a_genuine_checkpoint_resumes(tiny, saved, tmp_path: Path) -> None:
    """The control: the untouched copy is resumed (so a fresh start below really means 'refused')."""
    (tmp_path / saved[0].name).write_bytes(saved[1])
    assert _first_step(tiny, tmp_path) == 3
    _rewrite(saved[1], tmp_path / saved[0].name)  # rewritten with nothing changed: still trusted
    assert _first_step(tiny, tmp_path) == 3


DAMAGE = {
    "zeroed latents, header intact": (dict(rehash=False, latents=torch.zeros_like), "does not match its stored hash"),
    "next step past the end": (dict(next_step="5"), "next step 5 is not a step"),
    "next step on a cached step": (dict(next_step="2", shift="0"), "next step 2 is not a step"),
    "next step 0": (dict(next_step="0"), "next step 0 is not a step"),
    "shift of another step": (dict(shift=str((SHIFT_3 + 1) % PLAN.window)), "window shift .* is not the shift of "
                                                                             "step 3"),
    "NaN latents": (dict(latents=lambda x: x.index_fill(2, torch.tensor([1]), float("nan"))), "NaN/inf"),
    "rng state cut short": (dict(rng=lambda r: r[:100].clone()), "RNG state \\(100,\\)"),
    "rng state as floats": (dict(rng=lambda r: r.float()), "stored as float32|RNG state"),
    "other fingerprint": (dict(fingerprint="0" * 64), "fingerprint is not this run's"),
    "older version": (dict(version="1"), "format version '1'"),
    "other settings": (dict(settings='{"steps": 5}'), "settings are not this run's"),
    "latents of another size": (dict(latents=lambda x: x[:, :, :-1].contiguous()),
                                rf"latents \(1, 16, {PLAN.ring_frames - 1}"),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_a_damaged_checkpoint_is_reported_removed_and_the_run_starts_afresh(tiny, saved, tmp_path: Path, caplog,
                                                                            case: str) -> None:
    change, why = DAMAGE[case]
    path = tmp_path / saved[0].name
    _rewrite(saved[1], path, **change)
    with caplog.at_level(logging.WARNING):
        assert _first_step(tiny, tmp_path) == 0, "a damaged checkpoint must never be resumed"
    assert not path.exists(), "the damaged file must be removed (else every rerun meets it again)"
    import re
    assert re.search(why, caplog.text) and path.name in caplog.text and "starts afresh" in caplog.text, caplog.text


@pytest.mark.parametrize("case", ["truncated", "empty", "a folder", "random bytes"])
def test_an_unreadable_checkpoint_is_removed(tiny, saved, tmp_path: Path, caplog, case: str) -> None:
    path = tmp_path / saved[0].name
    if case == "a folder":
        path.mkdir()
    else:
        path.write_bytes({"truncated": saved[1][: len(saved[1]) // 2], "empty": b"",
                          "random bytes": os.urandom(4096)}[case])
    with caplog.at_level(logging.WARNING):
        assert _first_step(tiny, tmp_path) == 0
    assert path.name in caplog.text and "starts afresh" in caplog.text
    if case != "a folder":  # a folder is not ours to delete: only reported
        assert not path.exists()


def test_zeroed_latents_never_resume_into_another_video(tiny, saved, reference, tmp_path: Path) -> None:
    _rewrite(saved[1], tmp_path / saved[0].name, rehash=False, latents=torch.zeros_like)
    out = sample_avatar(tiny, conditioning(), CONFIG, resume=ResumeConfig(tmp_path, 0)).ring_latents
    assert torch.equal(out, reference) and list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- the key
def test_a_bare_call_keys_on_the_weights_behind_denoise(tiny, saved, tmp_path: Path) -> None:
    other = load_fixture_model(FIXTURES)
    with torch.no_grad():
        next(other.parameters()).view(-1)[0] += 1.0
    for denoise, resumes in ((tiny, True), (functools.partial(tiny), True), (tiny.forward, True),
                             (other, False), (functools.partial(other), False), (other.forward, False)):
        (tmp_path / saved[0].name).write_bytes(saved[1])
        assert (_first_step(denoise, tmp_path) == 3) == resumes, denoise


def test_a_callable_whose_weights_are_unknown_is_refused_before_any_call(tiny, tmp_path: Path) -> None:
    calls: list[int] = []

    def opaque(x, t, **kw):
        calls.append(1)
        return tiny(x, t, **kw)

    with pytest.raises(InputError, match=r"cannot tell which weights.*weights=model"):
        sample_avatar(opaque, conditioning(), CONFIG, resume=ResumeConfig(tmp_path, 0))
    assert calls == []
    with pytest.raises(SamplingCancelled):  # with its weights named, it runs
        sample_avatar(opaque, conditioning(), CONFIG, callbacks=_cancel_after(1),
                      resume=ResumeConfig(tmp_path, 0, weights=tiny))
    assert calls == [1]


def test_every_sampler_setting_is_in_the_key() -> None:
    """Derived from the dataclass: the solver and any field added later are keyed without a change."""
    settings = run_settings(CONFIG, PLAN)
    assert {f.name for f in fields(SamplerConfig)} <= set(settings) and settings["solver"] == "euler"

    @dataclass
    class Later(SamplerConfig):
        new_knob: float = 0.5

    assert run_settings(Later(), PLAN)["new_knob"] == 0.5
    other = SamplerConfig()
    other.solver = "another"  # (no second solver registered in this tree: set past __post_init__)
    assert run_settings(other, PLAN) != run_settings(SamplerConfig(), PLAN)


def test_other_run_options_never_resume(tiny, saved, tmp_path: Path) -> None:
    from avatar_core.model.options import RunOptions
    (tmp_path / saved[0].name).write_bytes(saved[1])
    assert _first_step(functools.partial(tiny, options=RunOptions(chunk_tokens=7)), tmp_path) == 0
    (tmp_path / saved[0].name).write_bytes(saved[1])
    assert _first_step(functools.partial(tiny), tmp_path) == 3


# ---------------------------------------------------------------- the folder
def _unwritable_dir(tmp_path: Path) -> Path:
    if os.geteuid() != 0:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        return ro
    for candidate in (Path("/sys/kernel"), Path("/proc/self")):  # root writes anywhere but here
        if candidate.is_dir() and resume_mod.folder_problem(candidate, 0) is not None:
            return candidate
    pytest.skip("running as root and no read-only folder found")


@pytest.mark.parametrize("case", ["a file", "read-only", "full", "inside a file"])
def test_an_unusable_folder_stops_before_the_first_step(tiny, tmp_path: Path, monkeypatch, case: str) -> None:
    folder = {"a file": tmp_path / "f", "read-only": None, "full": tmp_path / "d", "inside a file": tmp_path / "f" / "x"}[case]
    (tmp_path / "f").write_text("x")
    if case == "read-only":
        folder = _unwritable_dir(tmp_path)
    if case == "full":
        monkeypatch.setattr("avatar_core.output_files.shutil.disk_usage", FULL_DISK)
    counting = Counting(tiny)
    why = {"a file": "is a file", "read-only": "cannot be written", "full": "MiB free", "inside a file": "cannot be created: .* is a file"}
    with pytest.raises(InputError, match=rf"resume folder: .*{why[case]}.*on_unwritable='warn'"):
        sample_avatar(counting, conditioning(), CONFIG, resume=ResumeConfig(folder, 0))
    assert counting.calls == 0, "refused before any model call"


def test_the_user_may_render_on_without_checkpoints(tiny, reference, tmp_path: Path, monkeypatch, caplog) -> None:
    monkeypatch.setattr("avatar_core.output_files.shutil.disk_usage", FULL_DISK)
    with caplog.at_level(logging.WARNING):
        out = sample_avatar(tiny, conditioning(), CONFIG, resume=ResumeConfig(tmp_path / "r", 0, on_unwritable="warn"))
    assert torch.equal(out.ring_latents, reference) and "WITHOUT checkpoints" in caplog.text
    assert not (tmp_path / "r").exists(), "nothing written, not even the folder"
    with pytest.raises(InputError, match="on_unwritable"):
        ResumeConfig(tmp_path, on_unwritable="ignore")


def test_a_write_that_fails_mid_run_never_kills_the_render(tiny, reference, tmp_path: Path, monkeypatch,
                                                           caplog) -> None:
    writes: list[str] = []

    def full(tensors, path, metadata=None):
        writes.append(path)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(resume_mod, "save_file", full)
    with caplog.at_level(logging.WARNING):
        out = sample_avatar(tiny, conditioning(), CONFIG, resume=ResumeConfig(tmp_path, 0))
    assert torch.equal(out.ring_latents, reference)
    assert len(writes) == 1, "after the first failure no further write is tried"
    assert "No space left on device" in caplog.text and "WITHOUT checkpoints" in caplog.text
    assert list(tmp_path.iterdir()) == []


def test_a_pool_checks_the_folder_once_before_sending(tmp_path: Path) -> None:
    """PooledRunner.sample_avatar calls check_folder_for in the parent: refused there, or resume dropped for every
    rank at once ('warn'; one rank resuming while another starts afresh would diverge), or marked checked."""
    (tmp_path / "f").write_text("x")
    cond = conditioning()
    with pytest.raises(InputError, match=r"resume folder: .*f is a file"):
        resume_mod.check_folder_for(ResumeConfig(tmp_path / "f"), cond, CONFIG)
    assert resume_mod.check_folder_for(ResumeConfig(tmp_path / "f", on_unwritable="warn"), cond, CONFIG) is None
    ok = resume_mod.check_folder_for(ResumeConfig(tmp_path / "r"), cond, CONFIG)
    assert ok is not None and ok.folder_checked and not (tmp_path / "r").exists(), "a check creates nothing"
    (tmp_path / "r").write_text("x")  # a worker does not check again (rank 0's writes then warn, never diverge)
    assert resume_mod.check_folder(ok, 1) is ok


def test_the_pools_folder_check_asks_room_for_the_runs_own_ring(monkeypatch, tmp_path: Path) -> None:
    """check_folder_for sizes one checkpoint from the run's window settings: a float32 ring of
    (F // (4 (W - 1)) + 1) (W - 1) + 1 latent frames (the official ring) per channel and pixel, twice with 2M."""
    from avatar_core.sampling.windows import WindowConfig, official_audio_rows
    asked: list[int] = []
    monkeypatch.setattr(resume_mod, "folder_problem", lambda folder, need: asked.append(need))
    cond = conditioning()
    b, c, _, h, w = cond.ref_latents.shape
    for window, solver, parts in ((WindowConfig(9, 3), "euler", 1), (WindowConfig(13, 4), "dpmpp_2m", 2)):
        config = SamplerConfig(steps=4, windows=window, solver=solver)
        f = official_audio_rows(cond.audio.shape[cond.audio_frame_dim], window)
        ring = (f // (4 * (window.window - 1)) + 1) * (window.window - 1) + 1
        resume_mod.check_folder_for(ResumeConfig(tmp_path), cond, config)
        assert asked.pop() == 4 * b * c * ring * h * w * parts, (window, solver)


def test_a_checkpoint_folder_that_does_not_exist_yet_is_created_with_its_parents(tiny, tmp_path: Path) -> None:
    folder = tmp_path / "renders" / "resume"   # neither exists: the check creates nothing, the first write both
    with pytest.raises(SamplingCancelled):
        sample_avatar(Counting(tiny), conditioning(), CONFIG, callbacks=_cancel_after(3),
                      resume=ResumeConfig(folder, interval_s=0))
    assert [p.suffix for p in folder.iterdir()] == [".safetensors"]
