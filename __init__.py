"""ComfyUI entry point of the HunyuanVideo-Avatar node pack (V3 schema): see nodes/.

ComfyUI imports this folder as a package. Anything else that imports the file on its own (a test runner that
meets it as a loose module, a tool scanning the tree) gets an empty module instead of an ImportError.
"""

# Frontend extension (character overlay, audio summary): every .js under js/ is loaded by the page.
WEB_DIRECTORY = "./js"

if __package__:
    from .nodes import comfy_entrypoint

    __all__ = ["comfy_entrypoint", "WEB_DIRECTORY"]
