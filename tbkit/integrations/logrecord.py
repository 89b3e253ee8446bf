"""Python ``logging`` records as strict-JSON text: level, logger, message, exception, fields.

Shared by the event-file bridge (:mod:`~tbkit.integrations.logbridge`) and the JSON Lines sink
(:mod:`~tbkit.integrations.jsonl`), so a line reads the same in TensorBoard and in ``jq``. The
``extra=`` values of a call go under ``"fields"``, so they can never collide with the names
tbkit uses.
Values JSON cannot hold become their ``str()``; the result is always strict JSON (RFC 8259)
encoded as valid UTF-8. No TensorFlow here.
"""

from __future__ import annotations

import bisect
import json
import logging
from collections.abc import Mapping
from typing import Any

from tbkit.data.levels import LEVELS
from tbkit.summary import jsonenc

#: Attributes every ``LogRecord`` has (and those formatters add): anything else came from
#: ``extra=`` or a filter, and is written under ``"fields"``.
STANDARD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message", "asctime", "taskName",
}  # fmt: skip

_BOUNDS = (logging.INFO, logging.WARNING, logging.ERROR)
_FORMATTER = logging.Formatter()


def level_rank(levelno: int) -> int:
    """tbkit's level rank of a logging level: below INFO is debug (0), then info (1), warning
    (2), and ERROR, CRITICAL and above are error (3)."""
    return bisect.bisect_right(_BOUNDS, levelno)


def level_name(levelno: int) -> str:
    """tbkit's level name of a logging level (``logging.CRITICAL`` → ``"error"``)."""
    return LEVELS[level_rank(levelno)]


def string_text(text: str) -> str:
    """The JSON text of a str of any length (lone surrogates are fixed by :func:`line_bytes`)."""
    return json.dumps(text, ensure_ascii=False)


def value_text(value: Any, depth: int = 0) -> str:
    """The JSON text of an ``extra`` value: as tbkit encodes record fields where it can (numbers,
    numpy values, small tensors, NaN as ``"NaN"``), a Mapping as an object, else its ``str()``."""
    if isinstance(value, str):
        return string_text(value)
    if isinstance(value, Mapping) and depth < jsonenc.MAX_DEPTH:
        items = (f"{string_text(str(k))}:{value_text(v, depth + 1)}" for k, v in value.items())
        return "{" + ",".join(items) + "}"
    try:
        return jsonenc.encode_leaf(None, "", value)
    except Exception:  # noqa: BLE001 - anything JSON cannot hold is written as text
        try:
            return string_text(str(value))
        except Exception:  # noqa: BLE001 - a __str__ that fails
            return string_text(object.__repr__(value))


def fields_text(record: logging.LogRecord) -> str | None:
    """The ``extra=`` values of ``record`` as a JSON object, or None when there are none."""
    items = [
        f"{string_text(name)}:{value_text(value)}"
        for name, value in vars(record).items()
        if name not in STANDARD_ATTRIBUTES
    ]
    return "{" + ",".join(items) + "}" if items else None


def body_text(record: logging.LogRecord, formatter: logging.Formatter | None = None) -> str:
    """``"logger":…,"message":…`` and, when present, ``"exception":…`` and ``"stack":…``.

    The message is ``record.getMessage()`` (no formatter prefix); ``formatter`` (or logging's
    default) formats the exception text.
    """
    text = f'"logger":{string_text(record.name)},"message":{string_text(record.getMessage())}'
    if record.exc_info:
        exception = record.exc_text or (formatter or _FORMATTER).formatException(record.exc_info)
        text += f',"exception":{string_text(exception)}'
    if record.stack_info:
        text += f',"stack":{string_text(record.stack_info)}'
    return text


def line_bytes(text: str) -> bytes:
    """``text`` as UTF-8; a lone surrogate (not encodable) becomes U+FFFD as in record fields."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace").encode("utf-8")
