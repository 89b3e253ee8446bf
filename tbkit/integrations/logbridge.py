"""The logging bridge: Python ``logging`` lines as tbkit records at the current training step.

``logging.getLogger().addHandler(SummaryHandler(log))`` makes every ``logger.info(...)``
a record under the tag ``"log"`` of ``log``'s run, so the tbkit plugin shows it beside the
step records, under the same level filter. The logging call reads the step (and, below
error, the threshold) and formats the line; a thread of the handler writes.

TensorBoard keeps one value per (tag, step), so the lines of a step are written together, as
one datum, once the step has moved on: when a line at a later step comes, when the writer
thread sees the step variable advance (it looks every :attr:`SummaryHandler.POLL_SECONDS`
while lines wait), and on :meth:`~SummaryHandler.flush`/:meth:`~SummaryHandler.close`. A line
logged at a step already written rewrites that step's datum with every line so far, which
pre-empts the earlier one; nothing is lost.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from typing import Any

import tensorflow as tf

from tbkit.data import metadata
from tbkit.data.errors import TbkitTypeError, TbkitValueError, expected
from tbkit.integrations import logrecord
from tbkit.integrations.logqueue import QueuedHandler
from tbkit.summary import threshold
from tbkit.summary.logger import SummaryLogger, _step_variable
from tbkit.summary.writer import UnflushedWriter

#: The tag of the log lines unless ``tag=`` says otherwise.
DEFAULT_TAG = "log"

#: The dtypes a line's metadata records: its own fields are text; the values under ``"fields"``
#: (a call's ``extra=``) have none, as each call may give other types.
LINE_DTYPES = {"logger": "string", "message": "string", "exception": "string", "stack": "string"}

_ERROR = 3
# The (logger, tag) pairs an open SummaryHandler writes: a second one would pre-empt the first.
_OPEN: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def variable_reader(variable: tf.Variable) -> Callable[[], int]:
    """A cheap reader of an int64 scalar variable's current value, callable from any thread
    and while a function traces (a logging call in a step's body): then it reads eagerly, and
    returns a Python int even if AutoGraph converted the code that calls it."""
    read_op = tf.raw_ops.ReadVariableOp  # about half the cost of ``variable.numpy()``

    def read() -> int:
        if tf.executing_eagerly():
            return read_op(resource=variable.handle, dtype=tf.int64).numpy().item()
        with tf.init_scope():
            return read_op(resource=variable.handle, dtype=tf.int64).numpy().item()

    return read


def step_reader(step: Any, arg: str = "step") -> Callable[[], int]:
    """A reader of the step of a SummaryLogger, or of an int64 scalar step variable."""
    if isinstance(step, SummaryLogger):
        return variable_reader(step.step)
    try:
        return variable_reader(_step_variable(step))
    except TbkitTypeError as e:
        raise TbkitTypeError(
            expected(arg, "a tbkit.SummaryLogger or a scalar int64 tf.Variable", step)
        ) from e


class SummaryHandler(QueuedHandler):
    """A ``logging.Handler`` that writes log lines into a SummaryLogger's run.

    Each line becomes one record object ``{"logger", "message", "exception"?, "stack"?,
    "fields"?, "level"}`` (``fields`` holds the call's ``extra=`` values) at the step the
    logger's step variable holds when the line is logged. Levels map to tbkit's: below INFO
    is debug, CRITICAL is error. A line below the logger's threshold (``log.set_level``) is
    dropped; lines are not sampled by ``every=``. The handler closes with its logger, before
    the logger's writer does, so nothing queued is lost on ``close()`` or at interpreter exit.

    Args:
        logger: the SummaryLogger whose run and step the lines join.
        tag: the tag of the lines.
        level: the handler's own logging level (``logging.NOTSET``: every record reaching it).
    """

    def __init__(
        self, logger: SummaryLogger, *, tag: str = DEFAULT_TAG, level: int | str = logging.NOTSET
    ):
        if not isinstance(logger, SummaryLogger):
            raise TbkitTypeError(expected("logger", "a tbkit.SummaryLogger", logger))
        if not isinstance(tag, str) or not tag:
            raise TbkitTypeError(expected("tag", "a non-empty str", tag))
        self._writer = UnflushedWriter(logger.writer)  # checks that the logger is open
        tags = _OPEN.setdefault(logger, set())
        if tag in tags:
            raise TbkitValueError(
                f"{logger!r} already has an open SummaryHandler writing tag {tag!r}: TensorBoard "
                "keeps one value per (tag, step), so one would pre-empt the other. Add the one "
                "handler to several loggers, or give this one another 'tag'."
            )
        self._flush_writer = logger.writer.flush
        self._tag = tag
        self._metadata = metadata.create_summary_metadata(dtypes=LINE_DTYPES)
        self._read_step = variable_reader(logger.step)
        self._read_threshold = variable_reader(logger.threshold)
        self._tags = tags
        self._open_step: int | None = None
        self._lines: list[bytes] = []
        self._dirty = False  # lines not yet written
        super().__init__(level, thread_name=f"tbkit SummaryHandler {logger.logdir}")
        tags.add(tag)
        # A bound method keeps this handler (not the logger) alive until the logger closes.
        logger.add_close_hook(self.close)
        logger.add_flush_hook(self.flush)  # log.flush() writes the lines waiting here too

    @property
    def tag(self) -> str:
        """The tag the lines are written under."""
        return self._tag

    def prepare(self, record: logging.LogRecord) -> tuple[int, bytes] | None:
        """Read the step (and the threshold, below error) and format the line."""
        rank = logrecord.level_rank(record.levelno)
        # The level set, without the mute of a decorated call inside record_if(False):
        # Python logging is not a summary op, and TensorFlow's record_if does not stop it.
        if rank < _ERROR and rank < self._read_threshold() % threshold.MUTED:
            return None
        step = self._read_step()
        fields = logrecord.fields_text(record)
        text = "{" + logrecord.body_text(record, self.formatter)
        if fields is not None:
            text += ',"fields":' + fields
        return step, logrecord.line_bytes(f'{text},"level":"{logrecord.LEVELS[rank]}"}}')

    def write(self, items: list[tuple[int, bytes]]) -> None:
        for step, line in items:
            if step != self._open_step:
                self._write_step()
                self._open_step, self._lines = step, []
            self._lines.append(line)
            self._dirty = True

    def idle(self) -> None:
        if self._dirty and self._read_step() != self._open_step:
            self._write_step()

    def sync(self) -> None:
        self._write_step()
        self._flush_writer()

    def finish(self) -> None:
        self._tags.discard(self._tag)

    def _write_step(self) -> None:
        """Write the open step's lines as one datum (every line so far, if it was written)."""
        if not self._dirty:
            return
        with self._writer.as_default(), tf.summary.record_if(True):
            tf.summary.write(
                self._tag,
                tf.constant(self._lines, dtype=tf.string),
                step=self._open_step,
                metadata=self._metadata,
            )
        self._dirty = False

    def __repr__(self) -> str:
        state = "closed" if self.closed else logging.getLevelName(self.level)
        return f"<SummaryHandler tag={self._tag!r} ({state})>"
