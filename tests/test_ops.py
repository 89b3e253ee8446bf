"""Each op gives the same summary eagerly, in a decorated step, in a user's tf.function, and as
its pure twin (tbkit.summary_pb); histograms also match TensorBoard's own numpy histogram."""

import collections
import json

import numpy as np
import pytest
import tensorflow as tf
from tbreader import values
from tensorboard.plugins.histogram import summary_v2 as tb_histogram
from tensorboard.util import tensor_util

import tbkit
from tbkit.summary import ops, summary_pb

Point = collections.namedtuple("Point", ["x", "y"])
DATA = np.random.default_rng(7).normal(size=(64, 16)).astype(np.float32)

CASES = {
    "scalar_float64": (
        lambda: tbkit.scalar("s", tf.constant(2.5, tf.float64)),
        summary_pb.scalar_pb("s", 2.5),
    ),
    "scalar_int": (lambda: tbkit.scalar("s", tf.constant(7)), summary_pb.scalar_pb("s", 7)),
    "histogram": (
        lambda: tbkit.histogram("h", tf.constant(DATA)),
        summary_pb.histogram_pb("h", DATA),
    ),
    "histogram_buckets": (
        lambda: tbkit.histogram("h", tf.constant(DATA), buckets=7),
        summary_pb.histogram_pb("h", DATA, 7),
    ),
    "histogram_single_value": (
        lambda: tbkit.histogram("h", tf.fill([5], 3.0)),
        summary_pb.histogram_pb("h", np.full(5, 3.0)),
    ),
    "histogram_empty": (
        lambda: tbkit.histogram("h", tf.zeros([0])),
        summary_pb.histogram_pb("h", np.zeros(0)),
    ),
    "record": (
        lambda: tbkit.record(
            "r",
            {"loss": tf.constant(0.1, tf.float32), "step_name": tf.constant('a "quoted"\n'),
             "point": Point(tf.constant(1), 2.0), "flags": tf.constant([True, False]),
             "bad": tf.constant(float("nan"))},
            level="warning",
        ),
        summary_pb.record_pb(
            "r",
            {"loss": np.float32(0.1), "step_name": 'a "quoted"\n',
             "point": Point(np.int32(1), 2.0), "flags": np.array([True, False]),
             "bad": np.float32("nan")},
            level="warning",
        ),
    ),
    "text": (lambda: tbkit.text("t", "hello ✓", level="warning", description="a note"),
             summary_pb.text_pb("t", "hello ✓", level="warning", description="a note")),
}


def write(logdir, mode, log):
    with tbkit.SummaryLogger(logdir, every={"debug": 1, "info": 1}) as logger:
        if mode == "decorated":
            logger.train_step(log)()
        elif mode == "own_function":
            tf.function(log)()
        else:
            log()


@pytest.mark.parametrize("mode", ["eager", "decorated", "own_function"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_op_matches_its_twin(tmp_path, case, mode):
    log, twin = CASES[case]
    write(str(tmp_path), mode, log)
    ((step, written),) = values(str(tmp_path))[twin.value[0].tag]
    expected = twin.value[0]
    assert step == 0
    assert written.metadata.plugin_data.plugin_name == expected.metadata.plugin_data.plugin_name
    assert written.metadata.plugin_data.content == expected.metadata.plugin_data.content
    assert written.metadata.summary_description == expected.metadata.summary_description
    got, want = tensor_util.make_ndarray(written.tensor), tensor_util.make_ndarray(expected.tensor)
    assert got.dtype == want.dtype and got.shape == want.shape
    if got.dtype == object:
        assert got.tolist() == want.tolist()  # the same text, byte for byte
        for text in got.reshape(-1) if case == "record" else ():
            json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard {c}"))
    else:
        np.testing.assert_array_equal(got, want)


def test_scalar_keeps_subnormal_constants(tmp_path):
    """Grappler zeroes a positive subnormal float constant folded into the recorded branch."""
    tiny = np.array([1e-40, 1.4e-45, -1e-40, 1.1754942e-38], np.float32)

    def log():
        for i, value in enumerate(tiny):
            tbkit.scalar(f"s{i}", tf.constant(value))
        tbkit.scalar("stacked", tf.stack([tf.constant(tiny[0]), tf.constant(tiny[0])])[1])

    for mode in ("eager", "decorated", "own_function"):
        logdir = str(tmp_path / mode)
        write(logdir, mode, log)
        written = {tag: tensor_util.make_ndarray(pairs[0][1].tensor)
                   for tag, pairs in values(logdir).items()}  # fmt: skip
        got = np.array([written[f"s{i}"] for i in range(len(tiny))] + [written["stacked"]])
        want = np.append(tiny, tiny[0])
        assert got.view(np.uint32).tolist() == want.view(np.uint32).tolist(), mode


@pytest.mark.parametrize("bucket_count", [1, 7, 30])
def test_histogram_agrees_with_tensorboards_numpy_histogram(bucket_count):
    ours = summary_pb.buckets(DATA, bucket_count)
    theirs = tensor_util.make_ndarray(
        tb_histogram.histogram_pb("h", DATA, buckets=bucket_count).value[0].tensor
    )
    np.testing.assert_allclose(ours, theirs, rtol=1e-12)
    assert ours[:, 2].sum() == DATA.size


def test_histogram_in_graph_drops_nan_like_the_twin():
    data = np.array([1.0, np.nan, 2.0, 3.0], np.float32)
    graph = tf.function(lambda x: ops.bucketize(x, 4))(tf.constant(data)).numpy()
    np.testing.assert_array_equal(graph, summary_pb.buckets(data, 4))
