"""``@log.train_step(steps_per_call=N)``: N steps per graph call, logged exactly as N calls.

Each exactness test runs the same deterministic step twice, one step per call and N steps per
call, and compares the (tag, step, value) sets read back with TensorBoard's own loader, its
``EventAccumulator`` and ``tbkit.read_records``.
"""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from tbreader import summaries
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import tbkit
from tbkit.data.errors import TbkitTypeError, TbkitValueError
from tbkit.summary.multistep import MultiStep
from tbkit.summary.step import TrainStep

BATCHES = 25


def identity(x):
    return x


def dataset(n=BATCHES):
    """``n`` batches of 4 seeded draws, and the batch's index; NaN in batch 17."""
    x = np.random.default_rng(3).normal(size=(n, 4)).astype(np.float32)
    if n > 17:
        x[17, 0] = np.nan
    return tf.data.Dataset.from_tensor_slices((x, np.arange(n)))


def make_step(log, **options):
    """A step that logs with every kind of rule, on values that depend on the step order."""
    w = tf.Variable(tf.ones([4]))

    @log.train_step(**options)
    def step(x, i):
        finite = tf.where(tf.math.is_finite(x), x, 0.0)
        w.assign(w * 0.9 + finite)  # the state carries from step to step
        loss = tf.reduce_sum(w) + x[0] * 0.0  # NaN in batch 17 only
        tbkit.scalar("loss", loss, every=3)
        tbkit.scalar("batch", i, level="warning", every=1)
        tbkit.histogram("w", w, level="debug", every=5)
        tbkit.record("train", {"loss": loss, "i": i, "first": x[0]},
                     every=tbkit.Schedule({0: 2, 10: 4}), keep=3)  # fmt: skip
        tbkit.record("anomaly", {"i": i}, level="error", when=~tf.math.is_finite(loss))
        tbkit.text("note", tf.strings.as_string(i), when=tf.equal(i % 7, 0))
        tf.summary.scalar("user", loss * 2.0)  # the user's own: on the info level's steps
        tbkit.scalar("neg", -loss, level="info")  # info: every 2 (the logger's every)
        if_branch = tf.cond(i > 15, lambda: tbkit.scalar("late", i) or i, lambda: i)
        return {"loss": loss, "i": if_branch}

    return step


def run(logdir, steps_per_call):
    """All batches, one step per call or ``steps_per_call`` (a divisor of 10) per call; the
    threshold is raised to info at step 10, and steps 20 to 24 are called inside
    ``record_if(False)``."""
    with tbkit.SummaryLogger(str(logdir), every={"info": 2}) as log:
        if steps_per_call == 1:
            step = make_step(log)
            calls = [lambda x=x, i=i: step(x, i) for x, i in dataset()]
        else:
            step = make_step(log, steps_per_call=steps_per_call)
            iterator = iter(dataset())
            calls = [lambda: step(iterator)] * math.ceil(BATCHES / steps_per_call)
        outputs = []
        for call in calls:
            at = int(log.step.numpy())
            if at == 10:
                log.set_level("info")
            if at >= 20:
                with tf.summary.record_if(False):
                    outputs.append(call())
            else:
                outputs.append(call())
        assert int(log.step.numpy()) == BATCHES
        # a second trace on the first call only: the first made keep='s ring variables
        assert step.experimental_get_tracing_count() == 2
    return outputs


def written(logdir) -> set:
    """(tag, step, value) of every summary, read with TensorBoard's loader."""
    return {(tag, step, value.dtype.str, repr(value.tolist()))
            for tag, pairs in summaries(str(logdir)).items() for step, value in pairs}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("multistep")
    outputs = {n: run(root / f"n{n}", n) for n in (1, 10, 5)}
    return root, outputs


