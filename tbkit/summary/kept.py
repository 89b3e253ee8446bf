"""The flight recorder: ``tbkit.record(..., keep=K)`` keeps a record's last K steps in the graph.

Each kept record owns a ring of typed variables, one per tensor field (shape ``[K + 1, ...]``:
the K steps a dump may write, plus the step being run), and per slot the step and the number
of the call that wrote it. Every call of the decorated step counts itself and writes its values
and ``(step, call)`` at slot ``step % (K + 1)``: one count and one ``scatter`` per dtype of
fields, plus one for the step, outside the gate (no JSON, no host work, no comparison). A step
whose record is written by its own schedule marks its slot as sampled, so it is never written
twice.

A dump, when a ``when=`` of the same step records (or :meth:`SummaryLogger.write_kept`),
JSON-encodes the valid slots of steps ``S - K … S - 1`` and writes them as ONE datum of the tag
``<tag>/kept`` at the trigger step ``S``: each object carries its own ``"step"``, and readers
expand them into records of ``<tag>`` at those steps (:func:`tbkit.data.events.expand`). So no
tag's steps go backwards in the event files. A slot is valid when it holds a step of the
current attempt (since the step last jumped: a new process, a checkpoint restore, an assigned
step), after the last dump, and not sampled. The attempt is found at dump time, not per step:
walking back from ``S - 1``, step ``S - j`` belongs to it while its slot holds that step,
written by the call ``j`` calls before the current one, and so on for every step in between
(a jump breaks the chain: the calls before it wrote other steps, or the slots of these steps
hold older calls). The ring is not checkpointed.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from tbkit.data import metadata
from tbkit.data.errors import TbkitTypeError, TbkitValueError, expected
from tbkit.summary import records

#: The most memory the ring of one kept record may take: ``(keep + 1) ×`` its bytes per step,
#: counting a string field at ``MAX_STRING_BYTES``.
MAX_KEPT_BYTES = 64 << 20

#: The field readers add to a kept record (``true``); a record with a field of that name
#: cannot be kept.
KEPT_FIELD = "kept"

class Spec:
    """What ``keep=`` asked of one record: its ring length and its checked template."""

    __slots__ = ("keep", "template")

    def __init__(self, keep: int, template: records.RecordTemplate):
        self.keep, self.template = keep, template


def kept_tag(tag: str) -> str:
    """The tag a record's kept steps are written under."""
    return f"{tag}/kept"


def check(
    tag: str, keep: Any, template: records.RecordTemplate, every: Any, fields: list[str]
) -> Spec | None:
    """Check ``keep=`` at trace time; None when it is not given.

    Raises:
        TbkitValueError: ``keep`` is not a positive int, ``every=1``, a field is named
            ``kept``, a vector's length is only known at run time, or the ring is too big.
    """
    if keep is None:
        return None
    if not isinstance(keep, int) or isinstance(keep, bool) or keep <= 0:
        raise TbkitValueError(expected("keep", "a positive int", keep))
    if isinstance(every, int) and not isinstance(every, bool) and every == 1:
        raise TbkitValueError(
            f"tbkit.record({tag!r}, keep={keep}) with every=1: every step is written already, "
            "so there is nothing to keep. Drop keep=, or sample less often."
        )
    where = f"tbkit.record({tag!r}, keep={keep})"
    if KEPT_FIELD in fields:
        raise TbkitValueError(
            f"{where}: the record has a field named {KEPT_FIELD!r}, which readers add to kept "
            "records. Rename the field."
        )
    per_step = 0
    for leaf in template.leaves:
        if leaf.unbounded:
            path = leaf.where.split(" field ", 1)[1]
            raise TbkitValueError(
                f"{where}: field {path!r} is a vector whose length is only known at run time, "
                "and a kept slot needs a fixed shape. Give it a static length (or pad it)."
            )
        elements = leaf.tensor.shape.num_elements()
        width = records.MAX_STRING_BYTES if leaf.tensor.dtype == tf.string else \
            leaf.tensor.dtype.size  # fmt: skip
        per_step += elements * width
    total = (keep + 1) * per_step
    if total > MAX_KEPT_BYTES:
        raise TbkitValueError(
            f"{where} would keep {total} bytes ((keep + 1) × {per_step} bytes per step, a string "
            f"field counted at {records.MAX_STRING_BYTES} bytes), over MAX_KEPT_BYTES "
            f"({MAX_KEPT_BYTES}). Keep fewer steps or fewer fields."
        )
    return Spec(keep, template)


