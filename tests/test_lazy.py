"""Values computed only to be logged move behind the gate (``tbkit.summary.lazy``).

Each test traces a real decorated step, checks which ops the step's graph still uses on every
call (an op nothing uses is dropped by TensorFlow when it runs the function), and reads the
written values back with TensorBoard's loader: a moved value is the value the body computed.
"""

import numpy as np
import pytest
import tensorflow as tf
from tbreader import summaries

import tbkit
from tbkit.keras import TensorBoardRecords


def used(op: tf.Operation) -> bool:
    """Whether the step's graph needs ``op`` on every call: something stateful (the gate's
    call among them) or the step's return value depends on it. TensorFlow drops the rest."""
    returned = {id(t) for t in op.graph.outputs}
    seen, stack = set(), [op]
    while stack:
        op = stack.pop()
        if op in seen:
            continue
        seen.add(op)
        if op.op_def.is_stateful or any(id(t) in returned for t in op.outputs):
            return True
        stack.extend(c for t in op.outputs for c in t.consumers())
    return False


def test_a_value_only_logged_is_computed_behind_the_gate_and_written_the_same(tmp_path):
    made = {}
    with tbkit.SummaryLogger(str(tmp_path)) as log:

        @log.train_step
        def step(x):
            loss = tf.reduce_mean(x)
            norm = tf.sqrt(tf.reduce_sum(tf.square(x)), name="norm_only_logged")
            hits = tf.reduce_mean(tf.cast(x > 1.0, tf.float32), name="share_only_logged")
            made.update(norm=norm, hits=hits, loss=loss)
            tbkit.scalar("norm", norm, every=2)
            tbkit.record("train", {"loss": loss, "hits": hits, "double": norm * 2.0}, every=3)
            return loss

        for i in range(6):
            step(tf.constant([1.0, 2.0, float(i)]))
    for name in ("norm", "hits"):
        assert not used(made[name].op), f"{name} is still computed on every step"
        assert not used(made[name].op.inputs[0].op)
    assert used(made["loss"].op)  # returned: needed on every step, not moved
    norms = {s: np.float32(v) for s, v in summaries(str(tmp_path))["norm"]}
    expected = {i: np.sqrt(np.float32(1.0 + 4.0 + i * i)) for i in (0, 2, 4)}
    assert norms == expected
    records = {r.step: r.fields for r in tbkit.read_records(str(tmp_path), tag="train")}
    assert set(records) == {0, 3}
    assert records[3]["hits"] == np.float32(2 / 3)
    assert records[3]["double"] == 2 * np.sqrt(np.float32(14.0))
    assert records[3]["loss"] == np.float32(2.0)


def test_stateful_ops_and_values_used_elsewhere_stay_on_the_every_step_path(tmp_path):
    made = {}
    with tbkit.SummaryLogger(str(tmp_path)) as log:
        counter = tf.Variable(0.0)

        @log.train_step
        def step():
            draw = tf.random.uniform([], name="draw")  # stateful: another draw if run twice
            shared = tf.square(draw, name="shared")
            counter.assign_add(shared)  # also used by the step: stays
            made.update(draw=draw, shared=shared, double=draw * 2.0, read=counter.read_value())
            tbkit.scalar("draw", draw, every=1)
            tbkit.scalar("double", made["double"], every=1)
            tbkit.scalar("shared", shared, every=1)
            tbkit.scalar("read", made["read"] + 0.0, every=1)

        for _ in range(3):
            step()
    assert not used(made["double"].op)  # moved: computed again from the same draw
    assert used(made["draw"].op) and used(made["shared"].op)
    read = made["read"].op.inputs[0].op  # read_value(): a ReadVariableOp, then an Identity
    assert read.type == "ReadVariableOp" and used(read)  # it runs where the step put it
    found = {tag: [float(v) for _, v in pairs] for tag, pairs in summaries(str(tmp_path)).items()}
    assert found["double"] == [2.0 * d for d in found["draw"]]
    assert found["shared"] == [np.float32(d * d) for d in found["draw"]]
    assert found["read"] == list(np.cumsum(np.float32(found["shared"]), dtype=np.float32))


def write_one_step(logdir, log_it, x, **decorator):
    """Run one call of a decorated step whose logging is ``log_it(x)``; the step returns the
    sum of ``x`` (so nothing logged is returned)."""
    with tbkit.SummaryLogger(str(logdir)) as log:

        @log.train_step(**decorator)
        def step(x):
            log_it(x)
            return tf.reduce_sum(x)

        step(x)