@pytest.mark.parametrize("n", [10, 5])
def test_n_steps_per_call_write_what_one_step_per_call_writes(runs, n):
    root, _ = runs
    one, many = written(root / "n1"), written(root / f"n{n}")
    assert many == one
    tags = {tag for tag, *_ in one}
    assert tags == {"loss", "batch", "w", "train", "train/kept", "anomaly", "note", "user",
                    "neg", "late"}  # fmt: skip
    assert sorted(step for tag, step, *_ in one if tag == "batch") == list(range(20))
    assert sorted(step for tag, step, *_ in one if tag == "user") == list(range(0, 20, 2))
    assert sorted(step for tag, step, *_ in one if tag == "w") == [0, 5]  # debug, until 10


@pytest.mark.parametrize("n", [10, 5])
def test_records_and_event_accumulator_agree(runs, n):
    root, _ = runs

    def records(name):
        return sorted((r.tag, r.step, json.dumps(r.fields, sort_keys=True))
                      for r in tbkit.read_records(str(root), run=name))  # fmt: skip

    one = records("n1")
    assert records(f"n{n}") == one
    assert ("anomaly", 17, json.dumps({"i": 17})) in one
    kept = [step for tag, step, fields in one if tag == "train" and '"kept": true' in fields]
    # keep=3 before each when= that records: the notes at 7 and 14, the NaN at 17 (less
    # the steps sampled every 2, then every 4 from 10, and those dumped already)
    assert kept == [5, 11, 13, 14, 15]

    def accumulated(name):
        acc = EventAccumulator(str(root / name), size_guidance={"tensors": 0}).Reload()
        return {tag: [(e.step, e.tensor_proto.SerializeToString()) for e in acc.Tensors(tag)]
                for tag in acc.Tags()["tensors"]}  # fmt: skip

    assert accumulated(f"n{n}") == accumulated("n1")


def test_returns_the_last_steps_outputs(runs):
    _, outputs = runs
    ones, tens = outputs[1], outputs[10]
    assert len(tens) == 3
    for call, last in zip(tens, (9, 19, 24), strict=True):
        assert int(call["i"]) == last
        assert call["loss"].numpy().tobytes() == ones[last]["loss"].numpy().tobytes()


def test_a_partial_call_at_the_end_then_stop_iteration_and_a_dataset_starts_again(tmp_path):
    with tbkit.SummaryLogger(str(tmp_path)) as log:

        @log.train_step(steps_per_call=10)
        def step(x, i):
            tbkit.scalar("i", i, every=1)
            return i

        data = dataset()
        after = []
        while True:
            try:
                last = step(data)  # a dataset: its iterator is kept between calls
            except StopIteration as stop:
                assert isinstance(stop.__cause__, tf.errors.OutOfRangeError)
                break
            after.append((int(log.step.numpy()), int(last)))
        assert after == [(10, 9), (20, 19), (25, 24)]
        assert int(step(data)) == 9  # a new epoch
        assert int(log.step.numpy()) == 35
        iterator = iter(dataset(12))
        assert [int(i) for i in iter(lambda: step(iterator), None)] == [9, 11]
        with pytest.raises(StopIteration):
            step(iterator)
        assert step.experimental_get_tracing_count() == 1
        assert int(log.step.numpy()) == 47
    assert [s for s, _ in summaries(str(tmp_path))["i"]] == list(range(47))


def test_element_shapes_and_method_binding(tmp_path):
    class Model:
        def __init__(self, log):
            self.total = tf.Variable(0.0)
            self.train = log.train_step(steps_per_call=4)(Model.step)

        def step(self, x):  # a single tensor per element: fn(element)
            self.total.assign_add(tf.reduce_sum(x))
            tbkit.scalar("total", self.total, every=1)
            return self.total

    with tbkit.SummaryLogger(str(tmp_path)) as log:
        model = Model(log)
        model.step = model.train.__get__(model)
        assert isinstance(model.train, MultiStep)
        out = model.step(iter(tf.data.Dataset.range(6).map(lambda i: tf.cast(i, tf.float32))))
        assert float(out) == 6.0  # 0 + 1 + 2 + 3, a variable returned is read at the step
    assert [float(v) for _, v in summaries(str(tmp_path))["total"]] == [0, 1, 3, 6]


