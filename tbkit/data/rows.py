"""What a record is on the read side, and its one byte form: JSON line, flat row, CSV cell.

``read_records``, ``tbkit export``/``tail`` and the plugin's table and downloads all format
records here, so the same logdir gives byte-identical JSON Lines and CSV whichever one wrote
them. A JSON line is compact strict JSON (RFC 8259): ``run, tag, step, wall_time, level``
first, then the fields in their written order; floats in Python's shortest round-trip form;
non-finite numbers (``NaN`` written as a number by another tool, or ``1e400``, which no double
holds) as the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``, as tbkit writes them. CSV is
RFC 4180 (CRLF line ends); a string cell a spreadsheet would run as a formula starts with
``'`` (:func:`text_cell`).
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Mapping
from typing import Any, NamedTuple, TextIO

from tbkit.data import markers
from tbkit.data.metadata import BUILTIN_FIELDS

_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
"""The strings tbkit writes for non-finite numbers, and the numbers they stand for."""


class Record(NamedTuple):
    """One record: where and when it was written, its level and its fields."""

    run: str
    tag: str
    step: int
    wall_time: float
    level: str
    fields: dict


def _finite_text(value: float) -> str:
    return "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float replaced by tbkit's string for it."""
    if type(value) is float and not math.isfinite(value):
        return _finite_text(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def strict_json(value: Any) -> str:
    """Compact strict JSON, non-finite floats as ``"NaN"``, ``"Infinity"``, ``"-Infinity"``."""
    try:
        return _ENCODE(value)
    except ValueError:  # a non-finite float somewhere: the rare path
        return _ENCODE(_finite(value))


def json_line(record: Record) -> str:
    """The record's JSON line (no newline)."""
    return strict_json({"run": record.run, "tag": record.tag, "step": record.step,
                        "wall_time": record.wall_time, "level": record.level,
                        **record.fields})  # fmt: skip


def flatten(fields: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested objects → dotted keys (``{"opt": {"lr": 1}}`` → ``{"opt.lr": 1}``); lists stay
    lists, an empty object stays ``{}`` and an over-cap marker stays the field's value."""
    row: dict[str, Any] = {}
    for key, value in fields.items():
        if isinstance(value, Mapping) and value and not markers.is_marker(value):
            row.update(flatten(value, f"{prefix}{key}."))
        else:
            row[f"{prefix}{key}"] = value
    return row


def flat(record: Record) -> dict[str, Any]:
    """The flat row the filter language and CSV see: the built-ins, then the dotted fields."""
    row = dict(zip(BUILTIN_FIELDS, record[:5], strict=True))
    row.update(flatten(record.fields))
    return row


#: What a spreadsheet takes for the start of a formula in a cell (OWASP, "CSV Injection").
FORMULA_START = frozenset("=+-@\t\r")
_NUMBER_TEXT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def text_cell(text: str) -> str:
    """A string as a CSV cell, safe to open in a spreadsheet: a text that starts with ``=``,
    ``+``, ``-``, ``@``, tab or carriage return gets a leading ``'`` (OWASP's advice against
    formula injection), unless it is a number (``-1.5``, ``+3``, ``-1e5``, ``-Infinity``),
    which a spreadsheet reads as that number and never as a formula."""
    if text and text[0] in FORMULA_START and text not in NON_FINITE and \
            not _NUMBER_TEXT.fullmatch(text):  # fmt: skip
        return "'" + text
    return text


def cell(value: Any) -> str:
    """A CSV cell: empty for null or missing; strings as they are, but for the ``'`` that
    :func:`text_cell` puts before one a spreadsheet would run as a formula; integers exact;
    floats in the shortest round-trip form (non-finite ones as tbkit's strings); bools, arrays
    and objects as their compact JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        return text_cell(value)
    if type(value) is float:
        return repr(value) if math.isfinite(value) else _finite_text(value)
    return strict_json(value)


def csv_writer(out: TextIO) -> Any:
    """A ``csv.writer`` in tbkit's dialect (RFC 4180: CRLF, quoted when needed) on ``out``,
    which must be opened with ``newline=""``."""
    return csv.writer(out, lineterminator="\r\n")
