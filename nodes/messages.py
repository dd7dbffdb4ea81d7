"""Messages for the user on the node that is running: the log line and the node's text in the frontend."""

from __future__ import annotations

import logging


def tell_ui(text: str, node: str = "Avatar", level: int = logging.WARNING) -> None:
    """Log ``text`` and show it on the running node in the ComfyUI frontend (log only where the server lacks it)."""
    logging.log(level, "%s: %s", node, text)
    try:
        from comfy_execution.utils import get_executing_context
        from server import PromptServer
        ctx = get_executing_context()
        PromptServer.instance.send_progress_text(text, ctx.node_id if ctx else "")
    except Exception as e:  # an old ComfyUI, or no server (tests): the log line above already says it
        logging.debug("%s: could not show the message in the UI: %s", node, e)
