"""tf.summary.record_if is honoured by decorated steps, ops outside them and the Keras callback.

A bool in force when a call starts is read on the host (no retrace); a callable or tensor in
force where the step traces is combined in the graph with tbkit's sampling. Everything is
read back with TensorBoard's own loader (tests/tbreader.py) and ``tbkit.read_records``.
"""

import threading

import keras
import numpy as np
import pytest
import tensorflow as tf
from tbreader import steps
from test_keras import DenseModel

import tbkit
from tbkit.keras import TensorBoardRecords

STEPS = 8


def body(x):
    """tbkit ops of every kind, one in a branch of the user's, and the user's own summary."""
    tbkit.scalar("s", x, every=1)
    tbkit.record("r", {"x": x, "name": "run"}, every=1)
    tbkit.histogram("h", tf.fill([3], x), every=1)
    tbkit.scalar("alarm", x, level="error", when=x >= 0.0)  # true on every step
    if x >= 0.0:  # a tf.cond: the op is guarded in its branch
        tbkit.scalar("branch", x, every=1)
    tf.summary.scalar("own", x)  # records where info records: every step here
    return x


TAGS = ("s", "r", "h", "alarm", "branch", "own")


def run(logdir, calls, fn=body, **step_options):
    """Call a decorated ``fn`` once per entry of ``calls`` (a context factory, or None) and
    return the tracing count and ``{tag: steps}`` as TensorBoard reads them."""
    with tbkit.SummaryLogger(str(logdir), every={"info": 1}) as log:
        step = log.train_step(fn, **step_options)
        for i, around in enumerate(calls):
            if around is None:
                step(tf.constant(float(i)))
            else:
                with around(log):
                    step(tf.constant(float(i)))
        traces = step.experimental_get_tracing_count()
    return traces, steps(str(logdir))


def off(log):
    return tf.summary.record_if(False)


@pytest.mark.parametrize("first", ["outside", "inside"])
def test_calls_inside_record_if_false_write_nothing_and_later_calls_write(tmp_path, first):
    calls = [None, None, off, off, off, None, None, None]
    if first == "inside":  # the step traces inside record_if(False): nothing of it is kept
        calls = [off, off, off, None, None, off, None, None]
    traces, recorded = run(tmp_path, calls)
    on = [i for i, around in enumerate(calls) if around is None]
    assert traces == 1
    assert recorded == {tag: on for tag in TAGS}
    records = list(tbkit.read_records(str(tmp_path), tag="r"))
    assert [(r.step, r.fields) for r in records] == [(i, {"x": float(i), "name": "run"})
                                                      for i in on]


def test_a_numpy_false_and_an_eager_false_tensor_are_read_on_the_host_too(tmp_path):
    calls = [None, lambda log: tf.summary.record_if(np.bool_(False)),
             lambda log: tf.summary.record_if(tf.constant(False)),
             lambda log: tf.summary.record_if(np.bool_(True)), None]
    traces, recorded = run(tmp_path, calls)
    assert traces == 1
    assert recorded == {tag: [0, 3, 4] for tag in TAGS}


def test_a_callable_condition_at_trace_time_is_combined_with_every(tmp_path):
    def every_third(x):
        tbkit.scalar("s", x, every=3)
        tbkit.record("r", {"x": x}, every=3)
        tbkit.histogram("h", tf.fill([3], x), every=3, level="info")
        tbkit.scalar("alarm", x, level="error", when=x >= 0.0)
        tf.summary.scalar("own", x)

    with tbkit.SummaryLogger(str(tmp_path), every={"info": 3}) as log:
        step = log.train_step(every_third)
        with tf.summary.record_if(lambda: tf.equal(log.step % 2, 0)):
            for i in range(13):
                step(tf.constant(float(i)))
        assert step.experimental_get_tracing_count() == 1
    recorded = steps(str(tmp_path))
    assert {tag: recorded[tag] for tag in ("s", "r", "h", "own")} == {
        tag: [0, 6, 12] for tag in ("s", "r", "h", "own")}
    assert recorded["alarm"] == [0, 2, 4, 6, 8, 10, 12]  # when= is under record_if too


