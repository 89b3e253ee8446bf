"""tbkit in ``model.fit``: a Keras callback that logs from inside the compiled train step.

``TensorBoardRecords`` has Keras build the train function around a wrapped ``train_step`` and
swaps it in for the length of ``fit``: each traced call collects the batch metrics and every
``tbkit`` op of a custom ``train_step`` with a :class:`~tbkit.summary.collector.StepCollector`,
which writes them in one recorded branch on the steps the policy picks. The decision is made
in the graph, so a batch that records nothing costs a few integer ops and no host round-trip.
The callback overrides no per-batch hook (Keras would run it on the host after every batch, and
turns its asynchronous batch dispatch off for such callbacks). Epoch metrics are written at
epoch end.

The step is ``model.optimizer.iterations`` (or the int64 variable given as ``step=``): the
global batch counter, read before the batch, saved with the model so a resumed fit continues.
"""

from __future__ import annotations

import contextlib
import functools
import os
import warnings
import weakref
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import keras
import tensorflow as tf

from tbkit.data import levels
from tbkit.data.errors import TbkitTypeError, TbkitValueError, expected
from tbkit.summary import context, ops, recording, schedule
from tbkit.summary.collector import StepCollector, collecting, users_summaries
from tbkit.summary.logger import SummaryLogger

_STEP_EXPECTED = "a scalar int64 variable that the train step advances once per batch"
_EVERY_EXPECTED = "a positive int, a Schedule, or a dict of level name to either"
_XLA_WARNING = (
    "tbkit.keras.TensorBoardRecords compiles this fit's train step without XLA "
    "(jit_compile=False): TensorFlow has no XLA kernel for writing summaries. The model keeps "
    "jit_compile for evaluate and predict. A custom loop can keep XLA with "
    "@log.train_step(jit_compile=True), which writes outside the compiled part."
)


def _as_every(every: Any) -> Mapping[str, Any] | None:
    """``every=`` of the callback as ``SummaryLogger(every=...)``: an int or Schedule is info's."""
    if every is None or isinstance(every, Mapping):
        return every
    if isinstance(every, schedule.Schedule) or (isinstance(every, int) and not isinstance(
            every, bool)):
        return {"info": every}
    raise TbkitTypeError(expected("every", _EVERY_EXPECTED, every))


