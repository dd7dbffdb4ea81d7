"""Up to four characters: masks stay disjoint (pixels, latents, the model's tokens), faces are numbered left to
right with the largest kept, and one speaker's audio reaches only its own region of the audio adapter's output."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_faces import ListDetector

from avatar_core.conditioning.faces import FaceBox, character_masks, expand_box, face_mask_for_model
from avatar_core.model.audio import face_mask_tokens


def _row_of_faces(n: int, size: int = 28, spacing: int = 56, y: int = 18) -> list[FaceBox]:
    """n faces left to right; grown 3x (84 px) every box overlaps its neighbours (56 px apart: each split falls
    inside a latent pixel, which the bilinear resize would share)."""
    return [FaceBox(32 + spacing * k - size / 2, y, 32 + spacing * k + size / 2, y + size) for k in range(n)]


def _owners_by_hand(boxes: list[FaceBox], height: int, width: int) -> np.ndarray:
    """Owner of every pixel (-1: none), pixel by pixel: among the grown boxes covering it, the face whose centre
    is nearest to the pixel centre, the first on ties."""
    owner = np.full((height, width), -1)
    grown = [expand_box(b, width, height) for b in boxes]
    centres = [((b.x1 + b.x2) / 2, (b.y1 + b.y2) / 2) for b in boxes]
    for y in range(height):
        for x in range(width):
            best = None
            for i, (x1, y1, x2, y2) in enumerate(grown):
                if x1 <= x < x2 and y1 <= y < y2:
                    d = (x + 0.5 - centres[i][0]) ** 2 + (y + 0.5 - centres[i][1]) ** 2
                    if best is None or d < best[0]:
                        best = (d, i)
            owner[y, x] = -1 if best is None else best[1]
    return owner


def _assert_disjoint(masks: torch.Tensor, what: str) -> None:
    assert int((masks > 0).sum(0).max()) <= 1, f"{what}: a position belongs to two characters"


@pytest.mark.parametrize("n", [2, 3, 4])
def test_overlapping_grown_faces_give_disjoint_masks_at_every_resolution(n):
    boxes = _row_of_faces(n)
    height, width = 64, 64 * n
    assert all(expand_box(a, width, height)[2] > expand_box(b, width, height)[0] for a, b in zip(boxes, boxes[1:]))
    shuffled = boxes[::-1] if n % 2 else boxes[1:] + boxes[:1]  # detector order is not the numbering
    out = character_masks(np.zeros((height, width, 3), np.uint8), n, ListDetector(shuffled))
    owner = _owners_by_hand(boxes, height, width)
    expected = torch.stack([torch.from_numpy(owner == i).float() for i in range(n)])
    assert torch.equal(out.pixel, expected)  # left to right, each pixel to its nearest face, nothing lost
    _assert_disjoint(out.latent, "latent masks")
    tokens = face_mask_tokens(face_mask_for_model(out.latent), 3, height // 16, width // 16)  # the model's view
    _assert_disjoint(tokens[0, :, :, 0], "token masks")
    assert all(tokens[0, i].sum() > 0 for i in range(n))


def test_more_faces_than_characters_keeps_the_largest_numbered_left_to_right():
    sizes = [12, 30, 16, 26, 34, 22]  # six faces in a row; the four largest are at x = 96, 224, 288, 352
    boxes = [FaceBox(32 + 64 * k - s / 2, 20, 32 + 64 * k + s / 2, 20 + s) for k, s in enumerate(sizes)]
    out = character_masks(np.zeros((80, 384, 3), np.uint8), 4, ListDetector(boxes[::-1]))
    assert [round(b.center_x) for b in out.boxes] == [96, 224, 288, 352]
    assert any("kept the 4 largest" in note for note in out.notes)
    _assert_disjoint(out.pixel, "pixel masks")


def test_overlapping_user_masks_are_split_by_their_centroids():
    left, right = torch.zeros(40, 160), torch.zeros(40, 160)
    left[:, 0:70], right[:, 50:120] = 1.0, 1.0  # 20 columns painted for both; centroids x = 35 and 85
    out = character_masks(np.zeros((40, 160, 3), np.uint8), 3, ListDetector([FaceBox(134, 14, 146, 26)]),
                          user_masks=[left, right])
    _assert_disjoint(out.pixel, "pixel masks")
    columns = torch.arange(160)
    assert torch.equal(out.pixel[0, 0] > 0, columns < 60)                      # shared columns 50..69 split at 60
    assert torch.equal(out.pixel[1, 0] > 0, (columns >= 60) & (columns < 120))
    assert torch.equal(out.pixel[2, 20] > 0, (columns >= 122) & (columns < 158))  # centre 140 +- 3 * 12 / 2


@settings(max_examples=20, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 83).map(lambda k: 3 * k), st.integers(4, 60), st.integers(6, 40)),
                min_size=2, max_size=4, unique_by=lambda t: t[0]))  # centres >= 3 px apart: no ties at a centre
def test_any_two_to_four_faces_give_disjoint_masks_that_hold_their_own_face(faces):
    boxes = [FaceBox(x - s / 2, y - s / 2, x + s / 2, y + s / 2) for x, y, s in faces]
    out = character_masks(np.zeros((64, 256, 3), np.uint8), len(boxes), ListDetector(boxes))
    _assert_disjoint(out.pixel, "pixel masks")
    _assert_disjoint(out.latent, "latent masks")
    assert [b.center_x for b in out.boxes] == sorted(b.center_x for b in out.boxes)
    for i, b in enumerate(out.boxes):
        cx, cy = int((b.x1 + b.x2) / 2), int((b.y1 + b.y2) / 2)
        assert out.pixel[i, min(max(cy, 0), 63), min(max(cx, 0), 255)] > 0, "a face lost its own centre"


@pytest.fixture(scope="module")
def tiny_model():
    from avatar_core.config import AvatarConfig
    from avatar_core.loading import build_random_transformer

    return build_random_transformer(AvatarConfig.tiny(), seed=1)


def _first_adapter_output(model, monkeypatch, audio: torch.Tensor, face_mask: torch.Tensor) -> torch.Tensor:
    """The tokens right after the first audio adapter of a full forward (the blocks before it see no audio, so
    between two calls only the audio can change them)."""
    from avatar_core.model.transformer import AvatarTransformer

    original, seen = AvatarTransformer._inject_audio, []

    def record(adapter, img, audio_tokens, masks, n_ref, frames):
        out = original(adapter, img, audio_tokens, masks, n_ref, frames)
        seen.append(out)
        return out

    monkeypatch.setattr(AvatarTransformer, "_inject_audio", staticmethod(record))
    g = torch.Generator().manual_seed(0)
    T, H, W = 3, face_mask.shape[-2], face_mask.shape[-1]
    cfg = model.cfg
    with torch.no_grad():
        model(torch.randn(1, 16, T, H, W, generator=g), torch.full((1,), 500.0),
              ref_latents=torch.randn(1, 16, T, H, W, generator=g), text_states=torch.randn(1, 8, cfg.text_dim, generator=g),
              text_mask=torch.ones(1, 8, dtype=torch.long), text_pooled=torch.randn(1, cfg.text_pooled_dim, generator=g),
              motion_exp=torch.full((1, 4), 30.0), motion_pose=torch.full((1, 4), 25.0), fps=torch.full((1,), 25.0),
              audio=audio, face_mask=face_mask)
    monkeypatch.undo()
    return seen[0]


@pytest.mark.parametrize("speaker", [0, 1, 2, 3])
def test_a_speakers_audio_changes_the_adapter_output_only_inside_its_own_region(tiny_model, monkeypatch, speaker):
    masks = character_masks(np.zeros((64, 256, 3), np.uint8), 4, ListDetector(_row_of_faces(4)))
    face_mask = face_mask_for_model(masks.latent)                                   # [1, 4, 1, 8, 32]
    audio = torch.randn(1, 4, 9, 10, 5, 384, generator=torch.Generator().manual_seed(1))
    before = _first_adapter_output(tiny_model, monkeypatch, audio, face_mask)
    audio[:, speaker] = torch.randn(9, 10, 5, 384, generator=torch.Generator().manual_seed(2))
    after = _first_adapter_output(tiny_model, monkeypatch, audio, face_mask)
    n_ref = 4 * 16                                                                   # reference frame tokens
    region = face_mask_tokens(face_mask, 3, 4, 16)[0, speaker, :, 0] > 0             # [T * h * w]
    changed = (after - before)[0, n_ref:].abs().amax(-1)                             # [T * h * w]
    assert torch.equal(after[:, :n_ref], before[:, :n_ref])
    assert changed[~region].max() == 0, "another character's region moved with this speaker's audio"
    assert (changed[region] > 0).all() and region.sum() >= 3 * 4 * 2
