"""``tbkit export``: a logdir's records as JSON Lines or CSV, filtered, in constant memory.

Records stream through :mod:`tbkit.stream` (a scan pass, then a streaming pass per run). A CSV
header must be known before the first row, and ``--where`` checks its field names against the
selection's schema, so for those two the scan also decodes every record to collect the schema:
the union of the selected records' fields, per run in order, per tag in first-written order,
each tag's fields in first-seen order (the plugin's ``/schema`` order). A run with a resumed
tag gets one more pass, so that fields only pre-empted data had are left out. Rows match the
plugin's export (``plugin/tbkit_plugin/http_api.md``).
"""

from __future__ import annotations

import csv
import difflib
import json
import math
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TextIO

from tbkit import query, stream
from tbkit.errors import TbkitError
from tbkit.read import Record

FORMATS = ("jsonl", "csv")
BUILTIN_COLUMNS = ("run", "tag", "step", "wall_time", "level")
_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
_NON_FINITE = {math.inf: "Infinity", -math.inf: "-Infinity"}


def strict_json(value: Any) -> str:
    """Compact strict JSON; a non-finite float (another writer's ``1e400`` reads as inf) is
    written as the string tbkit writes for it: ``"NaN"``, ``"Infinity"``, ``"-Infinity"``."""
    try:
        return _ENCODE(value)
    except ValueError:
        return _ENCODE(_finite(value))


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else _NON_FINITE[value]
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


_to_json = strict_json

#: ``track(description, total_bytes)`` returns the callback a pass reports its bytes to.
Tracker = Callable[[str, int], "stream.Progress | None"]


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


def json_line(record: Record) -> str:
    """One strict-JSON object, built-ins first then the record's fields as written."""
    obj = {"run": record.run, "tag": record.tag, "step": record.step,
           "wall_time": record.wall_time, "level": record.level, **record.fields}  # fmt: skip
    return _to_json(obj)


def row(record: Record) -> dict[str, Any]:
    """The flat row the filter and CSV see: dotted field names plus the built-ins."""
    flat = query.flatten(record.fields)
    flat.update(run=record.run, tag=record.tag, step=record.step,
                wall_time=record.wall_time, level=record.level)  # fmt: skip
    return flat


def cell(value: Any) -> str:
    """A CSV cell: empty for null or missing, strings as they are, floats as Python's shortest
    round-trip text, integers exact, bools, arrays and objects as compact JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return repr(value)
    return _to_json(value)


@dataclass
class Export:
    """A checked selection, ready to :meth:`write`: build it with :func:`prepare`."""

    plans: list[stream.RunPlan]
    where: query.Query | None
    columns: list[str] | None  # None unless the format or the filter needed the schema
    format: str

    def records(self, track: Tracker = _no_tracker) -> Iterator[Record]:
        """The selected records (before ``where``), reporting progress as "export"."""
        progress = track("export", sum(plan.size for plan in self.plans))
        for plan in self.plans:
            yield from stream.run_records(plan, progress)

    def write(self, out: TextIO, track: Tracker = _no_tracker) -> int:
        """Write the matching records to ``out`` (opened with ``newline=""``); return how many."""
        where, count = self.where, 0
        if self.format == "csv":
            writer = csv.writer(out)  # RFC 4180: CRLF line ends, fields quoted when needed
            writer.writerow(self.columns)
            for record in self.records(track):
                flat = row(record)
                if where is None or where(flat):
                    writer.writerow([cell(flat.get(name)) for name in self.columns])
                    count += 1
        else:
            for record in self.records(track):
                if where is None or where.matches(record):
                    out.write(json_line(record) + "\n")
                    count += 1
        return count


def schema(plans: list[stream.RunPlan], track: Tracker = _no_tracker) -> list[str]:
    """The selection's columns: built-ins, then fields per run, per tag, in first-seen order."""
    exact = all(plan.fields is not None and not plan.restarts for plan in plans)
    progress = None if exact else track("schema", sum(plan.size for plan in plans))
    columns = dict.fromkeys(BUILTIN_COLUMNS)
    for plan in plans:
        columns.update(dict.fromkeys(stream.field_names(plan, progress)))
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
        raise ExportError(f"unknown format {format!r} (use jsonl or csv)", 2)
    runs, tags = list(runs), list(tags)
    q = query.parse(where) if where is not None and where.strip() else None
    root = os.fspath(logdir)
    found = stream.logdir_runs(root)
    names = [name for name, _ in found]
    for run in runs:
        if run not in names:
            raise ExportError(f"no run {run!r} under {root!r}{_suggest(run, names)}", 2)
    chosen = [(name, paths) for name, paths in found if not runs or name in runs]
    fields = format == "csv" or (q is not None and bool(q.fields - query.BUILTIN_FIELDS))
    progress = track("scan", sum(stream.file_size(p) for _, paths in chosen for p in paths))
    plans = [stream.plan_run(name, paths, progress, fields) for name, paths in chosen]
    known_tags = {tag for plan in plans for tag in plan.tags()}
    for tag in tags:
        if tag not in known_tags:
            raise ExportError(f"no tbkit records with tag {tag!r}{_suggest(tag, known_tags)}", 2)
    if tags:
        for plan in plans:
            plan.select(tags)
    plans = [plan for plan in plans if plan.data]
    if not plans:
        scope = f"in run {runs[0]!r} " if len(runs) == 1 else ""
        raise ExportError(f"no tbkit records {scope}under {root!r}", 1)
    columns = None
    if fields:
        columns = schema(plans, track)
        if q is not None:
            q.check(columns)
    return Export(plans, q, columns, format)
