"""Carrying summaries out of an XLA-compiled step (``@log.train_step(jit_compile=True)``).

XLA has no kernel that writes a summary (tensorflow/tensorflow#39798), and no string tensor
can leave an XLA computation. So the step is two functions: an inner one, compiled with XLA,
runs the user's body while a :class:`XlaCollector` gathers what tbkit ops ask for, and returns
the user's outputs plus the tensors those summaries read; an outer, plain ``tf.function``
rebuilds the summaries over the returned tensors and writes them behind the usual gate.
Histogram bucketing and JSON formatting thus run outside XLA, on recorded steps only.

What cannot be carried out is refused at trace time: a string tensor computed in the body
(a constant one is kept as a constant), a tbkit op inside a ``tf.cond`` branch of the body,
and a ``tf.summary`` call of the user's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tensorflow as tf

from tbkit.data import levels
from tbkit.data.errors import TbkitValueError
from tbkit.summary import distribute, ops
from tbkit.summary.collector import StepCollector, _inside_loop

_KEEP, _CONSTANT, _CARRY = "keep", "constant", "carry"


class XlaCollector(StepCollector):
    """Collects the summaries of an XLA-compiled body, refusing what could not leave it."""

    def __init__(self, logger, step: tf.Tensor, name: str):
        super().__init__(logger, step, name)
        self.collected: list[ops.Pending] = []

    @tf.autograph.experimental.do_not_convert
    def submit(self, pending: ops.Pending) -> None:
        where = f"tbkit.{pending.op}({pending.tag!r}) in the jit_compile=True step {self.name}"
        if distribute.replica_context() is not None:
            raise TbkitValueError(
                f"{where} runs inside strategy.run: XLA compiles a step for one device, and "
                "a jit_compile=True step cannot hold the replicas of a tf.distribute strategy. "
                "Decorate the step without jit_compile (see docs/distributed.md)."
            )
        graph = tf.compat.v1.get_default_graph()
        if graph is not self.graph and not _inside_loop(graph, self.graph):
            raise TbkitValueError(
                f"{where} is inside a branch (tf.cond / if on a tensor): a value cannot leave "
                "a branch of an XLA computation. Compute it before the branch and log it "
                "there, with when=<the branch's condition> to record it on those steps only."
            )
        if pending.rebind is None:
            raise TbkitValueError(
                f"{where} cannot be carried out of the compiled body: its Pending has no "
                "'rebind' (build it with tbkit.ops, or give inputs= and rebind=)."
            )
        for i, x in enumerate(pending.inputs):
            if not isinstance(x, tf.Variable) and x.dtype == tf.string:
                if tf.get_static_value(x) is None:
                    raise TbkitValueError(
                        f"{where}: {pending.label(i)} is a string tensor computed in the "
                        "compiled body, and strings cannot leave an XLA computation. Give "
                        "string fields as Python str or constants known at trace time, or "
                        "compute them outside the step."
                    )
        super().submit(pending)
        self.collected.append(pending)
        if pending.kept is not None:  # the ring is written here, inside the compiled body
            ring = self.logger.kept_rings.get(pending, levels.LEVELS[pending.level])
            ring.update(self.step, pending.inputs)


@tf.autograph.experimental.do_not_convert
def carry_out(pendings: list[ops.Pending]) -> tuple[list[tf.Tensor], Callable]:
    """Split collected summaries into the tensors to return and a function that rebuilds them.

    Returns:
        ``(tensors, rebuild)``: return ``tensors`` from the compiled body; outside it,
        ``rebuild(returned)`` gives the summaries over the returned tensors.
    """
    carried: list[tf.Tensor] = []
    plans = []

    def slot(x: Any) -> tuple[str, Any]:
        if isinstance(x, tf.Variable):  # read outside, after the body, as without XLA
            return _KEEP, x
        if x.dtype == tf.string:
            return _CONSTANT, tf.get_static_value(x)
        carried.append(x)
        return _CARRY, len(carried) - 1

    for pending in pendings:
        inputs = tuple(slot(x) for x in pending.inputs)
        when = None if pending.when is None else slot(pending.when)
        plans.append((pending, inputs, when))

    def value(kind: str, what: Any, returned: list[tf.Tensor]) -> Any:
        if kind == _CARRY:
            return returned[what]
        return tf.constant(what) if kind == _CONSTANT else what

    def rebuild(returned: list[tf.Tensor]) -> list[ops.Pending]:
        return [
            pending.with_inputs(
                tuple(value(*s, returned) for s in inputs),
                when=None if when is None else value(*when, returned),
            )
            for pending, inputs, when in plans
        ]

    return carried, rebuild


class RefusingWriter(tf.summary.SummaryWriter):
    """A default writer for the compiled body: a ``tf.summary`` call there fails at trace time
    with a message, instead of XLA's missing-kernel error on the first call."""

    def __init__(self, name: str):
        self._name = name

    @property
    def _resource(self):  # the attribute tf.summary.write reads when it writes
        raise TbkitValueError(
            f"a tf.summary call inside the jit_compile=True step {self._name}: XLA cannot "
            "write summaries (no 'WriteSummary' kernel, tensorflow/tensorflow#39798). Use "
            "tbkit.scalar/histogram/record, which carry their values out of the compiled "
            "body, or write it outside the step."
        )

    def flush(self) -> None:
        """Nothing to flush."""
