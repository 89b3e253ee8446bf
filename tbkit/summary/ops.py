"""The summary ops: ``scalar``, ``histogram``, ``record`` and ``text``.

An op validates its input at trace time and hands a :class:`Pending` summary to the active
target: inside ``@log.train_step`` the step's collector, which writes every level's summaries
in one recorded branch per step; elsewhere (eagerly, or in a ``tf.function`` of your own under
``with log:``) the logger, which guards each op on its own at the logger's current step.
Building the written tensor (bucketing, JSON formatting) happens only inside a recorded branch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import tensorflow as tf
from tensorboard.plugins.histogram import metadata as histogram_metadata
from tensorboard.plugins.scalar import metadata as scalar_metadata

from tbkit.data import levels, metadata
from tbkit.data.errors import NoActiveLoggerError, TbkitTypeError, TbkitValueError, expected
from tbkit.summary import context, distribute, jsonenc, kept, records, schedule
from tbkit.summary.summary_pb import DEFAULT_BUCKETS


@dataclasses.dataclass(frozen=True, eq=False)
class Pending:
    """A summary asked for while a step traces: what to write, and when.

    Attributes:
        op: the op's name, for messages (``"scalar"``...).
        tag: the TensorBoard tag.
        level: level rank (0 debug … 3 error).
        schedule: the op's own ``every=``, or None for its level's interval.
        when: a scalar bool tensor that replaces the interval, or None.
        build: builds the tensor to write; called only inside a recorded branch.
        metadata: the ``SummaryMetadata`` written with the tag's first value.
        inputs: the tensors (or variables, read lazily) that ``build`` reads.
        rebind: ``rebind(inputs)`` makes a ``build`` over other tensors of the same shapes and
            dtypes: how a value is carried out of an XLA body or reduced across replicas.
        labels: how messages name each input (a record's fields).
        kept: a record's ``keep=`` (:class:`tbkit.summary.kept.Spec`), or None.
    """

    op: str
    tag: str
    level: int
    schedule: schedule.Schedule | None
    when: tf.Tensor | None
    build: Callable[[], tf.Tensor]
    metadata: Any
    inputs: tuple = ()
    rebind: Callable[[tuple], Callable[[], tf.Tensor]] | None = None
    labels: tuple = ()
    kept: Any = None

    def label(self, index: int) -> str:
        """How messages name ``inputs[index]``: a record's field, or the op's value."""
        if index < len(self.labels):
            return self.labels[index]
        return f"the value of tbkit.{self.op}({self.tag!r})"

    def with_inputs(self, inputs: tuple, *, when: Any = None, tag: str | None = None) -> Pending:
        """The same summary built from ``inputs`` instead (and ``when``, ``tag`` if given)."""
        if self.rebind is None:
            raise TypeError(f"tbkit.{self.op}({self.tag!r}) cannot be rebuilt over new inputs")
        return dataclasses.replace(
            self,
            tag=self.tag if tag is None else tag,
            when=self.when if when is None else when,
            inputs=tuple(inputs),
            build=self.rebind(tuple(inputs)),
        )


def write(pending: Pending, step: tf.Tensor) -> None:
    """Write ``pending`` unconditionally (the caller is a recorded branch) to the default writer."""
    tf.summary.write(pending.tag, pending.build(), step=step, metadata=pending.metadata)


def _submit(
    op: str, name: Any, level: Any, every: Any, when: Any, inputs: tuple, rebind, md,
    reduce: str | None = None, labels: tuple = (), kept_spec: Any = None,
) -> None:
    if not isinstance(name, str) or not name:
        raise TbkitTypeError(expected("name", "a non-empty str", name))
    if reduce is not None and reduce not in distribute.REDUCTIONS:
        raise TbkitValueError(
            expected("reduce", f"None or one of {', '.join(map(repr, distribute.REDUCTIONS))}",
                     reduce)
        )
    target = context.current(_graphs)
    if target is None:
        raise NoActiveLoggerError(
            f"tbkit.{op}({name!r}) needs an active SummaryLogger in this thread: call it inside "
            "a step decorated with @log.train_step, or under `with log:` / "
            "`with log.as_default():`."
        )
    rank = levels.level_index(level)
    own = None if every is None else schedule.as_schedule(every)
    if when is not None:
        if every is not None:
            raise TbkitValueError(
                f"tbkit.{op}({name!r}) takes 'every' or 'when', not both: 'when' replaces the "
                "interval."
            )
        when = _as_condition(op, name, when)
    pending = Pending(op, name, rank, own, when, rebind(inputs), md, inputs, rebind, labels,
                      kept_spec)
    for each in distribute.replicate(pending, reduce):
        target.submit(each)


def _graphs():
    """The default graph and the graphs enclosing it: where a replica thread looks for the
    step whose body it traces (see :func:`tbkit.summary.context.current`)."""
    graph = tf.compat.v1.get_default_graph()
    while graph is not None:
        yield graph
        graph = getattr(graph, "outer_graph", None)


def _as_condition(op: str, name: str, when: Any) -> tf.Tensor:
    if isinstance(when, bool):
        return tf.constant(when)
    tensor = tf.convert_to_tensor(when)
    if tensor.dtype != tf.bool or tensor.shape.rank != 0:
        raise TbkitTypeError(
            f"'when' of tbkit.{op}({name!r}) must be a scalar bool tensor (got dtype "
            f"{tensor.dtype.name} and shape {tensor.shape})."
        )
    return tensor


def _numeric(op: str, name: str, data: Any) -> tf.Tensor | tf.Variable:
    """Check that ``data`` holds real numbers. A variable is kept as is, to be read only on
    recorded steps (so it shows the value the step leaves)."""
    value = data if isinstance(data, tf.Variable) else tf.convert_to_tensor(data)
    if not (value.dtype.is_floating or value.dtype.is_integer or value.dtype == tf.bool):
        raise TbkitTypeError(
            f"tbkit.{op}({name!r}) needs real numbers (got dtype {value.dtype.name})."
        )
    return value


@tf.autograph.experimental.do_not_convert
def scalar(
    name: str,
    data: Any,
    *,
    level: str = "info",
    every: int | schedule.Schedule | None = None,
    when: Any = None,
    description: str = "",
    reduce: str | None = None,
) -> None:
    """Log a scalar, shown in TensorBoard's Scalars dashboard (stored as float32).

    Args:
        name: the tag.
        data: a scalar tensor or number; any other shape is refused at trace time.
        level: the op's level; it records when the level is at or above the threshold.
        every: the op's own interval (int or Schedule), overriding its level's.
        when: a scalar bool tensor: record exactly on the steps where it is true.
        description: shown in TensorBoard beside the plot.
        reduce: inside ``strategy.run``: None writes the first replica's local value;
            ``"mean"``, ``"sum"``, ``"min"``, ``"max"`` all-reduce it across replicas on
            every step first; ``"replicas"`` writes each replica's value as
            ``<name>/replica_<i>``. See docs/distributed.md.
    """
    value = _numeric("scalar", name, data)
    if value.shape.rank is not None and value.shape.rank != 0:
        raise TbkitValueError(
            f"tbkit.scalar({name!r}) needs a scalar (got shape {value.shape}): log a "
            "histogram, reduce it, or record it as a field."
        )
    md = scalar_metadata.create_summary_metadata(display_name=name, description=description)
    _submit("scalar", name, level, every, when, (value,), _scalar_rebind(value), md, reduce)


def _scalar_rebind(value: tf.Tensor) -> Callable[[tuple], Callable[[], tf.Tensor]]:
    """The scalar's float32 value on recorded steps. A float constant goes in as its bits, so
    that a positive subnormal one is not zeroed (:func:`tbkit.summary.records.constant_bits`)."""
    bits = records.constant_bits(value) if value.dtype.is_floating else None

    def rebind(inputs: tuple) -> Callable[[], tf.Tensor]:
        if bits is not None and inputs[0] is value:
            # Grappler folds no PlaceholderWithDefault: the float is made at run time.
            return lambda: tf.bitcast(tf.raw_ops.PlaceholderWithDefault(input=bits, shape=[]),
                                      tf.float32)
        return lambda: tf.cast(inputs[0], tf.float32)

    return rebind


@tf.autograph.experimental.do_not_convert
def histogram(
    name: str,
    data: Any,
    *,
    buckets: int = DEFAULT_BUCKETS,
    level: str = "debug",
    every: int | schedule.Schedule | None = None,
    when: Any = None,
    description: str = "",
) -> None:
    """Log the distribution of a tensor of any shape (TensorBoard's Histograms dashboard).

    Buckets are TensorBoard's own (``buckets`` equal-width bins from min to max), counted with
    ``tf.math.bincount`` instead of a one-hot matrix, and only on recorded steps.
    """
    if not isinstance(buckets, int) or isinstance(buckets, bool) or buckets <= 0:
        raise TbkitValueError(expected("buckets", "a positive int", buckets))
    value = _numeric("histogram", name, data)
    md = histogram_metadata.create_summary_metadata(display_name=name, description=description)
    _submit("histogram", name, level, every, when, (value,), _histogram_build(buckets), md)


def _histogram_build(buckets: int) -> Callable[[tuple], Callable[[], tf.Tensor]]:
    return lambda inputs: lambda: bucketize(inputs[0], buckets)


def bucketize(data: tf.Tensor, bucket_count: int = DEFAULT_BUCKETS) -> tf.Tensor:
    """TensorBoard's ``[bucket_count, 3]`` float64 histogram (left edge, right edge, count)."""
    data = tf.reshape(tf.cast(tf.stop_gradient(data), tf.float64), [-1])
    size = tf.size(data)

    def spread(low, high):
        width = (high - low) / bucket_count
        index = tf.clip_by_value(tf.floor((data - low) / width), 0, bucket_count - 1)
        # Values the edges cannot place (NaN) go past the last bucket, which bincount drops.
        index = tf.where(tf.math.is_finite(index), index, bucket_count)
        counts = tf.math.bincount(
            tf.cast(index, tf.int32), minlength=bucket_count, maxlength=bucket_count,
            dtype=tf.float64,
        )
        edges = tf.concat([tf.linspace(low, high, bucket_count + 1)[:-1], [high]], 0)
        return tf.stack([edges[:-1], edges[1:], counts], axis=1)

    def single_value(value):
        edges = tf.fill([bucket_count], value)
        counts = tf.concat(
            [tf.zeros([bucket_count - 1], tf.float64), [tf.cast(size, tf.float64)]], 0
        )
        return tf.stack([edges, edges, counts], axis=1)

    def non_empty():
        low, high = tf.reduce_min(data), tf.reduce_max(data)
        return tf.cond(
            tf.equal(low, high), lambda: single_value(high), lambda: spread(low, high)
        )

    return tf.cond(tf.equal(size, 0), lambda: tf.zeros([bucket_count, 3], tf.float64), non_empty)


@tf.autograph.experimental.do_not_convert
def record(
    name: str,
    value: Any,
    *,
    level: str = "info",
    every: int | schedule.Schedule | None = None,
    when: Any = None,
    reduce: str | None = None,
    keep: int | None = None,
) -> None:
    """Log one structured record: a dataclass, namedtuple or dict of tensors and values.

    The record becomes one strict-JSON object (the fields plus ``"level"``) built in the graph
    on recorded steps; run, tag, step and wall time come from the event. Field problems are
    reported at trace time. ``reduce`` works as for :func:`scalar`, on every tensor field.

    ``keep=K`` (in the body of a decorated step) keeps the record's values of the last K steps
    in the graph; when a ``when=`` of the same step records, the steps before it that were not
    written are written too, as records marked ``"kept": true`` (see :mod:`tbkit.summary.kept`
    and docs/guide.md, "A flight recorder").
    """
    if not isinstance(name, str) or not name:
        raise TbkitTypeError(expected("name", "a non-empty str", name))
    level_name = levels.LEVELS[levels.level_index(level)]
    template = records.template(name, value, level_name)
    md = metadata.create_summary_metadata(dtypes=template.dtypes)
    inputs = tuple(template.tensors)
    labels = tuple(_field_label(name, leaf.where) for leaf in template.leaves)
    spec = kept.check(name, keep, template, every, jsonenc.field_names(value))
    _submit("record", name, level, every, when, inputs, _record_build(template), md, reduce,
            labels, spec)


def _field_label(tag: str, where: str) -> str:
    """``record 'r' field 'a.b'`` from the unquoted ``record r field a.b``."""
    path = where[len(f"record {tag} field "):]
    return f"record {tag!r} field {path!r}"


def _record_build(template: records.RecordTemplate) -> Callable[[tuple], Callable[[], tf.Tensor]]:
    def rebind(tensors: tuple) -> Callable[[], tf.Tensor]:
        same = all(a is b for a, b in zip(tensors, template.tensors, strict=True))
        bound = template if same else template.with_tensors(tensors)
        return lambda: tf.reshape(bound.encode(), [1])

    return rebind


@tf.autograph.experimental.do_not_convert
def text(
    name: str,
    message: Any,
    *,
    level: str = "info",
    every: int | schedule.Schedule | None = None,
    when: Any = None,
    description: str = "",
) -> None:
    """Log a plain message as a TensorBoard text summary.

    TensorBoard's Text tab shows it (as Markdown); tbkit's readers and tab show it as a record
    with the single field ``message`` at ``level``, which the summary's description marks
    (:func:`tbkit.data.metadata.create_text_metadata`).

    Args:
        name: the tag.
        message: a scalar string tensor or a str. Format numbers first
            (``tf.strings.as_string``), or log them with :func:`record`.
        level, every, when: as for :func:`scalar`.
        description: shown in TensorBoard with the tag, after the level mark.
    """
    if not isinstance(name, str) or not name:
        raise TbkitTypeError(expected("name", "a non-empty str", name))
    level_name = levels.LEVELS[levels.level_index(level)]
    value = message if isinstance(message, tf.Variable) else tf.convert_to_tensor(message)
    if value.dtype != tf.string or value.shape.rank != 0:
        raise TbkitTypeError(
            f"tbkit.text({name!r}) needs a scalar string (got dtype {value.dtype.name} and shape "
            f"{value.shape}): format a number with tf.strings.as_string, or log a record."
        )
    md = metadata.create_text_metadata(level_name, description)
    _submit("text", name, level, every, when, (value,), _text_build, md)


def _text_build(inputs: tuple) -> Callable[[], tf.Tensor]:
    # Reads a variable only when recorded. Text summaries are UTF-8: invalid sequences become
    # U+FFFD, as in records, or every reader would have to skip the message.
    return lambda: tf.strings.unicode_transcode(
        inputs[0], "UTF-8", "UTF-8", errors="replace", replacement_char=0xFFFD,
        replace_control_characters=False,
    )  # fmt: skip
