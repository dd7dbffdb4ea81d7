"""API-format prompts of the main job (the same graph as example_workflows/, built in code for headless runs)."""

from __future__ import annotations


def avatar_prompt(*, dit: str, whisper: str, vae: str, image: str, audio: str, conditioning: str | None = None,
                  clip: tuple[str, str] | None = None, clip_vision: str | None = None, prompt: str = "A person is talking.",
                  image_size: int = 704, steps: int = 50, seed: int = 128, weight_dtype: str = "bf16",
                  deep_cache: bool = True, prefix: str = "avatar/avatar", crf: int = 17,
                  loader_options: dict | None = None) -> dict:
    """Single-character render. Text: saved `conditioning`, or `clip` (clip_l, llava) + `clip_vision` files.
    `loader_options`: extra model-loader inputs (offload, swap_blocks, gpus, parallel)."""
    g = {
        "1": {"class_type": "AvatarModelLoader", "inputs": {"ckpt_name": dit, "weight_dtype": weight_dtype, "attention": "sdpa",
                                                            **(loader_options or {})}},
        "2": {"class_type": "AvatarWhisperLoader", "inputs": {"whisper_name": whisper}},
        "3": {"class_type": "LoadAudio", "inputs": {"audio": audio}},
        "4": {"class_type": "AvatarAudioEncode", "inputs": {"whisper": ["2", 0], "audio.audio_0": ["3", 0],
                                                           "start_offsets": "0", "fps": "25", "duration": 0.0}},
        "5": {"class_type": "LoadImage", "inputs": {"image": image}},
        "6": {"class_type": "VAELoader", "inputs": {"vae_name": vae}},
        "8": {"class_type": "AvatarFaceMasks", "inputs": {"image": ["5", 0], "characters": 1, "face_scale": 3.0}},
        "9": {"class_type": "AvatarSampler", "inputs": {
            "model": ["1", 0], "positive": ["7", 0], "negative": ["7", 1], "image": ["5", 0], "vae": ["6", 0],
            "audio_features": ["4", 0], "character_masks": ["8", 0], "image_size": image_size, "steps": steps,
            "cfg": 7.5, "shift": 5.0, "seed": seed, "motion_exp": 30, "motion_pose": 25, "deep_cache": deep_cache}},
        "10": {"class_type": "VAEDecodeTiled", "inputs": {"samples": ["9", 0], "vae": ["6", 0], "tile_size": 256,
                                                          "overlap": 64, "temporal_size": 64, "temporal_overlap": 8}},
        # The sampler renders whole windows; cut the frames back to the audio's length (official trim).
        "16": {"class_type": "ImageFromBatch", "inputs": {"image": ["10", 0], "batch_index": 0, "length": ["4", 1]}},
        "11": {"class_type": "CreateVideo", "inputs": {"images": ["16", 0], "fps": 25.0, "audio": ["3", 0]}},
        "12": {"class_type": "SaveVideo", "inputs": {"video": ["11", 0], "filename_prefix": prefix, "format": "mp4",
                                                     "format.codec": "h264", "format.codec.encoding": "re-encode",
                                                     "format.codec.encoding.crf": float(crf),
                                                     "format.codec.encoding.color_space": "auto"}},
    }
    if conditioning is not None:
        g["7"] = {"class_type": "AvatarConditioningLoad", "inputs": {"conditioning_name": conditioning}}
    else:
        g["13"] = {"class_type": "DualCLIPLoader", "inputs": {"clip_name1": clip[0], "clip_name2": clip[1],
                                                              "type": "hunyuan_video", "device": "default"}}
        g["14"] = {"class_type": "CLIPVisionLoader", "inputs": {"clip_name": clip_vision}}
        g["7"] = {"class_type": "AvatarTextEncode", "inputs": {"clip": ["13", 0], "clip_vision": ["14", 0],
                                                               "image": ["5", 0], "prompt": prompt,
                                                               "negative_prompt": _negative(), "official_prefix": True,
                                                               "image_size": image_size}}
    return g


def _negative() -> str:
    import importlib.util
    from pathlib import Path
    spec = importlib.util.spec_from_file_location("_hva_convert", Path(__file__).resolve().parents[1] / "avatar_core" / "conditioning" / "text.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.NEGATIVE_PROMPT
