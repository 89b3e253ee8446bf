"""tbkit.keras.TensorBoardRecords: model.fit with in-graph batch summaries, read back for real.

Each test fits a tiny model on a few batches and compares the exact (tag, step) set of each run,
read with TensorBoard's own event loader, with the set the policy implies. Row ``i`` of the data
holds ``i`` in its first column, so a record can say which batch it was written for.
"""

import gc
import json
import pathlib
import re
import warnings
import weakref

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras.src import backend as keras_backend
from keras.src.utils import python_utils
from tbreader import summaries, values

import tbkit
from tbkit.keras import TensorBoardRecords

ROWS, BATCH = 70, 10  # 7 batches per epoch
PER_EPOCH = ROWS // BATCH
BATCH_TAGS = ("batch_loss", "batch_mae", "batch")  # two scalars and the record
EPOCH_TAGS = ("epoch_loss", "epoch_mae", "epoch_learning_rate")


def data(rows=ROWS):
    x = np.stack([np.arange(rows), np.linspace(-1, 1, rows)], axis=1).astype("float32")
    return x, (0.5 * x[:, 1:] + 0.1).astype("float32")


def tiny_model(**compile_options):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse", metrics=["mae"],
                  **compile_options)
    return model


def fit(model, callbacks, epochs=1, **options):
    x, y = data()
    return model.fit(x, y, batch_size=BATCH, epochs=epochs, shuffle=False, verbose=0,
                     callbacks=callbacks, **options)


def tag_steps(run_dir) -> set:
    """The (tag, step) pairs written to a run; each pair written once."""
    pairs = [(tag, step) for tag, found in values(str(run_dir)).items() for step, _ in found]
    assert len(pairs) == len(set(pairs)), f"a (tag, step) was written twice: {sorted(pairs)}"
    return set(pairs)


def expected(tags, steps) -> set:
    return {(tag, step) for tag in tags for step in steps}


def recorded(first, count, every):
    """The steps among ``first .. first+count-1`` that ``every`` records."""
    return [s for s in range(first, first + count) if s % every == 0]


def test_default_policy_writes_batch_metrics_at_info_steps_and_epoch_metrics(tmp_path):
    model = tiny_model()
    history = fit(model, [TensorBoardRecords(tmp_path)])

    assert sorted(p.name for p in tmp_path.iterdir()) == ["train"]  # no validation data
    assert tag_steps(tmp_path / "train") == (
        expected(BATCH_TAGS, [0]) | expected(EPOCH_TAGS, [0])  # info: every 100 steps
    )
    written = summaries(str(tmp_path / "train"))
    assert written["epoch_loss"][0][1] == pytest.approx(history.history["loss"][0], rel=1e-6)
    assert written["epoch_learning_rate"][0][1] == pytest.approx(0.01)
    (record,) = tbkit.read_records(tmp_path)
    assert (record.run, record.tag, record.step, record.level) == ("train", "batch", 0, "info")
    assert record.fields["loss"] == pytest.approx(float(written["batch_loss"][0][1]), rel=1e-6)
    assert record.fields["mae"] == pytest.approx(float(written["batch_mae"][0][1]), rel=1e-6)
    assert int(model.optimizer.iterations.numpy()) == PER_EPOCH
    # The record's metadata says its fields are float32 (the plugin's table shows them so).
    (_, first), *_ = values(str(tmp_path / "train"))["batch"]
    assert json.loads(first.metadata.plugin_data.content) == {
        "version": 3, "dtypes": {"loss": "float32", "mae": "float32"}}  # fmt: skip


def test_steps_per_execution_over_several_epochs_keeps_the_global_batch_step(tmp_path):
    model = tiny_model(steps_per_execution=3)  # 7 batches an epoch: executions of 3, 3, 1
    fit(model, [TensorBoardRecords(tmp_path, every=2)], epochs=3)

    steps = recorded(0, 3 * PER_EPOCH, every=2)
    assert tag_steps(tmp_path / "train") == (
        expected(BATCH_TAGS, steps) | expected(EPOCH_TAGS, [0, 1, 2])
    )


