"""``tbkit tail``: records as they are written, one readable line each; ``-f`` keeps following.

The records already there are read as ``read_records`` reads them (each run after pre-emption
by a resumed run); ``-n N`` keeps the N most recent of them. Following then reads only what is
appended (new records in existing files, new files, new runs) through the event layer's
incremental reader, and prints it as written: a resumed run's repeated steps show again.
"""

from __future__ import annotations

import collections
import heapq
import os
import time
import warnings
from collections.abc import Callable, Iterator
from typing import TextIO

from tbkit.cli.terminal import printable
from tbkit.data import events, rows
from tbkit.data import logdir as _logdir
from tbkit.data.rows import Record

_COLORS = {"debug": "\x1b[2m", "info": "\x1b[32m", "warning": "\x1b[33m", "error": "\x1b[1;31m"}
_RESET = "\x1b[0m"


Printed = dict[tuple[str, str], tuple[int, list[bytes]]]  # (run, tag) → its last datum shown


def _present(follower: events.Follower, printed: Printed) -> Iterator[Record]:
    """Every record there now, run by run after pre-emption; ``follower`` goes on from there."""
    for name, paths in follower.source.runs():
        run = events.scan(name, paths, source=follower.source)
        follower.readers[name] = run.reader
        seen: dict[str, events.Series] = {}
        for datum in events.in_step_order(run):  # kept steps among their tag's records
            seen[datum.series.tag] = datum.series
            if not datum.kept:
                printed[name, datum.series.tag] = (datum.step, datum.values)
            yield from events.records(datum)
        events.warn_bad(seen.values())


def _by_time(numbered: tuple[int, Record]) -> tuple[float, int]:
    return numbered[1].wall_time, numbered[0]


def _appended(follower: events.Follower, printed: Printed) -> Iterator[Record]:
    """The records appended since the last look, as written. A datum that writes its tag's
    last printed step again with more objects after the same ones (the logging bridge adds a
    step's late lines that way) prints only the new ones."""
    for datum in follower.poll():
        step, values, key = datum.step, datum.values, (datum.series.run, datum.series.tag)
        last = printed.get(key)
        if datum.restart and last is not None and last[0] == step \
                and values[: len(last[1])] == last[1]:  # fmt: skip
            datum = datum._replace(values=values[len(last[1]) :])
        if not datum.kept:  # a kept step is printed when its dump arrives, never re-written
            printed[key] = (step, values)
        yield from events.records(datum)


def format_record(record: Record, color: bool = False) -> str:
    """``2026-05-01 12:00:00.250  train  train  step 100  INFO     {"loss":0.5}`` (local time)."""
    seconds = int(record.wall_time // 1)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))
    millis = int((record.wall_time - seconds) * 1000)
    level = f"{record.level.upper():<7}"
    if color:
        level = f"{_COLORS[record.level]}{level}{_RESET}"
    fields = printable(rows.strict_json(record.fields))  # JSON leaves C1 controls as they are
    where = f"{printable(record.run)}  {printable(record.tag)}  step {record.step}"
    return f"{stamp}.{millis:03d}  {where}  {level}  {fields}"


def tail(
    logdir: str | os.PathLike[str],
    out: TextIO,
    *,
    follow: bool = False,
    interval: float = 1.0,
    color: bool = False,
    last: int | None = None,
    stopped: Callable[[], bool] = lambda: False,
) -> int:
    """Print the records under ``logdir``; with ``follow``, keep polling until interrupted.

    ``last=N`` starts with only the N most recent records already there (by wall time, printed
    oldest first); later polls print everything new. ``stopped()`` true ends following after
    the poll it is checked at.

    Returns:
        How many records were read, shown or not (``KeyboardInterrupt`` propagates while
        following).

    Raises:
        FileNotFoundError, NotADirectoryError: ``logdir`` is missing or not a directory.
    """
    follower = events.Follower(_logdir.Logdir(logdir).check())
    read = 0

    def counted(records: Iterator[Record]) -> Iterator[Record]:
        nonlocal read
        for record in records:
            read += 1
            yield record

    printed: Printed = {}
    batch = counted(_present(follower, printed))
    failed, pause, first_look = "", interval, True
    while True:
        before = read
        try:
            if last is not None:  # the first look, cut to the most recent records
                recent = heapq.nlargest(last, enumerate(batch), key=_by_time)
                collections.deque(batch, maxlen=0)  # nlargest(0, ...) reads none: count them all
                batch, last = (record for _, record in reversed(recent)), None
            for record in batch:
                out.write(format_record(record, color) + "\n")
            failed = ""
        except FileNotFoundError:
            pass  # a run folder removed during the walk: the next poll sees the new tree
        except _logdir.StorageError as e:
            if not follow or first_look:
                raise  # the first look: the command fails with the message
            if str(e) != failed:  # one line per new error, not per poll
                failed = str(e)
                warnings.warn(f"tbkit: {e}; retrying", RuntimeWarning, stacklevel=2)
        out.flush()
        first_look = False
        if not follow or stopped():
            return read
        pause = events.next_pause(pause, interval, read > before, follower.source.remote)
        time.sleep(pause)
        batch = counted(_appended(follower, printed))
