"""The event layer: a run's event files → tbkit data, in write order, read incrementally.

Every reader of tbkit (``read_records``, ``tbkit export``/``tail``/``stats``, the plugin's
store) stands on this module, so what a record *is* on the read side is decided here once:

- **Which summaries.** A tag's first metadata decides it, as in TensorBoard: tbkit's own
  (plugin ``tbkit``, schema version at most :data:`~tbkit.data.metadata.SCHEMA_VERSION`; a
  newer one is skipped with one warning naming run, tag and both versions; the field dtypes
  its writer recorded, from version 3 on, are kept as :attr:`Series.dtypes`) and TensorBoard's
  text plugin (``tf.summary.text`` from any code; each string is a record with a ``message``
  field, level ``info`` unless tbkit wrote it with another). String data seen before a tag's
  first metadata wait for it.
- **Damage** is handled by :mod:`tbkit.data.frames`; a frame that is not an ``Event`` is skipped
  with one warning.
- **A run that writes a step again.** TensorBoard keeps one value per (tag, step): a datum at
  the same or a smaller step than its tag's previous one pre-empts every earlier datum of that
  tag at that step or later. :class:`RunReader` marks such a datum (:attr:`Datum.restart`);
  incremental consumers (the plugin, ``tail -f``) drop what it pre-empts from what they hold,
  and :func:`scan` / :func:`kept` give a whole run after pre-emption.
- **Kept steps** (``tbkit.record(..., keep=K)``). A dump is one datum of a tag of its own
  (``<tag>/kept``, whose metadata names the record's tag, from version 2 on) at the trigger
  step, whose objects carry their own ``"step"``. The reader yields it (kind :data:`KEPT`: it
  holds no records and is never a restart), then one datum per object: a record of the original
  tag at its own step, ``"kept": true`` added to its fields (:attr:`Datum.kept`). Those count
  as the original tag's data for pre-emption, but never as a restart, so a dump supersedes
  nothing. :func:`run_records` puts them in step order among the tag's records.
"""

from __future__ import annotations

import bisect
import collections
import json
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from google.protobuf.message import DecodeError
from tensorboard.compat.proto import event_pb2, types_pb2

from tbkit.data import frames, logdir, markers, metadata
from tbkit.data.levels import LEVELS
from tbkit.data.metadata import RESERVED_FIELDS
from tbkit.data.rows import Record, strict_json

TBKIT, TEXT, OTHER, KEPT = "tbkit", "text", "other", "kept"  #: what a tag holds, once decided
WAIT_LIMIT = 1000  #: string data a tag may hold back waiting for metadata; then it is not ours
TEXT_PLUGIN = "text"  #: TensorBoard's text plugin
KEPT_FIELD = "kept"  #: the field (``true``) that marks a record expanded from kept steps
_REPORT_EVERY = 1 << 18  # bytes between two progress reports
Progress = Callable[[int], None]  # called with the number of bytes just read


class Series:
    """One tag of one run: what it holds, and what its readers need to remember of it."""

    __slots__ = ("run", "tag", "kind", "level", "last_step", "bad", "waiting", "over_cap",
                 "kept_of", "dtypes")  # fmt: skip

    def __init__(self, run: str, tag: str):
        self.run, self.tag = run, tag
        self.kind: str | None = None  # TBKIT, TEXT or OTHER; None until metadata is seen
        self.level = "info"  # the level of a text tag's records
        self.last_step: int | None = None  # step of its newest datum
        self.bad = 0  # objects that did not parse
        self.waiting: list[Datum] = []  # string data seen before its first metadata
        self.over_cap: dict[str, int] = {}  # field path → records holding an over-cap marker
        self.kept_of: str | None = None  # KEPT: the tag whose kept steps it holds
        #: TBKIT, KEPT: field path → dtype its writer recorded (schema version 3 on); None
        #: when it recorded none (older data)
        self.dtypes: dict[str, str] | None = None


class Datum(NamedTuple):
    """One string tensor a run wrote for a tag at a step: one or more records."""

    series: Series
    step: int
    wall_time: float
    seq: int  # the order the run's reader yields data in: write order, but for data that
    # waited for their tag's metadata, which come when it does
    values: list[bytes]  # JSON objects (TBKIT) or messages (TEXT): the tensor's strings
    restart: bool  # pre-empts its tag's earlier data at this step or later
    level: str | None = None  # TEXT: its records' level (its own metadata's mark, if any)
    kept: bool = False  # a kept step expanded from a dump (see the module doc)