class TensorBoardRecords(keras.callbacks.Callback):
    """Log ``model.fit`` to TensorBoard with tbkit: batch metrics and records decided in graph.

    Writes two runs, as Keras's own ``TensorBoard`` callback does: ``logdir/train`` and
    ``logdir/validation``. In ``train``:

    * ``batch_<metric>`` scalars (``batch_loss``, ...) and one ``batch`` record of them all:
      what ``train_step`` returns (the running means the progress bar shows), at the info
      level's interval, on the step axis;
    * whatever a custom ``train_step`` logs with ``tbkit.scalar/histogram/record/text``, and
      its own ``tf.summary`` calls (these record where the info level records);
    * ``epoch_<metric>`` and ``epoch_learning_rate`` at step = epoch (0-based), at epoch end.

    In ``validation``: ``epoch_<metric>`` of the validation data at step = epoch.

    Args:
        logdir: the folder holding the two runs.
        every: recording intervals: an int or :class:`tbkit.Schedule` for the info level
            (batch metrics are info), or a dict per level as ``SummaryLogger(every=...)``.
            Default: tbkit's (info every 100 steps, debug every 1 000).
        level: the threshold; ops below it record nothing.
        step: the step, a scalar int64 variable that the train step advances once per batch.
            Default: ``model.optimizer.iterations``. Pass one when ``fit`` does not apply
            ``model.optimizer`` once per batch (a GAN's ``train_step`` with two optimizers).
        batch_metrics: write the ``batch_*`` scalars and the ``batch`` record.
        max_queue: summaries each writer queues before writing to disk.
        flush_millis: longest time between flushes of each writer.

    A model compiled with ``jit_compile=True`` (Keras's ``"auto"`` picks it when a GPU is
    present) trains without XLA while this callback runs, with a one-time warning: summaries
    cannot be written inside an XLA-compiled function.

    The runs stay open between fits (each ``fit`` ends with a flush), so fitting again reuses
    the traced train function; :meth:`close` (or leaving ``with callback:``) closes them.
    """

    def __init__(
        self,
        logdir: str | os.PathLike,
        *,
        every: int | schedule.Schedule | Mapping[str, int | schedule.Schedule] | None = None,
        level: str = "debug",
        step: Any = None,
        batch_metrics: bool = True,
        max_queue: int = 100,
        flush_millis: int = 10_000,
    ):
        super().__init__()
        if not isinstance(logdir, (str, os.PathLike)):
            raise TbkitTypeError(expected("logdir", "a folder path (str or os.PathLike)", logdir))
        if not isinstance(batch_metrics, bool):
            raise TbkitTypeError(expected("batch_metrics", "a bool", batch_metrics))
        if step is not None and not _is_step(step):
            raise TbkitTypeError(expected("step", _STEP_EXPECTED, step))
        self._every = _as_every(every)
        schedule.resolve_every(self._every)  # fail here, not when fit starts
        levels.level_index(level)
        for arg, value in (("max_queue", max_queue), ("flush_millis", flush_millis)):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise TbkitValueError(expected(arg, "a positive int", value))
        self._logdir = os.fspath(logdir)
        self._level = level
        self._step = step
        self._batch_metrics = batch_metrics
        self._writer_options = {"max_queue": max_queue, "flush_millis": flush_millis}
        self._train: SummaryLogger | None = None
        self._open: list[SummaryLogger] = []  # closed by close(), or when the callback dies
        weakref.finalize(self, _close_eagerly, self._open)
        self._validation: SummaryLogger | None = None
        self._built: tuple | None = None  # (model's train function, logger, ours)
        self._restore: tuple | None = None  # (model, its own train function) during fit
        self._warned: set[str] = set()
        self._epoch_start_step = 0

    # -- the runs -----------------------------------------------------------------------------

    @property
    def train_logger(self) -> SummaryLogger | None:
        """The ``train`` run's logger, from the first ``fit`` until :meth:`close`."""
        return self._train

    @property
    def validation_logger(self) -> SummaryLogger | None:
        """The ``validation`` run's logger, once ``fit`` has validation metrics to write."""
        return self._validation

    def _logger(self, run: str, step: tf.Variable) -> SummaryLogger:
        logger = SummaryLogger(os.path.join(self._logdir, run), every=self._every,
                               level=self._level, step=step, **self._writer_options)
        self._open.append(logger)
        return logger

    def _step_variable(self) -> Any:
        if self._step is not None:
            return self._step
        optimizer = getattr(self.model, "optimizer", None)
        iterations = getattr(optimizer, "iterations", None)
        if not _is_step(iterations):
            raise TbkitValueError(
                "tbkit.keras.TensorBoardRecords needs a step: model.optimizer.iterations is not "
                f"{_STEP_EXPECTED} (got {iterations!r} that is a {type(iterations)}). Pass step=."
            )
        return iterations

    # -- fit ----------------------------------------------------------------------------------

    def open(self, model: keras.Model) -> SummaryLogger:
        """Open the ``train`` run for ``model`` (compiled) now rather than when ``fit`` starts,
        and return its logger: e.g. to attach a :class:`tbkit.SummaryHandler` before training.
        """
        self.set_model(model)
        return self._open_train()

    def _open_train(self) -> SummaryLogger:
        step = self._step_variable()
        if self._train is None or not _same_variable(self._train.step, step):
            self._close_loggers()
            self._train = self._logger("train", step)
        return self._train

    def on_train_begin(self, logs=None) -> None:
        self._restore_model()  # a fit that raised never reached on_train_end
        self._open_train().check_earlier_run()
        model = self.model
        own = model.train_function
        if self._built is None or self._built[0] is not own or self._built[1] is not self._train:
            self._built = (own, self._train, self._build_train_function(model))
        model.train_function = self._built[2]
        self._restore = (model, own)
        # fit's record_if: False mutes the train step for this fit (its epoch scalars, written
        # eagerly with tf.summary, honour it by themselves); a callable is traced into it.
        self._train.follow_recording(recording.state())
        self._epoch_start_step = int(self._train.step.numpy())

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        self._epoch_start_step = int(self._train.step.numpy())

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        logs = dict(logs or {})
        optimizer = getattr(self.model, "optimizer", None)
        if isinstance(optimizer, keras.optimizers.Optimizer) and "learning_rate" not in logs:
            logs["learning_rate"] = float(tf.convert_to_tensor(optimizer.learning_rate))
        train = {k: v for k, v in logs.items() if not k.startswith("val_")}
        validation = {k[len("val_"):]: v for k, v in logs.items() if k.startswith("val_")}
        _write_epoch(self._train, train, epoch)
        if validation:
            if self._validation is None:
                self._validation = self._logger("validation", self._train.step)
                self._validation.check_earlier_run()
            _write_epoch(self._validation, validation, epoch)
        if int(self._train.step.numpy()) == self._epoch_start_step:
            self._warn_once(
                "step",
                "tbkit.keras.TensorBoardRecords: the step did not advance during epoch "
                f"{epoch}, so every batch wrote at step {self._epoch_start_step} and TensorBoard "
                "keeps one value per (tag, step). Pass step=, a variable the train step "
                "advances once per batch.",
            )

    def on_train_end(self, logs=None) -> None:
        self._restore_model()
        self._train.follow_recording(None)  # the mute lasts one fit
        for logger in (self._train, self._validation):
            if logger is not None:
                logger.flush()

    # -- lifetime -----------------------------------------------------------------------------

    def close(self) -> None:
        """Close both runs; the next ``fit`` with this callback opens new event files.

        Call it after a ``fit`` that raised, too: it gives the model back its own train
        function. Runs left open are flushed at interpreter exit.
        """
        self._restore_model()
        self._close_loggers()

    def __enter__(self) -> TensorBoardRecords:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _restore_model(self) -> None:
        if self._restore is not None:
            model, own = self._restore
            model.train_function = own
            self._restore = None

    def _close_loggers(self) -> None:
        _close_eagerly(self._open)
        self._train = self._validation = None
        self._built = None

    # -- the train step -----------------------------------------------------------------------

    def _build_train_function(self, model: keras.Model) -> Callable:
        """Keras's train function, made by Keras around a ``train_step`` that logs with tbkit.

        The model's ``train_step`` is replaced only while Keras builds the function; nothing is
        traced until ``fit`` calls it.
        """
        own_step = model.__dict__.get("train_step")  # an instance attribute to give back
        object.__setattr__(model, "train_step", self._logging_step(model.train_step))
        jit = bool(model.jit_compile)
        if jit:
            self._warn_once("jit", _XLA_WARNING)
            model.jit_compile = False
        try:
            model.make_train_function(force=True)
            return model.train_function
        finally:
            if jit:
                model.jit_compile = True  # evaluate and predict keep XLA
            if own_step is None:
                object.__delattr__(model, "train_step")
            else:
                object.__setattr__(model, "train_step", own_step)

    def _logging_step(self, train_step: Callable) -> Callable:
        logger, batch_metrics = self._train, self._batch_metrics
        name = f"{type(self.model).__name__}.train_step"
        callback = weakref.ref(self)  # the callback holds this function: no reference cycle

        @functools.wraps(train_step)
        def logging_train_step(data):
            step = logger.step.value()
            eager = tf.executing_eagerly()  # run_eagerly=True: nothing traces, ops write now
            # Both read the record_if of fit here, before the body's own.
            target = _EagerStep(logger, step) if eager else StepCollector(logger, step, name)
            # Traced, the collector is shared with the replica threads of a tf.distribute fit.
            targeting = _pushed(target) if eager else collecting(target)
            with targeting:
                with users_summaries(logger, step, target.condition):
                    outputs = train_step(data)
                if batch_metrics and callback() is not None:
                    callback()._log_batch_metrics(outputs)
            if not eager:
                target.emit(live=outputs)
            return outputs

        return logging_train_step

    def _log_batch_metrics(self, outputs: Any) -> None:
        """Hand the metrics ``train_step`` returned to the collector: a scalar each, and one
        ``batch`` record holding them all (at trace time; written on the info level's steps)."""
        if not isinstance(outputs, Mapping):
            return
        fields = {}
        for key, value in _flat(outputs).items():
            try:
                tensor = tf.convert_to_tensor(value)
            except (TypeError, ValueError):
                tensor = None
            if tensor is not None and tensor.shape.rank == 0 and (
                tensor.dtype.is_floating or tensor.dtype.is_integer
            ):
                ops.scalar(f"batch_{key}", tensor)
                fields[key] = tensor
            else:
                self._warn_once(
                    f"metric:{key}",
                    f"tbkit.keras.TensorBoardRecords logs scalar metrics only: {key!r} is left "
                    f"out (got {value!r}).",
                )
        if fields:
            ops.record("batch", fields)

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, UserWarning, stacklevel=3)


