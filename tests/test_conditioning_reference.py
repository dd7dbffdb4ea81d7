"""Face geometry by hand: the face the official code keeps, overlapping grown boxes split pixel by pixel to the
nearest face centre, disjoint latent masks (each shared latent position to the larger share), user masks
that claim the faces they cover. Expected values are loops written out here, not our functions' output."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from avatar_core.conditioning.faces import FaceBox, character_masks, official_face_choice, to_latent


class ListDetector:
    def __init__(self, boxes: list[FaceBox]) -> None:
        self.boxes = boxes

    def detect(self, image: np.ndarray) -> list[FaceBox]:
        return list(self.boxes)


def test_the_official_choice_is_the_last_face_larger_than_the_first():
    """AlignImage(maxface=True) as released compares every face with the FIRST face's area, never updated."""
    a, b, c, d = FaceBox(0, 0, 10, 10), FaceBox(0, 0, 5, 10), FaceBox(0, 0, 20, 10), FaceBox(0, 0, 15, 10)
    assert official_face_choice([a, b, c, d]) is d          # areas 100, 50, 200, 150: the last one over 100
    assert official_face_choice([a, b]) is a                # none larger: the first
    assert official_face_choice([c, a, d]) is c
    out = character_masks(np.zeros((40, 60, 3), np.uint8), 1, ListDetector([a, b, c, d]))
    assert out.boxes == [d] and "official" in out.notes[0]


def _grown(box: FaceBox, w: int, h: int, area: float = 3.0) -> set[tuple[int, int]]:
    """Pixels (y, x) of the official grown box, written out: box scaled by `area` about its floored centre."""
    cx, cy = math.floor((box.x1 + box.x2) / 2), math.floor((box.y1 + box.y2) / 2)
    hw, hh = math.floor((box.x2 - box.x1) * area / 2), math.floor((box.y2 - box.y1) * area / 2)
    return {(y, x) for y in range(max(cy - hh, 0), min(cy + hh, h)) for x in range(max(cx - hw, 0), min(cx + hw, w))}


def test_overlapping_grown_boxes_split_each_pixel_to_the_nearest_face_centre():
    w, h = 40, 24
    left, right = FaceBox(8, 8, 14, 14), FaceBox(20, 9, 26, 15)     # grown boxes overlap between x = 14 and 32
    out = character_masks(np.zeros((h, w, 3), np.uint8), 2, ListDetector([right, left]))
    assert out.boxes == [left, right]                                 # numbered left to right
    areas = [_grown(b, w, h) for b in (left, right)]
    centres = [((b.x1 + b.x2) / 2, (b.y1 + b.y2) / 2) for b in (left, right)]
    want = torch.zeros(2, h, w)
    for y in range(h):
        for x in range(w):
            owners = [i for i in range(2) if (y, x) in areas[i]]
            if not owners:
                continue
            dist = [(x + 0.5 - centres[i][0]) ** 2 + (y + 0.5 - centres[i][1]) ** 2 for i in owners]
            want[owners[dist.index(min(dist))], y, x] = 1.0           # ties: the lower number
    assert (want[0] * want[1]).sum() == 0 and want.sum() < sum(len(a) for a in areas)  # they did overlap
    assert torch.equal(out.pixel, want)
    summed = character_masks(np.zeros((h, w, 3), np.uint8), 2, ListDetector([right, left]), overlap="sum")
    for i in range(2):                                                # "sum": the grown boxes as they are
        assert {(int(y), int(x)) for y, x in summed.pixel[i].nonzero()} == areas[i]


