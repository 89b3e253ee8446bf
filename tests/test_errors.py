"""Every user error names the argument, what was expected and what came; texts pinned here."""

import re

import pytest
import tensorflow as tf

import tbkit
from tbkit.data import levels


def exact(message):
    return "^" + re.escape(message) + "$"


@pytest.mark.parametrize(
    "every, message",
    [
        (0, "'every' must be a positive int or a Schedule (got 0 that is a <class 'int'>)."),
        (-5, "'every' must be a positive int or a Schedule (got -5 that is a <class 'int'>)."),
        ("10", "'every' must be a positive int or a Schedule (got '10' that is a <class 'str'>)."),
        (True, "'every' must be a positive int or a Schedule (got True that is a <class 'bool'>)."),
        (2.5, "'every' must be a positive int or a Schedule (got 2.5 that is a <class 'float'>)."),
    ],
)
def test_bad_every_on_an_op(tmp_path, every, message):
    with tbkit.SummaryLogger(str(tmp_path)):
        with pytest.raises(tbkit.TbkitValueError, match=exact(message)):
            tbkit.scalar("x", 1.0, every=every)


def test_bad_every_on_the_logger(tmp_path):
    with pytest.raises(
        tbkit.TbkitValueError,
        match=exact("'every['info']' must be a positive int or a Schedule "
                    "(got 0 that is a <class 'int'>)."),
    ):
        tbkit.SummaryLogger(str(tmp_path), every={"info": 0})
    with pytest.raises(
        tbkit.TbkitValueError,
        match=exact("'every' must be one of 'debug', 'info', 'warning', 'error' "
                    "(got 'verbose' that is a <class 'str'>)."),
    ):
        tbkit.SummaryLogger(str(tmp_path), every={"verbose": 10})
    with pytest.raises(
        tbkit.TbkitTypeError,
        match=exact("'every' must be a dict of level name to a positive int or a Schedule "
                    "(got 10 that is a <class 'int'>)."),
    ):
        tbkit.SummaryLogger(str(tmp_path), every=10)


@pytest.mark.parametrize(
    "phases, error, message",
    [
        ({}, tbkit.TbkitTypeError,
         "'phases' must be a non-empty mapping of first step to interval (got {} that is a "
         "<class 'dict'>)."),
        ({10: 5}, tbkit.TbkitValueError,
         "'phases' must start at step 0 (got first step 10)."),
        ({0: 10, 100: 0}, tbkit.TbkitValueError,
         "'phases[100]' must be a positive int interval (got 0 that is a <class 'int'>)."),
        ({0: 10, -1: 5}, tbkit.TbkitValueError,
         "'phases' must be keyed by non-negative int steps (got -1 that is a <class 'int'>)."),
    ],
)
def test_bad_schedule(phases, error, message):
    with pytest.raises(error, match=exact(message)):
        tbkit.Schedule(phases)


def test_unknown_level_lists_the_valid_ones(tmp_path):
    message = ("'level' must be one of 'debug', 'info', 'warning', 'error' "
               "(got 'trace' that is a <class 'str'>).")
    with tbkit.SummaryLogger(str(tmp_path)) as log:
        with pytest.raises(tbkit.TbkitValueError, match=exact(message)):
            tbkit.record("r", {"x": 1}, level="trace")
        with pytest.raises(tbkit.TbkitValueError, match=exact(message)):
            log.set_level("trace")
    with pytest.raises(tbkit.TbkitValueError, match=exact(message)):
        tbkit.SummaryLogger(str(tmp_path), level="trace")


def test_non_scalar_to_scalar_is_refused_at_trace_time_naming_tag_and_shape(tmp_path):
    with tbkit.SummaryLogger(str(tmp_path)) as log:

        @log.train_step
        def step(x):
            tbkit.scalar("loss", x)

        with pytest.raises(
            tbkit.TbkitValueError,
            match=exact("tbkit.scalar('loss') needs a scalar (got shape (2, 3)): log a "
                        "histogram, reduce it, or record it as a field."),
        ):
            step(tf.ones([2, 3]))
        assert int(log.step.numpy()) == 0  # refused while tracing: nothing ran


def test_non_numeric_scalar_and_bad_when(tmp_path):
    with tbkit.SummaryLogger(str(tmp_path)):
        with pytest.raises(tbkit.TbkitTypeError,
                           match=exact("tbkit.scalar('s') needs real numbers (got dtype string).")):
            tbkit.scalar("s", "text")
        with pytest.raises(
            tbkit.TbkitTypeError,
            match=exact("'when' of tbkit.scalar('s') must be a scalar bool tensor (got dtype "
                        "float32 and shape ())."),
        ):
            tbkit.scalar("s", 1.0, when=tf.constant(1.0))
        with pytest.raises(
            tbkit.TbkitValueError,
            match=exact("tbkit.scalar('s') takes 'every' or 'when', not both: 'when' replaces "
                        "the interval."),
        ):
            tbkit.scalar("s", 1.0, every=2, when=True)
        with pytest.raises(tbkit.TbkitTypeError,
                           match=exact("'name' must be a non-empty str (got '' that is a "
                                       "<class 'str'>).")):
            tbkit.scalar("", 1.0)


def test_an_op_with_no_active_logger_says_how_to_get_one():
    with pytest.raises(
        tbkit.NoActiveLoggerError,
        match=exact("tbkit.record('train') needs an active SummaryLogger in this thread: call "
                    "it inside a step decorated with @log.train_step, or under `with log:` / "
                    "`with log.as_default():`."),
    ):
        tbkit.record("train", {"loss": 1.0})


@pytest.mark.parametrize(
    "step, message",
    [
        (5, "'step' must be a scalar int64 tf.Variable such as optimizer.iterations "
            "(got 5 that is a <class 'int'>)."),
        (lambda: tf.Variable(0, dtype=tf.int32, name="s32"),
         "'step' must be a scalar int64 tf.Variable such as optimizer.iterations (got the int32 "
         "variable 's32:0' of shape ())."),
        (lambda: tf.Variable([0, 1], dtype=tf.int64, name="vec"),
         "'step' must be a scalar int64 tf.Variable such as optimizer.iterations (got the int64 "
         "variable 'vec:0' of shape (2,))."),
    ],
)
def test_a_step_that_is_not_a_scalar_int64_variable(tmp_path, step, message):
    step = step() if callable(step) else step
    with pytest.raises(tbkit.TbkitTypeError, match=exact(message)):
        tbkit.SummaryLogger(str(tmp_path), step=step)


def test_bad_writer_options(tmp_path):
    with pytest.raises(tbkit.TbkitValueError,
                       match=exact("'max_queue' must be a positive int (got 0 that is a "
                                   "<class 'int'>).")):
        tbkit.SummaryLogger(str(tmp_path), max_queue=0)
    with pytest.raises(tbkit.TbkitTypeError,
                       match=exact("'logdir' must be a folder path (str or os.PathLike) "
                                   "(got None that is a <class 'NoneType'>).")):
        tbkit.SummaryLogger(None)


def test_level_helpers_are_pure_python():
    assert levels.level_index("WARNING") == 2
    assert tbkit.Schedule.every(3) == tbkit.Schedule({0: 3})
    assert repr(tbkit.Schedule.every(3)) == "Schedule.every(3)"
