"""SummaryLogger: one run's writer, its int64 step, the sampling policy and the level threshold.

The logger is a ``tf.Module``, so ``tf.train.Checkpoint(logger=log)`` saves and restores its
step (and threshold) with the model. It is a context manager: leaving ``with log:`` closes
it, flushing on an exception too; a logger never closed is flushed at interpreter exit. On
SIGTERM and SIGINT an open logger flushes and stays open (:mod:`tbkit.summary.preemption`).
"""

from __future__ import annotations

import contextlib
import os
import weakref
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import tensorflow as tf

from tbkit.data import levels
from tbkit.data.errors import LoggerClosedError, TbkitTypeError, TbkitValueError, expected
from tbkit.summary import context, kept, ops, preemption, recording, restart, schedule, threshold
from tbkit.summary.openflag import OpenFlag
from tbkit.summary.profile import ProfileWindow, check_window
from tbkit.summary.writer import FileWriter, UnflushedWriter

_STEP_EXPECTED = "a scalar int64 tf.Variable such as optimizer.iterations"


def _step_variable(step: Any) -> tf.Variable:
    """Return the step variable the logger will own or share, refusing anything else."""
    if step is None:
        return tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
    variable = step
    if not isinstance(step, tf.Variable) and isinstance(getattr(step, "value", None), tf.Variable):
        variable = step.value  # a Keras 3 variable wraps a tf.Variable
    if not isinstance(variable, tf.Variable):
        raise TbkitTypeError(expected("step", _STEP_EXPECTED, step))
    if variable.dtype != tf.int64 or variable.shape.rank != 0:
        raise TbkitTypeError(
            f"'step' must be {_STEP_EXPECTED} (got the {variable.dtype.name} variable "
            f"{variable.name!r} of shape {variable.shape})."
        )
    return variable


def _close(hooks: list[Callable[[], None]], writer, flag: OpenFlag) -> None:
    """Run the close hooks (a failing one does not stop the others), lower the open flag, then
    flush and close the writer; the first hook's error is raised once the writer is closed."""
    failures = []
    for hook in hooks:
        try:
            hook()
        except Exception as e:  # noqa: BLE001 - re-raised once the writer is closed
            failures.append(e)
    flag.lower()
    with tf.init_scope():  # a finalizer may run while some other function traces
        writer.flush()
        writer.close()
    if failures:
        raise failures[0]


def _check_writable(logdir: str) -> None:
    """Refuse, at construction, a URL whose scheme TensorFlow's file systems cannot write
    (TensorFlow 2.21: local paths and gs://; s3:// needs tensorflow-io), rather than fail at
    the first flush."""
    if "://" not in logdir:
        return
    scheme = logdir.split("://", 1)[0]
    known = sorted(s for s in tf.io.gfile.get_registered_schemes() if s)
    if scheme not in known:
        raise TbkitValueError(
            f"'logdir' {logdir!r}: TensorFlow cannot write {scheme}:// URLs (it writes local "
            f"paths and {', '.join(s + '://' for s in known)}). Write to a local folder and "
            f"sync it to {scheme}:// (for example `aws s3 sync` or `gcloud storage rsync`); "
            "tbkit and TensorBoard read it there (docs/storage.md)."
        )


