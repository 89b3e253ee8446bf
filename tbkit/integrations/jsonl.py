"""A JSON Lines sink for Python ``logging``: one strict-JSON object per line, rotated by size.

Each line is ``{"timestamp", "run", "step", "level", "logger", "message", "exception"?,
"stack"?, "fields"}``, the same object the logging bridge writes into TensorBoard plus where
and when it was logged, for ``jq`` and log stacks. Files rotate as ``RotatingFileHandler``'s
do: ``app.jsonl`` → ``app.jsonl.1`` → … → ``app.jsonl.<backup_count>``, and a file never grows
past ``max_bytes`` (a single longer line gets a file of its own). The logging call formats the
line; a thread of the handler writes it. TensorFlow is needed only to read a ``step=``.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from tbkit.data.errors import TbkitTypeError, TbkitValueError, expected
from tbkit.integrations import logrecord
from tbkit.integrations.logqueue import QueuedHandler


def _count(arg: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise TbkitValueError(expected(arg, "a non-negative int", value))
    return value


def _size(file) -> int:
    """The size of the file appended to; 0 for a stream (a FIFO a log shipper reads)."""
    return file.tell() if file.seekable() else 0


def timestamp(record: logging.LogRecord) -> str:
    """When ``record`` was made, as RFC 3339 UTC with milliseconds: ``2026-11-23T13:36:27.123Z``."""
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{seconds}.{int(record.msecs):03d}Z"


class JsonLinesHandler(QueuedHandler):
    """A ``logging.Handler`` that appends one strict-JSON object per record to a file.

    Args:
        path: the file (appended to if it exists; its folder must exist), or a FIFO that
            a log shipper reads (give it no ``max_bytes``).
        run: written as ``"run"`` (e.g. the TensorBoard run the lines belong to), or null.
        step: a :class:`tbkit.SummaryLogger` or a scalar int64 ``tf.Variable``, read when a
            line is logged and written as ``"step"``; None writes null (no TensorFlow needed).
        max_bytes: rotate before a line would take the file past this size; 0 never rotates.
        backup_count: how many rotated files to keep (``path.1`` is the newest); must be
            positive when ``max_bytes`` is.
        level: the handler's own logging level.

    A process forked after the handler was made (``multiprocessing`` workers on Linux) appends
    to the same file with a writer thread of its own; as with ``RotatingFileHandler``, rotation
    is not coordinated between processes: rotate in one of them.
    """

    WRITES_IN_FORKED_CHILD = True

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        run: str | None = None,
        step: Any = None,
        max_bytes: int = 0,
        backup_count: int = 0,
        level: int | str = logging.NOTSET,
    ):
        if not isinstance(path, (str, os.PathLike)):
            raise TbkitTypeError(expected("path", "a file path (str or os.PathLike)", path))
        if "://" in os.fspath(path):
            raise TbkitValueError(
                expected("path", "a local file path (it rotates files by renaming them; "
                         "sync the file to object storage)", os.fspath(path)))  # fmt: skip
        if run is not None and not isinstance(run, str):
            raise TbkitTypeError(expected("run", "a str or None", run))
        self._max_bytes = _count("max_bytes", max_bytes)
        self._backup_count = _count("backup_count", backup_count)
        if self._max_bytes and not self._backup_count:
            raise TbkitValueError(
                expected("backup_count", "a positive int when 'max_bytes' is set", backup_count)
            )
        self._read_step = None
        if step is not None:
            from tbkit.integrations.logbridge import (
                step_reader,  # the step is a variable: TensorFlow
            )

            self._read_step = step_reader(step)
        self._path = os.path.abspath(os.fspath(path))  # the program may chdir later
        self._run = logrecord.string_text(run) if run is not None else "null"
        self._file = open(self._path, "ab")  # noqa: SIM115 - closed by finish()
        self._size = _size(self._file)
        super().__init__(level, thread_name=f"tbkit JsonLinesHandler {self._path}")

    @property
    def path(self) -> str:
        """The file being written (rotated files add ``.1``, ``.2``…)."""
        return self._path

    def prepare(self, record: logging.LogRecord) -> bytes:
        """Read the step and format the whole line."""
        step = "null" if self._read_step is None else str(self._read_step())
        fields = logrecord.fields_text(record) or "{}"
        return logrecord.line_bytes(
            f'{{"timestamp":"{timestamp(record)}","run":{self._run},"step":{step},'
            f'"level":"{logrecord.level_name(record.levelno)}",'
            f'{logrecord.body_text(record, self.formatter)},"fields":{fields}}}\n'
        )

    def write(self, items: list[bytes]) -> None:
        for line in items:
            if self._max_bytes and self._size and self._size + len(line) > self._max_bytes:
                self._rotate()
            self._file.write(line)
            self._size += len(line)
        self._file.flush()

    def sync(self) -> None:
        self._file.flush()

    def finish(self) -> None:
        self._file.close()

    def _rotate(self) -> None:
        """``path.(n-1)`` → ``path.n`` … ``path`` → ``path.1``; the oldest beyond the count goes."""
        self._file.close()
        try:
            for index in range(self._backup_count - 1, 0, -1):
                older = f"{self._path}.{index}"
                if os.path.exists(older):
                    os.replace(older, f"{self._path}.{index + 1}")
            os.replace(self._path, f"{self._path}.1")
        finally:  # a failed rename (the file moved away) must not stop the lines that follow
            self._file = open(self._path, "ab")  # noqa: SIM115 - closed by finish()
            self._size = _size(self._file)

    def __repr__(self) -> str:
        state = "closed" if self.closed else logging.getLevelName(self.level)
        return f"<JsonLinesHandler {self._path} ({state})>"
