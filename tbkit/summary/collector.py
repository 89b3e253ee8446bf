"""A traced step's summaries, collected while its body traces and written behind one gate.

While the body traces, tbkit ops only *collect* their summaries. After the body, the collector
adds one recorded branch per sampling rule (level, interval or ``when``), all behind a single
gate (see :func:`_call_if`), so a step that records nothing pays for a few integer ops and
one Switch. :mod:`tbkit.summary.step` (the decorator) and :mod:`tbkit.summary.xla` build on it.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Iterator
from typing import Any

import tensorflow as tf

from tbkit.data import levels
from tbkit.data.errors import TbkitValueError
from tbkit.summary import context, distribute, kept, lazy, ops, recording, schedule

_LOOP_GRAPHS = ("WhileBodyFuncGraph", "WhileCondFuncGraph")  # tf.while_loop, scan, map_fn...


def _lineage(graph, outer) -> list:
    """``graph`` and its enclosing graphs up to and including ``outer``."""
    chain = [graph]
    while graph is not outer and graph is not None:
        graph = getattr(graph, "outer_graph", None)
        chain.append(graph)
    return chain


def _inside_loop(graph, outer) -> bool:
    """Whether ``graph`` is in a loop within ``outer``, the step's graph (which may itself be
    a loop's body: N steps per call, Keras's steps_per_execution)."""
    return any(type(g).__name__ in _LOOP_GRAPHS for g in _lineage(graph, outer) if g is not outer)


def _exclusive(first, second, outer) -> bool:
    """Whether two graphs are different branches, so at most one of them runs in a call."""
    return first not in _lineage(second, outer) and second not in _lineage(first, outer)


class StepCollector:
    """Collects a traced step's summaries, then writes them in as few branches as possible."""

    def __init__(self, logger, step: tf.Tensor, name: str):
        self.logger = logger
        self.step = step
        self.name = name
        #: The ``tf.summary.record_if`` condition for the graph in force where the step traces
        #: (create the collector before the body's own record_if), ANDed into every gate; a
        #: bool is honoured per call on the host (see :mod:`tbkit.summary.recording`).
        self.condition = recording.in_graph(recording.state())
        self.graph = tf.compat.v1.get_default_graph()
        self._pending: list[ops.Pending] = []
        self.strategy = None  # the strategy of the strategy.run its ops are called in, if any
        self._tags: dict[str, list] = {}  # tag → the graphs (body or branches) logging it
        #: the rings of kept records were updated where the values were made (in an XLA body)
        self.rings_updated = False

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
            kept.refuse_outside_step(pending, f"inside a tf.cond branch of {self.name}")
            self.logger.write_guarded(pending, self.step, self.logger.threshold.value(),
                                      self.condition)

    @tf.autograph.experimental.do_not_convert
    def emit(self, live: Any) -> None:
        """Add the recorded branch for everything collected.

        On every step only a cheap gate runs: the threshold admits one of the collected levels
        and the step is a multiple of the gcd of every interval in use (or some ``when`` is
        true), and the record_if condition traced with the step, if any, holds. Behind the
        gate, one call of a function that is not inlined decides each rule
        exactly (the gate's own rule needs no second look) and writes, so a step that records
        nothing never visits the formatting ops. A rule whose steps include another's holds
        that one's guard (:func:`_parents`), and a guard tests only what the rule around it
        does not imply.
        Later uses of the resources the writes touch are ordered after the gate's Merge.

        Args:
            live: what the step returns (any nest of tensors): needed on every step. The
                values computed only to be logged (an accuracy, a gradient norm: stateless ops
                that nothing else uses) are computed again behind the gate, where they are
                written, and TensorFlow drops them from the every-step path
                (:func:`tbkit.summary.lazy.movable`).
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

        rings = self._keep()  # before the gate, so its branches see this step's slot
        triggers = [p for p in self._pending if p.when is not None]
        threshold = self.logger.threshold.value()  # read once, for the gate and behind it
        gate, known = self._gate(groups, threshold)
        # The group whose own rule is the gate's: behind the gate it needs no guard of its own.
        direct = None if known[1] is None else (known[0], schedule.Schedule.every(known[1]))
        # After the rings and the gate took their inputs: what they use is needed every step.
        moved = frozenset() if self.strategy is not None else \
            lazy.movable(self.graph, self._pending, live)  # fmt: skip

        parents = _parents(groups)
        children: dict[Any, list[Any]] = {}
        for key, parent in parents.items():
            if parent is not None and parent != direct:  # the direct group's are the gate's
                children.setdefault(parent, []).append(key)

        def write(key: Any) -> None:
            """Write a group, then guard each group nested in it."""
            _write(groups[key], self.step, rings, moved)
            for child in children.get(key, []):
                guarded(child, (key[0], key[1].intervals[0]))

        def guarded(key: Any, known: tuple[int, int | None]) -> None:
            """Write a plain group behind the part of its rule that ``known`` (a level the
            threshold admits, an interval the step is a multiple of) does not imply."""
            level, (interval,) = key[0], key[1].intervals
            due = []
            if level < known[0]:
                due.append(tf.less_equal(threshold, level))
            if interval != known[1]:
                due.append(tf.equal(tf.math.floormod(self.step, interval), 0))
            if not due:
                write(key)
            else:
                _call_if(due[0] if len(due) == 1 else tf.logical_and(*due),
                         functools.partial(write, key))

        def record() -> None:
            with self.logger.writing(pinned=True), tf.summary.record_if(True), \
                    tf.control_dependencies(self.logger.open_checks()):
                for key, batch in groups.items():
                    if key == direct:  # recorded exactly when the gate opens
                        write(key)
                    elif key in parents:
                        if parents[key] in (None, direct):
                            guarded(key, known)
                    else:  # a when= or a phased schedule: its own exact rule
                        recorded = self.logger.should_record(batch[0], self.step, threshold)
                        _call_if(recorded, functools.partial(write, key))
                if rings and triggers:
                    fired = [self.logger.should_record(p, self.step, threshold) for p in triggers]
                    fired_any = fired[0] if len(fired) == 1 else tf.reduce_any(tf.stack(fired))
                    for pending in self._pending:
                        ring = rings.get(id(pending))
                        if ring is not None:  # the kept record's level must record, too
                            due = tf.logical_and(fired_any, tf.less_equal(threshold, pending.level))
                            _call_if(due, functools.partial(ring.dump, self.step))

        _call_if(gate, record)

    def _keep(self) -> dict[int, kept.Ring]:
        """Update the ring of every kept record with this step's values: its one cost per step."""
        rings: dict[int, kept.Ring] = {}
        tags = {pending.tag for pending in self._pending}
        for pending in self._pending:
            if pending.kept is None:
                continue
            where = f"tbkit.record({pending.tag!r}, keep={pending.kept.keep})"
            every = self.logger.schedule_for(pending)
            if pending.when is None and every == schedule.Schedule.every(1):
                raise TbkitValueError(
                    f"{where} records every step (its level's interval is 1), so there is "
                    "nothing to keep. Give it every= or a level that samples, or drop keep=."
                )
            if kept.kept_tag(pending.tag) in tags:
                raise TbkitValueError(
                    f"{where} writes its kept steps under the tag {kept.kept_tag(pending.tag)!r}, "
                    f"which {self.name} logs too: rename one of them."
                )
            ring = self.logger.kept_rings.get(pending, levels.LEVELS[pending.level])
            if not self.rings_updated:
                ring.update(self.step, pending.inputs)
            rings[id(pending)] = ring
        return rings

    def _gate(
        self, groups: dict[Any, list[ops.Pending]], threshold: tf.Tensor
    ) -> tuple[tf.Tensor, tuple[int, int | None]]:
        """True on every step where some group may record (a superset of them, cheaply).

        Also returns what the gate implies where it opens: the most severe level collected
        (the threshold admits it) and, when the gate tests one interval alone (no ``when=``,
        no phased schedule), that interval (the step is a multiple of it), else None.
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
        gate = tf.logical_and(tf.less_equal(threshold, top), due_now)
        if self.condition is not None:  # the user's record_if: no group records without it
            gate = tf.logical_and(gate, self.condition())
        return gate, (top, every if every and len(due) == 1 else None)


def _parents(groups: dict[Any, list[ops.Pending]]) -> dict[Any, Any]:
    """For each plain group (a level and one interval), the plain group it is written inside,
    or None: one whose due steps include all of its own (a level at least as severe, an
    interval that divides its own), the most selective such (largest interval, then least
    severe level). A step on which a group records nothing then skips the guards of the
    groups nested in it: with info every 100 and debug every 1 000, the debug guard is
    looked at on every hundredth step, not on every step the gate opens."""
    plain = [key for key in groups if key[0] != "when" and len(key[1].intervals) == 1]
    parents: dict[Any, Any] = {}
    for key in plain:
        level, (interval,) = key[0], key[1].intervals
        around = [other for other in plain if other != key and level <= other[0]
                  and interval % other[1].intervals[0] == 0]
        parents[key] = max(around, key=lambda other: (other[1].intervals[0], -other[0]),
                           default=None)
    return parents


def _write(
    batch: list[ops.Pending], step: tf.Tensor, rings: dict[int, kept.Ring], moved: Any = ()
) -> None:
    for pending in batch:
        ops.write(lazy.here(pending, moved), step)
        ring = rings.get(id(pending))
        if ring is not None:  # written by its schedule: no dump writes this step again
            ring.mark_sampled(step)


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
def users_summaries(
    logger, step: tf.Tensor, condition: recording.Condition | None = None
) -> Iterator[None]:
    """While a step's body traces: the user's own ``tf.summary`` calls go to ``logger``'s writer
    at ``step`` and record on the steps where the info level records (and ``condition()``, the
    record_if condition in force where the step traces, holds)."""
    predicate = recording.both(logger.level_predicate("info", step), condition)
    with logger.writing(step=step), tf.summary.record_if(predicate):
        yield
