"""The ``@log.train_step`` decorator: a ``tf.function`` that owns the step and writes summaries.

The body's summaries are collected and written behind one gate (:mod:`tbkit.summary.collector`);
then the step variable is incremented: ops in a call see the step before it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import tensorflow as tf

from tbkit.data.errors import TbkitTypeError, expected
from tbkit.summary import distribute, recording, xla
from tbkit.summary.collector import StepCollector, collecting, users_summaries


class TrainStep:
    """A training step compiled with ``tf.function`` that logs to one SummaryLogger.

    Args:
        logger: the SummaryLogger the step writes to.
        fn: the step, a Python function or a ``tf.function`` (its Python function is used).
        advance: increment the step after each call. By default a logger that owns its step
            advances it and a logger given ``step=`` (``optimizer.iterations``, or another
            logger's step for an evaluation run) leaves that to the step's owner.
        **function_options: passed to ``tf.function`` (``input_signature``,
            ``reduce_retracing``, ``autograph``). ``jit_compile=True`` compiles the body with
            XLA and writes its summaries outside the compiled part (see :mod:`tbkit.summary.xla`).

    ``@log.train_step(steps_per_call=N)`` (N > 1) makes a
    :class:`tbkit.summary.multistep.MultiStep` instead: called with an iterator, it runs up to N
    steps in one graph call, each logged as if called on its own.

    A user's own ``tf.summary`` calls in the body go to the logger's writer at the same step
    and record on the steps where the info level records (in a ``jit_compile=True`` body they
    are refused: XLA cannot write summaries).

    ``tf.summary.record_if`` is honoured for the tbkit ops and the user's summaries alike: a
    bool in force when a call starts is read on the host (False makes the call record
    nothing, through the threshold, without retracing: see :mod:`tbkit.summary.threshold`);
    a callable or tensor in force where the step traces is ANDed into the gate.

    Inside ``strategy.run`` the ops follow
    :mod:`tbkit.summary.distribute`; on a worker that does not write summaries (not the chief of a
    ``MultiWorkerMirroredStrategy``) the step adds no recorded branch.
    """

    def __init__(
        self, logger, fn: Callable, *, advance: bool | None = None, **function_options: Any
    ):
        if not callable(fn):
            raise TbkitTypeError(expected("fn", "a function to decorate", fn))
        if isinstance(fn, tf.types.experimental.PolymorphicFunction):
            function_options.setdefault("input_signature", fn.input_signature)
            fn = fn.python_function
        jit = function_options.pop("jit_compile", None)
        if jit not in (None, False, True):
            raise TbkitTypeError(expected("jit_compile", "a bool or None", jit))
        unknown = set(function_options) - {"input_signature", "reduce_retracing", "autograph",
                                           "experimental_attributes"}
        if unknown:
            raise TbkitTypeError(
                f"@train_step got unknown options {sorted(unknown)}: it takes 'advance', "
                "'input_signature', 'reduce_retracing', 'autograph', 'jit_compile', "
                "'experimental_attributes' and 'steps_per_call'."
            )
        self._logger = logger
        self._threshold = logger._threshold  # read on every call: one attribute less
        self._fn = fn
        self._advance = logger.owns_step if advance is None else bool(advance)
        functools.update_wrapper(self, fn)
        if jit:
            autograph = function_options.pop("autograph", True)
            body = self._jit_body(autograph)
            self.function = tf.function(body, autograph=False, **function_options)
        else:
            self.function = tf.function(self._body(), **function_options)

    def _body(self) -> Callable:
        logger, fn, name = self._logger, self._fn, getattr(self._fn, "__qualname__", "the step")

        @functools.wraps(fn)
        def body(*args, **kwargs):
            step = logger.step.value()  # no Identity after the read, unlike read_value()
            collector = StepCollector(logger, step, name)  # sees the caller's record_if
            with collecting(collector), users_summaries(logger, step, collector.condition):
                outputs = fn(*args, **kwargs)
            self._finish(collector, collector, outputs)
            return outputs

        return body

    def _jit_body(self, autograph: bool) -> Callable:
        """The body for ``jit_compile=True``: the user's function runs in an inner function
        compiled with XLA, which returns the values the summaries need; they are written here,
        outside it (see :mod:`tbkit.summary.xla`)."""
        logger, fn, name = self._logger, self._fn, getattr(self._fn, "__qualname__", "the step")

        @functools.wraps(fn)
        def body(*args, **kwargs):
            step = logger.step.value()  # no Identity after the read, unlike read_value()
            inner: dict[str, Any] = {}

            def compiled(*args, **kwargs):
                collector = inner["collector"] = xla.XlaCollector(logger, step, name)
                with collecting(collector), xla.RefusingWriter(name).as_default(step=step), \
                        tf.summary.record_if(True):
                    outputs = fn(*args, **kwargs)
                tensors, inner["rebuild"] = xla.carry_out(collector.collected)
                return outputs, tensors

            # A new inner function per trace of the outer one: it traces once, with it.
            outputs, tensors = tf.function(compiled, jit_compile=True, autograph=autograph)(
                *args, **kwargs
            )
            collector = StepCollector(logger, step, name)
            collector.rings_updated = True  # in the compiled body
            for pending in inner["rebuild"](tensors):
                collector.submit(pending)
            self._finish(collector, inner["collector"], outputs)
            return outputs

        return body

    def _finish(self, collector: StepCollector, seen: StepCollector, outputs: Any) -> None:
        """Write what ``collector`` holds (on the worker that writes), then advance the step.

        ``seen`` is the collector the ops reported to: it knows the strategy they ran under.
        ``outputs``: what the body returns (what it computes for that stays on every step).
        """
        strategy = seen.strategy or tf.distribute.get_strategy()
        if distribute.writes_summaries(strategy):
            collector.emit(live=outputs)
        if self._advance:
            self._logger.step.assign_add(1)

    def __call__(self, *args, **kwargs):
        self._logger._check_open()
        if self._logger._earlier:  # the first call: does it hide an earlier run's records?
            self._logger.check_earlier_run()
        if recording.STATE.is_recording is not self._threshold.seen:  # record_if changed
            self._threshold.follow(recording.STATE.is_recording)
        window = self._logger.profile_window
        if window is None or window.done:
            return self.function(*args, **kwargs)
        with window.around_call(self._advance):
            return self.function(*args, **kwargs)

    def __get__(self, instance, owner=None):
        """Decorating a method binds it like a function: ``model.train_step(x)``."""
        return self if instance is None else functools.partial(self, instance)

    def experimental_get_tracing_count(self) -> int:
        """How many times the step has been traced."""
        return self.function.experimental_get_tracing_count()