def test_latent_masks_of_disjoint_pixel_masks_stay_disjoint_larger_share_wins():
    g = torch.Generator().manual_seed(0)
    pixel = torch.zeros(3, 16, 24)
    pixel[0, :, :5] = 1
    pixel[1, :, 5:12] = 1
    pixel[2, 2:11, 12:21] = torch.rand(9, 9, generator=g) + 0.1
    size = (5, 7)      # columns sampled at 1.2, 4.6, 8.1, 11.5, ...: 4.6 and 11.5 fall between two masks
    shares = F.interpolate(pixel[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    want = torch.zeros_like(shares)
    for y in range(size[0]):
        for x in range(size[1]):
            best = max(range(3), key=lambda i: (float(shares[i, y, x]), -i))
            want[best, y, x] = shares[best, y, x]
    out = to_latent(pixel, size)
    torch.testing.assert_close(out, want, rtol=0, atol=0)
    assert int(((out > 0).sum(0) > 1).sum()) == 0 and int(((shares > 0).sum(0) > 1).sum()) > 0
    overlapping = pixel.clone()
    overlapping[1, :, 3:5] = 1                                        # overlapping pixel masks: left as they are
    torch.testing.assert_close(to_latent(overlapping, size),
                               F.interpolate(overlapping[:, None], size=size, mode="bilinear",
                                             align_corners=False)[:, 0])


def test_a_user_mask_claims_the_faces_it_mostly_covers():
    """Faces 6x6, 8x8, 7x7 for 3 characters, character 2 drawn over part of the middle face: covering 5 of its 8
    columns (62%) makes it character 2's, so characters 1 and 3 get the outer faces; 3 of 8 (38%) leaves it free,
    and the two largest free faces (middle and right) go to 1 and 3, whatever order the detector gave."""
    w, h = 60, 20
    faces = [FaceBox(2, 2, 8, 8), FaceBox(25, 2, 33, 10), FaceBox(48, 2, 55, 9)]
    image = np.zeros((h, w, 3), np.uint8)
    for cols, want in (((22, 30), [faces[0], None, faces[2]]), ((22, 28), [faces[1], None, faces[2]])):
        drawn = torch.zeros(h, w)
        drawn[0:12, cols[0]:cols[1]] = 1.0
        detector = ListDetector([faces[2], faces[0], faces[1]])
        out = character_masks(image, 3, detector, user_masks=[None, drawn, None], overlap="sum")
        assert out.sources == ["face", "user mask", "face"] and out.boxes == want, (cols, out.boxes)


# --- the LLaVA config read like transformers reads it (transformers' own config classes are the reference) -----

def _transformers_view(cfg: dict) -> dict:
    from transformers import LlavaConfig as HFLlava
    hf = HFLlava(**cfg)
    t, v = hf.text_config, hf.vision_config
    rope = getattr(t, "rope_parameters", None) or {"rope_theta": t.rope_theta}   # transformers 5 / 4
    return dict(hidden=t.hidden_size, layers=t.num_hidden_layers, heads=t.num_attention_heads,
                kv_heads=t.num_key_value_heads, head_dim=t.head_dim, rope_theta=rope["rope_theta"],
                rms_eps=t.rms_norm_eps, v_layers=v.num_hidden_layers, v_heads=v.num_attention_heads,
                v_eps=v.layer_norm_eps, patch=v.patch_size, vision_layer=hf.vision_feature_layer)


MINIMAL = {"text_config": {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                           "intermediate_size": 128, "vocab_size": 100},
           "vision_config": {"model_type": "clip_vision_model", "hidden_size": 32, "num_hidden_layers": 3,
                             "num_attention_heads": 2, "patch_size": 14, "image_size": 56, "intermediate_size": 64}}


def test_the_llava_config_reads_as_transformers_reads_it():
    import json
    from dataclasses import asdict
    from pathlib import Path

    from transformers import LlavaConfig as HFLlava

    from avatar_core.conditioning.llava import LlavaConfig
    fixture = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "text" / "tiny_llava_config.json"
    written = HFLlava(**{**MINIMAL, "text_config": {**MINIMAL["text_config"], "rope_theta": 123456.0,
                                                    "rms_norm_eps": 3e-6, "num_key_value_heads": 2}}).to_dict()
    cases = {"minimal (defaults)": MINIMAL, "written by this transformers": written}
    if fixture.is_file():
        cases["fixtures' tiny LLaVA"] = json.loads(fixture.read_text())
    for name, cfg in cases.items():
        ours = {k: v for k, v in asdict(LlavaConfig.from_hf(cfg)).items() if k != "text_layer"}
        assert ours == _transformers_view(cfg), name


def test_llava_configs_the_official_pipeline_cannot_run_are_refused():
    import pytest

    from avatar_core.conditioning.llava import LlavaConfig
    text, vision = MINIMAL["text_config"], MINIMAL["vision_config"]
    for bad in ({**MINIMAL, "text_config": {**text, "rope_scaling": {"type": "linear", "factor": 2.0}}},
                {**MINIMAL, "text_config": {**text, "rope_parameters": {"rope_type": "linear", "factor": 2.0,
                                                                        "rope_theta": 1e4}}},
                {**MINIMAL, "vision_config": {**vision, "hidden_act": "gelu"}},
                {**MINIMAL, "projector_hidden_act": "relu"},
                {**MINIMAL, "vision_feature_select_strategy": "full"}):
        with pytest.raises(ValueError, match="LLaVA config"):
            LlavaConfig.from_hf(bad)


def test_mono_is_numpys_channel_mean_for_any_channel_count():
    """librosa.to_mono (the official load) is numpy's mean over the channel axis: also for 3 and 6 channels."""
    from avatar_core.conditioning.waveform import to_mono_16k
    g = torch.Generator().manual_seed(4)
    for channels in (3, 6):
        wav = (0.2 * torch.randn(channels, 4000, generator=g)).float()
        want = torch.from_numpy(np.mean(wav.numpy(), axis=0))
        assert torch.equal(to_mono_16k(wav, 16000), want), channels


def test_the_video_size_defaults_to_the_official_704():
    """480x640: the short side to 704, the long side 640 * 704 / 480 = 938.7 -> 960 (multiples of 64), under the
    704 x 1216 area cap; 704x2816 goes over it: rescaled by sqrt(704 * 1216 / (704 * 2816)) = 0.657 -> 448x1856."""
    from avatar_core.conditioning.image import official_video_size
    assert official_video_size(480, 640) == (704, 960)
    assert official_video_size(704, 2816) == (448, 1856)


def test_insightface_gets_the_image_in_bgr_order_contiguous_and_every_face():
    """InsightFace (like OpenCV) takes BGR images; max_num=0 keeps every detection; rows are x1, y1, x2, y2, score."""
    from avatar_core.conditioning.faces import InsightFaceDetector

    class Model:  # stands in for insightface's SCRFD model (the package is optional)
        def detect(self, image, max_num):
            self.seen, self.max_num = image, max_num
            return np.array([[1.0, 2.0, 30.0, 40.0, 0.9], [50.0, 5.0, 60.0, 20.0, 0.7]]), None

    rgb = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    det = InsightFaceDetector.__new__(InsightFaceDetector)  # without loading a model file
    det.model = Model()
    faces = det.detect(rgb)
    assert det.model.max_num == 0 and det.model.seen.flags["C_CONTIGUOUS"]
    assert np.array_equal(det.model.seen, np.stack([rgb[..., 2], rgb[..., 1], rgb[..., 0]], axis=-1))
    assert faces == [FaceBox(1.0, 2.0, 30.0, 40.0, 0.9), FaceBox(50.0, 5.0, 60.0, 20.0, 0.7)]


def test_the_merged_llava_layout_written_out():
    """transformers 4.45's legacy LLaVA merge (shared/reference/official_implementation.md, text encoder): the one
    <image> token becomes 576 image features, so n valid tokens give n - 1 + 576 real positions (mask 1, position
    ids 0, 1, ...), then the pads of the 351-token prompt (masked as keys, position id 1); an integer mask like
    the tokenizer's."""
    from avatar_core.conditioning.text import PromptTokens, merged_layout
    for n in (3, 120, 351):
        mask, positions = merged_layout(PromptTokens(torch.zeros(351, dtype=torch.long),
                                                     torch.tensor([1] * n + [0] * (351 - n))))
        real = n - 1 + 576
        assert mask.dtype == positions.dtype == torch.int64 and mask.shape == positions.shape == (926,)
        assert mask.tolist() == [1] * real + [0] * (926 - real)
        assert positions.tolist() == list(range(real)) + [1] * (926 - real)
