"""ComfyUI entry point of the HunyuanVideo-Avatar node pack (V3 schema): see nodes/."""

from .nodes import comfy_entrypoint

__all__ = ["comfy_entrypoint"]