class SummaryLogger(tf.Module):
    """Writes one run: scalars, histograms and records sampled per level, decided in the graph.

    Args:
        logdir: the run's folder (one logger writes one run, e.g. ``logs/x/train``).
        every: interval per level, ``{"info": 100, "debug": Schedule.log_spaced()}``; the keys
            it names override :data:`tbkit.schedule.DEFAULT_EVERY`.
        level: the threshold: ops below it record nothing. Change it with :meth:`set_level`.
        step: an int64 scalar ``tf.Variable`` to share (e.g. ``optimizer.iterations``, or
            the training logger's step for a validation run), advanced by its owner; by
            default the logger owns one that starts at 0 and its decorated steps advance it.
        max_queue: summaries the writer queues before it writes to disk.
        flush_millis: longest time between flushes of the writer.
        profile_steps: ``(start, stop)`` records a TensorFlow profiler trace of the steps
            ``start <= step < stop`` of this logger's decorated steps into the run's folder,
            for TensorBoard's Profile tab (see :mod:`tbkit.summary.profile`).
    """

    def __init__(
        self,
        logdir: str | os.PathLike,
        *,
        every: Mapping[str, int | schedule.Schedule] | None = None,
        level: str = "debug",
        step: tf.Variable | None = None,
        max_queue: int = 100,
        flush_millis: int = 10_000,
        profile_steps: tuple[int, int] | None = None,
    ):
        super().__init__(name="tbkit_logger")
        if not isinstance(logdir, (str, os.PathLike)):
            raise TbkitTypeError(expected("logdir", "a folder path (str or os.PathLike)", logdir))
        for arg, value in (("max_queue", max_queue), ("flush_millis", flush_millis)):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise TbkitValueError(expected(arg, "a positive int", value))
        self._logdir = os.fspath(logdir)
        _check_writable(self._logdir)
        self._schedules = tuple(schedule.resolve_every(every)[name] for name in levels.LEVELS)
        self._owns_step = step is None
        self.step = _step_variable(step)
        self._track_threshold(threshold.Threshold(levels.level_index(level)))
        self.kept_rings = kept.Rings()  # the rings of kept records (not checkpointed)
        self._earlier = restart.earlier_files(self._logdir)  # read before the writer's own
        self._writer = FileWriter(self._logdir, max_queue=max_queue, flush_millis=flush_millis)
        self._unflushed = UnflushedWriter(self._writer)
        self._open = OpenFlag()  # checked by every write branch, lowered on closing
        self._closed = False
        self._entered: list = []
        self._close_hooks: list[Callable[[], None]] = []
        self._flush_hooks: list[Callable[[], None]] = []
        self._finalizer = weakref.finalize(
            self, _close, self._close_hooks, self._writer, self._open
        )
        self.profile_window = self._profile_window(profile_steps)
        if self.profile_window is not None:  # stop the profiler however the logger ends
            self._close_hooks.append(self.profile_window.close)
        self._pid = os.getpid()
        preemption.register(self)

    @tf.__internal__.tracking.no_automatic_dependency_tracking
    def _track_threshold(self, levels_: threshold.Threshold) -> None:
        """Keep the threshold variable as ``self.threshold`` and checkpoint it as "threshold"
        through ``levels_``, which saves the user's level even while a call is muted (the
        variable's own value then holds the mute: see :mod:`tbkit.summary.threshold`)."""
        self._threshold = levels_
        self.threshold = levels_.variable
        self._track_trackable(levels_, name="threshold")  # private: the one dependency to name

    def _profile_window(self, profile_steps: Any) -> ProfileWindow | None:
        window = check_window(profile_steps)
        if window is None:
            return None
        if not self._owns_step:
            raise TbkitValueError(
                "'profile_steps' needs a logger that owns its step (got step=): the window is "
                "counted on the host from the calls that advance the step."
            )
        return ProfileWindow(self._logdir, *window, step=self.step)

    # -- what it writes, and when ------------------------------------------------------------

    @property
    def logdir(self) -> str:
        """The run's folder."""
        return self._logdir

    @property
    def writer(self) -> tf.summary.SummaryWriter:
        """The run's file writer (a user's own ``tf.summary`` calls may use it)."""
        self._check_open()
        return self._writer

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has run."""
        return self._closed

    @property
    def owns_step(self) -> bool:
        """True when the logger made its step; then its decorated steps advance it."""
        return self._owns_step

    def writing(self, step: Any = None, *, pinned: bool = False):
        """A context in which ``tf.summary`` ops write to this run (at ``step``, if given).

        Unlike ``writer.as_default()`` it adds no flush at its end, so a traced step does not
        write to disk on every call. ``pinned``: take the writer's handle in this function
        for the functions nested in it (see :class:`tbkit.summary.writer.UnflushedWriter`).
        """
        self._check_open()
        view = UnflushedWriter(self._writer, pinned=True) if pinned else self._unflushed
        return view.as_default(step=step)

    @property
    def level(self) -> str:
        """The threshold's level name, as :meth:`set_level` (or ``level=``) last set it."""
        return levels.LEVELS[self._threshold.index()]

    def set_level(self, level: str) -> None:
        """Change the threshold while training runs; traced steps see it without retracing.

        Inside ``tf.summary.record_if(False)`` the new level takes effect when recording is
        on again.
        """
        self._threshold.set(levels.level_index(level))

    def follow_recording(self, condition: Any) -> None:
        """Record nothing in this logger's decorated calls from now on if ``condition`` (the
        ``tf.summary.record_if`` value in force for them) is a false bool; record again
        otherwise. Decorated steps call it themselves when the value changes; the Keras
        callback calls it when ``fit`` starts. See :mod:`tbkit.summary.threshold`."""
        self._threshold.follow(condition)

    def open_checks(self) -> list[tf.Operation]:
        """Ops for a write branch to wait on: they fail it when this logger has been closed
        since the function was traced (none eagerly, where :meth:`_check_open` does it)."""
        return self._open.checks(
            f"tbkit: a traced function writes to the closed SummaryLogger at {self._logdir}. "
            "A tf.function keeps the logger it was traced under: trace it again under an "
            "open logger, or decorate it with @log.train_step."
        )

    def schedule_for(self, pending: ops.Pending) -> schedule.Schedule:
        """The interval ``pending`` records at: its own ``every=``, else its level's."""
        return pending.schedule or self._schedules[pending.level]

    def should_record(self, pending: ops.Pending, step: tf.Tensor, threshold: tf.Tensor):
        """The in-graph decision for ``pending`` at ``step``: threshold, then when or interval."""
        enabled = tf.less_equal(threshold, pending.level)
        if pending.when is not None:
            return tf.logical_and(enabled, pending.when)
        return tf.logical_and(enabled, self.schedule_for(pending).predicate(step))

    def level_predicate(self, level: str, step: tf.Tensor) -> Callable[[], tf.Tensor]:
        """A callable for ``tf.summary.record_if``: true when ``level`` records at ``step``."""
        rank = levels.level_index(level)
        return lambda: tf.logical_and(
            tf.less_equal(self.threshold, rank), self._schedules[rank].predicate(step)
        )

    # -- ops outside a decorated step ---------------------------------------------------------

    @tf.autograph.experimental.do_not_convert
    def submit(self, pending: ops.Pending, step: tf.Tensor | None = None) -> None:
        """Write ``pending`` now, at the current step, behind a guard of its own.

        The ``tf.summary.record_if`` in force is honoured as by TensorFlow's own ops: read
        now when eager, where the function traces otherwise. A decorated call's mute does not
        apply here: the threshold is read without it.
        """
        kept.refuse_outside_step(pending, "outside a decorated step")
        condition = recording.state()
        if recording.is_off(condition):
            self._check_open()
            return
        unmuted = tf.math.floormod(self.threshold.read_value(), threshold.MUTED)
        self.write_guarded(pending, step, unmuted, recording.in_graph(condition))

    @tf.autograph.experimental.do_not_convert
    def write_guarded(
        self,
        pending: ops.Pending,
        step: tf.Tensor | None,
        threshold_value: tf.Tensor,
        condition: recording.Condition | None = None,
    ) -> None:
        """Write ``pending`` at ``step`` (default: the current step) behind a guard of its own:
        the threshold (read by the caller) and its interval or ``when``, and ``condition()``
        if given."""
        self._check_open()
        if self._earlier and tf.executing_eagerly():
            self.check_earlier_run()
        step = self.step.read_value() if step is None else step
        recorded = self.should_record(pending, step, threshold_value)
        if condition is not None:
            recorded = tf.logical_and(recorded, condition())

        def write():
            with self.writing(), tf.summary.record_if(True):
                with tf.control_dependencies(self.open_checks()):
                    ops.write(pending, step)

        tf.cond(recorded, write, lambda: None)

    def write_kept(self) -> None:
        """Write every kept record's kept steps now, at the current step, as a ``when=`` would
        (the steps before it that no dump and no schedule wrote). Eager: call it from an
        exception handler around a decorated step, or after the loop."""
        self._check_open()
        with tf.init_scope(), self.writing(), tf.summary.record_if(True):
            step = self.step.read_value()
            for ring in self.kept_rings:
                ring.dump(step)

    def check_earlier_run(self) -> None:
        """Once, before the first write: warn (:class:`tbkit.SupersedeWarning`)
        if the folder held records of an earlier run at or above the step this one starts at.

        Decorated steps and the Keras callback call it on their first call, so a step restored
        from a checkpoint after the logger was made counts."""
        paths, self._earlier = self._earlier, []
        if paths:
            restart.warn_if_superseding(self._logdir, paths, int(self.step.numpy()))

    # -- lifetime -----------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise LoggerClosedError(
                f"SummaryLogger({self._logdir!r}) is closed: create a new logger (and decorate "
                "the step with it) to write again."
            )

    @contextlib.contextmanager
    def as_default(self) -> Iterator[SummaryLogger]:
        """Make this logger the one ops report to in this thread, without closing it after.

        The logger's writer is the default writer inside, at the logger's step, so a user's
        own ``tf.summary`` calls land in the same run. Leaving the block does not flush: the
        writer's queue and timer do, and :meth:`flush`/:meth:`close`.
        """
        self._check_open()
        context.push(self)
        try:
            with self.writing(step=self.step):
                yield self
        finally:
            context.pop(self)

    def __enter__(self) -> SummaryLogger:
        entered = self.as_default()
        entered.__enter__()
        self._entered.append(entered)
        return self

    def __exit__(self, *exc_info) -> None:
        try:
            self._entered.pop().__exit__(*exc_info)
        finally:
            if not self._entered:  # the outermost `with log:` closes
                self.close()

    def flush(self) -> None:
        """Write everything queued to disk, companions' queues (the logging bridge) first."""
        if not self._closed:
            for hook in self._flush_hooks:
                hook()
            self._writer.flush()

    def flush_on_signal(self, timeout: float) -> None:
        """Flush the writer from a signal handler, which may run while a function traces:
        eagerly, and only in the process that made it (TensorFlow does not survive a fork).
        While :meth:`close` runs its hooks the writer is still open, and flushes too.
        Companions that queue (the logging bridge) register on their own and flush first."""
        if not self._writer.closed and os.getpid() == self._pid:
            with tf.init_scope():
                self._writer.flush()

    def close(self) -> None:
        """Flush and close the writer; later writes raise :class:`LoggerClosedError`."""
        if not self._closed:
            self._closed = True
            try:
                self._finalizer()
            finally:
                preemption.unregister(self)

    def add_close_hook(self, hook: Callable[[], None]) -> None:
        """Call ``hook()`` when the logger closes, just before its writer flushes and closes.

        Hooks run in the order added, at :meth:`close` (so on leaving ``with log:``) or, for a
        logger never closed, when it is garbage-collected or at interpreter exit. Companions
        that queue writes (the logging bridge) drain there, so nothing they hold is lost. A
        hook must not refer to the logger itself, or the logger lives until exit.
        """
        self._check_open()
        if not callable(hook):
            raise TbkitTypeError(expected("hook", "a callable taking no arguments", hook))
        if not self._finalizer.alive:  # finalized at interpreter exit without close()
            raise LoggerClosedError(f"SummaryLogger({self._logdir!r}) is closed.")
        self._close_hooks.append(hook)

    def add_flush_hook(self, hook: Callable[[], None]) -> None:
        """Call ``hook()`` at every :meth:`flush`, before the writer flushes: a companion that
        queues writes hands them to the writer there. The same rules as for close hooks."""
        self._check_open()
        if not callable(hook):
            raise TbkitTypeError(expected("hook", "a callable taking no arguments", hook))
        self._flush_hooks.append(hook)

    def train_step(self, fn: Callable | None = None, **options: Any):
        """Decorate a training step; see :class:`tbkit.summary.step.TrainStep` for ``options``
        and :class:`tbkit.summary.multistep.MultiStep` for ``steps_per_call``."""
        from tbkit.summary.multistep import decorate

        if fn is None:
            return lambda f: decorate(self, f, **options)
        return decorate(self, fn, **options)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"SummaryLogger({self._logdir!r}, {state})"