class BatchLosses(keras.callbacks.Callback):
    """What fit reports after each batch (a test helper; it overrides a batch hook)."""

    def __init__(self):
        super().__init__()
        self.losses = []

    def on_train_batch_end(self, batch, logs=None):
        self.losses.append(logs["loss"])


def test_each_batch_value_is_the_one_fit_reports_for_the_batch_at_that_step(tmp_path):
    reported = BatchLosses()
    fit(tiny_model(), [TensorBoardRecords(tmp_path, every=1), reported], epochs=2)

    loss = summaries(str(tmp_path / "train"))["batch_loss"]
    assert [step for step, _ in loss] == list(range(2 * PER_EPOCH))
    assert [float(v) for _, v in loss] == pytest.approx(reported.losses, rel=1e-6)
    records = list(tbkit.read_records(tmp_path, tag="batch"))
    assert [r.fields["loss"] for r in records] == pytest.approx(reported.losses, rel=1e-6)


def test_eager_fit_writes_the_same_steps(tmp_path):
    fit(tiny_model(run_eagerly=True), [TensorBoardRecords(tmp_path, every=3)], epochs=2)
    assert tag_steps(tmp_path / "train") == (
        expected(BATCH_TAGS, recorded(0, 2 * PER_EPOCH, every=3)) | expected(EPOCH_TAGS, [0, 1])
    )


def test_resume_with_initial_epoch_continues_the_step_after_save_and_load(tmp_path):
    model = tiny_model()
    fit(model, [TensorBoardRecords(tmp_path / "logs", every=4)], epochs=2)
    model.save(tmp_path / "model.keras")

    restored = keras.models.load_model(tmp_path / "model.keras")
    assert int(restored.optimizer.iterations.numpy()) == 2 * PER_EPOCH
    fit(restored, [TensorBoardRecords(tmp_path / "logs", every=4)], epochs=4, initial_epoch=2)

    steps = recorded(0, 4 * PER_EPOCH, every=4)  # 0, 4, ..., 24: on across the two fits
    assert tag_steps(tmp_path / "logs" / "train") == (
        expected(BATCH_TAGS, steps) | expected(EPOCH_TAGS, [0, 1, 2, 3])
    )


def test_validation_metrics_go_to_their_own_run_on_the_epoch_axis(tmp_path):
    model = tiny_model()
    x, y = data(30)
    history = fit(model, [TensorBoardRecords(tmp_path, every=5)], epochs=2,
                  validation_data=(x, y))

    assert tag_steps(tmp_path / "train") == (
        expected(BATCH_TAGS, recorded(0, 2 * PER_EPOCH, every=5)) | expected(EPOCH_TAGS, [0, 1])
    )
    assert tag_steps(tmp_path / "validation") == expected(("epoch_loss", "epoch_mae"), [0, 1])
    assert list(tbkit.read_records(tmp_path, run="validation")) == []
    val_loss = [float(v) for _, v in summaries(str(tmp_path / "validation"))["epoch_loss"]]
    assert val_loss == pytest.approx(history.history["val_loss"], rel=1e-6)


class DenseModel(keras.Model):
    """One dense layer, subclassed: the base of the models whose own train_step logs."""

    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(1)

    def call(self, x):
        return self.dense(x)

    def descend(self, x, y):
        """One gradient step on a batch, as Keras's own train_step takes it: the prediction,
        the loss and the gradients, for a custom train_step to log."""
        with tf.GradientTape() as tape:
            y_pred = self(x, training=True)
            loss = self.compute_loss(x=x, y=y, y_pred=y_pred)
        grads = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.trainable_variables, strict=True))
        return y_pred, loss, grads


