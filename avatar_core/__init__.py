"""HunyuanVideo-Avatar core: pure PyTorch model, conditioning and sampler (no ComfyUI imports)."""

__version__ = "0.1.0"