def _decide(series: Series, meta: Any, quiet: bool) -> None:
    """Settle a tag from its first metadata (warning, unless ``quiet``, when it is tbkit's but
    unreadable)."""
    plugin = meta.plugin_data.plugin_name
    warn = (lambda message: None) if quiet else frames.warn
    if plugin == metadata.PLUGIN_NAME:
        try:
            version, kept_of, dtypes = metadata.parse_plugin_content(meta.plugin_data.content)
        except ValueError as e:
            warn(f"skipping run {series.run!r} tag {series.tag!r}: {e}.")
            series.kind = OTHER
            return
        if version > metadata.SCHEMA_VERSION:
            warn(
                f"skipping run {series.run!r} tag {series.tag!r}: its records have schema "
                f"version {version}, newer than version {metadata.SCHEMA_VERSION} that this "
                "tbkit reads; upgrade tbkit."
            )
            series.kind = OTHER
            return
        series.kind, series.kept_of = (TBKIT, None) if kept_of is None else (KEPT, kept_of)
        series.dtypes = dtypes
    elif plugin == TEXT_PLUGIN:
        series.kind = TEXT
        series.level = metadata.text_level(meta.summary_description)
    else:
        series.kind = OTHER


class RunReader:
    """One run's event files, read on from where the last :meth:`read` stopped.

    Args:
        name: the run's name (as :meth:`tbkit.data.logdir.Logdir.runs` gives it).
        quiet: warn about nothing: a second pass over bytes a first pass has warned about.
        source: the logdir, which opens the files (default: local files).
    """

    def __init__(self, name: str, quiet: bool = False, source: logdir.Logdir = logdir.LOCAL):
        self.name = name
        self.quiet = quiet
        self.source = source
        self.files: dict[str, frames.FrameReader] = {}  # path → its reader, first-seen order
        self.series: dict[str, Series] = {}  # tag → series, first-seen order
        self.seq = 0  # data yielded so far

    def offsets(self) -> dict[str, int]:
        """Where each file's unread bytes start."""
        return {path: reader.offset for path, reader in self.files.items()}

    def read(
        self,
        paths: Iterable[str],
        limits: Mapping[str, int] | None = None,
        progress: Progress | None = None,
    ) -> Iterator[Datum]:
        """Yield the tbkit and text data appended to ``paths`` since the last read.

        Args:
            paths: the run's event files, in order (new ones may appear between reads).
            limits: read each file only up to this offset (files not named: not at all).
            progress: called now and then with the number of bytes read since its last call.
        """
        parse, string, series_of = event_pb2.Event.FromString, types_pb2.DT_STRING, self.series
        for path in paths:
            reader = self.files.get(path)
            if reader is None:
                reader = self.files[path] = frames.FrameReader(path, self.quiet, self.source)
            reported = reader.offset
            limit = None if limits is None else limits.get(path, 0)
            for offset, data in reader.read(limit):
                if progress is not None and offset - reported >= _REPORT_EVERY:
                    progress(offset - reported)
                    reported = offset
                try:
                    event = parse(data)
                except DecodeError:
                    if not self.quiet:
                        frames.warn(f"skipped a record that is not an Event in {path} at byte "
                                    f"offset {offset}.")  # fmt: skip
                    continue
                for value in event.summary.value:
                    tag = value.tag
                    series = series_of.get(tag)
                    if series is None:
                        series = series_of[tag] = Series(self.name, tag)
                    kind = series.kind
                    if kind is None and value.metadata.plugin_data.plugin_name:
                        _decide(series, value.metadata, self.quiet)
                        kind = series.kind
                        yield from self._release(series)
                    if kind == OTHER:
                        continue
                    tensor = value.tensor
                    if tensor.dtype != string:
                        continue
                    level = None
                    if kind == TEXT:  # each tbkit.text call marks its own level
                        description = value.metadata.summary_description
                        level = metadata.text_level(description) if description else series.level
                    datum = Datum(series, event.step, event.wall_time, self.seq,
                                  list(tensor.string_val), False, level)  # fmt: skip
                    if kind is None:
                        if len(series.waiting) >= WAIT_LIMIT:  # no summary of a plugin: not ours
                            series.kind, series.waiting = OTHER, []
                        else:
                            series.waiting.append(datum)  # numbered when it is released
                        continue
                    self.seq += 1
                    if kind == KEPT:  # never a restart: its steps are its objects'
                        yield datum
                        yield from self._expand(datum)
                        continue
                    last = series.last_step
                    series.last_step = datum.step
                    yield datum if last is None or datum.step > last else \
                        datum._replace(restart=True)  # fmt: skip
            if progress is not None and reader.offset > reported:
                progress(reader.offset - reported)

    def _release(self, series: Series) -> Iterator[Datum]:
        """The data that waited for the tag's metadata, now that it is known."""
        waiting, series.waiting = series.waiting, []
        if series.kind == OTHER:
            return
        level = series.level if series.kind == TEXT else None
        for datum in waiting:
            if series.kind == KEPT:
                self.seq += 1
                dump = datum._replace(seq=self.seq - 1)
                yield dump
                yield from self._expand(dump)
                continue
            last = series.last_step
            series.last_step = datum.step
            self.seq += 1
            yield datum._replace(seq=self.seq - 1, restart=last is not None and datum.step <= last,
                                 level=level)  # fmt: skip

    def _expand(self, dump: Datum) -> Iterator[Datum]:
        """A dump's kept steps, each a datum of the original tag at its own step."""
        tag = dump.series.kept_of
        original = self.series.get(tag)
        if original is None:  # kept steps of a record whose schedule has not written yet
            original = self.series[tag] = Series(self.name, tag)
            original.kind = TBKIT
            original.dtypes = dump.series.dtypes  # its own metadata will not be read
        if original.kind not in (TBKIT, None):
            return
        for raw in dump.values:
            try:
                step, text = _unkept(raw)
            except ValueError as e:
                if not self.quiet:
                    _bad(dump, e)
                continue
            self.seq += 1
            yield Datum(original, step, dump.wall_time, self.seq - 1, [text], False, None, True)


