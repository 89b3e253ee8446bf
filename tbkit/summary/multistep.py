"""N training steps in one graph call: ``@log.train_step(steps_per_call=N)``.

A call of a small ``tf.function`` costs hundreds of µs on the host, a large share of a small
model's step. Keras hides it with ``steps_per_execution``; this is the same for a custom loop,
with every step logged exactly as if it were called on its own.

The decorated step is called with an iterator (or a dataset, kept as an iterator between
calls) and runs up to N steps in one call:

* the first step runs outside any loop on ``iterator.get_next()``: when the data has ended it
  fails there, before any step runs, and the call raises ``StopIteration``;
* steps 2 … N run in a ``tf.while_loop`` on ``iterator.get_next_as_optional()`` and stop early
  when the data ends (as Keras does), so the last call of the data may run fewer steps;
* every step is the one-step body of :class:`~tbkit.summary.step.TrainStep`: it reads the step
  variable when it starts, collects its summaries with a collector of its own, writes them
  behind its own gate, and advances the step at its end. So each step logs at its own step
  number, and ``when=``, schedules, the threshold, ``record_if``, the user's ``tf.summary``
  calls and ``keep=`` record exactly what N separate calls would. A tbkit op inside a loop of
  the user's own is still refused: only the body of this loop is a step;
* the call returns the last step's outputs.

The user's function is traced twice per trace of the call (the first step, and the loop's
body): it must create its variables on its first call (Keras layers and optimizers do).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tensorflow as tf

from tbkit.data.errors import TbkitTypeError, TbkitValueError, expected
from tbkit.summary.step import TrainStep

_DATA = (
    "a tf.data iterator or a tf.distribute distributed iterator (or the dataset to iterate: "
    "iter(dataset) is made once and kept)"
)


def check(steps_per_call: Any) -> int:
    """Validate ``steps_per_call``: a positive int (a bool is refused, though it is an int)."""
    if isinstance(steps_per_call, bool) or not isinstance(steps_per_call, int):
        raise TbkitTypeError(expected("steps_per_call", "a positive int", steps_per_call))
    if steps_per_call < 1:
        raise TbkitValueError(expected("steps_per_call", "a positive int", steps_per_call))
    return steps_per_call


def decorate(logger, fn: Callable, *, steps_per_call: Any = 1, **options: Any) -> TrainStep:
    """The step ``@log.train_step(**options)`` makes: a :class:`MultiStep` when
    ``steps_per_call`` is above 1, else the one-step :class:`TrainStep` called with the
    step's own arguments."""
    if check(steps_per_call) == 1:
        return TrainStep(logger, fn, **options)
    return MultiStep(logger, fn, steps_per_call=steps_per_call, **options)


