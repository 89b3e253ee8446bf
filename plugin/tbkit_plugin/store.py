"""An incremental, columnar index of every tbkit record under a logdir.

TensorBoard's data provider samples a custom tensor plugin's data (100 per tag by default), so
the plugin reads the event files itself, through tbkit's event layer
(:class:`tbkit.data.events.Follower`): the same runs, tags, damage handling and text summaries
as ``read_records``. The event layer marks a datum that writes a step of its tag again; the
store then marks the tag's rows at that step or later dead (TensorBoard's pre-emption).

Layout, for a million records in a few hundred MiB: one row per record in numpy arrays (series
= (run, tag), step, wall time, level, write order, alive), one :class:`~tbkit_plugin.columns.Column`
per flattened field, and the record's JSON line (:func:`tbkit.data.rows.json_line`, the byte
form every reader shares) in one bytes buffer per chunk (what pages, exports and free-text
search read). Rows are appended in chunks; pre-empted rows are marked dead, not removed.

The event layer remembers each file's byte offset, so a refresh reads only what was appended
since. With ``background=True`` a thread keeps reading, chunk by chunk, and queries see every
committed chunk at once: the first page is served long before a large logdir is read to its
end (:attr:`Store.complete` says whether it is).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tbkit.data import events
from tbkit.data import logdir as _logdir
from tbkit.data.errors import DataLossWarning
from tbkit.data.levels import LEVELS, RANK
from tbkit.data.metadata import BUILTIN_FIELDS
from tbkit.data.rows import Record, flatten, json_line
from tbkit_plugin import columns as col

_BUILTINS = frozenset(BUILTIN_FIELDS)
_BUILTIN_TYPES = {"run": "string", "tag": "string", "step": "number", "wall_time": "number",
                  "level": "string"}  # fmt: skip
_BUILTIN_DTYPES = {"run": "string", "tag": "string", "step": "int64", "wall_time": "float64",
                   "level": "string"}  # fmt: skip
_FIRST_CHUNK, _MAX_CHUNK = 2_000, 50_000  # records per commit: small first, for a fast page
_log = logging.getLogger(__name__)


@dataclass
class Series:
    """One (run, tag) with records: its counts and the kinds seen per field (first-seen order)."""

    run: int
    tag: str
    count: int = 0  # alive rows
    kinds: dict[str, np.ndarray] = field(default_factory=dict)  # field → count per kind
    queued: list[events.Datum] = field(default_factory=list)  # live data waiting for a commit
    committed_top: int | None = None  # bound on the steps of its committed alive rows
    newest: events.Datum | None = None  # its committed datum at committed_top, if it is alive
    dtypes: dict[str, str] | None = None  # field → dtype its writer recorded (None: unknown)


@dataclass
class _Run:
    id: int
    name: str
    tags: dict[str, int] = field(default_factory=dict)  # tag → series id, first-written order
    superseded: int = 0  # records newer writes pre-empted (a run restarted in its folder)


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
        self.generation = 0  #: bumped by every change of the rows (what ``/revision`` serves)
        self.queries = 0  #: row queries answered (selection.matching): a poll must not add one
        self.order_cache: Any = None  # (key, row order), kept by tbkit_plugin.selection
        self._follower: events.Follower | None = None  # made on the first look
        self._failed = ""  # the last listing or read error, said once
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
        self._pending: list[tuple[int, events.Datum]] = []  # (series id, datum)
        self._pending_records = 0
        self._chunk_size = _FIRST_CHUNK
        self._last_refresh = -float("inf")
        self._thread: threading.Thread | None = None
        self._closed = threading.Event()

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

    def close(self, timeout: float | None = None) -> None:
        """Stop the loader thread after its current look, waiting at most ``timeout`` seconds
        for it (a look blocked on an object store lasts the backend's timeouts). TensorBoard
        never calls this; tests and embedders do."""
        self._closed.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        pause = max(self.min_interval, 0.05)
        while not self._closed.is_set():
            before = self.generation
            try:
                self.load()
            except Exception:  # keep serving what was read; the next look tries again
                _log.exception("tbkit: reading %s failed", self.logdir)
            remote = self._follower is not None and self._follower.source.remote
            pause = events.next_pause(pause, max(self.min_interval, 0.05),
                                      self.generation != before, remote)  # fmt: skip
            self._closed.wait(pause)

    def load(self) -> None:
        """Read every file to its end, committing a chunk whenever enough records wait.

        A logdir URL that cannot be listed or read now is said once in TensorBoard's log; what
        was read stays served and the next look tries again (``complete`` stays false)."""
        if not self.logdir:
            return
        try:
            if self._follower is None:
                self._follower = events.Follower(_logdir.Logdir(self.logdir))
            for datum in self._follower.poll():
                self.complete = False
                self._take(datum)
                if self._pending_records >= self._chunk_size:
                    self._commit()
        except _logdir.StorageError as e:
            self._commit()  # what was read before the error
            self.complete = False
            if str(e) != self._failed:
                self._failed = str(e)
                _log.warning("tbkit: %s; serving what was read, retrying", e)
            return
        self._failed = ""
        self._commit()
        self.complete = True

    def _series_id(self, datum: events.Datum) -> int:
        """The store's id of a datum's (run, tag), made on its first datum."""
        of = datum.series
        run = self._runs.get(of.run)
        if run is None:
            with self.lock:
                run = self._runs[of.run] = _Run(len(self.run_names), of.run)
                self.run_names.append(of.run)
        sid = run.tags.get(of.tag)
        if sid is None:
            with self.lock:
                sid = run.tags[of.tag] = len(self.series)
                self.series.append(Series(run.id, of.tag, dtypes=of.dtypes))
        return sid

    def _take(self, datum: events.Datum) -> None:
        """Queue a datum for the next commit; a restart first kills what it pre-empts."""
        sid = self._series_id(datum)
        series = self.series[sid]
        if datum.restart:
            queued = series.queued  # this series' live queued data, oldest first
            run = self._runs[datum.series.run]
            while queued and queued[-1].step >= datum.step:
                older = queued.pop()
                if not events.rewrites(older, datum):  # the bridge's rewrite loses nothing
                    run.superseded += len(older.values)
            if series.committed_top is not None and series.committed_top >= datum.step:
                newest = series.newest
                rewritten = newest is not None and events.rewrites(newest, datum)
                self._kill(sid, datum.step, rewritten=len(newest.values) if rewritten else 0)
                series.committed_top, series.newest = datum.step - 1, None
        series.queued.append(datum)
        self._pending.append((sid, datum))
        self._pending_records += len(datum.values)

    def _kill(self, sid: int, step: int, rewritten: int = 0) -> None:
        """Mark the committed rows of a series at ``step`` or later dead (a resumed run); all
        but ``rewritten`` of them (written again by the datum that kills them) were
        superseded."""
        with self.lock:
            dead = (self._sid.view() == sid) & (self._step.view() >= step) & self._alive.view()
            self._alive.view()[dead] = False
            series = self.series[sid]
            series.count -= int(dead.sum())
            self._runs[self.run_names[series.run]].superseded += int(dead.sum()) - rewritten
            dead_rows = np.flatnonzero(dead)
            for name in list(series.kinds):  # the schema forgets what only dead rows held
                kinds = self.columns[name].kind.view()
                held = kinds[dead_rows[dead_rows < len(kinds)]]
                left = series.kinds[name] - np.bincount(held, minlength=len(series.kinds[name]))
                left[col.MISSING] = 0
                if left.any():
                    series.kinds[name] = left
                else:
                    del series.kinds[name]
            self.generation += 1

    def _commit(self) -> None:
        """Decode the queued data and append them to the arrays as one chunk."""
        live = {id(datum) for series in self.series for datum in series.queued}
        pending = [(sid, d) for sid, d in self._pending if id(d) in live]
        self._pending, self._pending_records = [], 0
        for series in self.series:
            series.queued.clear()
        self._chunk_size = min(self._chunk_size * 2, _MAX_CHUNK)
        levels, lines, records, counts = [], [], [], []
        line = json_line
        for _, datum in pending:
            of, n = datum.series, len(records)
            try:
                for level, fields in events.objects(datum):
                    text = line(Record(of.run, of.tag, datum.step, datum.wall_time, level, fields))
                    lines.append(text.encode("utf-8"))
                    records.append(fields)
                    levels.append(level)
            except Exception as e:  # never lose the chunk (the reader has moved past it)
                del lines[n:], records[n:], levels[n:]
                warnings.warn(f"tbkit: skipped a datum that could not be indexed in run "
                              f"{of.run!r} tag {of.tag!r} step {datum.step}: {e!r}",
                              DataLossWarning, stacklevel=2)  # fmt: skip
            counts.append(len(records) - n)
        if not records:
            return
        buffer = b"\n".join(lines)
        starts = np.zeros(len(lines) + 1, np.int64)
        np.cumsum(np.fromiter(map(len, lines), np.int64, len(lines)) + 1, out=starts[1:])
        sid_array = np.repeat(np.array([sid for sid, _ in pending], np.int32), counts)
        steps = np.repeat(np.array([d.step for _, d in pending], np.int64), counts)
        walls = np.repeat(np.array([d.wall_time for _, d in pending], np.float64), counts)
        seqs = np.repeat(np.array([d.seq for _, d in pending], np.int64), counts)
        level_codes = np.fromiter(map(RANK.__getitem__, levels), np.uint8, len(levels))
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
            for sid, datum in pending:
                series = self.series[sid]
                if series.committed_top is None or datum.step >= series.committed_top:
                    series.committed_top, series.newest = datum.step, datum
            self.generation += 1

    # Queries (call under self.lock).

    def runs(self) -> dict[str, dict[str, int]]:
        """Run → tag → record count, for the tbkit tags that hold records."""
        out: dict[str, dict[str, int]] = {}
        for series in list(self.series):
            if series.count:
                out.setdefault(self.run_names[series.run], {})[series.tag] = series.count
        return {run: dict(sorted(tags.items())) for run, tags in sorted(out.items())}

    def superseded(self) -> dict[str, int]:
        """Run → records newer writes pre-empted, for the runs where some were."""
        return {name: run.superseded for name, run in sorted(self._runs.items()) if run.superseded}

    def series_of(self, runs: Iterable[str], tags: frozenset[str] | set[str] | None) -> list[int]:
        """Ids of the tbkit series of ``runs`` (in that order), tags in first-seen order."""
        out = []
        for name in runs:
            for tag, sid in list(self._runs[name].tags.items()):
                if tags is None or tag in tags:
                    out.append(sid)
        return out

    def schema(self, runs: Iterable[str], tags: frozenset[str] | set[str] | None
               ) -> list[dict[str, Any]]:  # fmt: skip
        """Columns (built-ins first, then fields in first-seen order) with inferred types, and
        the dtype every selected tag holding the field recorded for it (else None: unknown,
        or not the same everywhere)."""
        merged: dict[str, np.ndarray] = {}
        dtypes: dict[str, str | None] = {}
        for sid in self.series_of(runs, tags):
            series = self.series[sid]
            recorded = series.dtypes or {}
            for name, kinds in list(series.kinds.items()):
                merged[name] = merged[name] + kinds if name in merged else kinds
                dtype = recorded.get(name)
                dtypes[name] = dtype if dtypes.get(name, dtype) == dtype else None
        out = [{"name": n, "type": _BUILTIN_TYPES[n], "dtype": _BUILTIN_DTYPES[n]}
               for n in BUILTIN_FIELDS]  # fmt: skip
        return out + [{"name": n, "type": column_type(k), "dtype": dtypes[n]}
                      for n, k in merged.items()]  # fmt: skip

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

    def record(self, row: int) -> dict[str, Any]:
        """One row's record as written: built-ins, then its fields, nested objects nested.

        Raises:
            IndexError: ``row`` is not a row id of the store.
        """
        if not 0 <= row < self.n:
            raise IndexError(row)
        return json.loads(self.lines(np.array([row], np.int64))[0])

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
            for name in BUILTIN_FIELDS:
                del obj[name]
            row.update(flatten(obj))
            out.append(row)
        return out