def _unkept(raw: bytes) -> tuple[int, bytes]:
    """A kept object → its step, and its record's JSON with ``"kept": true`` for ``"step"``."""
    try:
        fields = _DECODER.decode(raw.decode("utf-8"))
    except RecursionError:
        raise ValueError("nested too deeply") from None
    if type(fields) is not dict:
        raise ValueError(f"not a JSON object: {raw[:80]!r}")
    step = fields.pop("step", None)
    if type(step) is not int or step < 0:
        raise ValueError(f"a kept step's 'step' is {step!r}, not a non-negative int")
    if KEPT_FIELD in fields:
        raise ValueError(f"a kept step has a field {KEPT_FIELD!r}")
    fields[KEPT_FIELD] = True
    return step, strict_json(fields).encode("utf-8")


def _int(text: str) -> int | float:
    """A JSON integer; ±inf if no double holds it (as ``1e400`` reads), so it is written back
    as ``"Infinity"`` / ``"-Infinity"``."""
    value = int(text)
    try:
        float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf
    return value


# Bare NaN, Infinity and -Infinity (another writer's json.dumps) read as the numbers they
# stand for; they are written back as tbkit's strings. Only a text of 309 characters or more can
# hold an integer beyond the double range, so only such texts pay for checking every integer.
_DECODER = json.JSONDecoder(parse_constant=float)
_SCAN = _DECODER.scan_once
_LONG_DECODER = json.JSONDecoder(parse_constant=float, parse_int=_int)
_LONG = 309
MAX_DEPTH = 100  #: deepest nesting of arrays and objects a record may have
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _scrub(value: Any) -> Any:
    """Lone surrogates (``"\\ud800"`` in the JSON text), which no UTF-8 output can hold, as
    U+FFFD, as the write side does."""
    if isinstance(value, str):
        return _LONE_SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {_scrub(k): _scrub(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    return value


def _depth(value: Any, limit: int) -> int:
    """How deeply ``value`` nests, counting no further than ``limit``."""
    if limit <= 0 or not isinstance(value, dict | list):
        return 0
    children = value.values() if isinstance(value, dict) else value
    return 1 + max((_depth(v, limit - 1) for v in children), default=0)


def _parse_object(raw: bytes) -> tuple[str, dict]:
    """A tbkit JSON object → ``(level, fields)``; ValueError if it is not one."""
    text = raw.decode("utf-8")
    try:
        if len(text) >= _LONG:
            fields = _LONG_DECODER.decode(text)
        else:
            try:
                fields, end = _SCAN(text, 0)
                if end != len(text):
                    raise ValueError
            except (StopIteration, ValueError):  # space around it, or not JSON at all
                fields = _DECODER.decode(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    if type(fields) is not dict:
        raise ValueError(f"not a JSON object: {raw[:80]!r}")
    if len(text) > 2 * MAX_DEPTH and _depth(fields, MAX_DEPTH + 1) > MAX_DEPTH:
        raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
    if "\\ud" in text or "\\uD" in text:
        fields = _scrub(fields)
    level = fields.pop("level", None)
    if level not in LEVELS:
        raise ValueError(f"'level' is {level!r}, not one of {LEVELS}")
    if not RESERVED_FIELDS.isdisjoint(fields):
        (name, *_) = sorted(RESERVED_FIELDS.intersection(fields))
        raise ValueError(f"field {name!r} is reserved for the event's {name}")
    return level, fields


def objects(datum: Datum, quiet: bool = False) -> Iterator[tuple[str, dict]]:
    """The ``(level, fields)`` of each record in ``datum``. An object that does not parse is
    skipped; unless ``quiet``, the first of its tag is warned about and the rest are counted
    (:func:`warn_bad`)."""
    series = datum.series
    if series.kind == KEPT:  # its records come as the data it is expanded into
        return
    if series.kind == TEXT:
        level = datum.level or series.level
        for raw in datum.values:
            try:
                message = raw.decode("utf-8")
            except UnicodeDecodeError as e:  # a text summary is UTF-8 text
                if not quiet:
                    _bad(datum, e)
                continue
            yield level, {"message": message}
        return
    for raw in datum.values:
        try:
            level, fields = _parse_object(raw)
        except ValueError as e:  # JSONDecodeError and UnicodeDecodeError too
            if not quiet:
                _bad(datum, e)
            continue
        if markers.RAW_KEY in raw and not quiet:
            _over_cap(datum, fields)
        yield level, fields


def _bad(datum: Datum, error: Exception) -> None:
    series = datum.series
    series.bad += 1
    if series.bad == 1:
        frames.warn(f"skipped an object that does not parse in run {series.run!r} tag "
                    f"{series.tag!r} step {datum.step}: {error}")  # fmt: skip


def _over_cap(datum: Datum, fields: dict) -> None:
    """Count a record's over-cap markers; warn about the first of each field of a tag."""
    series = datum.series
    for path, marker in markers.found(fields):
        seen = series.over_cap.get(path, 0)
        series.over_cap[path] = seen + 1
        if not seen:
            frames.warn(
                f"run {series.run!r} record {series.tag!r} field {path!r} at step {datum.step} "
                f"held {markers.describe(marker)}: written as a marker with its size and first "
                f"values ({markers.KEY!r}, see docs/records.md)"
            )


def records(datum: Datum) -> Iterator[Record]:
    """The records of ``datum`` (the first object of a tag that does not parse warned about)."""
    series, step, wall_time = datum.series, datum.step, datum.wall_time
    for level, fields in objects(datum):
        yield Record(series.run, series.tag, step, wall_time, level, fields)


def warn_bad(tags: Iterable[Series]) -> None:
    """Once a run is read: how many objects of each tag did not parse, if more than one."""
    for series in tags:
        if series.bad > 1:
            frames.warn(f"skipped {series.bad} objects that do not parse in run "
                        f"{series.run!r} tag {series.tag!r}.")  # fmt: skip
        over = {path: n for path, n in series.over_cap.items() if n > 1}
        if over:
            counts = ", ".join(f"{path!r} {n}" for path, n in over.items())
            frames.warn(f"run {series.run!r} record {series.tag!r} held over-cap markers "
                        f"(field and records: {counts}).")  # fmt: skip


# Whole runs, after pre-emption.


@dataclass
class _Restarts:
    """One tag's restarts (by its data's numbering) and the least step of each and later ones."""

    index: list[int] = field(default_factory=list)
    low: list[int] = field(default_factory=list)

    def add(self, index: int, step: int) -> None:
        self.index.append(index)
        self.low.append(step)

    def finish(self) -> None:
        for i in range(len(self.low) - 2, -1, -1):
            self.low[i] = min(self.low[i], self.low[i + 1])

    def survives(self, index: int, step: int) -> bool:
        i = bisect.bisect_right(self.index, index)  # the first restart written after it
        return i == len(self.index) or step < self.low[i]


class Budget:
    """Bytes of data that whole-run reads may hold in memory to read their files once."""

    def __init__(self, nbytes: int):
        self.left = nbytes


DEFAULT_BUDGET = 256 << 20  #: bytes of a run's data :func:`scan` keeps, by default


@dataclass
class RunScan:
    """What one pass over a run learned: :func:`kept` yields its data after pre-emption."""

    name: str
    paths: list[str]
    reader: RunReader  # the pass's reader: where it stopped in each file
    counts: dict[str, int]  # tag → data written (pre-empted ones too), first-written order
    restarts: dict[str, _Restarts]
    kept: list[Datum] | None  # every datum, if they fitted the budget
    limits: dict[str, int]  # each file's end, as far as the pass read it

    def tags(self) -> list[str]:
        """The run's tbkit and text tags that hold data, in first-written order (a tag of kept
        steps is not one: its records are its original tag's)."""
        series = self.reader.series
        return [tag for tag in self.counts if series[tag].kind != KEPT]

    @property
    def size(self) -> int:
        """Bytes the pass read."""
        return sum(self.limits.values())


def _cost(datum: Datum) -> int:
    """About what holding a datum costs: its strings, and the objects around them."""
    return 200 + 50 * len(datum.values) + sum(map(len, datum.values))


def scan(
    name: str,
    paths: list[str],
    budget: Budget | None = None,
    progress: Progress | None = None,
    source: logdir.Logdir = logdir.LOCAL,
) -> RunScan:
    """Read a run once, noting each tag's restarts; keep its data too while ``budget`` lasts
    (then :func:`kept` needs no second pass). Damage is warned about here, once."""
    budget = Budget(DEFAULT_BUDGET) if budget is None else budget
    reader = RunReader(name, source=source)
    counts: dict[str, int] = {}
    restarts: dict[str, _Restarts] = {}
    held: list[Datum] | None = []
    for datum in reader.read(paths, progress=progress):
        tag = datum.series.tag
        index = counts.get(tag, 0)
        counts[tag] = index + 1
        if datum.restart:
            restarts.setdefault(tag, _Restarts()).add(index, datum.step)
        if held is not None:
            cost = _cost(datum)
            if cost <= budget.left:
                budget.left -= cost
                held.append(datum)
            else:  # too big to hold: kept() reads the files again
                budget.left += sum(map(_cost, held))
                held = None
    for each in restarts.values():
        each.finish()
    return RunScan(name, paths, reader, counts, restarts, held, reader.offsets())


def _judged(
    run: RunScan, tags: Iterable[str] | None = None, progress: Progress | None = None
) -> Iterator[tuple[Datum, bool]]:
    """The run's data (of ``tags`` only, if given) in write order, each with whether it
    survives pre-emption: from memory, or from a second, quiet pass over exactly the bytes the
    scan read."""
    wanted = None if tags is None else set(tags)
    data: Iterable[Datum]
    if run.kept is not None:
        data = run.kept
        if progress is not None:
            progress(run.size)
    else:
        second = RunReader(run.name, quiet=True, source=run.reader.source)
        data = second.read(run.paths, run.limits, progress)
    numbering: dict[str, int] = {}
    restarts = run.restarts
    for datum in data:
        tag = datum.series.tag
        index = numbering.get(tag, 0)
        numbering[tag] = index + 1
        if wanted is not None and tag not in wanted:
            continue
        pre_empted = restarts.get(tag)
        yield datum, pre_empted is None or pre_empted.survives(index, datum.step)


def kept(
    run: RunScan, tags: Iterable[str] | None = None, progress: Progress | None = None
) -> Iterator[Datum]:
    """The run's data (of ``tags`` only, if given) in write order, after pre-emption: from
    memory, or from a second, quiet pass over exactly the bytes the scan read."""
    return (datum for datum, survives in _judged(run, tags, progress) if survives)


def rewrites(older: Datum, newer: Datum) -> bool:
    """Whether ``newer`` writes ``older``'s step again with ``older``'s records first and more
    after them: the logging bridge's way to add lines to a step it already flushed, which loses
    nothing (a rerun writing the same records again is not one)."""
    n = len(older.values)
    return older.step == newer.step and len(newer.values) > n and newer.values[:n] == older.values


def superseded(run: RunScan) -> int:
    """How many records of the run newer writes pre-empted (TensorBoard's "newest write wins"
    for a run restarted at a lower step), but for those a rewrite of their step kept
    (:func:`rewrites`): 0 without reading again if no tag restarted."""
    if not run.restarts:
        return 0
    lost: list[Datum] = []
    kept: dict[tuple[str, int], Datum] = {}
    for datum, survives in _judged(run):
        if survives:
            kept[(datum.series.tag, datum.step)] = datum
        elif datum.series.kind != KEPT:  # a dump is never pre-empted data of its own
            lost.append(datum)
    return sum(
        len(datum.values) for datum in lost
        if not ((newer := kept.get((datum.series.tag, datum.step))) and rewrites(datum, newer))
    )  # fmt: skip


def run_records(
    run: RunScan,
    tags: Iterable[str] | None = None,
    progress: Progress | None = None,
    quiet: bool = False,
) -> Iterator[Record]:
    """A scanned run's records (of ``tags``, if given) after pre-emption, as ``read_records``
    gives them; unless ``quiet``, objects that do not parse are warned about and summed up."""
    seen: dict[str, Series] = {}
    for datum in in_step_order(run, tags, progress):
        series = seen[datum.series.tag] = datum.series
        for level, fields in objects(datum, quiet):
            yield Record(series.run, series.tag, datum.step, datum.wall_time, level, fields)
    if not quiet:
        warn_bad(seen.values())


def in_step_order(
    run: RunScan, tags: Iterable[str] | None = None, progress: Progress | None = None
) -> Iterator[Datum]:
    """:func:`kept`, with each tag's kept steps moved among its other data in step order (a
    step its schedule also wrote appears once: the schedule's). Reads a run with dumps twice
    (once from memory when it fitted the budget)."""
    if not any(s.kind == KEPT for s in run.reader.series.values()):
        yield from kept(run, tags, progress)
        return
    waiting: dict[str, dict[int, Datum]] = {}  # tag → step → its kept datum (the last written)
    for datum in kept(run, tags):
        if datum.kept:
            waiting.setdefault(datum.series.tag, {})[datum.step] = datum
    queues = {tag: collections.deque(sorted(by_step.values(), key=lambda d: d.step))
              for tag, by_step in waiting.items()}  # fmt: skip
    for datum in kept(run, tags, progress):
        if datum.kept:
            continue
        queue = queues.get(datum.series.tag)
        while queue and queue[0].step <= datum.step:
            first = queue.popleft()
            if first.step < datum.step:
                yield first
        yield datum
    for queue in queues.values():
        yield from queue


MAX_PAUSE = 30.0  #: longest wait between two looks at an object store that has nothing new


def next_pause(pause: float, base: float, new_data: bool, remote: bool) -> float:
    """How long a follower waits before its next look: ``base`` after new data or for a local
    logdir (a look costs a few system calls); twice the last pause, up to :data:`MAX_PAUSE`,
    while an object store has nothing new (each look is a listing request)."""
    if new_data or not remote:
        return base
    return min(2 * pause, max(base, MAX_PAUSE))


class Follower:
    """Every run of a logdir, read incrementally: each :meth:`poll` yields what was appended
    since the last one (new runs and files too), in write order per run, restarts marked."""

    def __init__(self, source: logdir.Logdir):
        self.source = source
        self.readers: dict[str, RunReader] = {}  #: run → its reader (a caller may seed one)

    def poll(self) -> Iterator[Datum]:
        """The data appended since the last poll (the first: every datum), run by run.

        Raises:
            StorageError: the logdir is a URL that cannot be listed now.
        """
        for name, paths in self.source.runs():
            reader = self.readers.get(name)
            if reader is None:
                reader = self.readers[name] = RunReader(name, source=self.source)
            yield from reader.read(paths)
