"""@log.train_step(jit_compile=True): the body is compiled with XLA, summaries written outside."""

import numpy as np
import pytest
import tensorflow as tf
from tbreader import summaries

import tbkit


def _run(logdir, jit, level_changes=None):
    """Run the same six steps with or without XLA; returns the step's tracing count."""
    w = tf.Variable(tf.ones([4]), name="w")

    def body(x):
        y = tf.reduce_sum(x * w)
        w.assign_add(x * 0.01)
        tbkit.scalar("y", y, every=2)
        tbkit.scalar("count", tf.size(x), every=1, level="warning")
        tbkit.histogram("w", w, every=3)  # a variable: read after the body, outside XLA
        tbkit.histogram("activations", x * y, every=3)
        fields = {"y": y, "n": tf.size(x), "ok": y > 5.0, "pair": [y, 2.0 * y],
                  "name": "mlp", "kind": tf.constant("const"), "f64": tf.cast(y, tf.float64)}
        tbkit.record("train", fields, every=1)
        tbkit.scalar("big", y, when=y > 10.0)
        return {"y": y, "double": x * 2.0}

    with tbkit.SummaryLogger(str(logdir)) as log:
        step = log.train_step(body, jit_compile=jit)
        for i in range(8):
            if level_changes and i in level_changes:
                log.set_level(level_changes[i])
            out = step(tf.fill([4], float(i)))
        assert out["double"].numpy().tolist() == [14.0] * 4
        return step.experimental_get_tracing_count()


def _assert_same(plain, compiled):
    assert set(plain) == set(compiled)
    for tag in plain:
        assert [s for s, _ in plain[tag]] == [s for s, _ in compiled[tag]], tag
        for (_, a), (_, b) in zip(plain[tag], compiled[tag], strict=True):
            if a.dtype == object:
                assert a.tolist() == b.tolist(), tag
            else:
                np.testing.assert_allclose(a, b, rtol=1e-6, err_msg=tag)


def test_same_tags_steps_and_values_as_without_xla_and_traces_once(tmp_path):
    assert _run(tmp_path / "plain", jit=False) == 1
    assert _run(tmp_path / "xla", jit=True) == 1
    plain, compiled = summaries(str(tmp_path / "plain")), summaries(str(tmp_path / "xla"))
    _assert_same(plain, compiled)
    assert {tag: [s for s, _ in pairs] for tag, pairs in compiled.items()} == {
        "y": [0, 2, 4, 6], "count": list(range(8)), "w": [0, 3, 6], "activations": [0, 3, 6],
        "train": list(range(8)), "big": [3, 4, 5, 6, 7],
    }
    (second,) = [r for r in tbkit.read_records(str(tmp_path / "xla")) if r.step == 1]
    assert second.fields == {"y": 4.0, "n": 4, "ok": False, "pair": [4.0, 8.0], "name": "mlp",
                             "kind": "const", "f64": 4.0}


def test_the_threshold_changes_a_compiled_step_without_retracing(tmp_path):
    changes = {2: "warning", 5: "debug"}
    assert _run(tmp_path / "plain", jit=False, level_changes=changes) == 1
    assert _run(tmp_path / "xla", jit=True, level_changes=changes) == 1
    compiled = summaries(str(tmp_path / "xla"))
    _assert_same(summaries(str(tmp_path / "plain")), compiled)
    assert [s for s, _ in compiled["count"]] == list(range(8))  # warning records throughout
    assert [s for s, _ in compiled["train"]] == [0, 1, 5, 6, 7]


def test_the_body_is_really_compiled_by_xla(tmp_path):
    # A string op has no XLA kernel: compiling the body must fail, while the plain step runs.
    def body(x):
        tbkit.scalar("n", tf.strings.length(tf.strings.as_string(x)), every=1)

    with tbkit.SummaryLogger(str(tmp_path)) as log:
        log.train_step(body)(tf.constant(1.5))
        with pytest.raises(tf.errors.InvalidArgumentError, match="XLA"):
            log.train_step(body, jit_compile=True)(tf.constant(1.5))


def test_a_string_tensor_computed_in_the_body_is_refused_at_trace_time(tmp_path):
    def body(x):
        tbkit.record("r", {"text": tf.strings.as_string(x)}, every=1)

    with tbkit.SummaryLogger(str(tmp_path)) as log:
        step = log.train_step(body, jit_compile=True)
        with pytest.raises(
            tbkit.TbkitValueError,
            match=r"^tbkit.record\('r'\) in the jit_compile=True step .*body: record 'r' "
            r"field 'text' is a string tensor computed in the compiled body, and strings "
            r"cannot leave an XLA computation\.",
        ):
            step(tf.constant(1.0))


def test_an_op_in_a_branch_of_a_compiled_body_is_refused_with_the_way_out(tmp_path):
    def body(x):
        if x > 0:
            tbkit.scalar("positive", x, every=1)
        return x

    with tbkit.SummaryLogger(str(tmp_path)) as log:
        step = log.train_step(body, jit_compile=True)
        with pytest.raises(tbkit.TbkitValueError, match=r"is inside a branch .*when=<the branch"):
            step(tf.constant(1.0))


def test_an_op_in_a_loop_of_a_compiled_body_is_refused_as_without_xla(tmp_path):
    def body(x):
        for _ in tf.range(3):
            tbkit.scalar("looped", x, every=1)
        return x

    with tbkit.SummaryLogger(str(tmp_path)) as log:
        with pytest.raises(tbkit.TbkitValueError, match=r"is inside a loop"):
            log.train_step(body, jit_compile=True)(tf.constant(1.0))


def test_a_users_own_tf_summary_in_a_compiled_body_is_refused_at_trace_time(tmp_path):
    def body(x):
        tf.summary.scalar("mine", x)
        return x

    with tbkit.SummaryLogger(str(tmp_path)) as log:
        step = log.train_step(body, jit_compile=True)
        with pytest.raises(tbkit.TbkitValueError, match=r"^a tf.summary call inside the "
                           r"jit_compile=True step .*body: XLA cannot write summaries"):
            step(tf.constant(1.0))


def test_jit_compile_must_be_a_bool(tmp_path):
    with tbkit.SummaryLogger(str(tmp_path)) as log:
        with pytest.raises(tbkit.TbkitTypeError, match=r"^'jit_compile' must be a bool or None"):
            log.train_step(lambda: None, jit_compile="yes")


def test_input_signature_python_args_and_no_outputs(tmp_path):
    with tbkit.SummaryLogger(str(tmp_path)) as log:

        @log.train_step(jit_compile=True, input_signature=[tf.TensorSpec([None], tf.float32)])
        def step(x):
            tbkit.scalar("total", tf.reduce_sum(x), every=1)

        for n in (1, 2, 3):
            assert step(tf.ones([n])) is None
        assert step.experimental_get_tracing_count() == 1
    assert [(s, float(v)) for s, v in summaries(str(tmp_path))["total"]] == [
        (0, 1.0), (1, 2.0), (2, 3.0)
    ]
