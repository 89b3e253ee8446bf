"""Values computed only to be logged are computed behind the gate, on the steps that write them.

A step often computes a value for its logs alone: an accuracy, a gradient norm, a cast. In a
traced step those ops run on every call, recorded or not, because the recorded branch takes
their result as an input: with six ops of that kind the every-step path of a trivial step
grew by about as much as the gate itself costs. TensorFlow runs only the nodes something
needs, so tbkit builds those ops again inside the function that writes them; the originals
are then used by nothing and TensorFlow drops them when it prepares the step's graph.

An op moves when it is stateless (same inputs, same value, wherever it runs: no variable
read, no random op with state, no I/O), has no control inputs, no nested function, no resource
or variant tensors, and every use of its outputs is another moved op or a logged value (not
the step's return value, not an op the step needs anyway). What it reads from the rest of the
graph reaches the branch as an input, as before, with its static shape (the record's encoder
relies on shapes); constants that are not floats are copied with it, and float constants come
in as their bits (see :func:`_capture`). Nothing moves inside ``strategy.run``: the replicas'
ops are placed on their own devices.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import tensorflow as tf

from tbkit.summary import records

_NOT_COPIED = (tf.resource, tf.variant)


def _copyable(op: tf.Operation) -> bool:
    # A Bitcast costs nothing where it is; copied, we saw a subnormal float come out zeroed.
    if op.op_def.is_stateful or op.control_inputs or op.type in ("Placeholder", "Bitcast"):
        return False
    if any(t.dtype in _NOT_COPIED for t in (*op.inputs, *op.outputs)):
        return False
    # A nested function (If, While, PartitionedCall) lives in the graph's library: not copied.
    return not any(value.HasField("func") or value.list.func
                   for value in op.node_def.attr.values())


def movable(graph: Any, pendings: Iterable[Any], live: Any) -> frozenset:
    """The ops of ``graph`` that only compute the logged values of ``pendings``.

    Args:
        graph: the step's graph, after its body traced (every other use of a value is in it).
        pendings: the collected summaries; their tensor inputs are the logged values.
        live: the step's return value (a nest of tensors): needed on every step.
    """
    keep = {id(t) for t in tf.nest.flatten(live) if isinstance(t, tf.Tensor)}
    roots = [t.op for p in pendings for t in p.inputs
             if isinstance(t, tf.Tensor) and not isinstance(t, tf.Variable)
             and t.graph is graph and t.op.type != "Const"]  # a constant costs nothing
    # Values made from constants alone stay: Grappler would fold a copy (flushing a
    # subnormal float to zero), and on the every-step path they cost nothing anyway.
    constant: set = set()
    for op in graph.get_operations():
        if op.type == "Const" or (op.inputs and not op.op_def.is_stateful
                                  and all(t.op in constant for t in op.inputs)):
            constant.add(op)
    region, stack = set(), list(roots)
    while stack:  # every op the logged values are computed from that could move
        op = stack.pop()
        if op in region or op in constant or not _copyable(op):
            continue
        region.add(op)
        stack.extend(t.op for t in op.inputs)
    moved: set = set()
    for op in reversed(graph.get_operations()):  # each op's uses come before it
        if op in region and all(
            id(t) not in keep and all(c in moved for c in t.consumers()) for t in op.outputs
        ):
            moved.add(op)
    return frozenset(moved)


def here(pending: Any, moved: frozenset) -> Any:
    """``pending`` built from copies, in the current (recorded) function, of the moved ops
    its values come from; ``pending`` itself when none of them moved."""
    tensors = [t for t in pending.inputs if isinstance(t, tf.Tensor) and t.op in moved]
    if not tensors or pending.rebind is None:
        return pending
    copies = dict(zip(map(id, tensors), _copy(tensors, moved), strict=True))
    return pending.with_inputs(tuple(copies.get(id(t), t) for t in pending.inputs))


def _copy(tensors: list[tf.Tensor], moved: frozenset) -> list[tf.Tensor]:
    """The same values, computed again in the current graph from the moved ops' node defs.

    Constants that are not floats (axes, slice bounds, shapes) are copied with them, so shape
    inference sees their values; everything else they read is captured, with its static shape.
    The copies' outputs get the originals' static shapes (the record's encoder relies on them).
    """
    needed, stack = set(), [t.op for t in tensors]
    while stack:
        op = stack.pop()
        if op not in needed:
            needed.add(op)
            stack.extend(t.op for t in op.inputs if t.op in moved or _plain_constant(t))
    graph_def = tf.compat.v1.GraphDef()
    outside = {}
    # Pure values wait for nothing: not for the write's own control dependencies either.
    with tf.control_dependencies(None):
        for op in tensors[0].graph.get_operations():  # in creation order: inputs first
            if op not in needed:
                continue
            node = graph_def.node.add()
            node.CopyFrom(op.node_def)
            # A constant made under tf.control_dependencies (the user's, or the first step of
            # steps_per_call, which waits for its element) waits for ops outside the copy:
            # its value does not depend on them.
            node.input[:] = [name for name in node.input if not name.startswith("^")]
            for key in [k for k in node.attr if k.startswith("_")]:  # colocation, shapes
                del node.attr[key]
            for t in op.inputs:
                if t.op not in needed and t.name not in outside:
                    outside[t.name] = _capture(t)
        copies = tf.graph_util.import_graph_def(
            graph_def, input_map=outside, return_elements=[t.name for t in tensors],
            name="tbkit_logged",
        )
    for copy, original in zip(copies, tensors, strict=True):
        copy.set_shape(original.shape)
    return copies


def _plain_constant(tensor: tf.Tensor) -> bool:
    """A constant that may be copied into the branch as it is: not a float, which Grappler
    could zero there (a positive subnormal, see :func:`tbkit.summary.records.constant_bits`)."""
    return tensor.op.type == "Const" and not tensor.dtype.is_floating


def _capture(tensor: tf.Tensor) -> tf.Tensor:
    """``tensor`` (of the step's graph) as an input of the current one, with its static shape.
    A float that folds into a constant comes in as its bits and turns back into a float only
    when the branch runs (Grappler folds no ``PlaceholderWithDefault``), so a subnormal
    constant keeps its value."""
    kind = {tf.float64: "float64"}.get(tensor.dtype, "float32")
    bits = records.constant_bits(tensor, kind) if tensor.dtype.is_floating else None
    if bits is None:
        captured = tf.identity(tensor)
    else:
        held = tf.raw_ops.PlaceholderWithDefault(input=bits, shape=bits.shape)
        captured = tf.cast(tf.bitcast(held, tf.dtypes.as_dtype(kind)), tensor.dtype)
    captured.set_shape(tensor.shape)
    return captured
