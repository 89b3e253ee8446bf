"""The ``@log.train_step`` decorator: a ``tf.function`` that owns the step and writes summaries.

While the body traces, tbkit ops only *collect* their summaries. After the body, the collector
adds one recorded branch per sampling rule (level, interval or ``when``), all behind a single
gate (see :func:`_call_if`), so a step that records nothing pays for a few integer ops and
one Switch. Then the step variable is incremented: ops in a call see the step before it.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Iterator
from typing import Any

import tensorflow as tf

from tbkit import context, distribute, levels, ops
from tbkit.errors import TbkitTypeError, TbkitValueError, expected

_LOOP_GRAPHS = ("WhileBodyFuncGraph", "WhileCondFuncGraph")  # tf.while_loop, scan, map_fn...


def _lineage(graph, outer) -> list:
    """``graph`` and its enclosing graphs up to and including ``outer``."""
    chain = [graph]
    while graph is not outer and graph is not None:
        graph = getattr(graph, "outer_graph", None)
        chain.append(graph)
    return chain


def _inside_loop(graph, outer) -> bool:
    return any(type(g).__name__ in _LOOP_GRAPHS for g in _lineage(graph, outer))


def _exclusive(first, second, outer) -> bool:
    """Whether two graphs are different branches, so at most one of them runs in a call."""
    return first not in _lineage(second, outer) and second not in _lineage(first, outer)


class StepCollector:
    """Collects a traced step's summaries, then writes them in as few branches as possible."""

    def __init__(self, logger, step: tf.Tensor, name: str):
        self.logger = logger
        self.step = step
        self.name = name
        self.graph = tf.compat.v1.get_default_graph()
        self._pending: list[ops.Pending] = []
        self.strategy = None  # the strategy of the strategy.run its ops are called in, if any
        self._tags: dict[str, list] = {}  # tag → the graphs (body or branches) logging it

    @tf.autograph.experimental.do_not_convert
    def submit(self, pending: ops.Pending) -> None:
        """Take a summary from an op called while the step's body traces."""
        graph = tf.compat.v1.get_default_graph()
        replica = distribute.replica_context()
        if replica is not None:
            self.strategy = replica.strategy
        earlier = self._tags.setdefault(pending.tag, [])
        if any(not _exclusive(graph, other, self.graph) for other in earlier):
            raise TbkitValueError(
                f"tag {pending.tag!r} is logged twice in one call of {self.name}: TensorBoard "
                "keeps one value per (tag, step), so give each call its own name."
            )
        earlier.append(graph)
        if graph is self.graph:
            self._pending.append(pending)
        elif _inside_loop(graph, self.graph):
            raise TbkitValueError(
                f"tbkit.{pending.op}({pending.tag!r}) is inside a loop of {self.name}: every "
                "iteration would write the same (tag, step) and TensorBoard keeps one. Log "
                "after the loop (or pack the values in one record)."
            )
        else:  # inside a tf.cond branch of the user's: it cannot leave it, so guard it there
            self.logger.submit(pending, step=self.step)

    @tf.autograph.experimental.do_not_convert
    def emit(self) -> None:
        """Add the recorded branch for everything collected.

        On every step only a cheap gate runs: the threshold admits one of the collected levels
        and the step is a multiple of the gcd of every interval in use (or some ``when`` is
        true). Behind the gate, one call of a function that is not inlined decides each rule
        exactly (the gate's own rule needs no second look) and writes, so a step that records
        nothing never visits the formatting ops.
        Later uses of the resources the writes touch are ordered after the gate's Merge.
        """
        if not self._pending:
            return
        groups: dict[Any, list[ops.Pending]] = {}
        for pending in self._pending:
            if pending.when is not None:
                key: Any = ("when", id(pending))
            else:
                key = (pending.level, self.logger.schedule_for(pending))
            groups.setdefault(key, []).append(pending)

        threshold = self.logger.threshold.value()  # read once, for the gate and behind it
        gate, direct = self._gate(groups, threshold)

        def record() -> None:
            with self.logger.writing(pinned=True), tf.summary.record_if(True), \
                    tf.control_dependencies(self.logger.open_checks()):
                for key, batch in groups.items():
                    if key == direct:  # recorded exactly when the gate opens
                        _write(batch, self.step)
                    else:
                        recorded = self.logger.should_record(batch[0], self.step, threshold)
                        _call_if(recorded, functools.partial(_write, batch, self.step))

        _call_if(gate, record)

    def _gate(
        self, groups: dict[Any, list[ops.Pending]], threshold: tf.Tensor
    ) -> tuple[tf.Tensor, Any]:
        """True on every step where some group may record (a superset of them, cheaply).

        Also returns the key of the group whose own rule is the gate's (the most severe level
        collected, at the one interval the gate tests), or None: behind the gate it needs no
        guard of its own, which saves a function call on each step it records.
        """
        intervals: set[int] = set()
        due = []
        for key, batch in groups.items():
            if key[0] == "when":
                due.append(batch[0].when)
            elif len(key[1].intervals) > 1:  # a phased schedule: its own exact predicate
                due.append(key[1].predicate(self.step))
            else:
                intervals.update(key[1].intervals)
        every = math.gcd(*intervals) if intervals else 0
        if every:
            due.append(
                tf.constant(True) if every == 1 else tf.equal(tf.math.floormod(self.step, every), 0)
            )
        due_now = due[0] if len(due) == 1 else tf.reduce_any(tf.stack(due))
        top = max(batch[0].level for batch in groups.values())
        direct = (top, levels.Schedule.every(every)) if every and len(due) == 1 else None
        return tf.logical_and(tf.less_equal(threshold, top), due_now), direct


