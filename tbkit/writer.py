"""A view of a ``tf.summary`` file writer that does not flush when a ``with`` block ends.

``SummaryWriter.as_default()`` flushes the writer when its block exits; inside a traced step
that is a flush op on every call, which writes the queue to disk each step and makes
``max_queue``/``flush_millis`` moot. tbkit makes the writer default through this view instead,
so data reaches disk when the queue fills, every ``flush_millis``, and on ``flush()``/``close()``.

The view shares the writer's resource through ``_resource``: the one attribute TensorFlow's own
``tf.summary.write`` reads from the default writer (tensorflow/python/ops/summary_ops_v2.py).
"""

from __future__ import annotations

import tensorflow as tf


class UnflushedWriter(tf.summary.SummaryWriter):
    """The same file writer, made default without a flush at the end of the block."""

    def __init__(self, writer: tf.summary.SummaryWriter):
        self._writer = writer

    @property
    def _resource(self):
        return self._writer._resource

    def flush(self) -> None:
        """Leave flushing to the writer's queue, its timer, and the logger's flush/close."""
