"""The ``tf.summary.record_if`` condition in force, split into what the host and the graph honour.

TensorFlow's own summary ops read the condition where they are traced (eagerly: where they
run). A decorated step is traced once and called many times, so tbkit splits it:

* a *value* known on the host (a Python or NumPy bool, an eager bool tensor) is read when a
  call starts; ``False`` mutes the logger's threshold for that call (see
  :class:`tbkit.summary.threshold.Threshold`), so the traced graph is reused as it is;
* a *condition for the graph* (a callable, a bool ``tf.Variable``, a symbolic tensor) in
  force where the step traces is ANDed into the gate, as TensorFlow's ops would AND it into theirs.

TensorFlow keeps the condition in a thread-local of ``summary_ops_v2`` and has no public
getter for it (``tf.summary.should_record_summaries()`` builds a tensor, and is False with no
default writer), so this module reads that attribute, and nothing else, directly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tensorflow as tf
from tensorflow.python.ops import summary_ops_v2

#: The thread-local where ``tf.summary.record_if`` keeps its condition (``is_recording``):
#: None (no record_if), a bool, a bool tensor or a callable returning one.
STATE = summary_ops_v2._summary_state  # private: the narrowest access to record_if's state

Condition = Callable[[], Any]


def state() -> Any:
    """The condition of the innermost ``tf.summary.record_if`` in this thread, or None."""
    return STATE.is_recording


def for_graph(condition: Any) -> bool:
    """Whether ``condition`` is decided in the graph: a callable, a ``tf.Variable`` (read on
    every call) or a symbolic tensor."""
    return callable(condition) or isinstance(condition, tf.Variable) or (
        isinstance(condition, tf.Tensor) and tf.is_symbolic_tensor(condition))


def is_off(condition: Any) -> bool:
    """Whether ``condition`` turns recording off now, on the host: a false bool or eager tensor.

    None (no ``record_if``) and conditions for the graph are not off here.
    """
    if condition is None or for_graph(condition):
        return False
    return not bool(condition)


def in_graph(condition: Any) -> Condition | None:
    """``condition`` as a callable to AND into a traced gate, or None when the host decides it."""
    if not for_graph(condition):
        return None
    if callable(condition):
        return condition
    return lambda: condition


def both(first: Condition, second: Condition | None) -> Condition:
    """A callable true when ``first()`` and (if given) ``second()`` are."""
    if second is None:
        return first
    return lambda: tf.logical_and(first(), second())
