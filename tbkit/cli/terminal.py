"""Text for a terminal: characters that are not printable shown as escapes, as ``repr`` shows
them (``\\x1b``, ``\\u202e``), so a run or tag name (a folder name, a string from users' code)
cannot clear the screen, move the cursor, retitle the window or reorder the text around it
when ``tail``, ``stats``, ``export`` or an error message prints it."""

from __future__ import annotations


def _escape(char: str) -> str:
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (os.fsdecode's surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def printable(text: str) -> str:
    """``text`` with every character ``str.isprintable`` refuses, but the space, escaped:
    controls, format characters such as the bidi override U+202E, line and paragraph
    separators, surrogates and unassigned code points."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c == " " else _escape(c) for c in text)


def _json_escape(char: str) -> str:
    code = ord(char)
    if code < 0x10000:
        return f"\\u{code:04x}"
    code -= 0x10000  # beyond the BMP: JSON's escape is a surrogate pair
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def printable_json(text: str) -> str:
    """Strict JSON text with the characters ``printable`` escapes, other than C0 controls,
    written as JSON escapes (``\\u009b``, ``\\u202e``).

    Strict JSON escapes the C0 controls in strings (``\\u001b``), and outside strings holds
    only whitespace (newline, tab), but keeps the others as they are; those can only sit
    inside strings, so the escaped text is still JSON and means the same value.
    """
    if text.isascii() and "\x7f" not in text:
        return text
    return "".join(
        _json_escape(c) if ord(c) >= 0x7F and not c.isprintable() else c for c in text
    )
