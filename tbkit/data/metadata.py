"""The contract between tbkit's writing ops and its readers: plugin name, schema version,
the built-in field names, and how ``tbkit.text`` marks its level on a text summary.

Imports no TensorFlow, so the reader and the TensorBoard plugin can use it on a server that
has only TensorBoard installed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, NamedTuple

from tensorboard.compat.proto import summary_pb2
from tensorboard.plugins.text import metadata as text_metadata

from tbkit.data.levels import LEVELS

#: The name of tbkit's TensorBoard plugin; also the ``plugin_name`` of every record summary.
PLUGIN_NAME = "tbkit"

#: The highest version of the record layout this code understands, and the one it writes. A
#: record summary whose metadata carries a higher version is skipped by readers (with one
#: warning per run and tag). The versions:
#:
#: 1. records: one JSON object per record, at the event's step.
#: 2. kept steps (``tbkit.record(..., keep=K)``): the objects carry their own ``"step"``, and
#:    the plugin content names the record's tag (``"kept_of"``).
#: 3. the plugin content of records and kept steps maps field paths to dtypes (``"dtypes"``,
#:    see :func:`create_summary_metadata`), which the plugin's table formats numbers by.
#:
#: Data of every older version still reads (without dtypes before 3).
SCHEMA_VERSION = 3

#: The version record summaries are written with.
RECORD_VERSION = 3

#: The version kept-steps summaries are written with. Readers older than version 2 skip such a
#: tag with one warning rather than misread it.
KEPT_VERSION = 3

#: What the event supplies (run, tag, step, wall time) and tbkit adds (level) to a record's
#: fields: the first columns of every row, in this order. A record field may not use them.
BUILTIN_FIELDS = ("run", "tag", "step", "wall_time", "level")
RESERVED_FIELDS = frozenset(BUILTIN_FIELDS)

#: How ``tbkit.text`` marks the level of a text summary, in its metadata's description; a text
#: summary without the mark (``tf.summary.text``) is read at level ``info``.
TEXT_LEVEL_MARK = "tbkit level: "


def create_summary_metadata(
    description: str = "", dtypes: Mapping[str, str] | None = None
) -> summary_pb2.SummaryMetadata:
    """Build the ``SummaryMetadata`` of a record summary.

    ``data_class`` is ``DATA_CLASS_TENSOR``: without it TensorBoard's data server drops the data.

    Args:
        description: shown by TensorBoard with the tag.
        dtypes: field path (nested fields dotted: ``"grad.norm"``) → the dtype its values were
            written from (``"float32"``, ``"int64"``, ``"string"``...; a vector's: its elements').
            JSON text carries no dtype; readers use this to show a float32 field as the
            shortest text that round-trips its float32 value. A field not named has no known
            dtype (a ``None``, a list of mixed values, a logging call's ``extra=``).
    """
    return _metadata(_content({"version": RECORD_VERSION}, dtypes), description)


def create_kept_metadata(
    tag: str, dtypes: Mapping[str, str] | None = None
) -> summary_pb2.SummaryMetadata:
    """Build the ``SummaryMetadata`` of the kept steps of the record ``tag`` (a dump); ``dtypes``
    as for :func:`create_summary_metadata` (the record's)."""
    return _metadata(_content({"version": KEPT_VERSION, "kept_of": tag}, dtypes),
                     f"kept steps of the tbkit record {tag!r}")  # fmt: skip


def _content(content: dict, dtypes: Mapping[str, str] | None) -> dict:
    if dtypes is not None:
        content["dtypes"] = _checked_dtypes(dict(dtypes))
    return content


def _checked_dtypes(dtypes: Any) -> dict[str, str]:
    if not isinstance(dtypes, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and v for k, v in dtypes.items()
    ):
        raise ValueError(f"not tbkit plugin content: dtypes {str(dtypes)[:80]}")
    return dtypes


def _metadata(content: dict, description: str) -> summary_pb2.SummaryMetadata:
    data = json.dumps(content, separators=(",", ":")).encode()
    return summary_pb2.SummaryMetadata(
        summary_description=description,
        plugin_data=summary_pb2.SummaryMetadata.PluginData(
            plugin_name=PLUGIN_NAME, content=data
        ),
        data_class=summary_pb2.DATA_CLASS_TENSOR,
    )


class PluginContent(NamedTuple):
    """What a tbkit summary's plugin content says."""

    version: int  #: the schema version it was written with
    kept_of: str | None  #: the record tag whose kept steps it holds; None for records
    dtypes: dict[str, str] | None  #: field path → dtype; None when not recorded (version < 3)


def parse_plugin_content(content: bytes) -> PluginContent:
    """Parse a tbkit summary's plugin content (of any version; the caller judges the version).

    Raises:
        ValueError: the content is not tbkit plugin content.
    """
    try:
        parsed = json.loads(content.decode("utf-8"))
        version = parsed["version"]
    except (UnicodeDecodeError, ValueError, TypeError, KeyError) as e:
        raise ValueError(f"not tbkit plugin content: {content[:80]!r}") from e
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"not tbkit plugin content: version {version!r}")
    kept_of = parsed.get("kept_of")
    if kept_of is not None and not (isinstance(kept_of, str) and kept_of):
        raise ValueError(f"not tbkit plugin content: kept_of {kept_of!r}")
    dtypes = parsed.get("dtypes")
    return PluginContent(version, kept_of, None if dtypes is None else _checked_dtypes(dtypes))


def create_text_metadata(level: str, description: str = "") -> summary_pb2.SummaryMetadata:
    """The ``SummaryMetadata`` of a ``tbkit.text`` summary: TensorBoard's text plugin's (so its
    Text tab shows it), with the level marked on the description's first line."""
    mark = TEXT_LEVEL_MARK + level
    meta = text_metadata.create_summary_metadata(
        display_name=None, description=f"{mark}\n\n{description}" if description else mark
    )
    meta.data_class = summary_pb2.DATA_CLASS_TENSOR
    return meta


def text_level(description: str) -> str:
    """The level a text summary's description marks, or ``"info"``."""
    first = description.split("\n", 1)[0]
    if first.startswith(TEXT_LEVEL_MARK):
        level = first[len(TEXT_LEVEL_MARK) :]
        if level in LEVELS:
            return level
    return "info"
