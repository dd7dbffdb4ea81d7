"""Conditioning inputs of the avatar model: Whisper audio features, per-character face masks, emotion latents.

Pure PyTorch plus transformers (Whisper) and, lazily, onnxruntime/insightface (faces); no ComfyUI imports.
"""
