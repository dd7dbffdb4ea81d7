"""ComfyUI entry point of the HunyuanVideo-Avatar node pack (V3 schema): see nodes/."""

from .nodes import comfy_entrypoint

# Frontend extension (character overlay, audio summary): every .js under js/ is loaded by the page.
WEB_DIRECTORY = "./js"

__all__ = ["comfy_entrypoint", "WEB_DIRECTORY"]
