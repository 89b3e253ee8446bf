"""Flush every open writer on SIGTERM and SIGINT, then let the previous handler act.

Cloud schedulers (Kubernetes, SLURM, spot VMs) send SIGTERM before they kill, and Python's
default SIGTERM disposition ends the process at once: whatever a writer still queued was lost.
Open writers (each :class:`~tbkit.SummaryLogger`, the logging bridge, ``JsonLinesHandler``)
register here; the first registration made in the main thread installs one handler for each
signal. The handler flushes everything registered, newest first (a companion such as the
logging bridge is made after the logger it writes to, so its lines reach that logger's writer
before the writer flushes), and leaves it open: a program that goes on after the signal keeps
logging. Then it hands the signal on, so the exit status and other handlers are unchanged:

- a Python handler (the user's, a framework's, ``signal.default_int_handler`` for SIGINT, which
  raises ``KeyboardInterrupt``) is called as it would have been;
- ``SIG_DFL`` is restored and the signal raised again: the process dies of it as before.

A signal that is ignored (``SIG_IGN``) or handled outside Python is left alone. A handler
installed after tbkit's replaces it (call the one ``signal.getsignal`` gave you to chain).
When the last writer closes, the previous handler comes back if tbkit's is still installed.
``signal.signal`` works only in the main thread: writers opened in other threads are flushed
once one has been opened in the main thread (or never, if none is).

Python runs a handler in the main thread between two bytecodes, so a flush never interrupts a
TensorFlow call: it runs after the call returns. It takes no lock the interrupted code may hold:
a queued handler is flushed through its queue (``SimpleQueue.put`` is safe here) and waited on
for at most :data:`FLUSH_SECONDS` in all. A failed flush is a warning; the signal still goes on.
No TensorFlow here.
"""

from __future__ import annotations

import itertools
import signal
import threading
import time
import warnings
import weakref
from collections.abc import Callable
from typing import Any, Protocol

#: The signals whose arrival flushes open writers.
SIGNALS = (signal.SIGTERM, signal.SIGINT)

#: The longest a signal waits for queued writers (a stuck writer thread cannot hold the
#: signal back longer). Kubernetes waits 30 s between SIGTERM and SIGKILL by default.
FLUSH_SECONDS = 10.0


class Flushable(Protocol):
    """What registers: something that writes out what it holds, waiting at most ``timeout``."""

    def flush_on_signal(self, timeout: float) -> None:
        """Write out what is queued and stay open; wait for at most ``timeout`` seconds."""


_order = itertools.count()
_open: dict[int, weakref.ref] = {}  # registration number -> writer, in registration order
_installed: dict[int, Callable] = {}  # signal -> the handler tbkit installed for it
_install_lock = threading.Lock()
_flushing = False


def register(writer: Flushable) -> None:
    """Flush ``writer`` on SIGTERM/SIGINT while it lives; install the handlers if not yet."""
    key = next(_order)
    _open[key] = weakref.ref(writer, lambda _ref, key=key: _open.pop(key, None))
    _install()


def unregister(writer: Flushable) -> None:
    """Stop flushing ``writer`` (it closed); with nothing left, put back the previous handlers."""
    for key, ref in list(_open.items()):
        if ref() is writer:
            _open.pop(key, None)
    if not any(ref() is not None for ref in list(_open.values())):
        _restore()


def open_writers() -> list[Flushable]:
    """The registered writers still alive, newest first (the order they are flushed in)."""
    found = (ref() for ref in reversed(list(_open.values())))
    return [writer for writer in found if writer is not None]


def installed(signum: int) -> bool:
    """Whether tbkit's handler is the one installed for ``signum`` now."""
    handler = _installed.get(signum)
    return handler is not None and signal.getsignal(signum) is handler


def flush_all(timeout: float | None = None) -> None:
    """Flush every open writer, newest first, within ``timeout`` seconds in all (default
    :data:`FLUSH_SECONDS`); a failure is a warning, never an exception (this runs in a signal
    handler)."""
    deadline = time.monotonic() + (FLUSH_SECONDS if timeout is None else timeout)
    for writer in open_writers():
        try:
            writer.flush_on_signal(max(0.0, deadline - time.monotonic()))
        except Exception as e:  # noqa: BLE001 - the signal must go on to its handler
            _warn(f"tbkit: could not flush {writer!r} on the signal: {type(e).__name__}: {e}")


def _warn(message: str) -> None:
    try:
        warnings.warn(message, RuntimeWarning, stacklevel=2)
    except Exception:  # noqa: BLE001, S110 - warnings set to raise, or no stderr
        pass


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _install() -> None:
    if not _in_main_thread():
        return
    with _install_lock:
        for signum in SIGNALS:
            if installed(signum):
                continue
            previous = signal.getsignal(signum)
            if previous is None or previous == signal.SIG_IGN:
                continue  # handled outside Python, or ignored: leave it so
            handler = _handler(previous)
            try:
                signal.signal(signum, handler)
            except (ValueError, OSError):  # not the main interpreter
                continue
            _installed[signum] = handler


def _restore() -> None:
    if not _in_main_thread():
        return
    with _install_lock:
        for signum, handler in list(_installed.items()):
            if signal.getsignal(signum) is handler:
                signal.signal(signum, handler.previous)
            del _installed[signum]


def _handler(previous: Any) -> Callable:
    """A handler that flushes, then does what ``previous`` (a callable or SIG_DFL) did.

    Each installation makes its own, holding its own ``previous``: a user's handler installed
    after tbkit's that chains to it, then tbkit's installed again over the user's, make a chain
    that ends, not a loop. Only the outermost of nested tbkit handlers flushes.
    """

    def on_signal(signum: int, frame: Any) -> Any:
        global _flushing
        if not _flushing:
            _flushing = True
            try:
                flush_all()
            finally:
                _flushing = False
        if callable(previous):
            return previous(signum, frame)
        signal.signal(signum, signal.SIG_DFL)  # die of the signal, as without tbkit
        signal.raise_signal(signum)
        return None

    on_signal.previous = previous  # type: ignore[attr-defined]
    return on_signal