class Ring:
    """The variables that keep one record's recent steps, and the ops that use them.

    Made once per (logger, tag, field shapes) under ``tf.init_scope``, so a step retraced with
    the same record reuses it.
    """

    def __init__(self, tag: str, spec: Spec, level: str, inputs: tuple):
        self.tag, self.keep, self.template = tag, spec.keep, spec.template
        self.level = level
        self.metadata = metadata.create_kept_metadata(tag, spec.template.dtypes)
        slots = spec.keep + 1
        # A string known at trace time (the only string a jit_compile=True body may log) is
        # the same on every step: it is not kept, only remembered.
        self.constants = [
            tf.get_static_value(x) if x.dtype == tf.string else None for x in inputs
        ]
        # Scalars of one dtype share a [slots, n] variable: one scatter for all of them (the
        # ring's cost is per op). Other fields have a [slots, *shape] variable each.
        groups: dict[Any, list[int]] = {}
        for i, (x, constant) in enumerate(zip(inputs, self.constants, strict=True)):
            if constant is None:
                key = x.dtype if x.shape.rank == 0 else ("alone", i)
                groups.setdefault(key, []).append(i)
        self.groups: list[tuple[list[int], bool, tf.Variable]] = []  # (fields, packed, ring)
        with tf.init_scope():
            for key, fields in groups.items():
                x = inputs[fields[0]]
                packed = not isinstance(key, tuple)
                shape = [len(fields)] if packed else x.shape.as_list()
                variable = tf.Variable(tf.zeros([slots, *shape], x.dtype), trainable=False,
                                       name="kept_value")  # fmt: skip
                self.groups.append((fields, packed, variable))
            #: Per slot, the step it holds (``-2 - step`` once its schedule wrote it) and the
            #: number of the call that wrote it; -1 (no step, no call) before any call.
            self.steps = tf.Variable(tf.fill([slots, 2], tf.constant(-1, tf.int64)),
                                     trainable=False, name="kept_steps")  # fmt: skip
            #: Calls of the step that updated the ring, counted by the update itself.
            self.calls = tf.Variable(tf.constant(0, tf.int64), trainable=False, name="kept_calls")
            self.dumped = tf.Variable(tf.constant(-1, tf.int64), trainable=False,
                                      name="kept_dumped")  # fmt: skip

    def update(self, step: tf.Tensor, inputs: tuple) -> None:
        """Keep this step's values (every call, outside the gate): count the call, then one
        scatter per group of fields and one of ``(step, call)``, all at the step's slot."""
        call = self.calls.assign_add(1)
        slot = self._slot(step)  # a scalar index: rows need no reshape
        for fields, packed, variable in self.groups:
            row = tf.stack([inputs[i] for i in fields]) if packed else inputs[fields[0]]
            variable.scatter_update(tf.IndexedSlices(row, slot))
        self.steps.scatter_update(tf.IndexedSlices(tf.stack([step, call]), slot))

    def mark_sampled(self, step: tf.Tensor) -> None:
        """The record's own schedule wrote ``step``: a dump must not write it again. The slot
        keeps the step (as ``-2 - step``) and its call, so the attempt's chain goes on."""
        row = tf.stack([-2 - step, self.calls.read_value()])  # after this call's update
        self.steps.scatter_update(tf.IndexedSlices(row, self._slot(step)))

    def valid_slots(self, step: tf.Tensor) -> tf.Tensor:
        """The slots a dump at ``step`` writes, in step order: steps ``step - K … step - 1``
        of the current attempt, after the last dump, not sampled.

        Step ``step - j`` is of the current attempt when it and every step after it were
        written by the calls just before this one: its slot holds that step and the call
        ``calls - j`` (a dump runs in the call of ``step``, after its update; from
        :meth:`SummaryLogger.write_kept`, after that call, so ``j - 1`` there).
        """
        step = tf.convert_to_tensor(step, tf.int64)
        back = tf.range(1, self.keep + 1, dtype=tf.int64)  # j: step - j is j steps back
        before = step - back
        rows = tf.gather(self.steps.read_value(), self._slot(before))
        held, call = _held_step(rows[:, 0]), rows[:, 1]
        sampled = rows[:, 0] < -1
        calls = self.calls.read_value()
        # The call of ``step`` itself has updated the ring, unless the dump comes after it.
        latest = tf.where(self._latest_is(step), calls, calls + 1)
        chained = tf.logical_and(tf.equal(held, before), tf.equal(call, latest - back))
        chained = tf.equal(tf.math.cumprod(tf.cast(chained, tf.int64)), 1)  # no gap after it
        dumped = self.dumped.read_value()
        # A dump at or after ``step`` is from a step that was run again: it says nothing now.
        fresh = tf.logical_or(dumped >= step, before > dumped)
        valid = tf.logical_and(tf.logical_and(chained, fresh),
                               tf.logical_and(tf.logical_not(sampled), before >= 0))
        return tf.reverse(self._slot(tf.boolean_mask(before, valid)), [0])

    def _latest_is(self, step: tf.Tensor) -> tf.Tensor:
        """Whether the last update was at ``step`` (a dump in its call) rather than before it
        (:meth:`SummaryLogger.write_kept` after the call)."""
        row = self.steps.sparse_read(self._slot(step))
        return tf.logical_and(tf.equal(_held_step(row[0]), step),
                              tf.equal(row[1], self.calls.read_value()))

    def _slot(self, step: tf.Tensor) -> tf.Tensor:
        """The slot (or slots) of ``step``."""
        return tf.math.floormod(step, self.keep + 1)

    def dump(self, step: tf.Tensor) -> None:
        """Write the valid kept steps before ``step`` as one datum of :func:`kept_tag` at
        ``step`` (nothing if there are none); the caller enters the writer and record_if."""
        step = tf.convert_to_tensor(step, tf.int64)
        slots = self.valid_slots(step)

        def encode(slot: tf.Tensor) -> tf.Tensor:
            values: list[Any] = [None if c is None else tf.constant(c) for c in self.constants]
            for fields, packed, variable in self.groups:
                row = variable.sparse_read(slot)
                for i, value in zip(fields, tf.unstack(row) if packed else [row], strict=True):
                    values[i] = value
            text = self.template.with_tensors(values).encode()
            held = self.steps.sparse_read(slot)[0]
            return tf.strings.join(['{"step":', tf.strings.as_string(held), ",",
                                    tf.strings.substr(text, 1, -1)])  # fmt: skip

        def write() -> None:
            texts = tf.map_fn(encode, slots, fn_output_signature=tf.string)
            tf.summary.write(kept_tag(self.tag), texts, step=step, metadata=self.metadata)

        tf.cond(tf.size(slots) > 0, write, lambda: None)
        self.dumped.assign(step - 1)


