"""Which (tag, step) pairs a decorated step records over 1 000 steps, read back by TensorBoard."""

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tbreader import steps

import tbkit

STEPS = 1000


def run(logdir, body, steps_=STEPS, between=None, **logger_options):
    """Decorate ``body`` with a fresh logger, call it ``steps_`` times, return the trace count."""
    with tbkit.SummaryLogger(logdir, **logger_options) as log:
        step = log.train_step(body)
        for i in range(steps_):
            if between is not None:
                between(log, i)
            step(tf.constant(float(i)))
        return step.experimental_get_tracing_count()


def test_default_interval_per_level(tmp_path):
    def body(x):
        tbkit.scalar("debug", x, level="debug")
        tbkit.scalar("info", x)
        tbkit.scalar("warning", x, level="warning")
        tbkit.scalar("error", x, level="error")

    assert run(str(tmp_path), body) == 1
    recorded = steps(str(tmp_path))
    assert recorded["debug"] == [0]
    assert recorded["info"] == list(range(0, STEPS, 100))
    assert recorded["warning"] == list(range(STEPS))
    assert recorded["error"] == list(range(STEPS))


def test_default_levels_of_each_op(tmp_path):
    def body(x):
        tbkit.scalar("s", x)
        tbkit.histogram("h", tf.fill([5], x))
        tbkit.record("r", {"x": x})
        tbkit.text("t", "hello")

    run(str(tmp_path), body, every={"info": 10, "debug": 300})
    recorded = steps(str(tmp_path))
    assert recorded["s"] == recorded["r"] == recorded["t"] == list(range(0, STEPS, 10))
    assert recorded["h"] == [0, 300, 600, 900]


def test_user_every_overrides_only_named_levels_and_op_every_overrides_level(tmp_path):
    def body(x):
        tbkit.scalar("info", x)
        tbkit.scalar("debug", x, level="debug")
        tbkit.scalar("own", x, every=250)
        tbkit.record("rec", {"x": x}, every=7)

    run(str(tmp_path), body, every={"info": 7})
    recorded = steps(str(tmp_path))
    assert recorded["info"] == list(range(0, STEPS, 7))
    assert recorded["debug"] == [0]  # default 1000 kept
    assert recorded["own"] == [0, 250, 500, 750]
    assert recorded["rec"] == list(range(0, STEPS, 7))


def test_phased_and_log_spaced_schedules(tmp_path):
    phased = tbkit.Schedule({0: 10, 200: 100})

    def body(x):
        tbkit.scalar("phased", x, every=phased)
        tbkit.scalar("log", x, every=tbkit.Schedule.log_spaced())

    run(str(tmp_path), body)
    recorded = steps(str(tmp_path))
    assert recorded["phased"] == list(range(0, 200, 10)) + list(range(200, STEPS, 100))
    assert recorded["log"] == list(range(10)) + list(range(10, 100, 10)) + list(
        range(100, 1000, 100)
    )
    assert recorded["phased"] == [s for s in range(STEPS) if phased.records(s)]


def test_when_replaces_the_interval_and_respects_the_threshold(tmp_path):
    flagged = {3, 500, 999}

    def body(x):
        hit = tf.reduce_any(tf.equal(x, list(map(float, flagged))))
        tbkit.record("anomaly", {"x": x}, level="error", when=hit)
        tbkit.scalar("hidden", x, level="debug", when=hit)

    run(str(tmp_path), body, level="info")
    recorded = steps(str(tmp_path))
    assert recorded["anomaly"] == sorted(flagged)
    assert "hidden" not in recorded


def test_when_at_a_sparse_level_ignores_that_levels_interval(tmp_path):
    def body(x):
        tbkit.scalar("rare_info", x, when=tf.equal(x, 3.0))  # info's interval is 100

    run(str(tmp_path), body)
    assert steps(str(tmp_path)) == {"rare_info": [3]}


def test_read_records_sees_the_same_steps_as_tensorboard(tmp_path):
    def body(x):
        tbkit.record("log", {"x": x}, every=tbkit.Schedule.log_spaced())
        tbkit.record("dense", {"x": x}, every=tbkit.Schedule({0: 10, 500: 250}))

    run(str(tmp_path), body)
    ours = {}
    for r in tbkit.read_records(str(tmp_path)):
        ours.setdefault(r.tag, []).append(r.step)
        assert r.fields == {"x": float(r.step)} and r.level == "info"
    assert ours == steps(str(tmp_path))
    assert ours["dense"] == list(range(0, 500, 10)) + [500, 750]


def test_threshold_changes_while_training_without_retracing(tmp_path):
    def between(log, i):
        if i == 400:
            log.set_level("warning")
        if i == 800:
            log.set_level("debug")

    def body(x):
        tbkit.scalar("info", x, every=50)
        tbkit.scalar("debug", x, level="debug", every=50)
        tbkit.scalar("warning", x, level="warning", every=50)

    traces = run(str(tmp_path), body, between=between, level="info")
    assert traces == 1
    recorded = steps(str(tmp_path))
    assert recorded["info"] == list(range(0, 400, 50)) + list(range(800, STEPS, 50))
    assert recorded["debug"] == list(range(800, STEPS, 50))
    assert recorded["warning"] == list(range(0, STEPS, 50))


LEVEL_NAMES = ("debug", "info", "warning", "error")