def test_a_bool_variable_condition_at_trace_time_is_read_on_every_call(tmp_path):
    flag = tf.Variable(True)
    with tbkit.SummaryLogger(str(tmp_path), every={"info": 2}) as log:
        step = log.train_step(body)
        with tf.summary.record_if(flag):
            for i in range(STEPS):
                flag.assign(i not in (2, 3, 4, 5))
                step(tf.constant(float(i)))
        assert step.experimental_get_tracing_count() == 1
    recorded = steps(str(tmp_path))
    assert recorded == {"s": [0, 1, 6, 7], "r": [0, 1, 6, 7], "h": [0, 1, 6, 7],
                        "alarm": [0, 1, 6, 7], "branch": [0, 1, 6, 7], "own": [0, 6]}


def compiled_body(x):
    tbkit.scalar("s", x, every=1)
    tbkit.record("r", {"x": x}, every=1)
    tbkit.histogram("h", tf.fill([3], x), every=1)
    tbkit.scalar("alarm", x, level="error", when=x >= 0.0)
    return x


def test_jit_compile_honours_record_if_false_and_a_traced_callable(tmp_path):
    calls = [None, off, off, None, off, None]
    traces, recorded = run(tmp_path / "off", calls, compiled_body, jit_compile=True)
    assert traces == 1
    assert recorded == {tag: [0, 3, 5] for tag in ("s", "r", "h", "alarm")}

    with tbkit.SummaryLogger(str(tmp_path / "odd")) as log:
        step = log.train_step(compiled_body, jit_compile=True)
        with tf.summary.record_if(lambda: tf.equal(log.step % 2, 1)):
            for i in range(6):
                step(tf.constant(float(i)))
    assert steps(str(tmp_path / "odd")) == {tag: [1, 3, 5] for tag in ("s", "r", "h", "alarm")}


def test_a_level_set_inside_record_if_false_is_kept_after_it(tmp_path):
    def levels(x):
        tbkit.scalar("info", x, every=1)
        tbkit.scalar("warning", x, every=1, level="warning")

    with tbkit.SummaryLogger(str(tmp_path)) as log:
        step = log.train_step(levels)
        step(tf.constant(0.0))
        with tf.summary.record_if(False):
            step(tf.constant(1.0))
            log.set_level("warning")
            assert log.level == "warning"
            step(tf.constant(2.0))
        step(tf.constant(3.0))
        assert log.level == "warning"
        with tf.summary.record_if(False):
            step(tf.constant(4.0))
        log.set_level("info")  # set while the last call was muted: seen by the next
        step(tf.constant(5.0))
    assert steps(str(tmp_path)) == {"info": [0, 5], "warning": [0, 3, 5]}


def test_a_checkpoint_saved_inside_record_if_false_holds_the_users_level(tmp_path):
    def one(x):
        tbkit.scalar("x", x, every=1)

    log = tbkit.SummaryLogger(str(tmp_path / "run"), level="info")
    step = log.train_step(one)
    with tf.summary.record_if(False):
        step(tf.constant(0.0))
        saved = tf.train.Checkpoint(logger=log).save(str(tmp_path / "ckpt" / "in"))
    # Still muted after the block (the next call unmutes): the checkpoint holds the level.
    after = tf.train.Checkpoint(logger=log).save(str(tmp_path / "ckpt" / "after"))
    log.close()
    names = dict(tf.train.list_variables(saved))
    assert "logger/threshold/.ATTRIBUTES/VARIABLE_VALUE" in names  # the key of a variable
    for path in (saved, after):
        value = tf.train.load_variable(path, "logger/threshold/.ATTRIBUTES/VARIABLE_VALUE")
        assert int(value) == tbkit.LEVELS.index("info")

    resumed = tbkit.SummaryLogger(str(tmp_path / "resumed"))
    step = resumed.train_step(one)
    step(tf.constant(1.0))
    with tf.summary.record_if(False):
        step(tf.constant(2.0))
        tf.train.Checkpoint(logger=resumed).restore(saved).assert_existing_objects_matched()
        assert resumed.level == "info" and int(resumed.step.numpy()) == 1
        step(tf.constant(3.0))  # restored while muted: still muted
    step(tf.constant(4.0))
    resumed.close()
    assert steps(str(tmp_path / "resumed")) == {"x": [0, 2]}


