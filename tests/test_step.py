"""The @log.train_step decorator: tracing, step, outputs, tf.data, and where work happens."""

import pytest
import tensorflow as tf
from tbreader import steps, summaries

import tbkit


def test_traces_once_per_signature_and_returns_outputs_unchanged(tmp_path):
    traces = []

    def body(x, y):
        traces.append(1)
        tbkit.scalar("sum", tf.reduce_sum(x) + y)
        return {"double": x * 2.0, "pair": (y, y + 1.0)}

    with tbkit.SummaryLogger(str(tmp_path)) as log:
        step = log.train_step(body)
        for i in range(20):
            out = step(tf.ones([3]), tf.constant(float(i)))
        assert len(traces) == 1 and step.experimental_get_tracing_count() == 1
        assert set(out) == {"double", "pair"}
        assert out["double"].numpy().tolist() == [2.0, 2.0, 2.0]
        assert [float(t) for t in out["pair"]] == [19.0, 20.0]
        assert int(log.step.numpy()) == 20
    assert step.__name__ == "body"


def test_input_signature_and_reduce_retracing_are_passed_to_tf_function(tmp_path):
    with tbkit.SummaryLogger(str(tmp_path)) as log:

        @log.train_step(input_signature=[tf.TensorSpec([None], tf.float32)])
        def fixed(x):
            tbkit.scalar("n", tf.size(x), every=1)
            return tf.size(x)

        @log.train_step(reduce_retracing=True, advance=False)
        def relaxed(x):
            return tf.reduce_sum(x)

        for n in range(1, 6):
            assert int(fixed(tf.ones([n]))) == n
            relaxed(tf.ones([n]))
        assert fixed.experimental_get_tracing_count() == 1
        assert relaxed.experimental_get_tracing_count() <= 2
    assert steps(str(tmp_path))["n"] == [0, 1, 2, 3, 4]


def test_accepts_a_tf_function_and_keeps_its_signature(tmp_path):
    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
    def body(x):
        tbkit.scalar("total", tf.reduce_sum(x), every=1)
        return x

    with tbkit.SummaryLogger(str(tmp_path)) as log:
        step = log.train_step(body)
        for n in (1, 2, 3):
            step(tf.ones([n]))
        assert step.experimental_get_tracing_count() == 1
    assert steps(str(tmp_path))["total"] == [0, 1, 2]


def test_works_with_tf_data_input(tmp_path):
    data = tf.data.Dataset.range(12).map(lambda i: (tf.cast(i, tf.float32), i)).batch(2)
    with tbkit.SummaryLogger(str(tmp_path), every={"info": 2}) as log:

        @log.train_step
        def step(x, i):
            tbkit.record("batch", {"first": i[0], "mean": tf.reduce_mean(x)})

        for x, i in data:
            step(x, i)
        assert int(log.step.numpy()) == 6
    records = list(tbkit.read_records(str(tmp_path)))
    assert [(r.step, r.fields["first"]) for r in records] == [(0, 0), (2, 4), (4, 8)]


def test_expensive_work_lives_only_inside_recorded_branches(tmp_path):
    with tbkit.SummaryLogger(str(tmp_path)) as log:

        @log.train_step
        def step(x):
            tbkit.histogram("h", x)
            tbkit.record("r", {"x": x[0], "name": tf.strings.as_string(x[0])})
            tbkit.scalar("s", x[0])

        step(tf.ones([8]))
        graph = step.function.get_concrete_function(tf.TensorSpec([8], tf.float32)).graph
    outer = [op.type for op in graph.get_operations()]
    # One Switch routes only the gate's predicate; the recorded work is one call behind it.
    assert outer.count("Switch") == 1 and outer.count("StatefulPartitionedCall") == 1
    outer = set(outer)
    assert not outer & {"Bincount", "DenseBincount", "StringJoin", "WriteSummary"}
    branch_ops = set()
    for function in graph.as_graph_def().library.function:
        branch_ops |= {node.op for node in function.node_def}
    assert {"WriteSummary", "StringJoin"} <= branch_ops
    assert branch_ops & {"Bincount", "DenseBincount"}


def test_the_gates_own_rule_writes_without_a_second_guard(tmp_path):
    """The record at the gate's interval and level is written straight behind the gate; the
    rarer scalar keeps a guard (a call) of its own. Steps recorded are those of each rule."""
    with tbkit.SummaryLogger(str(tmp_path), every={"info": 5}) as log:

        @log.train_step
        def step(x):
            tbkit.record("r", {"x": x})
            tbkit.scalar("s", x, every=10)

        for i in range(21):
            step(tf.constant(float(i)))
        graph = step.function.get_concrete_function(tf.TensorSpec([], tf.float32)).graph
    library = {f.signature.name: f for f in graph.as_graph_def().library.function}
    (outer_call,) = [op for op in graph.get_operations() if op.type == "StatefulPartitionedCall"]
    recorded = library[outer_call.get_attr("f").name]
    inside = [node.op for node in recorded.node_def]
    assert inside.count("WriteSummary") == 1 and inside.count("StatefulPartitionedCall") == 1
    assert steps(str(tmp_path)) == {"r": [0, 5, 10, 15, 20], "s": [0, 10, 20]}


