"""tbkit under ``tf.distribute``: which replica's value is written, and who writes.

Inside ``strategy.run`` every replica calls the same tbkit ops. By default only the first
replica of each worker keeps its summary, with its *local* value (as ``tf.summary`` does);
``reduce="mean" | "sum" | "min" | "max"`` all-reduces the value across all replicas first, and
``reduce="replicas"`` gathers every replica's value and writes it as ``<tag>/replica_<i>``.
The collective runs where the op is called, on every step and on every replica, never inside
a recorded branch: a branch some worker skips would leave its peers waiting forever.

With several workers (``MultiWorkerMirroredStrategy``) only the chief writes: a decorated step
adds no recorded branch on the other workers, and :func:`worker_logdir` gives them a temporary
folder (removed at exit) so that their logger leaves nothing in the run's folder.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from typing import Any

import tensorflow as tf

from tbkit.data.errors import TbkitTypeError, TbkitValueError, expected

REDUCTIONS = ("mean", "sum", "min", "max", "replicas")
_ALL_REDUCE = {"mean": tf.distribute.ReduceOp.MEAN, "sum": tf.distribute.ReduceOp.SUM}
_GATHERED = {"min": tf.reduce_min, "max": tf.reduce_max}


def replica_context() -> Any | None:
    """The replica context of ``strategy.run`` under a real strategy, else None."""
    if not tf.distribute.has_strategy() or tf.distribute.in_cross_replica_context():
        return None
    return tf.distribute.get_replica_context()


def local_replica(ctx: Any) -> int:
    """The replica's index among its worker's replicas (0 for the first)."""
    global_id = tf.get_static_value(ctx.replica_id_in_sync_group)
    if global_id is None:  # not a Python-known id (TPU): treat every replica as the first
        return 0
    return int(global_id) % len(ctx.strategy.extended.worker_devices)


def writes_summaries(strategy: Any = None) -> bool:
    """Whether this worker writes summaries: the chief, or any single-worker strategy."""
    strategy = tf.distribute.get_strategy() if strategy is None else strategy
    try:
        return bool(strategy.extended.should_save_summary)
    except NotImplementedError:
        return True


def worker_logdir(logdir: str | os.PathLike, strategy: Any = None) -> str:
    """``logdir`` on the worker that writes summaries, a temporary folder on the others.

    Give it to ``SummaryLogger`` under ``MultiWorkerMirroredStrategy``: every worker builds the
    same logger (creating its variables under the strategy's scope runs collectives, so all
    must), yet only the chief's event files land in ``logdir``. The temporary folder is
    removed when the process exits.
    """
    if not isinstance(logdir, (str, os.PathLike)):
        raise TbkitTypeError(expected("logdir", "a folder path (str or os.PathLike)", logdir))
    if writes_summaries(strategy):
        return os.fspath(logdir)
    scratch = tempfile.mkdtemp(prefix="tbkit-worker-")
    atexit.register(shutil.rmtree, scratch, ignore_errors=True)
    return scratch


def replicate(pending, reduce: str | None) -> list:
    """The summaries to submit for ``pending`` called in this replica (see the module doc)."""
    ctx = replica_context()
    if ctx is None:  # one replica, or cross-replica code: the value is already the one
        return [pending]
    first = local_replica(ctx) == 0
    if reduce is None:
        return [pending] if first else []
    if _inside_branch():
        raise TbkitValueError(
            f"tbkit.{pending.op}({pending.tag!r}, reduce={reduce!r}) is inside a branch "
            "(tf.cond / if on a tensor): its collective would wait forever for a replica that "
            "skips the branch. Call it before the branch, with when=<the branch's condition>."
        )
    inputs = _reducible(pending, reduce)
    if reduce in _ALL_REDUCE:
        reduced = _all_reduce(ctx, _ALL_REDUCE[reduce], inputs)
        return [pending.with_inputs(reduced)] if first else []
    gathered = [
        ctx.all_gather(tf.expand_dims(x, 0), axis=0) if x.dtype != tf.string else x
        for x in inputs
    ]
    if reduce in _GATHERED:
        reduced = tuple(_GATHERED[reduce](g, axis=0) for g in gathered)
        return [pending.with_inputs(reduced)] if first else []
    if not first:
        return []
    pairs = list(zip(inputs, gathered, strict=True))
    return [
        pending.with_inputs(
            tuple(g if x.dtype == tf.string else g[i] for x, g in pairs),
            tag=f"{pending.tag}/replica_{i}",
        )
        for i in range(ctx.num_replicas_in_sync)
    ]


def _inside_branch() -> bool:
    graph = tf.compat.v1.get_default_graph()
    while graph is not None:
        if type(graph).__name__ == "CondBranchFuncGraph":
            return True
        graph = getattr(graph, "outer_graph", None)
    return False


def _all_reduce(ctx: Any, op: Any, inputs: tuple) -> tuple:
    """All-reduce ``inputs`` with one collective per dtype (a batch packs one dtype)."""
    by_dtype: dict[Any, list[int]] = {}
    for i, x in enumerate(inputs):
        by_dtype.setdefault(x.dtype, []).append(i)
    reduced: list[Any] = list(inputs)
    for indices in by_dtype.values():
        for i, value in zip(indices, ctx.all_reduce(op, [inputs[i] for i in indices]), strict=True):
            reduced[i] = value
    return tuple(reduced)


def _reducible(pending, reduce: str) -> tuple:
    """``pending``'s inputs as tensors, refusing the dtypes ``reduce`` cannot combine."""
    where = f"tbkit.{pending.op}({pending.tag!r}, reduce={reduce!r})"
    inputs = tuple(tf.convert_to_tensor(x) for x in pending.inputs)  # reads variables
    for i, x in enumerate(inputs):
        if x.dtype == tf.string:
            if reduce == "replicas" and tf.get_static_value(x) is not None:
                continue  # a constant: the same text on every replica
            raise TbkitValueError(
                f"{where} cannot combine the string tensor {pending.label(i)} across "
                "replicas: give it as a Python str, or log it without reduce."
            )
        if x.dtype == tf.bool or not (x.dtype.is_floating or x.dtype.is_integer):
            raise TbkitTypeError(
                f"{where} needs numbers to combine across replicas (got dtype {x.dtype.name} "
                f"in {pending.label(i)}); cast it, or log it without reduce."
            )
        if reduce == "mean" and x.dtype.is_integer:
            raise TbkitTypeError(
                f"{where} averages an integer (dtype {x.dtype.name} in {pending.label(i)}): "
                "cast it to a float first, or use reduce='sum'."
            )
    return inputs