def test_ops_outside_a_decorated_step_honour_record_if(tmp_path):
    with tbkit.SummaryLogger(str(tmp_path)) as log:

        @log.train_step
        def step():
            pass

        @tf.function
        def own(x):  # the user's own function: record_if is read where it traces
            tbkit.scalar("traced_off", x, level="error")

        with tf.summary.record_if(False):
            tbkit.scalar("eager_off", 1.0, level="error")
            step()  # mutes the logger's decorated calls
            own(tf.constant(1.0))
        tbkit.scalar("eager_after", 1.0, level="error")  # the mute is not for ops outside
        own(tf.constant(2.0))
        with tf.summary.record_if(lambda: tf.equal(log.step % 2, 0)):
            tbkit.scalar("callable", 1.0, level="error")  # step 1: off
            step()
            tbkit.scalar("callable2", 1.0, level="error")  # step 2: on
    assert steps(str(tmp_path)) == {"eager_after": [1], "callable2": [2]}


def test_two_threads_with_their_own_record_if_and_loggers(tmp_path):
    barrier = threading.Barrier(2)
    errors = []

    def train(name, muted):
        try:
            with tbkit.SummaryLogger(str(tmp_path / name)) as log:
                step = log.train_step(lambda x: tbkit.scalar("x", x, every=1))
                for i in range(6):
                    barrier.wait()
                    if muted and i % 2:
                        with tf.summary.record_if(False):
                            step(tf.constant(float(i)))
                    else:
                        step(tf.constant(float(i)))
        except Exception as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)
            barrier.abort()

    threads = [threading.Thread(target=train, args=(n, n == "muted")) for n in ("muted", "on")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert steps(str(tmp_path / "muted")) == {"x": [0, 2, 4]}
    assert steps(str(tmp_path / "on")) == {"x": list(range(6))}


class LoggingModel(DenseModel):
    """A custom train step that logs with tbkit and with its own tf.summary call."""

    def train_step(self, data):
        outputs = super().train_step(data)
        tbkit.scalar("custom", outputs["loss"], every=1)
        tf.summary.scalar("plain", outputs["loss"])
        return outputs


def fit(model, callback, epochs=1, **options):
    x = np.stack([np.arange(40), np.linspace(-1, 1, 40)], axis=1).astype("float32")
    y = (0.5 * x[:, 1:] + 0.1).astype("float32")
    model.fit(x, y, batch_size=10, epochs=epochs, shuffle=False, verbose=0,
              validation_data=(x[:10], y[:10]), callbacks=[callback], **options)


@pytest.mark.parametrize("run_eagerly", [False, True])
def test_the_keras_callback_writes_nothing_in_a_fit_inside_record_if_false(tmp_path, run_eagerly):
    keras.utils.set_random_seed(0)
    model = LoggingModel()
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse", run_eagerly=run_eagerly)
    with TensorBoardRecords(tmp_path, every=1) as callback:
        with tf.summary.record_if(False):
            fit(model, callback)  # 4 batches, steps 0-3
        fit(model, callback)  # steps 4-7, epoch 0 again
        with tf.summary.record_if(False):
            fit(model, callback)
            model.evaluate(np.ones([10, 2], "float32"), np.ones([10, 1], "float32"),
                           verbose=0, callbacks=[callback])
    train = steps(str(tmp_path / "train"))
    for tag in ("batch_loss", "batch", "custom", "plain"):
        assert train[tag] == [4, 5, 6, 7], tag
    assert train["epoch_loss"] == [0]
    assert steps(str(tmp_path / "validation")) == {"epoch_loss": [0]}
