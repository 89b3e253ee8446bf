"""Text for a terminal: control characters shown as escapes (``\\x1b``, as ``repr`` shows them),
so a run or tag name (a folder name, a string from users' code) cannot clear the screen, move
the cursor or retitle the window when ``tail`` or ``stats`` prints it."""

from __future__ import annotations

import re

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")  # C0, DEL and C1


def printable(text: str) -> str:
    """``text`` with every control character written as ``\\xNN``."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
