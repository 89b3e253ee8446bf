"""The level threshold a traced step reads, muted for the calls made inside ``record_if(False)``.

A decorated step decides levels from one int64 variable, read once per call. Its value is the
user's threshold (0 for debug … 3 for error), plus :data:`MUTED` while the logger is muted: a
call made inside ``tf.summary.record_if(False)`` then records nothing, with the graph it was
traced with (no retrace, no new input). The host changes the variable only when the
``record_if`` value it sees changes; a steady state costs an attribute read and a comparison.

The checkpoint holds the user's level (the value without the mute), so a checkpoint saved
while muted restores the level that was set; a level set or restored while muted is kept when
the mute ends.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import tensorflow as tf

from tbkit.data import levels
from tbkit.summary import recording

#: Added to the threshold while muted: above every level, so no level records.
MUTED = len(levels.LEVELS)

_VARIABLE_VALUE = "VARIABLE_VALUE"  # a variable's key in checkpoints: old ones still restore
_OTHER = object()  # a record_if value the host must look at on every call


class Threshold(tf.__internal__.tracking.Trackable):
    """The threshold variable, its mute, and its checkpointed value (the user's level).

    Args:
        index: the user's threshold, 0 for debug … 3 for error.
    """

    def __init__(self, index: int):
        self.variable = tf.Variable(index, dtype=tf.int64, trainable=False, name="threshold")
        self.muted = False
        #: The record_if value of the last call the host looked at: while a call sees the same
        #: object (None, True, False), the mute is already right for it.
        self.seen: Any = None
        self._lock = threading.Lock()  # the mute and the level change the variable together

    def follow(self, condition: Any) -> None:
        """Mute or unmute for a call made under ``condition`` (the record_if value in force).

        Only a value known on the host (a bool, an eager tensor) that is false mutes; a
        condition for the graph was ANDed in where the step traced.
        """
        off = recording.is_off(condition)
        with self._lock:
            plain = condition is None or isinstance(condition, (bool, np.bool_))
            self.seen = condition if plain else _OTHER
            if off != self.muted:
                self.muted = off
                with tf.init_scope():  # a step called while some function traces
                    self.variable.assign_add(MUTED if off else -MUTED)

    def set(self, index: int) -> None:
        """Set the user's threshold; while muted it takes effect when the mute ends."""
        with self._lock:
            self.variable.assign(index + (MUTED if self.muted else 0))

    def index(self) -> int:
        """The user's threshold, read on the host (0 for debug … 3 for error)."""
        return int(self.variable.numpy()) % MUTED

    # -- checkpoint: the user's level, whatever the mute --------------------------------------

    def _serialize_to_tensors(self) -> dict[str, tf.Tensor]:
        return {_VARIABLE_VALUE: tf.math.floormod(self.variable.read_value(), MUTED)}

    def _restore_from_tensors(self, restored_tensors: dict[str, tf.Tensor]) -> Any:
        level = tf.math.floormod(tf.cast(restored_tensors[_VARIABLE_VALUE], tf.int64), MUTED)
        with self._lock:
            return self.variable.assign(level + (MUTED if self.muted else 0))