class LoggingModel(DenseModel):
    """A subclassed model whose own train_step logs with tbkit and with tf.summary."""

    def train_step(self, data):
        x, y = data
        y_pred, loss, grads = self.descend(x, y)
        tbkit.scalar("grad_norm", tf.linalg.global_norm(grads), every=3)
        tbkit.record("custom", {"first_row": x[0, 0], "loss": loss}, every=2)
        tbkit.histogram("kernel", self.dense.kernel, level="debug", every=5)
        tf.summary.scalar("plain", loss)  # the user's own summary: where info records
        return self.compute_metrics(x, y, y_pred)


class CountingModel(LoggingModel):
    """Counts how often Keras traces its train step."""

    traces = 0

    def train_step(self, data):
        self.traces += 1
        return keras.Model.train_step(self, data)


def test_a_custom_train_step_logs_with_tbkit_at_the_right_step(tmp_path):
    keras.utils.set_random_seed(0)
    model = LoggingModel()
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse", metrics=["mae"])
    fit(model, [TensorBoardRecords(tmp_path, every={"info": 4})], epochs=2)

    total = 2 * PER_EPOCH
    assert tag_steps(tmp_path / "train") == (
        expected(BATCH_TAGS + ("plain",), recorded(0, total, every=4))
        | expected(("grad_norm",), recorded(0, total, every=3))
        | expected(("custom",), recorded(0, total, every=2))
        | expected(("kernel",), recorded(0, total, every=5))
        | expected(EPOCH_TAGS, [0, 1])
    )
    records = list(tbkit.read_records(tmp_path, tag="custom"))
    assert {r.run for r in records} == {"train"}
    assert [r.step for r in records] == recorded(0, total, every=2)
    for r in records:  # the record was written for the batch of its step
        assert r.fields["first_row"] == (r.step % PER_EPOCH) * BATCH
        assert r.level == "info" and np.isfinite(r.fields["loss"])


