"""Resumable long renders with the tiny model: a multi-window render interrupted by a cancel and by a killed
process resumes to bitwise the uninterrupted latents; changed inputs start afresh; nothing is left behind."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fixture_clips import fixture_clip  # noqa: E402

from avatar_core.parity.transformer import load_fixture_model  # noqa: E402
from avatar_core.sampling import (  # noqa: E402
    AvatarConditioning,
    DeepCacheConfig,
    SamplerCallbacks,
    SamplerConfig,
    SamplingCancelled,
    plan_clip,
    sample_avatar,
)
from avatar_core.sampling.resume import ResumeConfig  # noqa: E402
from avatar_core.sampling.stepcache import StepCacheConfig  # noqa: E402

SHARED = Path(os.environ.get("HYAVATAR_SHARED", REPO.parent / "shared"))
FIXTURES = SHARED / "fixtures" / "parity"
pytestmark = pytest.mark.skipif(not (FIXTURES / "tiny_weights.safetensors").is_file(),
                                reason=f"parity fixtures not found at {FIXTURES} (set HYAVATAR_SHARED)")
FRAMES = 150  # 38 latent frames: two windows of 33 per step
# Step 2 runs from the deep cache, so no checkpoint may be written after step 1 (its tokens are not saved).
CONFIG = SamplerConfig(steps=5, seed=7, deep_cache=DeepCacheConfig(cached_steps=(2,)))


def conditioning(audio_seed: int = 3) -> AvatarConditioning:
    return fixture_clip(FIXTURES, FRAMES, audio_seed)


class Counting:
    """The tiny model, counting its calls (a resumed run makes fewer)."""

    def __init__(self, model: torch.nn.Module, on_call: Any = None):
        self.model, self.calls, self.on_call = model, 0, on_call
        self.__wrapped__ = model  # what the checkpoint keys on (resume.weights_of follows __wrapped__)

    def __call__(self, x: torch.Tensor, t: torch.Tensor, **kw: Any) -> Any:
        self.calls += 1
        if self.on_call is not None:
            self.on_call(self.calls)
        return self.model(x, t, **kw)



@pytest.fixture(scope="module")
def tiny() -> torch.nn.Module:
    return load_fixture_model(FIXTURES)


@pytest.fixture(scope="module")
def reference(tiny: torch.nn.Module) -> torch.Tensor:
    return sample_avatar(tiny, conditioning(), CONFIG).ring_latents


def _calls_total() -> int:
    return CONFIG.steps * plan_clip(FRAMES, CONFIG.windows).windows_per_step


def _cancel_after(calls: int) -> tuple[SamplerCallbacks, Counting]:
    counter: list[int] = [0]

    def on_progress(_p: Any) -> None:
        counter[0] += 1

    return SamplerCallbacks(on_progress=on_progress, should_cancel=lambda: counter[0] >= calls), counter


def test_cancelled_render_resumes_bitwise_and_cleans_up(tiny, reference, tmp_path: Path) -> None:
    assert plan_clip(FRAMES, CONFIG.windows).windows_per_step == 2
    resume = ResumeConfig(tmp_path, interval_s=0)
    callbacks, _ = _cancel_after(5)  # cancelled in step 3 (window 2): the last checkpoint is before step 2
    with pytest.raises(SamplingCancelled):
        sample_avatar(Counting(tiny), conditioning(), CONFIG, callbacks=callbacks, resume=resume)
    saved = list(tmp_path.iterdir())
    assert len(saved) == 1 and saved[0].suffix == ".safetensors"
    counting = Counting(tiny)
    latents = sample_avatar(counting, conditioning(), CONFIG, resume=resume).ring_latents
    assert counting.calls == _calls_total() - 2, "resumed before step 1 (step 2 is cached: no checkpoint after 1)"
    assert torch.equal(latents, reference)
    assert list(tmp_path.iterdir()) == [], "the checkpoint must be removed when the run completes"


def test_changed_input_never_resumes_from_a_stale_checkpoint(tiny, tmp_path: Path) -> None:
    resume = ResumeConfig(tmp_path, interval_s=0)
    callbacks, _ = _cancel_after(9)
    with pytest.raises(SamplingCancelled):
        sample_avatar(Counting(tiny), conditioning(), CONFIG, callbacks=callbacks, resume=resume)
    for cond, cfg in ((conditioning(audio_seed=4), CONFIG), (conditioning(), replace(CONFIG, seed=8)),
                      (conditioning(), replace(CONFIG, shift=4.0))):
        counting = Counting(tiny)
        fresh = sample_avatar(counting, cond, cfg, resume=resume).ring_latents
        assert counting.calls == _calls_total(), "a different input must start from step 1"
        assert torch.equal(fresh, sample_avatar(tiny, cond, cfg).ring_latents)
    assert len(list(tmp_path.iterdir())) == 1, "the other run's checkpoint stays for that run"


def test_other_weights_or_kernel_never_resume(tiny, tmp_path: Path) -> None:
    """The runner keys the checkpoint by its weights and attention kernel (ResumeConfig.weights/.attention)."""
    resume = ResumeConfig(tmp_path, interval_s=0, weights=tiny, attention="sdpa")
    callbacks, _ = _cancel_after(9)
    with pytest.raises(SamplingCancelled):
        sample_avatar(Counting(tiny), conditioning(), CONFIG, callbacks=callbacks, resume=resume)
    other = load_fixture_model(FIXTURES)
    with torch.no_grad():
        next(other.parameters()).view(-1)[0] += 1.0  # one value at the start of the first tensor
    for changed in (replace(resume, weights=other), replace(resume, attention="sage")):
        counting = Counting(tiny)
        sample_avatar(counting, conditioning(), CONFIG, resume=changed)
        assert counting.calls == _calls_total(), "other weights or another kernel must start from step 1"


def test_killed_process_resumes_bitwise(tiny, reference, tmp_path: Path) -> None:
    """The child writes a checkpoint before steps 2 and 4 (not 3: step 3 is cached) and is killed in step 4."""
    child = subprocess.Popen([sys.executable, __file__, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(REPO)})
    calls = 0
    for line in child.stdout:  # one line per model call; kill mid-step 4
        calls = int(line)
        if calls >= 8:
            child.kill()  # SIGKILL: no Python cleanup runs in the child
            break
    child.wait(timeout=60)
    assert calls >= 8 and child.returncode == -9, (calls, child.returncode)
    assert len([p for p in tmp_path.iterdir() if p.suffix == ".safetensors"]) == 1
    counting = Counting(tiny)
    latents = sample_avatar(counting, conditioning(), CONFIG, resume=ResumeConfig(tmp_path, interval_s=0)).ring_latents
    assert counting.calls < _calls_total()
    assert torch.equal(latents, reference)
    assert list(tmp_path.iterdir()) == []


def test_no_checkpoint_when_the_interval_has_not_passed_or_the_step_cache_is_on(tiny, tmp_path: Path) -> None:
    callbacks, _ = _cancel_after(9)
    with pytest.raises(SamplingCancelled):
        sample_avatar(Counting(tiny), conditioning(), CONFIG, callbacks=callbacks, resume=ResumeConfig(tmp_path, 3600))
    assert list(tmp_path.iterdir()) == []
    callbacks, _ = _cancel_after(9)
    with pytest.raises(SamplingCancelled):
        sample_avatar(tiny, conditioning(), replace(CONFIG, step_cache=StepCacheConfig(threshold=0.0)),
                      callbacks=callbacks, resume=ResumeConfig(tmp_path, 0))
    assert list(tmp_path.iterdir()) == []


def test_a_checkpoint_before_the_last_step_resumes_to_run_only_that_step(tiny, reference, tmp_path: Path) -> None:
    """Checkpoints are written before steps 2, 4 and 5 of 5 (step 3 is cached): one before the last step is a
    genuine resume point, not a file to refuse."""
    resume = ResumeConfig(tmp_path, interval_s=0)
    callbacks, _ = _cancel_after(9)  # cancelled in step 5: the last checkpoint is before step 5
    with pytest.raises(SamplingCancelled):
        sample_avatar(Counting(tiny), conditioning(), CONFIG, callbacks=callbacks, resume=resume)
    counting = Counting(tiny)
    latents = sample_avatar(counting, conditioning(), CONFIG, resume=resume).ring_latents
    assert counting.calls == plan_clip(FRAMES, CONFIG.windows).windows_per_step, "only step 5 is left to run"
    assert torch.equal(latents, reference)


class Killed(BaseException):
    """The process dies (not an Exception: no handler of the sampler runs)."""


def test_a_kill_mid_write_keeps_the_last_checkpoint_and_the_finished_run_leaves_nothing(
        tiny, reference, tmp_path: Path, monkeypatch) -> None:
    import avatar_core.sampling.resume as resume_module
    real, writes = resume_module.save_file, []

    def dies_in_the_second_write(tensors: Any, path: str, metadata: Any) -> None:
        real(tensors, path, metadata=metadata)  # the partial file is on disk ...
        writes.append(Path(path).name)
        if len(writes) == 2:
            raise Killed  # ... when the process dies, before it replaces the checkpoint

    monkeypatch.setattr(resume_module, "save_file", dies_in_the_second_write)
    with pytest.raises(Killed):
        sample_avatar(Counting(tiny), conditioning(), CONFIG, resume=ResumeConfig(tmp_path, interval_s=0))
    monkeypatch.undo()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert len(names) == 2 and names[1] == names[0] + ".partial" == writes[1], names
    counting = Counting(tiny)  # the rerun writes nothing more (long interval): what it finds is what it cleans
    latents = sample_avatar(counting, conditioning(), CONFIG, resume=ResumeConfig(tmp_path, 3600)).ring_latents
    steps_left = CONFIG.steps - 1  # the intact checkpoint is the first one: before step 2
    assert counting.calls == steps_left * plan_clip(FRAMES, CONFIG.windows).windows_per_step
    assert torch.equal(latents, reference)
    assert list(tmp_path.iterdir()) == [], "the finished run removes its checkpoint and the dead write's leftover"


def test_resume_config_refuses_a_bad_interval(tmp_path: Path) -> None:
    for bad in (float("nan"), -1.0):
        with pytest.raises(ValueError, match="interval_s"):
            ResumeConfig(tmp_path, interval_s=bad)


def _child(directory: str) -> None:
    """Render with checkpoints after every step, printing each model call, until the parent kills us."""
    model = load_fixture_model(FIXTURES)
    slow = Counting(model, on_call=lambda n: print(n, flush=True))
    sample_avatar(slow, conditioning(), CONFIG, resume=ResumeConfig(directory, interval_s=0))
    print("finished", flush=True)


if __name__ == "__main__":
    _child(sys.argv[1])
