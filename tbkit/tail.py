"""``tbkit tail``: records as they are written, one readable line each; ``-f`` keeps following.

A :class:`Follower` remembers a byte offset per event file and reads only what was appended
since the last poll, so it sees new records in existing files, new files and new runs. It shows
the write stream as it is: unlike ``tbkit export``, nothing is pre-empted (a resumed run's
repeated steps both show). A tag's data show once its metadata has said it is tbkit's, and
TensorFlow writes the metadata with every datum, so nothing is held back in practice.
"""

from __future__ import annotations

import collections
import heapq
import os
import time
from collections.abc import Callable, Iterator
from typing import TextIO

from google.protobuf.message import DecodeError
from tensorboard.compat.proto import event_pb2, types_pb2

from tbkit import read, stream
from tbkit.export import strict_json as _to_json
from tbkit.read import Record

_COLORS = {"debug": "\x1b[2m", "info": "\x1b[32m", "warning": "\x1b[33m", "error": "\x1b[1;31m"}
_RESET = "\x1b[0m"


class Follower:
    """New records under a logdir since the last :meth:`poll`, in the order they were written."""

    def __init__(self, logdir: str | os.PathLike[str]):
        self.logdir = os.fspath(logdir)
        self._offsets: dict[str, int] = {}  # event file → where its unread bytes start
        self._versions: dict[tuple[str, str], int] = {}  # (run, tag) → schema version
        self._bad: collections.Counter = collections.Counter()
        self.seen = 0  #: records read so far

    def poll(self) -> Iterator[Record]:
        """Yield the records appended since the last poll (the first poll: every record)."""
        for run, paths in read.run_files(self.logdir):
            for path in paths:
                yield from self._read(run, path)

    def _read(self, run: str, path: str) -> Iterator[Record]:
        for offset, data in read.iter_frames(path, self._offsets.get(path, 0)):
            self._offsets[path] = offset + stream.FRAME_OVERHEAD + len(data)
            try:
                event = event_pb2.Event.FromString(data)
            except DecodeError:
                continue  # not an Event: the reader warns about it, tail shows records
            for value in event.summary.value:
                key = (run, value.tag)
                if key not in self._versions and value.metadata.plugin_data.plugin_name:
                    self._versions[key] = read.schema_version_of(run, value.tag, value.metadata)
                if self._versions.get(key, read.NOT_OURS) == read.NOT_OURS:
                    continue
                if value.tensor.dtype == types_pb2.DT_STRING:
                    for record in read.decode_datum(run, value.tag, event.step, event.wall_time,
                                                    value.tensor, self._bad):  # fmt: skip
                        self.seen += 1
                        yield record


def format_record(record: Record, color: bool = False) -> str:
    """``2026-05-01 12:00:00.250  train  train  step 100  INFO     {"loss":0.5}`` (local time)."""
    seconds = int(record.wall_time // 1)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))
    millis = int((record.wall_time - seconds) * 1000)
    level = f"{record.level.upper():<7}"
    if color:
        level = f"{_COLORS[record.level]}{level}{_RESET}"
    fields = _to_json(record.fields)
    where = f"{record.run}  {record.tag}  step {record.step}"
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
    stream.logdir_runs(logdir)  # the checks, before the first poll
    follower = Follower(logdir)
    while True:
        try:
            new = follower.poll()
            if last is not None:  # the first poll, cut to the most recent records
                numbered = enumerate(new)
                recent = heapq.nlargest(last, numbered, key=lambda r: (r[1].wall_time, r[0]))
                collections.deque(numbered, maxlen=0)  # nlargest(0, ...) reads none: read all
                new, last = (record for _, record in reversed(recent)), None
            for record in new:
                out.write(format_record(record, color) + "\n")
        except FileNotFoundError:
            pass  # a run folder removed during the walk: the next poll sees the new tree
        out.flush()
        if not follow or stopped():
            return follower.seen
        time.sleep(interval)
