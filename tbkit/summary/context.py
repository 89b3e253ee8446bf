"""Which logger (or which step being traced) a summary op in this thread reports to.

A per-thread stack: ``with log:`` / ``log.as_default()`` push the logger; a step decorated with
``@log.train_step`` pushes its collector while its body traces. Several loggers may be active
in different threads. No TensorFlow here.

``tf.distribute.MirroredStrategy`` traces the function given to ``strategy.run`` once per
replica, each in a thread of its own whose stack is empty. So a step also *shares* its
collector under the graph its body traces in, and a thread with an empty stack finds it
through the graph it traces in (the caller passes the graphs, innermost first).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

_local = threading.local()
_shared: dict[int, tuple[Any, Any]] = {}  # id(scope) → (scope, target), seen by every thread
_shared_lock = threading.Lock()


def _stack() -> list[Any]:
    stack = getattr(_local, "stack", None)
    if stack is None:
        stack = _local.stack = []
    return stack


def push(target: Any) -> None:
    """Make ``target`` (a logger or a step collector) the one ops in this thread report to."""
    _stack().append(target)


def pop(target: Any) -> None:
    """Undo the matching :func:`push`."""
    stack = _stack()
    if not stack or stack[-1] is not target:
        raise RuntimeError("tbkit: active-logger stack is out of order (nested contexts crossed)")
    stack.pop()


def share(scope: Any, target: Any) -> None:
    """Let threads with an empty stack that trace in ``scope`` (a graph) report to ``target``."""
    with _shared_lock:
        _shared[id(scope)] = (scope, target)


def unshare(scope: Any) -> None:
    """Undo :func:`share`."""
    with _shared_lock:
        _shared.pop(id(scope), None)


def current(scopes: Callable[[], Iterable[Any]] | None = None) -> Any | None:
    """The innermost active target in this thread, or None.

    Args:
        scopes: when this thread's stack is empty, a callable giving the scopes (graphs) the
            caller works in, innermost first; the first one shared with :func:`share` wins.
    """
    stack = _stack()
    if stack:
        return stack[-1]
    if scopes is None or not _shared:
        return None
    for scope in scopes():
        entry = _shared.get(id(scope))
        if entry is not None and entry[0] is scope:
            return entry[1]
    return None
