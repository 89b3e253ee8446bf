"""The profiler window: a TensorFlow profiler trace of steps ``start <= step < stop``.

The window is decided on the host, from a Python counter that is read from the step variable
on the first decorated call and once more when it reaches ``start`` (a checkpoint restored in
between moves it), and otherwise advanced by each call: steps pay for no ``.numpy()``, and the
profiler (a host API) starts and stops between calls. The trace lands in
the run's ``plugins/profile/`` folder, where TensorBoard's Profile tab finds it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import tensorflow as tf

from tbkit.data.errors import TbkitTypeError, TbkitValueError, expected


def check_window(profile_steps: Any) -> tuple[int, int] | None:
    """Validate ``profile_steps``: None, or a pair of ints with ``0 <= start < stop``."""
    if profile_steps is None:
        return None
    what = "None or a pair (start, stop) of ints with 0 <= start < stop"
    if not isinstance(profile_steps, (tuple, list)) or len(profile_steps) != 2:
        raise TbkitTypeError(expected("profile_steps", what, profile_steps))
    start, stop = profile_steps
    for value in (start, stop):
        if not isinstance(value, int) or isinstance(value, bool):
            raise TbkitTypeError(expected("profile_steps", what, profile_steps))
    if not 0 <= start < stop:
        raise TbkitValueError(expected("profile_steps", what, profile_steps))
    return start, stop


class ProfileWindow:
    """Starts the profiler before step ``start`` and stops it after step ``stop - 1``."""

    def __init__(self, logdir: str, start: int, stop: int, step: tf.Variable):
        self.logdir = os.fspath(logdir)
        self.start, self.stop = start, stop
        self._step = step
        self._next: int | None = None  # the step the next call runs at (host copy)
        self._running = False

    @property
    def running(self) -> bool:
        """Whether this window's profiler session is recording."""
        return self._running

    @property
    def done(self) -> bool:
        """Whether every step of the window has run."""
        return self._next is not None and self._next >= self.stop and not self._running

    @contextlib.contextmanager
    def around_call(self, advance: bool) -> Iterator[None]:
        """Run one call of a decorated step inside the window's bookkeeping."""
        if self._next is None:
            self._next = int(self._step.numpy())  # once per logger: the step may be restored
        elif not self._running and self.start <= self._next < self.stop:
            self._next = int(self._step.numpy())  # once more where the window would start
        step = self._next
        if not self._running and self.start <= step < self.stop:
            tf.profiler.experimental.start(self.logdir)
            self._running = True
        try:
            if self._running:
                with tf.profiler.experimental.Trace("train", step_num=step, _r=1):
                    yield
            else:
                yield
        except BaseException:
            self.close()
            raise
        if advance:
            self._next = step + 1
        if self._running and self._next >= self.stop:
            self.close()

    def close(self) -> None:
        """Stop the profiler if this window started it (and save the trace)."""
        if self._running:
            self._running = False
            tf.profiler.experimental.stop()
