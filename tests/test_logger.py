"""SummaryLogger: lifetime, flushing, step ownership, checkpoints and threads."""

import subprocess
import sys
import textwrap
import threading

import pytest
import tensorflow as tf
from eventfiles import next_second
from tbreader import steps

import tbkit


def test_leaving_with_closes_and_flushes(tmp_path):
    with tbkit.SummaryLogger(str(tmp_path), max_queue=1000, flush_millis=10**9) as log:
        tbkit.scalar("x", 1.0, level="error")
    assert log.closed
    assert steps(str(tmp_path)) == {"x": [0]}


def test_an_exception_inside_with_still_flushes(tmp_path):
    with pytest.raises(ZeroDivisionError):
        with tbkit.SummaryLogger(str(tmp_path), max_queue=1000, flush_millis=10**9):
            tbkit.scalar("x", 1.0, level="error")
            raise ZeroDivisionError("in the middle of training")
    assert steps(str(tmp_path)) == {"x": [0]}


def test_a_logger_never_closed_is_flushed_at_interpreter_exit(tmp_path):
    script = textwrap.dedent(
        f"""
        import tensorflow as tf, tbkit
        log = tbkit.SummaryLogger({str(tmp_path)!r}, max_queue=1000, flush_millis=10**9)

        @log.train_step
        def step():
            tbkit.scalar("x", 1.0, every=1)

        for _ in range(3):
            step()
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    assert steps(str(tmp_path)) == {"x": [0, 1, 2]}


def test_a_closed_logger_refuses_to_write(tmp_path):
    log = tbkit.SummaryLogger(str(tmp_path))

    @log.train_step
    def step():
        tbkit.scalar("x", 1.0)

    step()
    log.close()
    message = (
        f"SummaryLogger({str(tmp_path)!r}) is closed: create a new logger (and decorate the "
        "step with it) to write again."
    )
    with pytest.raises(tbkit.LoggerClosedError) as raised:
        step()
    assert str(raised.value) == message
    with pytest.raises(tbkit.LoggerClosedError):
        with log.as_default():
            pass


def test_a_users_function_traced_under_a_closed_logger_fails_clearly(tmp_path):
    first = tbkit.SummaryLogger(str(tmp_path / "a"))

    @tf.function
    def users_own(x):
        tbkit.scalar("x", x, level="error")

    with first.as_default():
        users_own(tf.constant(1.0))
    first.close()
    with tbkit.SummaryLogger(str(tmp_path / "b")).as_default():
        with pytest.raises(tf.errors.InvalidArgumentError,
                           match="writes to the closed SummaryLogger at .*a. A tf.function "
                                 "keeps the logger it was traced under"):
            users_own(tf.constant(2.0))
    assert steps(str(tmp_path / "a")) == {"x": [0]}


def test_a_decorated_step_inside_a_users_function_fails_clearly_once_closed(tmp_path):
    log = tbkit.SummaryLogger(str(tmp_path), every={"info": 1})

    @log.train_step
    def step(x):
        tbkit.scalar("x", x)

    @tf.function
    def loop(x):  # traces the decorated step once, into the user's own function
        step(x)

    loop(tf.constant(1.0))
    log.close()
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match="writes to the closed SummaryLogger at .* trace it again under an "
                             "open logger"):
        loop(tf.constant(2.0))
    assert steps(str(tmp_path)) == {"x": [0]}


def test_a_step_carries_only_its_step_and_threshold_into_each_call(tmp_path):
    """The writer and the open flag are looked up by name inside the write branch: not inputs
    of every call (each costs a few µs, even on steps that record nothing)."""
    with tbkit.SummaryLogger(str(tmp_path)) as log:

        @log.train_step
        def step(x):
            tbkit.record("r", {"x": x}, every=1)
            tbkit.scalar("rare", x, every=1000)  # a nested branch: it gets the writer passed in

        for i in range(3):
            step(tf.constant(float(i)))
        graph = step.function.get_concrete_function(tf.TensorSpec([], tf.float32)).graph
        carried = {id(external) for external, _ in graph.captures}
    assert carried == {id(log.step.handle), id(log.threshold.handle)}
    assert steps(str(tmp_path)) == {"r": [0, 1, 2], "rare": [0]}


def test_nested_with_closes_at_the_outermost_exit(tmp_path):
    log = tbkit.SummaryLogger(str(tmp_path))
    with log:
        with log:
            tbkit.scalar("inner", 1.0, level="error")
        assert not log.closed
        tbkit.scalar("outer", 1.0, level="error")
    assert log.closed
    assert steps(str(tmp_path)) == {"inner": [0], "outer": [0]}


def test_one_function_decorated_by_two_loggers_writes_two_runs(tmp_path):
    def body(x):
        tbkit.scalar("x", x, every=1)

    first = tbkit.SummaryLogger(str(tmp_path / "a"))
    second = tbkit.SummaryLogger(str(tmp_path / "b"))
    step_a, step_b = first.train_step(body), second.train_step(body)
    for i in range(3):
        step_a(tf.constant(float(i)))
    step_b(tf.constant(9.0))
    first.close()
    step_b(tf.constant(9.0))
    second.close()
    assert steps(str(tmp_path / "a")) == {"x": [0, 1, 2]}
    assert steps(str(tmp_path / "b")) == {"x": [0, 1]}


def test_step_is_checkpointed_with_the_logger(tmp_path):
    def body():
        tbkit.scalar("x", 1.0, every=2)

    log = tbkit.SummaryLogger(str(tmp_path / "run"))
    step = log.train_step(body)
    for _ in range(5):
        step()
    log.set_level("warning")
    path = tf.train.Checkpoint(logger=log).save(str(tmp_path / "ckpt" / "c"))
    log.close()

    next_second()
    resumed = tbkit.SummaryLogger(str(tmp_path / "run"))
    tf.train.Checkpoint(logger=resumed).restore(path).assert_existing_objects_matched()
    assert int(resumed.step.numpy()) == 5
    assert int(resumed.threshold.numpy()) == tbkit.LEVELS.index("warning")
    resumed.set_level("debug")
    step = resumed.train_step(body)
    for _ in range(3):
        step()
    resumed.close()
    assert steps(str(tmp_path / "run")) == {"x": [0, 2, 4, 6]}


def test_a_shared_step_is_advanced_by_its_owner_only(tmp_path):
    optimizer = tf.keras.optimizers.SGD(0.1)
    weight = tf.Variable(1.0)
    log = tbkit.SummaryLogger(str(tmp_path), step=optimizer.iterations)

    @log.train_step
    def step():
        with tf.GradientTape() as tape:
            loss = weight * weight
        optimizer.apply_gradients([(tape.gradient(loss, weight), weight)])
        tbkit.scalar("loss", loss, every=1)

    for _ in range(4):
        step()
    log.close()
    assert int(optimizer.iterations.numpy()) == 4
    assert steps(str(tmp_path)) == {"loss": [0, 1, 2, 3]}


def test_decorated_steps_traced_in_four_threads_at_once_do_not_mix(tmp_path):
    names = ["t0", "t1", "t2", "t3"]
    barrier = threading.Barrier(len(names))
    errors = []

    def work(name):
        try:
            with tbkit.SummaryLogger(str(tmp_path / name), every={"info": 1}) as log:

                @log.train_step
                def step(x):
                    barrier.wait(timeout=60)  # every thread traces at the same time
                    tbkit.scalar(name, x)

                for i in range(30):
                    step(tf.constant(float(i)))
        except Exception as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(name,)) for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert errors == []
    for name in names:
        assert steps(str(tmp_path / name)) == {name: list(range(30))}


def test_loggers_in_two_threads_do_not_mix(tmp_path):
    errors = []

    def work(name):
        try:
            with tbkit.SummaryLogger(str(tmp_path / name)) as log:
                for _ in range(20):
                    tbkit.scalar(name, 1.0, level="error")
                    log.step.assign_add(1)
        except Exception as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert steps(str(tmp_path / "a")) == {"a": list(range(20))}
    assert steps(str(tmp_path / "b")) == {"b": list(range(20))}
