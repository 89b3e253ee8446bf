"""Whether a logger is still open, checked inside traced functions without being their input.

A write branch must fail clearly when the logger it was traced under has been closed since
(TensorFlow's own error names a missing resource). Reading a ``tf.Variable`` there would make
the variable an input of every call of the step: a few µs per call here, though only the rare
recorded branch reads it. :class:`OpenFlag` is a variable resource under a name unique to the
process that exists while the logger is open; a branch looks it up by that name when it runs.
"""

from __future__ import annotations

import uuid

import tensorflow as tf


class OpenFlag:
    """Exists from construction until :meth:`lower`; traced functions check it by name."""

    def __init__(self):
        self._name = f"tbkit_open_{uuid.uuid4().hex}"
        with tf.init_scope():
            self._handle = self._lookup()
            tf.raw_ops.AssignVariableOp(resource=self._handle, value=True)

    def _lookup(self) -> tf.Tensor:
        return tf.raw_ops.VarHandleOp(dtype=tf.bool, shape=[], shared_name=self._name,
                                      container="")

    def checks(self, message: str) -> list[tf.Operation]:
        """In a traced function: an op that fails with ``message`` once the flag is lowered,
        for writes to wait on. Eagerly none: the caller checks on the host."""
        if tf.executing_eagerly():
            return []
        is_open = tf.raw_ops.VarIsInitializedOp(resource=self._lookup())
        return [tf.debugging.Assert(is_open, [message])]

    def lower(self) -> None:
        """Delete the flag: functions that check it fail from now on."""
        with tf.init_scope():
            tf.raw_ops.DestroyResourceOp(resource=self._handle, ignore_lookup_error=True)