def test_jit_compile_writes_what_one_step_per_call_writes(tmp_path):
    def logged(log, **options):
        w = tf.Variable(tf.zeros([3]))

        @log.train_step(jit_compile=True, **options)
        def step(x):
            w.assign_add(x)
            tbkit.scalar("sum", tf.reduce_sum(w), every=2)
            tbkit.record("r", {"w0": w[0], "x": x[1]}, every=3)
            tbkit.histogram("w", w, level="debug", every=4)
            return tf.reduce_sum(w)

        return step

    data = tf.data.Dataset.range(13).map(lambda i: tf.cast(tf.stack([i, i * i, 1]), tf.float32))
    with tbkit.SummaryLogger(str(tmp_path / "one")) as log:
        step = logged(log)
        for x in data:
            step(x)
    with tbkit.SummaryLogger(str(tmp_path / "many")) as log:
        step = logged(log, steps_per_call=5)
        sums = [float(v) for v in iter(lambda: step(data), None)]
        assert sums == [45.0, 340.0, 741.0]  # sum of i + i * i + 1 up to steps 5, 10 and 13
        assert int(log.step.numpy()) == 13
    assert written(tmp_path / "many") == written(tmp_path / "one")


def test_a_tbkit_op_in_a_loop_of_the_users_is_still_refused(tmp_path):
    with tbkit.SummaryLogger(str(tmp_path)) as log:

        @log.train_step(steps_per_call=3)
        def step(x):
            for k in tf.range(3):
                tbkit.scalar("k", k)
            return x

        with pytest.raises(TbkitValueError, match=r"tbkit.scalar\('k'\) is inside a loop of"):
            step(iter(tf.data.Dataset.range(4)))


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        (0, TbkitValueError, "'steps_per_call' must be a positive int (got 0 that is a "
                             "<class 'int'>)."),
        (-1, TbkitValueError, "'steps_per_call' must be a positive int (got -1 that is a "
                              "<class 'int'>)."),
        (1.5, TbkitTypeError, "'steps_per_call' must be a positive int (got 1.5 that is a "
                              "<class 'float'>)."),
        (True, TbkitTypeError, "'steps_per_call' must be a positive int (got True that is a "
                               "<class 'bool'>)."),
    ],
)
def test_bad_steps_per_call_is_refused(tmp_path, value, error, message):
    with tbkit.SummaryLogger(str(tmp_path)) as log:
        with pytest.raises(error) as raised:
            log.train_step(steps_per_call=value)(lambda x: x)
    assert str(raised.value) == message


def test_one_step_per_call_is_the_plain_decorator(tmp_path):
    with tbkit.SummaryLogger(str(tmp_path)) as log:
        step = log.train_step(steps_per_call=1)(lambda x, y: x + y)
        assert type(step) is TrainStep
        assert float(step(1.0, 2.0)) == 3.0


def test_data_that_is_not_an_iterator_is_refused(tmp_path):
    with tbkit.SummaryLogger(str(tmp_path)) as log:
        step = log.train_step(steps_per_call=2)(lambda x: x)
        for data in (iter([1.0, 2.0]), tf.constant([1.0, 2.0])):
            with pytest.raises(TbkitTypeError, match=r"^'data' must be a tf.data iterator"):
                step(data)
        with pytest.raises(TbkitTypeError, match=r"takes its data as its last positional"):
            step()


def test_refused_with_a_profile_window(tmp_path):
    with tbkit.SummaryLogger(str(tmp_path), profile_steps=(2, 4)) as log:
        with pytest.raises(TbkitValueError) as raised:
            log.train_step(steps_per_call=8)(identity)
    assert str(raised.value).startswith(
        "'steps_per_call' must be 1 on a logger with profile_steps (got 8 for 'identity'): "
        "the profiler window is counted on the host, one step per call."
    )


def test_refused_with_an_input_signature(tmp_path):
    spec = [tf.TensorSpec([], tf.float32)]
    with tbkit.SummaryLogger(str(tmp_path)) as log:
        for made in (lambda: log.train_step(steps_per_call=2, input_signature=spec)(identity),
                     lambda: log.train_step(steps_per_call=2)(
                         tf.function(identity, input_signature=spec))):
            with pytest.raises(TbkitValueError, match=(
                    r"^'input_signature' cannot be given with steps_per_call=2 \(got .*Tensor"
                    r"Spec.*for 'identity'\): the call takes an iterator")):
                made()