def test_jit_compile_is_turned_off_for_the_train_step_with_one_warning(tmp_path):
    model = tiny_model(jit_compile=True, steps_per_execution=2)
    callback = TensorBoardRecords(tmp_path, every=3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit(model, [callback], epochs=2)
        fit(model, [callback], epochs=3, initial_epoch=2)
    xla = [w for w in caught if "XLA" in str(w.message)]
    assert len(xla) == 1 and issubclass(xla[0].category, UserWarning)
    assert "jit_compile=False" in str(xla[0].message)

    assert tag_steps(tmp_path / "train") == (
        expected(BATCH_TAGS, recorded(0, 3 * PER_EPOCH, every=3))
        | expected(EPOCH_TAGS, [0, 1, 2])
    )
    assert model.jit_compile is True  # evaluate and predict keep XLA


def test_fitting_again_reuses_the_traced_step_and_a_plain_fit_writes_nothing(tmp_path):
    keras.utils.set_random_seed(0)
    model = CountingModel()
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse", metrics=["mae"])
    with TensorBoardRecords(tmp_path, every=5) as callback:
        fit(model, [callback], epochs=1)
        traced = model.traces
        fit(model, [callback], epochs=2, initial_epoch=1)
        assert model.traces == traced  # the second fit ran the function the first one traced
        assert "train_step" not in vars(model)  # replaced only while Keras built the function
        fit(model, [], epochs=3, initial_epoch=2)  # the model's own train function
    assert model.traces > traced
    assert tag_steps(tmp_path / "train") == (
        expected(BATCH_TAGS, recorded(0, 2 * PER_EPOCH, every=5)) | expected(EPOCH_TAGS, [0, 1])
    )
    assert int(model.optimizer.iterations.numpy()) == 3 * PER_EPOCH


class Interrupt(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        raise KeyboardInterrupt


def test_after_a_fit_that_raised_close_gives_the_model_its_own_train_function(tmp_path):
    model = tiny_model()
    callback = TensorBoardRecords(tmp_path, every=1)
    with pytest.raises(KeyboardInterrupt):
        fit(model, [callback, Interrupt()])
    callback.close()
    assert callback.train_logger is None
    fit(model, [])
    assert tag_steps(tmp_path / "train") == (
        expected(BATCH_TAGS, range(PER_EPOCH)) | expected(EPOCH_TAGS, [0])
    )


def test_after_a_fit_that_raised_the_next_fit_with_the_callback_goes_on(tmp_path):
    model = tiny_model()
    callback = TensorBoardRecords(tmp_path, every=2)
    with pytest.raises(KeyboardInterrupt):
        fit(model, [callback, Interrupt()])
    fit(model, [callback], epochs=2, initial_epoch=1)
    callback.close()
    fit(model, [])
    assert tag_steps(tmp_path / "train") == (
        expected(BATCH_TAGS, recorded(0, 2 * PER_EPOCH, every=2)) | expected(EPOCH_TAGS, [0, 1])
    )


def test_a_callback_collected_while_a_function_traces_closes_its_runs_outside_it(tmp_path):
    model = tiny_model()
    callback = TensorBoardRecords(tmp_path, every=3)
    fit(model, [callback])
    alive = weakref.ref(callback)
    del callback

    @tf.function
    def traced(x):
        gc.collect()  # the callback's runs are closed here, while this function traces
        return x + 1.0

    assert float(traced(tf.constant(1.0))) == 2.0  # its graph holds no op on a closed writer
    assert alive() is None
    assert tag_steps(tmp_path / "train") == (
        expected(BATCH_TAGS, recorded(0, PER_EPOCH, every=3)) | expected(EPOCH_TAGS, [0])
    )


def test_a_step_that_does_not_advance_warns(tmp_path):
    class NoOptimizer(LoggingModel):
        def train_step(self, data):
            x, y = data
            return self.compute_metrics(x, y, self(x))

    model = NoOptimizer()
    model.compile(optimizer="sgd", loss="mse", metrics=["mae"])
    with pytest.warns(UserWarning, match="the step did not advance during epoch 0"):
        fit(model, [TensorBoardRecords(tmp_path, every=1)])


def test_an_explicit_step_variable_is_used(tmp_path):
    class Counted(LoggingModel):
        def __init__(self):
            super().__init__()
            self.batches = tf.Variable(100, dtype=tf.int64, trainable=False)

        def train_step(self, data):
            x, y = data
            self.batches.assign_add(1)
            return self.compute_metrics(x, y, self(x))

    model = Counted()
    model.compile(optimizer="sgd", loss="mse", metrics=["mae"])
    fit(model, [TensorBoardRecords(tmp_path, every=2, step=model.batches)])
    assert tag_steps(tmp_path / "train") == (
        expected(BATCH_TAGS, recorded(100, PER_EPOCH, every=2)) | expected(EPOCH_TAGS, [0])
    )


BATCH_HOOKS = ("on_batch_begin", "on_batch_end", "on_train_batch_begin", "on_train_batch_end",
               "on_test_batch_begin", "on_test_batch_end", "on_predict_batch_begin",
               "on_predict_batch_end")


def test_an_optimizer_whose_iterations_count_updates_needs_an_explicit_step(tmp_path):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(gradient_accumulation_steps=2), loss="mse")
    with pytest.raises(tbkit.TbkitValueError, match=r"model.optimizer.iterations is not a "
                       r"scalar int64 variable .* Pass step=\.$"):
        fit(model, [TensorBoardRecords(tmp_path)])


def test_the_callback_overrides_no_batch_hook_by_kerass_own_criterion(monkeypatch):
    ours, theirs = TensorBoardRecords("unused"), keras.callbacks.TensorBoard("unused")
    for hook in BATCH_HOOKS:  # Keras marks its do-nothing hooks; an override loses the mark
        assert python_utils.is_default(getattr(ours, hook)), hook
    assert not python_utils.is_default(theirs.on_train_batch_end)

    # CallbackList turns asynchronous batch callbacks off when a callback overrides a batch-end
    # hook. The TensorFlow backend never turns them on (IS_THREAD_SAFE is False), so ask it as
    # a thread-safe backend would.
    monkeypatch.setattr(keras_backend, "IS_THREAD_SAFE", True)
    mine = keras.callbacks.CallbackList([ours])
    assert (mine._async_train, mine._async_test, mine._async_predict) == (True, True, True)
    assert not keras.callbacks.CallbackList([theirs])._async_train


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"logdir": 3}, tbkit.TbkitTypeError,
         "'logdir' must be a folder path (str or os.PathLike) (got 3 that is a <class 'int'>)."),
        ({"every": 0}, tbkit.TbkitValueError,
         "'every[\\'info\\']' must be a positive int or a Schedule (got 0 that is a"),
        ({"every": "often"}, tbkit.TbkitTypeError,
         "'every' must be a positive int, a Schedule, or a dict of level name to either (got"),
        ({"level": "loud"}, tbkit.TbkitValueError, "'level' must be one of 'debug', 'info'"),
        ({"batch_metrics": 1}, tbkit.TbkitTypeError, "'batch_metrics' must be a bool (got 1"),
        ({"max_queue": 0}, tbkit.TbkitValueError, "'max_queue' must be a positive int (got 0"),
        ({"step": 5}, tbkit.TbkitTypeError, "'step' must be a scalar int64 variable that the "
         "train step advances once per batch (got 5 that is a <class 'int'>)."),
    ],
)
def test_bad_arguments_are_refused_at_construction(kwargs, error, message):
    kwargs = {"logdir": "logs", **kwargs}
    with pytest.raises(error) as caught:
        TensorBoardRecords(**kwargs)
    assert str(caught.value).startswith(message.replace("\\'", "'"))


