"""Which logger (or which step being traced) a summary op in this thread reports to.

A per-thread stack: ``with log:`` / ``log.as_default()`` push the logger; a step decorated with
``@log.train_step`` pushes its collector while its body traces. Several loggers may be active
in different threads. No TensorFlow here.
"""

from __future__ import annotations

import threading
from typing import Any

_local = threading.local()


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


def current() -> Any | None:
    """The innermost active target in this thread, or None."""
    stack = _stack()
    return stack[-1] if stack else None