def test_a_step_neither_flushes_nor_reads_logged_variables_on_every_call(tmp_path):
    weight = tf.Variable(tf.ones([4, 4]))
    with tbkit.SummaryLogger(str(tmp_path)) as log:

        @log.train_step
        def step(x):
            tbkit.histogram("weight", weight)
            tbkit.scalar("x", x)
            tf.summary.scalar("users_own", x)

        step(tf.constant(1.0))
        graph = step.function.get_concrete_function(tf.TensorSpec([], tf.float32)).graph
    outer = [op.type for op in graph.get_operations()]
    library = [node.op for f in graph.as_graph_def().library.function for node in f.node_def]
    assert "FlushSummaryWriter" not in outer + library  # data reaches disk by queue and timer
    assert "ReadVariableOp" in library
    (inside,) = [internal for external, internal in graph.captures if external is weight.handle]
    readers = {op.type for op in inside.consumers()}
    assert "ReadVariableOp" not in readers  # the weight is read only when recorded


def test_a_tag_logged_twice_in_one_step_is_refused_at_trace_time(tmp_path):
    with tbkit.SummaryLogger(str(tmp_path)) as log:

        @log.train_step
        def twice(x):
            tbkit.record("train", {"x": x})
            tbkit.record("train", {"y": x})

        with pytest.raises(tbkit.TbkitValueError) as raised:
            twice(tf.constant(1.0))
    assert str(raised.value).startswith(
        "tag 'train' is logged twice in one call of test_a_tag_logged_twice_in_one_step_is_"
        "refused_at_trace_time.<locals>.twice: TensorBoard keeps one value per (tag, step)"
    )


def test_one_tag_in_both_branches_of_an_if_is_allowed_and_writes_the_branch_taken(tmp_path):
    with tbkit.SummaryLogger(str(tmp_path), every={"info": 1}) as log:

        @log.train_step
        def step(x):
            if x > 1.0:
                tbkit.scalar("value", x)
            else:
                tbkit.scalar("value", -x)

        for value in (0.5, 2.0, 1.0):
            step(tf.constant(value))
    from tbreader import summaries

    assert [(s, float(v)) for s, v in summaries(str(tmp_path))["value"]] == [
        (0, -0.5), (1, 2.0), (2, -1.0)
    ]


def test_one_tag_in_the_body_and_in_a_branch_is_refused(tmp_path):
    with tbkit.SummaryLogger(str(tmp_path)) as log:

        @log.train_step
        def step(x):
            tbkit.scalar("value", x)
            if x > 1.0:
                tbkit.scalar("value", -x)

        with pytest.raises(tbkit.TbkitValueError, match="^tag 'value' is logged twice"):
            step(tf.constant(1.0))


def test_decorates_a_method(tmp_path):
    class Trainer:
        def __init__(self, log):
            self.scale = tf.Variable(2.0)
            self.step = log.train_step(self.step_impl)

        def step_impl(self, x):
            tbkit.scalar("scaled", x * self.scale, every=1)
            return x * self.scale

    class Declared:
        log = tbkit.SummaryLogger(str(tmp_path / "declared"))

        @log.train_step
        def train_step(self, x):
            tbkit.scalar("x", x, every=1)
            return x + 1.0

    with tbkit.SummaryLogger(str(tmp_path / "bound")) as log:
        assert float(Trainer(log).step(tf.constant(3.0))) == 6.0
    assert float(Declared().train_step(tf.constant(1.0))) == 2.0
    Declared.log.close()
    assert steps(str(tmp_path / "declared")) == {"x": [0]}
    assert steps(str(tmp_path / "bound")) == {"scaled": [0]}


def test_skipped_steps_leave_later_work_alive(tmp_path):
    """The gate's call is dead on steps that record nothing; nothing after it may be."""
    counter = tf.Variable(0, dtype=tf.int64)
    with tbkit.SummaryLogger(str(tmp_path), every={"info": 4}) as log:

        @log.train_step
        def step():
            # The recorded branch reads both variables; both are written after it.
            tbkit.scalar("counter", counter)
            tbkit.scalar("own_step", log.step)
            return counter.assign_add(1)

        @tf.function
        def epoch():  # the decorated step inlined into a user's loop
            for _ in tf.range(5):
                step()
            return counter.read_value()

        assert int(epoch().numpy()) == 5
        for _ in range(5):
            step()
        assert int(counter.numpy()) == 10 and int(log.step.numpy()) == 10
    logged = {tag: [(s, int(v)) for s, v in got] for tag, got in summaries(str(tmp_path)).items()}
    assert logged["counter"] == [(0, 1), (4, 5), (8, 9)]  # read after the body's increment
    assert logged["own_step"] == [(0, 0), (4, 4), (8, 8)]