def _write(batch: list[ops.Pending], step: tf.Tensor) -> None:
    for pending in batch:
        ops.write(pending, step)


def _call_if(pred: tf.Tensor, fn: Callable[[], None]) -> None:
    """Call ``fn``, traced as a function of its own, only on steps where ``pred`` holds.

    A ``tf.cond`` sends every tensor its branch uses through a Switch node, and those run on
    every step (about 15 of them for a typical step, most of the gate's cost). Here only
    ``pred`` goes through a Switch: the call waits on a control edge from its true side, so on
    other steps the call is dead and never runs, and a Merge after it makes what follows live
    again. The function is marked ``_noinline`` so it stays one node, and it is called with the
    raw op, which (unlike a ``tf.function`` call) does not mark its resource inputs read-only:
    automatic control dependencies then order later uses of those resources after the Merge
    rather than after the call, whose deadness would spread to them.
    """

    if tf.executing_eagerly():
        if pred:
            fn()
        return

    def call() -> tf.Tensor:
        fn()
        return tf.constant(True)

    traced = tf.function(call, autograph=False, experimental_attributes={"_noinline": True})
    concrete = traced.get_concrete_function()
    skip, take = tf.raw_ops.Switch(data=pred, pred=pred)
    with tf.control_dependencies([tf.identity(take)]):
        (done,) = tf.raw_ops.StatefulPartitionedCall(
            args=concrete.captured_inputs, Tout=[tf.bool], f=concrete
        )
    tf.raw_ops.Merge(inputs=[skip, done])


@contextlib.contextmanager
def collecting(collector: StepCollector) -> Iterator[None]:
    """Make ``collector`` the target of ops in this thread, and in the replica threads of
    ``strategy.run`` that trace in the same graph (a plain ``context.push`` misses those)."""
    context.push(collector)
    context.share(collector.graph, collector)
    try:
        yield
    finally:
        context.unshare(collector.graph)
        context.pop(collector)


@contextlib.contextmanager
def users_summaries(logger, step: tf.Tensor) -> Iterator[None]:
    """While a step's body traces: the user's own ``tf.summary`` calls go to ``logger``'s writer
    at ``step`` and record on the steps where the info level records."""
    with logger.writing(step=step), tf.summary.record_if(logger.level_predicate("info", step)):
        yield


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
            XLA and writes its summaries outside the compiled part (see :mod:`tbkit.xla`).

    A user's own ``tf.summary`` calls in the body go to the logger's writer at the same step
    and record on the steps where the info level records (in a ``jit_compile=True`` body they
    are refused: XLA cannot write summaries). Inside ``strategy.run`` the ops follow
    :mod:`tbkit.distribute`; on a worker that does not write summaries (not the chief of a
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
                "'input_signature', 'reduce_retracing', 'autograph', 'jit_compile' and "
                "'experimental_attributes'."
            )
        self._logger = logger
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
            collector = StepCollector(logger, step, name)
            with collecting(collector), users_summaries(logger, step):
                outputs = fn(*args, **kwargs)
            self._finish(collector, collector)
            return outputs

        return body

    def _jit_body(self, autograph: bool) -> Callable:
        """The body for ``jit_compile=True``: the user's function runs in an inner function
        compiled with XLA, which returns the values the summaries need; they are written here,
        outside it (see :mod:`tbkit.xla`)."""
        from tbkit import xla

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
            for pending in inner["rebuild"](tensors):
                collector.submit(pending)
            self._finish(collector, inner["collector"])
            return outputs

        return body

    def _finish(self, collector: StepCollector, seen: StepCollector) -> None:
        """Write what ``collector`` holds (on the worker that writes), then advance the step.

        ``seen`` is the collector the ops reported to: it knows the strategy they ran under.
        """
        strategy = seen.strategy or tf.distribute.get_strategy()
        if distribute.writes_summaries(strategy):
            collector.emit()
        if self._advance:
            self._logger.step.assign_add(1)

    def __call__(self, *args, **kwargs):
        self._logger._check_open()
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
