"""The contract between tbkit's writing ops and its readers: plugin name and schema version.

Imports no TensorFlow, so the reader and the TensorBoard plugin can use it on a server that
has only TensorBoard installed.
"""

from __future__ import annotations

import json

from tensorboard.compat.proto import summary_pb2

#: The name of tbkit's TensorBoard plugin; also the ``plugin_name`` of every record summary.
PLUGIN_NAME = "tbkit"

#: The version of the record layout this code writes and understands. A record summary whose
#: metadata carries a higher version is skipped by readers (with one warning per run and tag).
SCHEMA_VERSION = 1

#: Keys that the event supplies (run, tag, step, wall time) or that tbkit adds (level): a record
#: field may not use them.
RESERVED_FIELDS = frozenset({"run", "tag", "step", "wall_time", "level"})


def create_summary_metadata(description: str = "") -> summary_pb2.SummaryMetadata:
    """Build the ``SummaryMetadata`` of a record summary.

    ``data_class`` is ``DATA_CLASS_TENSOR``: without it TensorBoard's data server drops the data.
    """
    content = json.dumps({"version": SCHEMA_VERSION}, separators=(",", ":")).encode()
    return summary_pb2.SummaryMetadata(
        summary_description=description,
        plugin_data=summary_pb2.SummaryMetadata.PluginData(
            plugin_name=PLUGIN_NAME, content=content
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
