"""The over-cap marker: what a record field holds when its value was too big to write whole.

A string tensor longer than ``MAX_STRING_BYTES`` or a vector of run-time length longer than
``MAX_ARRAY_LENGTH`` cannot be refused at trace time, and a logging op must not fail a
training step. The in-graph encoder writes such a field as a marker object instead::

    {"tbkit_over_cap": {"cap": "MAX_ARRAY_LENGTH", "limit": 1024, "length": 5000,
                        "head": [0.5, 0.25, ...]}}
    {"tbkit_over_cap": {"cap": "MAX_STRING_BYTES", "limit": 16384, "bytes": 20480,
                        "head": "the first characters..."}}

``head`` holds the first :data:`HEAD_LENGTH` elements or :data:`HEAD_CHARS` characters. Every
reader warns about the records that hold one (naming run, tag and field), since the marker is
the only signal: no host callback runs in the step. The key is reserved in records at every
depth, so a marker is never a user's own object.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

KEY = "tbkit_over_cap"  #: the marker object's one key
RAW_KEY = b'"tbkit_over_cap"'  #: how the key appears in a record's JSON text
HEAD_LENGTH = 32  #: elements of an over-long vector a marker keeps
HEAD_CHARS = 1024  #: characters of an over-long string a marker keeps


def is_marker(value: Any) -> bool:
    """Whether ``value`` (a decoded JSON value) is an over-cap marker."""
    return type(value) is dict and len(value) == 1 and type(value.get(KEY)) is dict


def found(fields: dict, prefix: str = "") -> Iterator[tuple[str, dict]]:
    """The markers in a record's fields, with the dotted paths of their fields (``vec``,
    ``opt.notes`` for an element of the vector ``notes``)."""
    for name, value in fields.items():
        yield from _found(value, f"{prefix}{name}")


def _found(value: Any, path: str) -> Iterator[tuple[str, dict]]:
    if is_marker(value):
        yield path, value
    elif type(value) is dict:
        yield from found(value, f"{path}.")
    elif type(value) is list:
        for item in value:
            yield from _found(item, path)


def describe(marker: dict) -> str:
    """A marker in words: ``5000 elements over MAX_ARRAY_LENGTH (1024)``."""
    body = marker[KEY]
    size = f"{body['length']} elements" if "length" in body else f"{body.get('bytes')} bytes"
    return f"{size} over {body.get('cap')} ({body.get('limit')})"
