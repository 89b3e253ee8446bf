"""tbkit's summary file writer, which traced functions reach by name, and a view of it that
does not flush when a ``with`` block ends.

A writer from ``tf.summary.create_file_writer`` is captured by every ``tf.function`` that
writes to it: an input of each call, paid on every step (a few µs here) even when the write
sits behind a branch that rarely runs. :class:`FileWriter` makes the same resource with
TensorFlow's own ops (``SummaryWriter``, ``CreateSummaryFileWriter``) under a name unique to the
process, and a function makes a handle to it by that name where it writes, so only the steps
that write pay for it.

``SummaryWriter.as_default()`` flushes the writer when its block exits; inside a traced step
that is a flush op on every call, which writes the queue to disk each step and makes
``max_queue``/``flush_millis`` moot. tbkit makes the writer default through
:class:`UnflushedWriter` instead, so data reaches disk when the queue fills, every
``flush_millis``, and on ``flush()``/``close()``.

Both give ``_resource``: the one attribute TensorFlow's own ``tf.summary.write`` reads from the
default writer (tensorflow/python/ops/summary_ops_v2.py).
"""

from __future__ import annotations

import uuid

import tensorflow as tf


class FileWriter(tf.summary.SummaryWriter):
    """A file writer for ``logdir`` that functions reach by name rather than by capture."""

    def __init__(self, logdir: str, *, max_queue: int, flush_millis: int):
        self._name = f"tbkit_writer_{uuid.uuid4().hex}"
        self._closed = False
        with tf.init_scope():
            self._eager_handle = self._writer_handle()
            tf.raw_ops.CreateSummaryFileWriter(
                writer=self._eager_handle, logdir=logdir, max_queue=max_queue,
                flush_millis=flush_millis, filename_suffix=".v2",
            )
        self._device = self._eager_handle.device

    def _writer_handle(self) -> tf.Tensor:
        return tf.raw_ops.SummaryWriter(shared_name=self._name, container="")

    @property
    def _resource(self) -> tf.Tensor:
        if tf.executing_eagerly():
            return self._eager_handle
        with tf.device(self._device):  # the resource lives on the device that made it
            return self._writer_handle()

    def as_default(self, step=None):
        """Make this the default writer inside the block (flushing it at the end)."""
        if self._closed:
            raise RuntimeError(f"the summary writer {self._name} is closed")
        return super().as_default(step)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has run."""
        return self._closed

    def init(self) -> None:
        """Nothing to do: the writer is created open."""

    def flush(self):
        """Write what the writer queues to disk (nothing once it is closed)."""
        if not self._closed:
            return tf.raw_ops.FlushSummaryWriter(writer=self._resource)
        return None

    def close(self) -> None:
        """Flush and close the file; functions that write to it fail from now on."""
        if not self._closed:
            self._closed = True
            with tf.init_scope():
                tf.raw_ops.FlushSummaryWriter(writer=self._eager_handle)
                tf.raw_ops.CloseSummaryWriter(writer=self._eager_handle)


class UnflushedWriter(tf.summary.SummaryWriter):
    """The same file writer, made default without a flush at the end of the block.

    With ``pinned=True`` in a traced function it takes the writer's handle there, once, and
    functions nested in that one receive it as an input. We saw TensorFlow's multi-device
    function runtime fail on a handle made by name inside a nested function whose inputs
    come from several devices (``tf.distribute``): "Output 0 of type float does not match
    declared output type bool".
    """

    def __init__(self, writer: tf.summary.SummaryWriter, *, pinned: bool = False):
        self._writer = writer
        self._handle = writer._resource if pinned and not tf.executing_eagerly() else None

    @property
    def _resource(self):
        return self._writer._resource if self._handle is None else self._handle

    def flush(self) -> None:
        """Leave flushing to the writer's queue, its timer, and the logger's flush/close."""
