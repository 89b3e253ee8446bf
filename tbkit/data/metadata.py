"""The contract between tbkit's writing ops and its readers: plugin name, schema version,
the built-in field names, and how ``tbkit.text`` marks its level on a text summary.

Imports no TensorFlow, so the reader and the TensorBoard plugin can use it on a server that
has only TensorBoard installed.
"""

from __future__ import annotations

import json

from tensorboard.compat.proto import summary_pb2
from tensorboard.plugins.text import metadata as text_metadata

from tbkit.data.levels import LEVELS

#: The name of tbkit's TensorBoard plugin; also the ``plugin_name`` of every record summary.
PLUGIN_NAME = "tbkit"

#: The highest version of the record layout this code understands. A record summary whose
#: metadata carries a higher version is skipped by readers (with one warning per run and tag).
SCHEMA_VERSION = 2

#: The version record summaries are written with: one JSON object per record, at the event's step.
RECORD_VERSION = 1

#: The version of a kept-steps summary (``tbkit.record(..., keep=K)``): its objects carry their
#: own ``"step"``, and its plugin content names the record's tag (``"kept_of"``). Readers older
#: than it skip the tag with one warning rather than misread it.
KEPT_VERSION = 2

#: What the event supplies (run, tag, step, wall time) and tbkit adds (level) to a record's
#: fields: the first columns of every row, in this order. A record field may not use them.
BUILTIN_FIELDS = ("run", "tag", "step", "wall_time", "level")
RESERVED_FIELDS = frozenset(BUILTIN_FIELDS)

#: How ``tbkit.text`` marks the level of a text summary, in its metadata's description; a text
#: summary without the mark (``tf.summary.text``) is read at level ``info``.
TEXT_LEVEL_MARK = "tbkit level: "


def create_summary_metadata(description: str = "") -> summary_pb2.SummaryMetadata:
    """Build the ``SummaryMetadata`` of a record summary.

    ``data_class`` is ``DATA_CLASS_TENSOR``: without it TensorBoard's data server drops the data.
    """
    return _metadata({"version": RECORD_VERSION}, description)


def create_kept_metadata(tag: str) -> summary_pb2.SummaryMetadata:
    """Build the ``SummaryMetadata`` of the kept steps of the record ``tag`` (a dump)."""
    return _metadata({"version": KEPT_VERSION, "kept_of": tag},
                     f"kept steps of the tbkit record {tag!r}")  # fmt: skip


def _metadata(content: dict, description: str) -> summary_pb2.SummaryMetadata:
    data = json.dumps(content, separators=(",", ":")).encode()
    return summary_pb2.SummaryMetadata(
        summary_description=description,
        plugin_data=summary_pb2.SummaryMetadata.PluginData(
            plugin_name=PLUGIN_NAME, content=data
        ),
        data_class=summary_pb2.DATA_CLASS_TENSOR,
    )


def parse_plugin_content(content: bytes) -> int:
    """Return the schema version stored in a record summary's plugin content.

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
    return version


def parse_kept_of(content: bytes) -> str | None:
    """The record tag whose kept steps a summary holds (:data:`KEPT_VERSION` content), or None
    for a summary of records. Call it on content :func:`parse_plugin_content` accepted."""
    kept_of = json.loads(content.decode("utf-8")).get("kept_of")
    if kept_of is not None and not (isinstance(kept_of, str) and kept_of):
        raise ValueError(f"not tbkit plugin content: kept_of {kept_of!r}")
    return kept_of


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