class MultiStep(TrainStep):
    """A :class:`TrainStep` that runs up to ``steps_per_call`` steps per call (module doc).

    Called as ``step(iterator)`` (or ``step(dataset)``). Each element of the iterator is given
    to the decorated function as ``fn(*element)`` when it is a plain tuple (``(x, y)``), else
    as ``fn(element)``. Positional arguments before the iterator (a method's ``self``) and
    keyword arguments are passed to every step as they are.

    Returns:
        The last step's outputs. Tensors (and the tensors of composites such as the
        ``PerReplica`` values of ``strategy.run``) are carried through the loop, so they must
        keep their dtypes and shapes from step to step; other values (None, Python numbers)
        are those of the first trace; a variable is read at the end of the step.

    Raises:
        StopIteration: the data had ended before the call (no step ran); raised from the
            ``tf.errors.OutOfRangeError`` of the call. A dataset passed in then starts again
            on the next call (a new epoch).
    """

    def __init__(self, logger, fn: Callable, *, steps_per_call: int, **options: Any):
        self.steps_per_call = check(steps_per_call)
        if logger.profile_window is not None:
            raise TbkitValueError(
                f"'steps_per_call' must be 1 on a logger with profile_steps (got "
                f"{steps_per_call} for {getattr(fn, '__qualname__', fn)!r}): the profiler "
                "window is counted on the host, one step per call. Profile a copy of the "
                "step decorated with steps_per_call=1 (on a logger of its own) instead."
            )
        signature = options.get("input_signature", getattr(fn, "input_signature", None))
        if signature is not None:
            raise TbkitValueError(
                f"'input_signature' cannot be given with steps_per_call={steps_per_call} (got "
                f"{signature!r} for {getattr(fn, '__qualname__', fn)!r}): the call takes an "
                "iterator, and each step's arguments take their types from its elements."
            )
        self._iterators: dict[int, tuple[Any, Any]] = {}  # id(dataset) → (dataset, iterator)
        super().__init__(logger, fn, **options)

    def _body(self) -> Callable:
        return self._loop(super()._body())

    def _jit_body(self, autograph: bool) -> Callable:
        # Each step calls its own XLA-compiled inner function; the loop and the writes stay
        # outside XLA.
        return self._loop(super()._jit_body(autograph))

    def _loop(self, one_step: Callable) -> Callable:
        """The call's body: ``one_step`` on up to ``steps_per_call`` elements of the iterator."""
        n = self.steps_per_call

        def body(*args, **kwargs):
            *leading, iterator = args

            def step(element):
                inputs = element if type(element) is tuple else (element,)
                with tf.name_scope(""):  # not "while/": a user's tf.summary keeps its tag
                    outputs = one_step(*leading, *inputs, **kwargs)
                return tf.nest.map_structure(_readable, outputs)

            element = iterator.get_next()
            # Nothing of the first step runs before its element is there: a call at the end of
            # the data fails with no effect (not even the step's advance, which reads no data).
            with tf.control_dependencies(tf.nest.flatten(element, expand_composites=True)):
                outputs = step(element)
            leaves = tf.nest.flatten(outputs, expand_composites=True)  # PerReplica → tensors
            carried = [i for i, leaf in enumerate(leaves) if tf.is_tensor(leaf)]

            def more(i, values, optional):
                return tf.logical_and(i < n - 1, optional.has_value())

            def another(i, values, optional):
                later = tf.nest.flatten(step(optional.get_value()), expand_composites=True)
                if len(later) != len(leaves):
                    raise TbkitValueError(
                        f"{self._name} returned {len(later)} values in a later step and "
                        f"{len(leaves)} in its first: with steps_per_call={n} a step must "
                        "return the same structure every time."
                    )
                following = tf.cond(i + 1 < n - 1, iterator.get_next_as_optional,
                                    lambda: optional)  # fmt: skip
                return i + 1, [later[k] for k in carried], following

            start = (tf.constant(0), [leaves[k] for k in carried], iterator.get_next_as_optional())
            # One iteration at a time: a step's reads and writes of its variables (the step's
            # own among them) must not overlap the next step's.
            _, last, _ = tf.while_loop(more, another, start, parallel_iterations=1)
            for k, value in zip(carried, last, strict=True):
                leaves[k] = value
            return tf.nest.pack_sequence_as(outputs, leaves, expand_composites=True)

        return body

    @property
    def _name(self) -> str:
        return getattr(self._fn, "__qualname__", "the step")

    def __call__(self, *args, **kwargs):
        if not args:
            raise TbkitTypeError(
                f"{self._name} runs steps_per_call={self.steps_per_call} steps per call and "
                f"takes its data as its last positional argument: {_DATA} (got no argument)."
            )
        *leading, data = args
        dataset = _is_dataset(data)
        iterator = self._iterator(data) if dataset else data
        if not _is_iterator(iterator):
            raise TbkitTypeError(expected("data", _DATA, data))
        try:
            return super().__call__(*leading, iterator, **kwargs)
        except tf.errors.OutOfRangeError as e:
            if dataset:  # the next call starts the dataset again
                self._iterators.pop(id(data), None)
            raise StopIteration(
                f"{self._name}: the data ended before this call (no step ran)"
            ) from e

    def _iterator(self, dataset: Any) -> Any:
        """The iterator kept for ``dataset`` (made on its first call, and after it ended)."""
        kept = self._iterators.get(id(dataset))
        if kept is None or kept[0] is not dataset:
            kept = self._iterators[id(dataset)] = (dataset, iter(dataset))
        return kept[1]


def _readable(value: Any) -> Any:
    """A variable returned by a step is read there (a loop carries tensors, not variables)."""
    return tf.convert_to_tensor(value) if isinstance(value, tf.Variable) else value


def _is_dataset(data: Any) -> bool:
    return isinstance(data, (tf.data.Dataset, tf.distribute.DistributedDataset))


def _is_iterator(data: Any) -> bool:
    return isinstance(data, (tf.data.Iterator, tf.distribute.DistributedIterator))