def test_the_snippets_of_docs_keras_md_run(tmp_path, monkeypatch, capsys):
    page = pathlib.Path(__file__).parent.parent / "docs" / "keras.md"
    blocks = re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)
    assert len(blocks) >= 4
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(page), "exec"), namespace)  # noqa: S102 - the page's own code
    printed = capsys.readouterr().out
    assert "[0, 5, 10, 15, 20, 25, 30, 35]" in printed
    assert tag_steps(tmp_path / "logs/fit/validation") == expected(
        ("epoch_loss", "epoch_accuracy"), [0, 1, 2]
    )


def test_open_gives_the_train_logger_before_fit_for_the_logging_bridge(tmp_path, pylog):
    model = tiny_model()
    board = TensorBoardRecords(tmp_path, every=2)
    train_logger = board.open(model)
    pylog.addHandler(tbkit.SummaryHandler(train_logger))  # the fixture closes it
    try:
        epoch_end = keras.callbacks.LambdaCallback(
            on_epoch_end=lambda epoch, logs: pylog.info("epoch %d done", epoch)
        )
        fit(model, [board, epoch_end], epochs=2)
        assert board.train_logger is train_logger  # fit used the run opened before it
        pylog.handlers[0].flush()
    finally:
        board.close()
    lines = [(r.step, r.fields["message"]) for r in tbkit.read_records(tmp_path, tag="log")]
    assert lines == [(PER_EPOCH, "epoch 0 done"), (2 * PER_EPOCH, "epoch 1 done")]
    assert {r.step for r in tbkit.read_records(tmp_path, tag="batch")} == set(
        recorded(0, 2 * PER_EPOCH, 2)
    )


def test_a_callback_dropped_after_fit_closes_its_runs_without_the_cycle_collector(tmp_path):
    """No reference cycle: the runs close on the thread that lets the callback go, not on
    whichever thread the cycle collector happens to run (a logging bridge's writer, say)."""
    model = tiny_model()
    board = TensorBoardRecords(tmp_path)
    fit(model, [board])
    gone, train_logger = weakref.ref(board), board.train_logger
    gc.disable()
    try:
        del board
        assert gone() is None and train_logger.closed
    finally:
        gc.enable()
