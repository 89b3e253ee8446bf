"""An incremental index of every tbkit record under a logdir, read straight from event files.

TensorBoard's data provider samples a custom tensor plugin's data (100 per tag by default), so
the plugin reads the event files itself, with ``tbkit.read``'s layers and semantics: runs named
as TensorBoard names them (nested folders too), a tag is tbkit's if its first metadata says so,
a newer schema version is skipped with one warning, and a datum at the same or a smaller step
than the last one of its tag pre-empts the earlier data of that tag at that step or later.

Each file's byte offset is remembered, so a refresh reads only what was appended since: records
written while TensorBoard runs appear on the next request. Rows are kept as flat dicts (nested
fields under dotted names) in write order per tag.

TODO(issue 3): a columnar store (numpy or DuckDB) and a first page served before the whole
index is built, for the 1 M-record targets; a cached search text per row.
"""

from __future__ import annotations

import heapq
import threading
import time
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import DecodeError
from tensorboard.compat.proto import event_pb2, types_pb2

from tbkit import query, read
from tbkit.errors import DataLossWarning

BUILTIN_COLUMNS = ("run", "tag", "step", "wall_time", "level")
_BUILTIN_TYPES = {"run": "string", "tag": "string", "step": "number", "wall_time": "number",
                  "level": "string"}  # fmt: skip
_NON_FINITE = frozenset({"NaN", "Infinity", "-Infinity"})
_FRAME_OVERHEAD = 16  # length (8) + its CRC (4) before the data, the data's CRC (4) after it


def kind(value: Any) -> str:
    """The JSON kind of a row value: number, string, bool, array, object or null."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


@dataclass
class Row:
    """One record: ``seq`` orders a run's records as written; ``values`` is the flat row."""

    seq: int
    values: dict[str, Any]
    fields: dict[str, Any]


@dataclass
class _Column:
    kinds: Counter = field(default_factory=Counter)
    non_finite: int = 0  # strings "NaN", "Infinity", "-Infinity", counted in kinds too

    def type(self) -> str:
        present = {k for k in self.kinds if k != "null"}
        if not present:
            return "null"
        if present == {"string"} and self.non_finite == self.kinds["string"]:
            return "number"
        if present == {"number", "string"} and self.non_finite == self.kinds["string"]:
            return "number"  # numbers mixed with "NaN"-like strings are a numeric column
        return present.pop() if len(present) == 1 else "mixed"


@dataclass
class _Tag:
    version: int | None = None  # None until metadata is seen; read.NOT_OURS if not tbkit's
    rows: list[Row] = field(default_factory=list)
    pending: list[tuple[int, int, float, Any]] = field(default_factory=list)  # before metadata
    columns: dict[str, _Column] = field(default_factory=dict)  # first-seen order
    bad: Counter = field(default_factory=Counter)


@dataclass
class _Run:
    offsets: dict[str, int] = field(default_factory=dict)  # event file path → bytes read
    tags: dict[str, _Tag] = field(default_factory=dict)
    seq: int = 0


