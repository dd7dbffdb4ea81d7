"""A whole-clip AvatarConditioning from the parity fixtures' sampler inputs (tiny model), with random audio of any
length: what the sampler tests that need more than one window run on."""

from __future__ import annotations

from pathlib import Path

import torch

import avatar_core.parity.sampling as sp
from avatar_core.sampling import AvatarConditioning, TextConditioning


def fixture_clip(fixtures: Path, frames: int, audio_seed: int = 3) -> AvatarConditioning:
    """The fixtures' reference, text (first 24 positions), face mask and motion; 0.1 * N(0, 1) audio of `frames`."""
    common = sp.load_fixture(fixtures / "sampler_common.safetensors")
    g = torch.Generator().manual_seed(audio_seed)
    text = lambda s, p: TextConditioning(common[s][:, :24], torch.ones(1, 24, dtype=torch.int64), common[p])  # noqa: E731
    return AvatarConditioning(
        ref_latents=common["ref_latents_from_vae"], text=text("text_states_pos", "text_states_2_pos"),
        negative_text=text("text_states_neg", "text_states_2_neg"),
        audio=0.1 * torch.randn(1, frames, 10, 5, 384, generator=g),
        face_mask=common["model_in.face_masks_pipeline_arg"],
        motion_exp=common["model_in.motion_exp"][:1], motion_pose=common["model_in.motion_pose"][:1],
        fps=common["model_in.fps"][:1])