def test_mirrored_strategy_on_two_cpus(tmp_path):
    """strategy.run inside the step, a distributed iterator: the same records, values and
    returned values (PerReplica ones too) as one step per call."""
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "multistep_mirrored_run.py")
    one, many = tmp_path / "one", tmp_path / "many"
    proc = subprocess.run([sys.executable, script, str(one), str(many)], capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    single, multi = (json.loads(line) for line in proc.stdout.strip().splitlines())
    assert single["final_step"] == multi["final_step"] == 12
    assert single["traces"] == multi["traces"] == 1
    last = [4, 9, 11]  # calls of 5, 5 and 2 steps
    assert multi["sums"] == [single["sums"][s] for s in last]
    assert multi["each"] == [single["each"][s] for s in last]
    assert written(many) == written(one)
    tags = {tag for tag, *_ in written(one)}
    assert tags == {"local", "mean", "each/replica_0", "each/replica_1", "fields", "w", "late"}
    assert [r.step for r in tbkit.read_records(str(many))] == [0, 3, 6, 9]


@pytest.mark.parametrize("n", [1, 10])
def test_a_variable_the_step_updates_reads_updated_on_skipped_and_recorded_steps(tmp_path, n):
    # Reads of a resource after the gate (the step's return, the logged values) must see the
    # step's own update whether the gate's write ran or was skipped.
    w = tf.Variable(0.0)
    with tbkit.SummaryLogger(str(tmp_path)) as log:

        @log.train_step(steps_per_call=n)
        def step(x):
            w.assign_add(x)
            tbkit.scalar("w", w, every=7)
            tbkit.record("r", {"w": w}, every=5)
            return w

        data = iter(tf.data.Dataset.from_tensors(1.0).repeat())
        outputs = [float(step(data if n > 1 else tf.constant(1.0))) for _ in range(40)]
    assert outputs == [float(n * (i + 1)) for i in range(40)]
    records = {r.step: r.fields["w"] for r in tbkit.read_records(str(tmp_path))}
    assert records == {s: s + 1.0 for s in range(0, 40 * n, 5)}
    assert [(s, float(v)) for s, v in summaries(str(tmp_path))["w"]] == [
        (s, s + 1.0) for s in range(0, 40 * n, 7)]


@pytest.mark.parametrize("bad", [0, 5, 7])  # the first step of a call, a later one, the last
def test_a_failing_step_ends_its_call_and_the_loop_goes_on(tmp_path, bad):
    # As the guide says: the steps before the bad one in its call have run and logged; the
    # element taken while the bad step ran is lost with it (one at most, the next one).
    seen = tf.Variable(0, dtype=tf.int64)
    bad = tf.constant(bad, tf.int64)
    with tbkit.SummaryLogger(str(tmp_path)) as log:

        @log.train_step(steps_per_call=4)
        def step(x):
            with tf.control_dependencies([tf.debugging.assert_none_equal(x, bad)]):
                x = tf.identity(x)  # nothing of the bad step runs
            seen.assign_add(tf.bitwise.left_shift(tf.constant(1, tf.int64), x))
            tbkit.record("r", {"x": x}, every=1)
            return x

        data = iter(tf.data.Dataset.range(12))
        failures = 0
        while True:
            try:
                step(data)
            except StopIteration:
                break
            except tf.errors.InvalidArgumentError:
                failures += 1
    assert failures == 1
    ran = [x for x in range(12) if int(seen.numpy()) >> x & 1]
    lost = sorted(set(range(12)) - set(ran) - {int(bad)})
    assert int(bad) not in ran and lost in ([], [int(bad) + 1])
    records = list(tbkit.read_records(str(tmp_path)))
    assert [r.fields["x"] for r in records] == ran
    steps = [r.step for r in records]
    assert steps == sorted(set(steps))
