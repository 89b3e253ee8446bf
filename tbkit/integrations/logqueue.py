"""A ``logging.Handler`` that formats on the caller's thread and writes on a thread of its own.

As ``QueueHandler``/``QueueListener`` do, the logging call only turns the record into an item
(reading anything that must be read *now*, such as the training step) and puts it on a queue;
a daemon thread does the writing, so the caller never waits on a file. :meth:`flush` returns
once everything queued before it is written, :meth:`close` drains the queue and stops the
thread. On SIGTERM and SIGINT an open handler flushes, waiting a bounded time, and stays open
(:mod:`tbkit.summary.preemption`). No TensorFlow here.
"""

from __future__ import annotations

import logging
import os
import queue
import sys
import threading
import time
import traceback
import warnings
import weakref
from typing import Any

from tbkit.summary import preemption

# Handlers with a writer thread, restarted (or stopped) in a forked child.
_LIVE: weakref.WeakSet = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for handler in list(_LIVE):
        handler._after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


class _Control:
    """A marker on the queue: sync (``stop=False``) or sync and stop, then set ``done``."""

    __slots__ = ("stop", "done")

    def __init__(self, stop: bool):
        self.stop = stop
        self.done = threading.Event()


class QueuedHandler(logging.Handler):
    """Base class: subclasses give :meth:`prepare` (caller's thread) and :meth:`write`,
    :meth:`sync`, :meth:`idle`, :meth:`finish` (the writer thread)."""

    #: How long the writer thread waits for a record before it calls :meth:`idle`.
    POLL_SECONDS = 1.0
    #: How long the writer thread lets records gather after the first one wakes it: one
    #: wake-up (and one file flush) per batch instead of per record, so the writer thread
    #: rarely competes with the logging threads for the GIL.
    LINGER_SECONDS = 0.01
    #: The most items handed to one :meth:`write` call.
    BATCH = 4096

    #: Whether a process forked from this one gets a writer thread of its own (threads are not
    #: copied by fork). A sink that needs TensorFlow, which does not survive a fork, says no:
    #: in the child it drops records with one warning instead of queueing them for nothing.
    WRITES_IN_FORKED_CHILD = False

    def __init__(self, level: int | str = logging.NOTSET, *, thread_name: str):
        super().__init__(level)
        self._stopped = False
        self._warned = False
        self._why_dropped = (
            "is closed; log records sent to it are dropped (remove it from its loggers when "
            "you close it)."
        )
        self._start(thread_name)
        _LIVE.add(self)
        preemption.register(self)

    def _start(self, thread_name: str) -> None:
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._listen, name=thread_name, daemon=True)
        self._thread.start()

    def _after_fork(self) -> None:
        """In a forked child: what the parent had queued is the parent's to write."""
        if self._stopped:
            return
        if self.WRITES_IN_FORKED_CHILD:
            self._start(self._thread.name)
        else:
            self._stopped = True
            self._why_dropped = (
                "was made before this process forked from its parent and cannot write here; "
                "log records sent to it are dropped."
            )

    # -- what a subclass provides -------------------------------------------------------------

    def prepare(self, record: logging.LogRecord) -> Any:
        """On the caller's thread: the item to queue for ``record``, or None to drop it."""
        raise NotImplementedError

    def write(self, items: list) -> None:
        """On the writer thread: write queued items, in the order they were logged."""
        raise NotImplementedError

    def sync(self) -> None:
        """On the writer thread: write out whatever :meth:`write` holds back (flush, close)."""

    def idle(self) -> None:
        """On the writer thread: called every :attr:`POLL_SECONDS` while nothing is logged."""

    def finish(self) -> None:
        """On the writer thread: the last call, after the last :meth:`sync`."""

    # -- logging.Handler ----------------------------------------------------------------------

    def filter(self, record: logging.LogRecord) -> bool:
        """Drop records the writer thread logs itself (a TensorFlow warning while it writes):
        they would feed back into the queue, and could deadlock :meth:`close`."""
        if threading.get_ident() == self._thread.ident:  # record.thread is None without
            return False  # logging.logThreads; the filter runs on the logging thread itself
        return bool(super().filter(record))

    def emit(self, record: logging.LogRecord) -> None:
        """Prepare ``record`` and queue it; runs under the handler's lock, so items are queued
        in the order their steps were read."""
        if self._stopped:
            self._dropped()
            return
        try:
            item = self.prepare(record)
        except RecursionError:
            raise
        except Exception:  # noqa: BLE001 - logging's convention: report, never raise
            self.handleError(record)
            return
        if item is not None:
            self._queue.put(item)

    def flush(self) -> None:
        """Wait until everything logged before this call is written."""
        self._request(_Control(stop=False))

    def flush_on_signal(self, timeout: float) -> None:
        """:meth:`flush` from a signal handler, waiting at most ``timeout`` seconds.

        It takes no lock (the interrupted code may hold the handler's, in :meth:`emit`): it
        puts a marker on the queue, which is safe in a signal handler, and waits for the
        writer thread to reach it. A record whose logging call was interrupted before it was
        queued is written after the marker, like any record logged after the signal.
        """
        if not self._request(_Control(stop=False), timeout):
            raise TimeoutError(
                f"the writer thread did not write the queue within {timeout:.1f} s"
            )

    def close(self) -> None:
        """Write everything queued, stop the writer thread; later records are dropped."""
        with self.lock:  # no emit between the flag and the marker: nothing slips past the stop
            if self._stopped:
                control = None
            else:
                self._stopped = True
                control = _Control(stop=True)
                self._queue.put(control)
        if control is not None:
            self._wait(control)
        preemption.unregister(self)
        super().close()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has run (later records are dropped)."""
        return self._stopped

    # -- the writer thread --------------------------------------------------------------------

    def _request(self, control: _Control, timeout: float | None = None) -> bool:
        if self._stopped:
            return True
        self._queue.put(control)
        return self._wait(control, timeout)

    def _wait(self, control: _Control, timeout: float | None = None) -> bool:
        """Wait for the writer thread to reach ``control``; False if ``timeout`` ran out."""
        if threading.current_thread() is self._thread:
            return True  # called from a write (e.g. a finalizer run by GC there): cannot wait
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = self.POLL_SECONDS
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
                if wait <= 0:
                    return control.done.is_set()
            if control.done.wait(wait) or not self._thread.is_alive():
                return True

    def _listen(self) -> None:
        while True:
            try:
                batch = [self._queue.get(timeout=self.POLL_SECONDS)]
            except queue.Empty:
                self._guard(self.idle)
                continue
            if not isinstance(batch[0], _Control):
                time.sleep(self.LINGER_SECONDS)
            while len(batch) < self.BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            items: list = []
            for item in batch:
                if not isinstance(item, _Control):
                    items.append(item)
                    continue
                if items:
                    self._guard(self.write, items)
                    items = []
                self._guard(self.sync)
                if item.stop:
                    self._guard(self.finish)
                    item.done.set()
                    return
                item.done.set()
            if items:
                self._guard(self.write, items)

    def _guard(self, fn, *args) -> None:
        """Run ``fn`` on the writer thread; report a failure as logging does, and go on."""
        try:
            fn(*args)
        except Exception:  # noqa: BLE001 - the writer thread must survive to drain the queue
            if logging.raiseExceptions and sys.stderr:
                sys.stderr.write(f"--- tbkit: {type(self).__name__} failed to write ---\n")
                traceback.print_exc(file=sys.stderr)

    def _dropped(self) -> None:
        if not self._warned:
            self._warned = True
            warnings.warn(
                f"tbkit: {type(self).__name__} {self._why_dropped}", RuntimeWarning, stacklevel=2
            )