@contextlib.contextmanager
def _pushed(target: Any) -> Iterator[None]:
    context.push(target)
    try:
        yield
    finally:
        context.pop(target)


class _EagerStep:
    """The target of tbkit ops in a train step Keras runs eagerly: each op is written (or not)
    at once, behind its own guard, at the step the batch started with."""

    def __init__(self, logger: SummaryLogger, step: tf.Tensor):
        self._logger, self._step = logger, step
        self.condition = recording.in_graph(recording.state())  # fit's record_if, if callable

    def submit(self, pending: Any) -> None:
        # The threshold as the graph reads it: muted while fit runs inside record_if(False).
        self._logger.write_guarded(pending, self._step, self._logger.threshold.read_value(),
                                   self.condition)


def _flat(logs: Mapping[str, Any]) -> dict[str, Any]:
    """Nested dicts merged into one, by their own keys, as Keras flattens the logs it shows."""
    flat: dict[str, Any] = {}
    for key, value in logs.items():
        flat.update(_flat(value) if isinstance(value, Mapping) else {key: value})
    return flat


def _close_eagerly(loggers: list[SummaryLogger]) -> None:
    """Close ``loggers`` eagerly. Garbage collection may run a finalizer while some
    ``tf.function`` traces; outside ``init_scope`` the flush would become an op of that graph,
    which then fails when it runs because the writer is gone."""
    with tf.init_scope():
        while loggers:
            loggers.pop().close()


def _is_step(step: Any) -> bool:
    variable = _unwrap(step)
    return (isinstance(variable, tf.Variable) and variable.dtype == tf.int64
            and variable.shape.rank == 0)


def _same_variable(a: Any, b: Any) -> bool:
    """Whether two steps are one variable (a Keras variable wraps a ``tf.Variable``)."""
    return _unwrap(a) is _unwrap(b)


def _unwrap(variable: Any) -> Any:
    return variable.value if isinstance(variable, keras.Variable) else variable


def _write_epoch(logger: SummaryLogger, values: Mapping[str, Any], epoch: int) -> None:
    """``epoch_<name>`` scalars at step = epoch; leaving ``as_default`` flushes the run."""
    with logger.writer.as_default(step=epoch):
        for name, value in values.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                tf.summary.scalar(f"epoch_{name}", value)
