"""The pack's error for bad input: what was wrong (the input's name and value) and how to fix it.

Every boundary check (core functions, config dataclasses, CLIs, nodes) raises ``InputError`` or a subclass, so
callers and tests can tell a refused input from a bug. It is a ValueError: code that caught ValueError still does.
"""

from __future__ import annotations


class InputError(ValueError):
    """An input (argument, file, setting) that cannot be used; the message names it and the fix."""