class Rings:
    """A logger's rings, by tag and field signature. Not a ``tf.Module`` attribute that
    checkpoints: the ring is scratch memory of this process."""

    def __init__(self):
        self._rings: dict[tuple, Ring] = {}

    def get(self, pending: Any, level: str) -> Ring:
        """The ring of a kept record's ``pending`` (made on first use)."""
        signature = tuple((x.dtype.name, tuple(x.shape.as_list())) for x in pending.inputs)
        key = (pending.tag, pending.kept.keep, signature)
        ring = self._rings.get(key)
        if ring is None:
            for other in self._rings:
                if other[0] == pending.tag:  # the record changed shape: one ring per tag
                    del self._rings[other]
                    break
            ring = self._rings[key] = Ring(pending.tag, pending.kept, level, pending.inputs)
        return ring

    def __iter__(self):
        return iter(list(self._rings.values()))


def refuse_outside_step(pending: Any, where: str) -> None:
    """``keep=`` works in the body of a decorated step only."""
    if getattr(pending, "kept", None) is not None:
        raise TbkitTypeError(
            f"tbkit.record({pending.tag!r}, keep={pending.kept.keep}) is {where}: a kept "
            "record needs the body of a step decorated with @log.train_step (outside any "
            "tf.cond branch of its own), which updates its ring on every call."
        )


def _held_step(held: tf.Tensor) -> tf.Tensor:
    """The step a slot holds, sampled (stored as ``-2 - step``) or not."""
    return tf.where(held < -1, -2 - held, held)
