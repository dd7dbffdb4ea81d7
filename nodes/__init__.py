"""ComfyUI nodes. Thin: validate, convert ComfyUI types, call avatar_core, report progress.

ComfyUI modules are imported only inside `comfy_entrypoint` (and the node modules it loads), so the pure
helpers in this package (`convert`, `memory`, `ui_payloads`) import and test without ComfyUI.
"""


async def comfy_entrypoint():
    from .extension import AvatarExtension

    return AvatarExtension()
