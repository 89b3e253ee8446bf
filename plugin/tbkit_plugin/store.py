"""An incremental, columnar index of every tbkit record under a logdir, read from event files.

TensorBoard's data provider samples a custom tensor plugin's data (100 per tag by default), so
the plugin reads the event files itself, with ``tbkit.read``'s layers and semantics: runs named
as TensorBoard names them (nested folders too), a tag is tbkit's if its first metadata says so,
a newer schema version is skipped with one warning, and a datum at the same or a smaller step
than the last one of its tag pre-empts the earlier data of that tag at that step or later.

Layout, for a million records in a few hundred MiB: one row per record in numpy arrays (series
= (run, tag), step, wall time, level, write order, alive), one :class:`~tbkit_plugin.columns.Column`
per flattened field, and the record's JSON Lines export text in one bytes buffer per chunk (what
pages, exports and free-text search read). Rows are appended in chunks; pre-empted rows are
marked dead, not removed.

Each file's byte offset is remembered, so a refresh reads only what was appended since. With
``background=True`` a thread keeps reading, chunk by chunk, and queries see every committed
chunk at once: the first page is served long before a large logdir is read to its end
(:attr:`Store.complete` says whether it is).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from google.protobuf.message import DecodeError
from tensorboard.compat.proto import event_pb2, types_pb2

from tbkit import query, read
from tbkit.errors import DataLossWarning
from tbkit.levels import LEVELS
from tbkit_plugin import columns as col

BUILTIN_COLUMNS = ("run", "tag", "step", "wall_time", "level")
_BUILTINS = frozenset(BUILTIN_COLUMNS)
_BUILTIN_TYPES = {"run": "string", "tag": "string", "step": "number", "wall_time": "number",
                  "level": "string"}  # fmt: skip
_LEVEL_CODE = {name: code for code, name in enumerate(LEVELS)}
_FRAME_OVERHEAD = 16  # length (8) + its CRC (4) before the data, the data's CRC (4) after it
_FIRST_CHUNK, _MAX_CHUNK = 2_000, 50_000  # records per commit: small first, for a fast page


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not strict JSON")


# The strict decoder of tbkit.read, called through its scanner: json.loads without the layers.
_SCAN = json.JSONDecoder(parse_constant=_reject_constant).scan_once
_log = logging.getLogger(__name__)


@dataclass
class Series:
    """One (run, tag): its decision, counts and the kinds seen per field (first-seen order)."""

    run: int
    tag: str
    version: int | None = None  # None until metadata is seen; read.NOT_OURS if not tbkit's
    count: int = 0  # alive rows
    kinds: dict[str, np.ndarray] = field(default_factory=dict)  # field → count per kind
    queued: list = field(default_factory=list)  # live data waiting for the next commit
    # Loader-private state:
    waiting: list[_Datum] = field(default_factory=list)  # data seen before the metadata
    last_step: int | None = None  # step of the newest datum taken
    committed_top: int | None = None  # bound on the steps of its committed alive rows
    bad: int = 0

    @property
    def ours(self) -> bool:
        return self.version not in (None, read.NOT_OURS)


class _Datum:
    """One string tensor of a series at a step, queued for the next commit."""

    __slots__ = ("sid", "step", "wall_time", "seq", "raws", "dead")

    def __init__(self, sid: int, step: int, wall_time: float, seq: int, raws: list[bytes]):
        self.sid, self.step, self.wall_time, self.seq, self.raws = sid, step, wall_time, seq, raws
        self.dead = False


@dataclass
class _Run:
    id: int
    name: str
    offsets: dict[str, int] = field(default_factory=dict)  # event file path → bytes read
    tags: dict[str, int] = field(default_factory=dict)  # tag → series id, first-seen order
    seq: int = 0


def column_type(counts: np.ndarray) -> str:
    """The schema type of a field from its kind counts (see ``http_api.md``)."""
    strings, non_finite = counts[col.STR] + counts[col.NFSTR], counts[col.NFSTR]
    present = {name for name, n in (("number", counts[col.INT] + counts[col.FLOAT]),
                                    ("string", strings), ("bool", counts[col.BOOL]),
                                    ("array", counts[col.ARRAY]), ("object", counts[col.OBJECT]))
               if n}  # fmt: skip
    if not present:
        return "null"
    if present <= {"number", "string"} and strings == non_finite:
        return "number"  # numbers mixed with "NaN"-like strings (or those alone) are numeric
    return present.pop() if len(present) == 1 else "mixed"


class Store:
    """Every tbkit record under ``logdir``.

    Thread-safe: requests call the query methods under :attr:`lock`; the loader (a background
    thread, or :meth:`refresh` itself when ``background`` is false) commits chunks under it.

    Args:
        logdir: the directory TensorBoard serves.
        min_interval: seconds between two looks for appended data.
        background: read in a thread (TensorBoard) rather than inside :meth:`refresh` (tests).
    """

    def __init__(self, logdir: str, min_interval: float = 2.0, background: bool = False):
        self.logdir, self.min_interval, self.background = logdir, min_interval, background
        self.lock = threading.RLock()
        self.complete = False  #: whether the last look read every file to its end
        self.generation = 0  #: bumped by every change of the rows
        self.order_cache: Any = None  # (key, row order), kept by tbkit_plugin.selection
        self._runs: dict[str, _Run] = {}
        self.run_names: list[str] = []  # run id → name
        self.series: list[Series] = []
        self.columns: dict[str, col.Column] = {}
        self.n = 0
        self._sid = col.Growable(np.int32)
        self._step = col.Growable(np.int64)
        self._wall = col.Growable(np.float64)
        self._level = col.Growable(np.uint8)
        self._seq = col.Growable(np.int64)
        self._alive = col.Growable(np.bool_)
        self._chunks: list[tuple[bytes, np.ndarray]] = []  # (lines, offset of each line + end)
        self._chunk_base = col.Growable(np.int64)
        self._pending: list[_Datum] = []
        self._pending_records = 0
        self._chunk_size = _FIRST_CHUNK
        self._last_refresh = -float("inf")
        self._thread: threading.Thread | None = None

    # Loading.

    def refresh(self, force: bool = False) -> None:
        """Read what was appended since the last look, or make sure the loader thread runs."""
        if self.background:
            if self._thread is None:
                with self.lock:
                    if self._thread is None:
                        self._thread = threading.Thread(target=self._loop, daemon=True,
                                                        name="tbkit-store")  # fmt: skip
                        self._thread.start()
            return
        with self.lock:
            now = time.monotonic()
            if force or now - self._last_refresh >= self.min_interval:
                self._last_refresh = now
                self.load()

    def _loop(self) -> None:
        while True:
            try:
                self.load()
            except Exception:  # keep serving what was read; the next look tries again
                _log.exception("tbkit: reading %s failed", self.logdir)
            time.sleep(max(self.min_interval, 0.05))

    def load(self) -> None:
        """Read every file to its end, committing a chunk whenever enough records wait."""
        for name, paths in read.run_files(self.logdir) if self.logdir else ():
            run = self._runs.get(name)
            if run is None:
                with self.lock:
                    run = self._runs[name] = _Run(len(self.run_names), name)
                    self.run_names.append(name)
            for path in paths:
                self._read_file(run, path)
        self._commit()
        self.complete = True

    def _read_file(self, run: _Run, path: str) -> None:
        start = run.offsets.get(path, 0)
        try:
            if os.path.getsize(path) <= start:
                return
        except OSError:
            return
        self.complete = False
        parse, tags, string = event_pb2.Event.FromString, run.tags, types_pb2.DT_STRING
        for offset, data in read.iter_frames(path, start):
            run.offsets[path] = offset + _FRAME_OVERHEAD + len(data)
            try:
                event = parse(data)
            except DecodeError:
                warnings.warn(f"tbkit: skipped a record that is not an Event in {path} at byte "
                              f"offset {offset}.", DataLossWarning, stacklevel=2)  # fmt: skip
                continue
            for value in event.summary.value:
                sid = tags.get(value.tag)
                if sid is None:
                    sid = tags[value.tag] = len(self.series)
                    self.series.append(Series(run.id, value.tag))
                series = self.series[sid]
                if series.version is None:
                    if not self._decide(run, sid, series, value):
                        continue
                elif series.version == read.NOT_OURS:
                    continue
                tensor = value.tensor
                if tensor.dtype != string:
                    continue
                datum = _Datum(sid, event.step, event.wall_time, run.seq, list(tensor.string_val))
                run.seq += 1
                if series.version is None:  # no metadata yet: wait, pre-empting as we go
                    while series.waiting and series.waiting[-1].step >= datum.step:
                        series.waiting.pop()
                    series.waiting.append(datum)
                elif series.last_step is None or datum.step > series.last_step:
                    series.last_step = datum.step  # the common case of _take, inline
                    series.queued.append(datum)
                    self._pending.append(datum)
                    self._pending_records += len(datum.raws)
                else:
                    self._take(series, datum)
            if self._pending_records >= self._chunk_size:
                self._commit()

    def _decide(self, run: _Run, sid: int, series: Series, value: Any) -> bool:
        """Settle a series' version from its first metadata; False if it is not tbkit's."""
        if not value.metadata.plugin_data.plugin_name:
            return True  # still undecided: the caller keeps the datum waiting
        series.version = read.schema_version_of(run.name, value.tag, value.metadata)
        waiting, series.waiting = series.waiting, []
        if series.version == read.NOT_OURS:
            return False
        for datum in waiting:
            self._take(series, datum)
        return True

    def _take(self, series: Series, datum: _Datum) -> None:
        """Queue a datum for the next commit, applying TensorBoard's pre-emption first."""
        if series.last_step is not None and datum.step <= series.last_step:
            queued = series.queued  # this series' live queued data, oldest first
            while queued and queued[-1].step >= datum.step:
                queued.pop().dead = True
            if series.committed_top is not None and series.committed_top >= datum.step:
                self._kill(datum.sid, datum.step)
                series.committed_top = datum.step - 1
        series.last_step = datum.step
        series.queued.append(datum)
        self._pending.append(datum)
        self._pending_records += len(datum.raws)

    def _kill(self, sid: int, step: int) -> None:
        """Mark the committed rows of a series at ``step`` or later dead (a resumed run)."""
        with self.lock:
            dead = (self._sid.view() == sid) & (self._step.view() >= step) & self._alive.view()
            self._alive.view()[dead] = False
            series = self.series[sid]
            series.count -= int(dead.sum())
            rows = np.flatnonzero(dead)
            for name in list(series.kinds):  # the schema forgets what only dead rows held
                kinds = self.columns[name].kind.view()
                held = kinds[rows[rows < len(kinds)]]
                left = series.kinds[name] - np.bincount(held, minlength=len(series.kinds[name]))
                left[col.MISSING] = 0
                if left.any():
                    series.kinds[name] = left
                else:
                    del series.kinds[name]
            self.generation += 1

    def _decode(self, datum: _Datum, series: Series) -> Iterator[tuple[dict, str, bytes]]:
        """The datum's (fields, level, object text) triples; warns about a series' first bad
        object only."""
        for raw in datum.raws:
            try:
                raw = raw.strip(b" \t\n\r")
                text = raw.decode("utf-8")
                try:
                    fields, end = _SCAN(text, 0)
                except StopIteration:
                    raise ValueError("Expecting value") from None
                if end != len(text):
                    raise ValueError(f"Extra data: line 1 column {end + 1} (char {end})")
                if not isinstance(fields, dict):
                    raise ValueError(f"not a JSON object: {raw[:80]!r}")
                level = fields.pop("level", None)
                if level not in _LEVEL_CODE:
                    raise ValueError(f"'level' is {level!r}, not one of {LEVELS}")
            except ValueError as e:  # includes UnicodeDecodeError
                series.bad += 1
                if series.bad == 1:
                    run = self.run_names[series.run]
                    warnings.warn(f"tbkit: skipped an object that does not parse in run {run!r} "
                                  f"tag {series.tag!r} step {datum.step}: {e}", DataLossWarning,
                                  stacklevel=2)  # fmt: skip
                continue
            if b"\n" in raw or b"\r" in raw:  # whitespace between tokens: keep lines whole
                raw = col.COMPACT.encode({**fields, "level": level}).encode("utf-8")
            yield fields, level, raw

    def _commit(self) -> None:
        """Decode the queued data and append it to the arrays as one chunk.

        A record's line (its JSON Lines export text) is ``{"run":…,"tag":…,"step":…,
        "wall_time":…,`` followed by its object as written, after the opening brace."""
        pending = [d for d in self._pending if not d.dead]
        self._pending, self._pending_records = [], 0
        for series in self.series:
            series.queued.clear()
        self._chunk_size = min(self._chunk_size * 2, _MAX_CHUNK)
        levels, lines, records, counts = [], [], [], []
        encode, heads = col.COMPACT.encode, {}
        for datum in pending:
            series = self.series[datum.sid]
            head = heads.get(datum.sid)
            if head is None:
                run = self.run_names[series.run]
                head = heads[datum.sid] = f'{{"run":{encode(run)},"tag":{encode(series.tag)},'
            wall = datum.wall_time
            wall_text = repr(wall) if wall - wall == 0 else encode(wall)
            prefix = f'{head}"step":{datum.step},"wall_time":{wall_text},'.encode()
            n = len(records)
            for fields, level, raw in self._decode(datum, series):
                records.append(fields)
                levels.append(level)
                lines.append(prefix + raw[1:])
            counts.append(len(records) - n)
        if not records:
            return
        buffer = b"\n".join(lines)
        starts = np.zeros(len(lines) + 1, np.int64)
        np.cumsum(np.fromiter(map(len, lines), np.int64, len(lines)) + 1, out=starts[1:])
        sid_array = np.repeat(np.array([d.sid for d in pending], np.int32), counts)
        steps = np.repeat(np.array([d.step for d in pending], np.int64), counts)
        walls = np.repeat(np.array([d.wall_time for d in pending], np.float64), counts)
        seqs = np.repeat(np.array([d.seq for d in pending], np.int64), counts)
        level_codes = np.fromiter(map(_LEVEL_CODE.__getitem__, levels), np.uint8, len(levels))
        with self.lock:
            base = self.n
            counts = col.add_chunk(self.columns, base, records, sid_array, _BUILTINS)
            self._sid.append(sid_array)
            self._step.append(steps)
            self._wall.append(walls)
            self._level.append(level_codes)
            self._seq.append(seqs)
            self._alive.append(np.ones(len(records), np.bool_))
            self._chunks.append((buffer, starts))
            self._chunk_base.append(np.array([base]))
            self.n = base + len(records)
            for sid, per_field in counts.items():
                series = self.series[sid]
                for name, kinds in per_field:
                    if name in series.kinds:
                        series.kinds[name] = series.kinds[name] + kinds
                    else:
                        series.kinds[name] = kinds
            for sid, k in zip(*np.unique(sid_array, return_counts=True), strict=True):
                self.series[sid].count += int(k)
            for datum in pending:
                series = self.series[datum.sid]
                if series.committed_top is None or datum.step > series.committed_top:
                    series.committed_top = datum.step
            self.generation += 1

    # Queries (call under self.lock).

    def runs(self) -> dict[str, dict[str, int]]:
        """Run → tag → record count, for the tbkit tags that hold records."""
        out: dict[str, dict[str, int]] = {}
        for series in list(self.series):
            if series.ours and series.count:
                out.setdefault(self.run_names[series.run], {})[series.tag] = series.count
        return {run: dict(sorted(tags.items())) for run, tags in sorted(out.items())}

    def series_of(self, runs: Iterable[str], tags: frozenset[str] | set[str] | None) -> list[int]:
        """Ids of the tbkit series of ``runs`` (in that order), tags in first-seen order."""
        out = []
        for name in runs:
            for tag, sid in list(self._runs[name].tags.items()):
                if self.series[sid].ours and (tags is None or tag in tags):
                    out.append(sid)
        return out

    def schema(self, runs: Iterable[str], tags: frozenset[str] | set[str] | None
               ) -> list[dict[str, Any]]:  # fmt: skip
        """Columns (built-ins first, then fields in first-seen order) with inferred types."""
        merged: dict[str, np.ndarray] = {}
        for sid in self.series_of(runs, tags):
            for name, kinds in list(self.series[sid].kinds.items()):
                merged[name] = merged[name] + kinds if name in merged else kinds
        out = [{"name": n, "type": _BUILTIN_TYPES[n]} for n in BUILTIN_COLUMNS]
        return out + [{"name": n, "type": column_type(k)} for n, k in merged.items()]

    def arrays(self) -> dict[str, np.ndarray]:
        """The built-in per-row arrays: sid, step, wall_time, level, seq, alive, run."""
        sid = self._sid.view()
        run_of = np.array([s.run for s in self.series] or [0], np.int32)
        return {"sid": sid, "step": self._step.view(), "wall_time": self._wall.view(),
                "level": self._level.view(), "seq": self._seq.view(),
                "alive": self._alive.view(), "run": run_of[sid]}  # fmt: skip

    def column(self, name: str) -> col.Column | None:
        """A field's column padded to every row, or None if no row has the field."""
        column = self.columns.get(name)
        if column is not None:
            column.sync(self.n)
        return column

    def chunks(self) -> tuple[list[tuple[bytes, np.ndarray]], np.ndarray]:
        """The line buffers and the first row of each."""
        return list(self._chunks), self._chunk_base.view()

    def lines(self, rows: np.ndarray) -> list[bytes]:
        """The JSON Lines export text of each row (UTF-8, no newline)."""
        chunks, bases = self.chunks()
        which = np.searchsorted(bases, rows, side="right") - 1
        out = []
        for row, c in zip(rows.tolist(), which.tolist(), strict=True):
            buffer, starts = chunks[c]
            i = row - int(bases[c])
            out.append(buffer[starts[i] : starts[i + 1] - 1])
        return out

    def flat_rows(self, rows: np.ndarray) -> list[dict[str, Any]]:
        """Each row as a flat dict: built-ins, then fields (nested ones under dotted names).

        A field named like a built-in is left out, as the filter language reads the built-in.
        """
        sids, steps = self._sid.view()[rows].tolist(), self._step.view()[rows].tolist()
        walls, levels = self._wall.view()[rows].tolist(), self._level.view()[rows].tolist()
        out = []
        for i, line in enumerate(self.lines(rows)):
            series = self.series[sids[i]]
            row = {"run": self.run_names[series.run], "tag": series.tag, "step": steps[i],
                   "wall_time": walls[i], "level": LEVELS[levels[i]]}  # fmt: skip
            obj = json.loads(line)
            for name in BUILTIN_COLUMNS:
                del obj[name]
            for name, value in query.flatten(obj).items():
                if name not in _BUILTINS:
                    row[name] = value
            out.append(row)
        return out