class Store:
    """Every tbkit record under ``logdir``, refreshed at most every ``min_interval`` seconds.

    Thread-safe: TensorBoard serves requests from several threads; one lock guards the index.
    """

    def __init__(self, logdir: str, min_interval: float = 2.0):
        self.logdir, self.min_interval = logdir, min_interval
        self.lock = threading.RLock()
        self._runs: dict[str, _Run] = {}
        self._last_refresh = -float("inf")

    def refresh(self, force: bool = False) -> None:
        """Read what was appended to the event files (and new runs and files) since last time."""
        with self.lock:
            now = time.monotonic()
            if not force and now - self._last_refresh < self.min_interval:
                return
            self._last_refresh = now
            for name, paths in read.run_files(self.logdir) if self.logdir else ():
                run = self._runs.setdefault(name, _Run())
                for path in paths:
                    self._read_file(name, run, path)

    def _read_file(self, name: str, run: _Run, path: str) -> None:
        start = run.offsets.get(path, 0)
        for offset, data in read.iter_frames(path, start):
            run.offsets[path] = offset + _FRAME_OVERHEAD + len(data)
            try:
                event = event_pb2.Event.FromString(data)
            except DecodeError:
                warnings.warn(f"tbkit: skipped a record that is not an Event in {path} at byte "
                              f"offset {offset}.", DataLossWarning, stacklevel=2)  # fmt: skip
                continue
            for value in event.summary.value:
                self._add_value(name, run, event, value)

    def _add_value(self, name: str, run: _Run, event: Any, value: Any) -> None:
        tag = run.tags.get(value.tag)
        if tag is None:
            tag = run.tags[value.tag] = _Tag()
        if tag.version is None and value.metadata.plugin_data.plugin_name:
            tag.version = read.schema_version_of(name, value.tag, value.metadata)
            if tag.version == read.NOT_OURS:
                tag.pending.clear()
            else:
                for datum in tag.pending:
                    self._add_datum(name, run, value.tag, tag, *datum)
                tag.pending.clear()
        if tag.version == read.NOT_OURS or value.tensor.dtype != types_pb2.DT_STRING:
            return
        datum = (run.seq, event.step, event.wall_time, value.tensor)
        run.seq += 1
        if tag.version is None:  # no metadata yet: wait for the decision, pre-empting as we go
            while tag.pending and tag.pending[-1][1] >= event.step:
                tag.pending.pop()
            tag.pending.append(datum)
        else:
            self._add_datum(name, run, value.tag, tag, *datum)

    def _add_datum(self, run_name: str, run: _Run, tag_name: str, tag: _Tag,
                   seq: int, step: int, wall_time: float, tensor: Any) -> None:  # fmt: skip
        while tag.rows and tag.rows[-1].values["step"] >= step:
            tag.rows.pop()  # pre-empted by a resumed run (column counts are not taken back)
        for record in read.decode_datum(run_name, tag_name, step, wall_time, tensor, tag.bad):
            values = dict(zip(BUILTIN_COLUMNS, record[:5], strict=True))
            flat = query.flatten(record.fields)
            for key, v in flat.items():
                column = tag.columns.get(key) or tag.columns.setdefault(key, _Column())
                column.kinds[kind(v)] += 1
                column.non_finite += v in _NON_FINITE if isinstance(v, str) else 0
            values.update(flat)
            tag.rows.append(Row(seq, values, record.fields))

    # Queries (call under self.lock).

    def runs(self) -> dict[str, dict[str, int]]:
        """Run → tag → record count, for the tbkit tags that hold records."""
        return {
            name: {t: len(tag.rows) for t, tag in sorted(run.tags.items()) if tag.rows}
            for name, run in sorted(self._runs.items())
            if any(tag.rows for tag in run.tags.values())
        }

    def _tags(self, runs: Iterable[str], tags: set[str] | None) -> Iterator[tuple[str, _Tag]]:
        for name in runs:
            for tag_name, tag in self._runs[name].tags.items():
                if tag.version not in (None, read.NOT_OURS) and (tags is None or tag_name in tags):
                    yield name, tag

    def schema(self, runs: Iterable[str], tags: set[str] | None) -> list[dict[str, Any]]:
        """Columns (built-ins first, then fields in first-seen order) with inferred types."""
        merged: dict[str, _Column] = {}
        for _, tag in self._tags(runs, tags):
            for key, column in tag.columns.items():
                into = merged.setdefault(key, _Column())
                into.kinds.update(column.kinds)
                into.non_finite += column.non_finite
        out = [{"name": n, "type": _BUILTIN_TYPES[n]} for n in BUILTIN_COLUMNS]
        return out + [{"name": n, "type": c.type()} for n, c in merged.items()]

    def rows(self, runs: Iterable[str], tags: set[str] | None) -> Iterator[Row]:
        """Rows of the selected runs (in the order given) and tags, each run in write order."""
        for name in runs:
            per_tag = [tag.rows for _, tag in self._tags([name], tags)]
            yield from heapq.merge(*per_tag, key=lambda row: row.seq)