@pytest.mark.parametrize("field, expected", [
    (lambda x: x[1:], [2.0, 3.0, 4.0]),  # slice bounds: constants the copy must see
    (lambda x: x[:1], [1.0]),  # a vector of one, not a number
    (lambda x: tf.reduce_sum(tf.reshape(x, [2, 2]), axis=1), [3.0, 7.0]),
    (lambda x: tf.stack([x[0] * 2.0, tf.constant(1e-40)]), [2.0, 9.9999461e-41]),
])  # fmt: skip
def test_a_moved_value_keeps_its_shape_and_its_constants(tmp_path, field, expected):
    write_one_step(tmp_path, lambda x: tbkit.record("r", {"v": field(x)}, every=1),
                   tf.constant([1.0, 2.0, 3.0, 4.0]))
    assert [r.fields for r in tbkit.read_records(str(tmp_path))] == [{"v": expected}]


def test_several_moved_values_in_one_branch_and_a_run_time_length(tmp_path):
    def log_it(x):
        tbkit.scalar("mean", tf.reduce_mean(x * 2.0), every=1)
        tbkit.record("r", {"v": x * 3.0, "top": tf.reduce_max(x) + 0.0}, every=1)
        tbkit.scalar("tiny", tf.where(x[0] > 0, tf.constant(1e-40), x[0]), every=1)

    write_one_step(tmp_path, log_it, tf.constant([1.0, 2.0]),
                   input_signature=[tf.TensorSpec([None], tf.float32)])
    assert [r.fields for r in tbkit.read_records(str(tmp_path))] == [{"v": [3.0, 6.0],
                                                                      "top": 2.0}]
    found = {tag: np.float32(v) for tag, ((_, v),) in summaries(str(tmp_path)).items()
             if tag != "r"}  # fmt: skip
    assert found == {"mean": np.float32(3.0), "tiny": np.float32(1e-40)}


def test_keras_fit_with_a_moved_vector_field(tmp_path):
    import keras
    from test_keras import DenseModel

    class Model(DenseModel):
        def train_step(self, data):
            x, y = data
            y_pred, loss, _ = self.descend(x, y)
            err = tf.abs(y_pred - y)
            tbkit.record("r", {"err": tf.reshape(err, [-1])[:2], "mean": tf.reduce_mean(err)})
            return {"loss": loss}

    x = np.array([[1, 2], [3, 4], [5, 6], [7, 8]], np.float32)
    y = np.array([[1], [2], [3], [4]], np.float32)
    model = Model()
    model(x[:1])
    model.dense.set_weights([np.ones([2, 1], np.float32), np.zeros([1], np.float32)])
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")  # the weights stay
    with TensorBoardRecords(str(tmp_path), every=1) as callback:
        model.fit(x, y, batch_size=2, epochs=1, callbacks=[callback], verbose=0, shuffle=False)
    records = [(r.step, r.fields) for r in tbkit.read_records(str(tmp_path / "train"), tag="r")]
    assert records == [(0, {"err": [2.0, 5.0], "mean": 3.5}),
                       (1, {"err": [8.0, 11.0], "mean": 9.5})]  # fmt: skip


@pytest.mark.parametrize("steps_per_call", [1, 3])
def test_a_value_made_under_control_dependencies_moves_with_its_constants(
    tmp_path, steps_per_call
):
    # A constant made under tf.control_dependencies (the argmax axis here) waits for ops the
    # copy does not hold: the user's check, and with steps_per_call the first step's element.
    made = {}
    with tbkit.SummaryLogger(str(tmp_path)) as log:

        @log.train_step(steps_per_call=steps_per_call)
        def step(x, y):
            logits = tf.matmul(x, tf.constant([[1.0, 0.0, 2.0], [0.0, 3.0, 0.0]]))
            with tf.control_dependencies([tf.debugging.assert_all_finite(logits, "finite")]):
                hits = tf.equal(tf.argmax(logits, axis=1, output_type=tf.int32), y)
                made["accuracy"] = accuracy = tf.reduce_mean(tf.cast(hits, tf.float32))
            tbkit.record("train", {"accuracy": accuracy}, every=2)
            return tf.reduce_sum(logits)

        x = np.array([[[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [1.0, 1.0]]] * 3, np.float32)
        y = np.array([[2, 1], [1, 0]] * 3, np.int32)  # batches 0, 2, 4 all hit; 1, 3, 5 half
        if steps_per_call == 1:
            for i in range(6):
                step(tf.constant(x[i]), tf.constant(y[i]))
        else:
            data = iter(tf.data.Dataset.from_tensor_slices((x, y)))
            step(data), step(data)
    assert not used(made["accuracy"].op)
    records = {r.step: r.fields["accuracy"] for r in tbkit.read_records(str(tmp_path))}
    assert records == {0: 1.0, 2: 1.0, 4: 1.0}
