"""``tbkit export``: a logdir's records as JSON Lines or CSV, filtered.

Each selected run is read once by the event layer (:func:`tbkit.data.events.scan`), which also
keeps its data while they fit a memory budget; the records are then written from memory, or
from a second pass over exactly the bytes the first one read (memory stays bounded however big
the logdir). A CSV header must be known before the first row, and ``--where`` checks its field
names, so for those two the schema is collected first: built-ins, then per run, per tag in
first-written order, the fields in first-seen order, leaving out fields that only pre-empted
records held (the plugin's ``/schema`` order). Rows are :mod:`tbkit.data.rows`' byte form, the
same as ``read_records`` gives and the plugin downloads.
"""

from __future__ import annotations

import difflib
import functools
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TextIO

from tbkit.cli.terminal import printable, printable_json
from tbkit.data import events, parquet, query, rows
from tbkit.data import logdir as _logdir
from tbkit.data.errors import TbkitError
from tbkit.data.metadata import BUILTIN_FIELDS
from tbkit.data.rows import Record

FORMATS = ("jsonl", "csv", "parquet")
MEMORY_BUDGET = 512 << 20  #: bytes of data an export may keep to read each file once

#: ``track(description, total_bytes)`` returns the callback a pass reports its bytes to.
Tracker = Callable[[str, int], "events.Progress | None"]


class ExportError(TbkitError):
    """A selection that names nothing: ``code`` 1 for an empty logdir, 2 for a bad argument."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


def _no_tracker(description: str, total: int) -> None:
    return None


def _suggest(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


@dataclass
class Export:
    """A checked selection, ready to :meth:`write`: build it with :func:`prepare`."""

    runs: list[events.RunScan]
    tags: list[str] | None  # None: every tag
    where: query.Query | None
    columns: list[str] | None  # None unless the format or the filter needed the schema
    format: str

    def records(self, track: Tracker = _no_tracker) -> Iterator[Record]:
        """The selected records (before ``where``), reporting progress as "export"."""
        progress = track("export", sum(run.size for run in self.runs))
        for run in self.runs:
            yield from events.run_records(run, self.tags, progress)

    def write(self, out: TextIO, track: Tracker = _no_tracker, terminal: bool = False) -> int:
        """Write the matching records to ``out`` (opened with ``newline=""``); return how many.

        With ``terminal`` the text is for a person's terminal, not for a program: control
        characters in CSV cells print as ``\\x1b`` and DEL and C1 controls in JSON strings as
        ``\\u009b`` (:mod:`tbkit.cli.terminal`), so data cannot drive the terminal.
        """
        where, count = self.where, 0
        if self.format == "csv":
            cell = _shown_cell if terminal else rows.cell
            text_cell = _shown_text_cell if terminal else rows.text_cell
            writer = rows.csv_writer(out)
            writer.writerow([text_cell(name) for name in self.columns])
            for record in self.records(track):
                row = rows.flat(record)
                if where is None or where(row):
                    writer.writerow([cell(row.get(name)) for name in self.columns])
                    count += 1
        else:
            line = _shown_line if terminal else rows.json_line
            for record in self.records(track):
                if where is None or where.matches(record):
                    out.write(line(record) + "\n")
                    count += 1
        return count


    def write_parquet(self, out: str, track: Tracker = _no_tracker) -> int:
        """Write the matching records as Parquet under ``out`` (a new or empty folder or URL),
        one ``run=<name>/`` folder per run (:mod:`tbkit.data.parquet`); return how many."""
        target = _logdir.Logdir(out)
        parquet.check_output(target)
        progress = track("export", 2 * sum(run.size for run in self.runs))  # types, then rows

        runs = [(run.name, functools.partial(events.run_records, run, self.tags, progress))
                for run in self.runs]  # fmt: skip
        return parquet.write(target, runs, self.where)


def _shown_cell(value: object) -> str:
    return printable(rows.cell(value))


def _shown_text_cell(text: str) -> str:
    return printable(rows.text_cell(text))


def _shown_line(record: Record) -> str:
    return printable_json(rows.json_line(record))


def field_names(run: events.RunScan, tags: list[str] | None,
                progress: events.Progress | None = None) -> list[str]:  # fmt: skip
    """A run's flat field names: per tag in first-written order, each tag's in the order the
    records left after pre-emption first hold them (the plugin's ``/schema`` order)."""
    order = [tag for tag in run.tags() if tags is None or tag in tags]
    seen: dict[str, dict[str, None]] = {tag: {} for tag in order}
    for datum in events.kept(run, tags, progress):
        names = seen[datum.series.tag]
        for _, fields in events.objects(datum, quiet=True):
            names.update(dict.fromkeys(rows.flatten(fields)))
    out: dict[str, None] = {}
    for tag in order:
        out.update(seen[tag])
    return list(out)


def schema(runs: list[events.RunScan], tags: list[str] | None,
           track: Tracker = _no_tracker) -> list[str]:  # fmt: skip
    """The selection's columns: built-ins, then each run's :func:`field_names`."""
    progress = track("schema", sum(run.size for run in runs))
    columns = dict.fromkeys(BUILTIN_FIELDS)
    for run in runs:
        columns.update(dict.fromkeys(field_names(run, tags, progress)))
    return list(columns)


def prepare(
    logdir: str | os.PathLike[str],
    *,
    runs: Iterable[str] = (),
    tags: Iterable[str] = (),
    where: str | None = None,
    format: str = "jsonl",
    track: Tracker = _no_tracker,
) -> Export:
    """Check everything before any output: logdir, runs, tags, the filter and its fields.

    Raises:
        FileNotFoundError, NotADirectoryError: ``logdir`` is missing or not a directory.
        query.QueryError: ``where`` does not parse or names a field no selected record has.
        ExportError: an unknown run or tag (code 2) or no records at all (code 1).
    """
    if format not in FORMATS:
        raise ExportError(f"unknown format {format!r} (use jsonl, csv or parquet)", 2)
    runs, tags = list(runs), list(tags)
    q = query.parse(where) if where is not None and where.strip() else None
    source = _logdir.Logdir(logdir).check()
    root = source.url
    found = source.runs()
    names = [name for name, _ in found]
    for run in runs:
        if run not in names:
            raise ExportError(f"no run {run!r} under {root!r}{_suggest(run, names)}", 2)
    chosen = [(name, paths) for name, paths in found if not runs or name in runs]
    progress = track("scan", sum(source.size(p) for _, paths in chosen for p in paths))
    budget = events.Budget(MEMORY_BUDGET)
    scans = [events.scan(name, paths, budget, progress, source) for name, paths in chosen]
    known_tags = {tag for scan in scans for tag in scan.tags()}
    for tag in tags:
        if tag not in known_tags:
            raise ExportError(f"no tbkit records with tag {tag!r}{_suggest(tag, known_tags)}", 2)
    selected = tags or None
    scans = [s for s in scans if any(selected is None or t in selected for t in s.tags())]
    if not scans:
        scope = f"in run {runs[0]!r} " if len(runs) == 1 else ""
        raise ExportError(f"no tbkit records {scope}under {root!r}", 1)
    columns = None
    if format == "csv" or (q is not None and bool(q.fields - query.BUILTIN_FIELDS)):
        columns = schema(scans, selected, track)
        if q is not None:
            q.check(columns)
    return Export(scans, selected, q, columns, format)
