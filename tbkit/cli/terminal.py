"""Text for a terminal: control characters shown as escapes (``\\x1b``, as ``repr`` shows them),
so a run or tag name (a folder name, a string from users' code) cannot clear the screen, move
the cursor or retitle the window when ``tail``, ``stats``, ``export`` or an error message
prints it."""

from __future__ import annotations

import re

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")  # C0, DEL and C1
_DEL_C1 = re.compile("[\x7f-\x9f]")


def printable(text: str) -> str:
    """``text`` with every control character written as ``\\xNN``."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def printable_json(text: str) -> str:
    """Strict JSON text with DEL and C1 controls written as JSON escapes (``\\u009b``).

    Strict JSON escapes the C0 controls in strings (``\\u001b``), and outside strings holds
    only whitespace (newline, tab), but keeps DEL and C1 controls as they are; those can only
    sit inside strings, so the escaped text is still JSON and means the same value.
    """
    return _DEL_C1.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
