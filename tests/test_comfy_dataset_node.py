"""Avatar Training Dataset From Folder in a real ComfyUI Python (COMFYUI_PATH / COMFYUI_PYTHON): a folder of
synthetic talking videos through the node (the pack's Whisper loader path, a stand-in VAE, one given prompt,
the synthetic face detector) becomes clip caches the trainer reads; a rerun keeps them; bad inputs fail early."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
COMFYUI_PATH = os.environ.get("COMFYUI_PATH")
pytestmark = [pytest.mark.comfy, pytest.mark.skipif(
    not COMFYUI_PATH, reason="set COMFYUI_PATH to a ComfyUI checkout (and COMFYUI_PYTHON to its Python) to run")]

SCRIPT = textwrap.dedent("""
    import importlib, sys, types
    comfy_path, repo, tmp = sys.argv[1:4]
    sys.path[:0] = [comfy_path, repo, repo + "/scripts"]
    import comfy.cli_args
    comfy.cli_args.args.cpu = True
    import comfy.model_patcher, torch
    from safetensors.torch import save_file
    pkg = types.ModuleType("hyavatar_pack"); pkg.__path__ = [repo]; sys.modules["hyavatar_pack"] = pkg
    node = importlib.import_module("hyavatar_pack.nodes.training")
    loaders = importlib.import_module("hyavatar_pack.nodes.loaders")
    synthetic = importlib.import_module("hyavatar_pack.avatar_core.train.synthetic")
    data = importlib.import_module("hyavatar_pack.avatar_core.train.data")
    whisper_mod = importlib.import_module("hyavatar_pack.avatar_core.conditioning.whisper")
    from smoke_assets import whisper_tiny_state

    videos = f"{tmp}/videos"
    import os; os.makedirs(videos)
    synthetic.write_talking_video(f"{videos}/talk.mp4", 1.6, 30, (96, 192), seed=1)
    synthetic.write_talking_video(f"{videos}/mute.mp4", 0.8, 25, (96, 128), audio=False)
    save_file(whisper_tiny_state(), f"{tmp}/whisper.safetensors")
    encoder = whisper_mod.load_whisper_encoder(f"{tmp}/whisper.safetensors")
    whisper = comfy.model_patcher.CoreModelPatcher(loaders.Holder(encoder), load_device=torch.device("cpu"),
                                                   offload_device=torch.device("cpu"))

    class Vae:  # stands in for the HunyuanVideo VAE: 8x space, causal 4x time, [1, 16, T, h, w]
        calls = 0
        def encode(self, px):
            Vae.calls += 1
            t = (px.shape[0] - 1) // 4 + 1
            return px.mean() * torch.ones(1, 16, t, px.shape[1] // 8, px.shape[2] // 8)

    mask = torch.zeros(1, 831, dtype=torch.int64); mask[:, :30] = 1; mask[:, 256:] = 1
    positive = [[torch.randn(1, 831, 4096), {"pooled_output": torch.randn(1, 768), "attention_mask": mask}]]
    args = dict(videos=videos, dataset=f"{tmp}/set", vae=Vae(), whisper=whisper, caption="A man talks.",
                official_prefix=True, clip_frames=9, fps="25", image_size=64, max_clips=2, min_side=64,
                positive=positive, face_detector=synthetic.BrightFaceDetector())
    path, report = node.AvatarTrainingDatasetFromFolder.execute(**args).result
    folder = data.ClipFolder(path)
    assert len(folder) == 2 and folder[0].text_states.shape == (831, 4096), (len(folder), report)
    assert folder[0].audio.shape == (9, 10, 5, 384) and float(folder[0].audio.abs().sum()) > 0
    assert "2 clips written" in report and "mute.mp4: has no audio track" in report, report
    assert Vae.calls == 4, Vae.calls                       # frames + reference, per clip
    _, again = node.AvatarTrainingDatasetFromFolder.execute(**args).result
    assert "0 clips written, 2 already there" in again and Vae.calls == 4, (again, Vae.calls)
    try:  # no text input: refused before any model work
        node.AvatarTrainingDatasetFromFolder.execute(**{**args, "positive": None, "dataset": f"{tmp}/other"})
        raise AssertionError("a missing text input must be refused")
    except ValueError as e:
        assert "connect clip + clip_vision" in str(e) and Vae.calls == 4, e
    try:
        node.AvatarTrainingDatasetFromFolder.execute(**{**args, "clip_frames": 10})
        raise AssertionError("clip_frames 10 must be refused")
    except ValueError as e:
        assert "4k+1" in str(e), e
    print("DATASET_NODE_OK")
""")


def test_dataset_node_turns_a_folder_of_videos_into_clip_caches(tmp_path):
    python = os.environ.get("COMFYUI_PYTHON", sys.executable)
    script = tmp_path / "dataset.py"
    script.write_text(SCRIPT)
    run = subprocess.run([python, str(script), COMFYUI_PATH, str(REPO), str(tmp_path)], capture_output=True,
                         text=True, timeout=600)
    assert "DATASET_NODE_OK" in run.stdout, run.stdout[-2000:] + run.stderr[-4000:]