@settings(deadline=None, database=None, max_examples=15,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(
    rules=st.lists(st.tuples(st.integers(0, 3), st.sampled_from([1, 2, 3, 4, 6, 12])),
                   min_size=1, max_size=6, unique=True),
    thresholds=st.lists(st.integers(0, 3), min_size=3, max_size=3),
    when=st.booleans(),
)
def test_rules_nested_behind_each_other_record_exactly_their_steps(
    tmp_path_factory, rules, thresholds, when
):
    """Rules whose steps include another's are written inside it (info every 100 holds the
    debug guard of every 1 000): every (level, interval) mix still records exactly the steps
    its own rule and the threshold in force give, with a when= beside them or not."""
    logdir = str(tmp_path_factory.mktemp("nested"))
    period = 24  # the threshold changes every period steps, through all three values

    def level_at(step):
        return thresholds[(step // period) % len(thresholds)]

    def between(log, i):
        if i % period == 0:
            log.set_level(LEVEL_NAMES[level_at(i)])

    def body(x):
        for level, every in rules:
            tbkit.scalar(f"{LEVEL_NAMES[level]}_{every}", x, level=LEVEL_NAMES[level],
                         every=every)
        if when:
            tbkit.scalar("fives", x, level="info", when=tf.equal(tf.math.floormod(x, 5.0), 0.0))

    run(logdir, body, steps_=3 * period, between=between)
    recorded = steps(logdir)
    for level, every in rules:
        expected = [s for s in range(3 * period) if s % every == 0 and level_at(s) <= level]
        assert recorded.get(f"{LEVEL_NAMES[level]}_{every}", []) == expected, (level, every)
    if when:
        expected = [s for s in range(3 * period) if s % 5 == 0 and level_at(s) <= 1]
        assert recorded.get("fives", []) == expected


def test_ops_in_a_branch_of_the_users_step_are_guarded_there(tmp_path):
    def body(x):
        if x > 500.0:  # autograph: a tf.cond whose branch holds the op
            tbkit.scalar("late", x, every=100)
        tbkit.scalar("always", x, every=100)

    run(str(tmp_path), body)
    recorded = steps(str(tmp_path))
    assert recorded["late"] == [600, 700, 800, 900]
    assert recorded["always"] == list(range(0, STEPS, 100))


def test_values_are_those_of_the_recorded_step(tmp_path):
    from tbreader import summaries

    def body(x):
        tbkit.scalar("x", x * 2.0, every=100)

    run(str(tmp_path), body)
    values = summaries(str(tmp_path))["x"]
    assert [(s, float(v)) for s, v in values] == [(s, 2.0 * s) for s in range(0, STEPS, 100)]


def test_user_tf_summary_follows_the_info_level(tmp_path):
    def body(x):
        tf.summary.scalar("plain", x)
        tf.summary.histogram("plain_histogram", tf.fill([3], x))

    run(str(tmp_path), body, every={"info": 125})
    recorded = steps(str(tmp_path))
    assert recorded["plain"] == recorded["plain_histogram"] == list(range(0, STEPS, 125))


def test_ops_outside_the_decorator_write_at_the_current_step(tmp_path):
    log = tbkit.SummaryLogger(str(tmp_path), every={"info": 2})

    @log.train_step
    def step(x):
        tbkit.scalar("inside", x, every=1)

    @tf.function
    def users_own(x):
        tbkit.scalar("own_function", x)

    with log.as_default():
        for i in range(5):
            tbkit.scalar("eager", float(i))
            users_own(tf.constant(float(i)))
            step(tf.constant(float(i)))
    assert int(log.step.numpy()) == 5
    log.close()
    recorded = steps(str(tmp_path))
    assert recorded["inside"] == [0, 1, 2, 3, 4]
    assert recorded["eager"] == recorded["own_function"] == [0, 2, 4]


def test_evaluation_step_logs_at_the_training_step(tmp_path):
    train = tbkit.SummaryLogger(str(tmp_path / "train"), every={"info": 1})
    validation = tbkit.SummaryLogger(str(tmp_path / "validation"), step=train.step)

    @train.train_step
    def train_step(x):
        tbkit.scalar("loss", x)

    @validation.train_step(advance=False)
    def validation_step(x):
        tbkit.scalar("loss", -x, every=3)

    with train, validation:
        for i in range(10):
            train_step(tf.constant(float(i)))
            validation_step(tf.constant(float(i)))
    assert steps(str(tmp_path / "train"))["loss"] == list(range(10))
    assert steps(str(tmp_path / "validation"))["loss"] == [3, 6, 9]


def test_histogram_on_recorded_steps_only_and_in_tensorboards_format(tmp_path):
    from tbreader import summaries

    data = np.random.default_rng(0).normal(size=(40, 30)).astype(np.float32)

    def body(x):
        tbkit.histogram("h", tf.constant(data) * (x + 1.0), every=500)

    run(str(tmp_path), body)
    values = summaries(str(tmp_path))["h"]
    assert [s for s, _ in values] == [0, 500]
    assert values[0][1].shape == (30, 3) and values[0][1].dtype == np.float64
    assert values[0][1][:, 2].sum() == data.size


@pytest.mark.parametrize("loop", ["tf_range", "while_loop", "named_while_loop", "scan"])
def test_ops_in_a_loop_are_refused_at_trace_time(tmp_path, loop):
    def log_and_step(i):
        tbkit.scalar("in_loop", x_seen[0])
        return i + 1

    x_seen = []

    def body(x):
        x_seen[:] = [x]
        if loop == "tf_range":
            for i in tf.range(3):
                tbkit.scalar("in_loop", x + tf.cast(i, tf.float32))
        elif loop == "while_loop":
            tf.while_loop(lambda i: i < 3, log_and_step, [0])
        elif loop == "named_while_loop":
            tf.while_loop(lambda i: i < 3, log_and_step, [0], name="inner")
        else:
            tf.scan(lambda acc, v: log_and_step(acc), tf.range(3))

    with pytest.raises(tbkit.TbkitValueError, match="'in_loop'\\) is inside a loop of"):
        run(str(tmp_path), body, steps_=1)
