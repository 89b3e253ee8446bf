"""Values over a cap at run time never fail a step: they are written as markers, and every
reader says which run, record and field hold one (issue 13, item 1)."""

from __future__ import annotations

import subprocess
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from tbreader import summaries
from test_cli import TBKIT
from test_keras import DenseModel

import tbkit
from tbkit.data import markers
from tbkit.data.errors import DataLossWarning
from tbkit.keras import TensorBoardRecords

SPEC = [tf.TensorSpec([None], tf.float32), tf.TensorSpec([], tf.string)]
STEPS = 6


def write_run(run_dir) -> None:
    """Steps 0-5 log a vector and a string whose sizes are only known at run time; steps 2 and
    4 go over MAX_ARRAY_LENGTH, step 4 over MAX_STRING_BYTES too."""
    log = tbkit.SummaryLogger(str(run_dir), every={"info": 1})

    @log.train_step(input_signature=SPEC)
    def step(values, note):
        tbkit.record("train", {"values": values, "opt": {"note": note}, "n": tf.size(values)})
        tbkit.record("alarm", {"values": values}, level="error", when=tf.size(values) > 1024)

    for i in range(STEPS):
        n = 2000 if i in (2, 4) else 3
        note = "é" * 9000 if i == 4 else f"step {i}"
        step(tf.range(n, dtype=tf.float32), tf.constant(note))
    log.close()


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("overcap")
    write_run(root / "run")
    return root


def test_steps_over_the_caps_run_and_write_markers(logdir):
    with pytest.warns(DataLossWarning) as caught:
        found = list(tbkit.read_records(logdir))
    train = [r for r in found if r.tag == "train"]
    assert [r.step for r in train] == list(range(STEPS))  # no step failed or was dropped
    over = [r.step for r in train if markers.is_marker(r.fields["values"])]
    assert over == [2, 4]
    body = train[2].fields["values"][markers.KEY]
    assert body == {"cap": "MAX_ARRAY_LENGTH", "limit": 1024, "length": 2000,
                    "head": [float(i) for i in range(markers.HEAD_LENGTH)]}  # fmt: skip
    note = train[4].fields["opt"]["note"][markers.KEY]
    assert (note["bytes"], note["head"]) == (18000, "é" * markers.HEAD_CHARS)
    assert train[3].fields == {"values": [0.0, 1.0, 2.0], "opt": {"note": "step 3"}, "n": 3}
    assert [r.step for r in found if r.tag == "alarm"] == [2, 4]

    messages = [str(w.message) for w in caught]
    assert messages == [
        "tbkit: run 'run' record 'train' field 'values' at step 2 held 2000 elements over "
        "MAX_ARRAY_LENGTH (1024): written as a marker with its size and first values "
        "('tbkit_over_cap', see docs/records.md)",
        "tbkit: run 'run' record 'alarm' field 'values' at step 2 held 2000 elements over "
        "MAX_ARRAY_LENGTH (1024): written as a marker with its size and first values "
        "('tbkit_over_cap', see docs/records.md)",
        "tbkit: run 'run' record 'train' field 'opt.note' at step 4 held 18000 bytes over "
        "MAX_STRING_BYTES (16384): written as a marker with its size and first values "
        "('tbkit_over_cap', see docs/records.md)",
        "tbkit: run 'run' record 'train' held over-cap markers (field and records: 'values' 2).",
        "tbkit: run 'run' record 'alarm' held over-cap markers (field and records: 'values' 2).",
    ]


def test_tensorboards_own_reader_sees_every_step(logdir):
    written = summaries(str(logdir / "run"))
    assert [step for step, _ in written["train"]] == list(range(STEPS))
    assert markers.RAW_KEY in written["train"][2][1][0]


def test_the_cli_names_the_field_on_stderr(logdir, tmp_path):
    out = tmp_path / "all.jsonl"
    done = subprocess.run([TBKIT, "export", str(logdir), "-o", str(out)], capture_output=True,
                          text=True, check=True)  # fmt: skip
    assert "record 'train' field 'values' at step 2 held 2000 elements" in done.stderr
    assert "record 'train' field 'opt.note' at step 4 held 18000 bytes" in done.stderr
    assert out.read_text().count(markers.KEY) == 5
    tail = subprocess.run([TBKIT, "tail", str(logdir), "-n", "3"], capture_output=True,
                          text=True, check=True)  # fmt: skip
    assert "field 'values'" in tail.stderr


def test_the_plugin_serves_the_marker_as_the_fields_value(logdir):
    from tensorboard.plugins import base_plugin
    from werkzeug.datastructures import MultiDict

    from tbkit_plugin.plugin import TbkitPlugin

    plugin = TbkitPlugin(base_plugin.TBContext(logdir=str(logdir)), min_interval=0,
                         background=False)  # fmt: skip
    with pytest.warns(DataLossWarning) as caught:
        plugin.store.load()
    said = " ".join(str(w.message) for w in caught)
    assert "record 'train' field 'values' at step 2 held 2000 elements" in said
    assert "record 'train' field 'opt.note' at step 4 held 18000 bytes" in said
    page = plugin.records_impl(MultiDict({"tag": "train", "where": "step == 2"}))
    (row,) = page["rows"]
    assert markers.is_marker(row["values"])  # one cell, not dotted marker keys
    assert row["values"][markers.KEY]["length"] == 2000


class BigLoggingModel(DenseModel):
    """A model whose train_step logs a vector and a string of run-time size over the caps."""

    def train_step(self, data):
        x, y = data
        tiled = tf.reshape(tf.tile(x, [300, 1]), [-1])  # 10 rows × 300 × 2: 6000 elements
        tiled = tf.boolean_mask(tiled, tiled > -1.0)  # the same, of a length unknown at trace
        text = tf.strings.reduce_join(tf.fill(tf.shape(tiled), "ab"))  # 12000 bytes
        tbkit.record("big", {"tiled": tiled, "text": tf.strings.join([text, text])}, every=1)
        return keras.Model.train_step(self, data)


def test_the_keras_callback_writes_markers_and_fit_completes(tmp_path):
    keras.utils.set_random_seed(0)
    model = BigLoggingModel()
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    x = np.ones((40, 2), np.float32)
    history = model.fit(x, x[:, :1], batch_size=10, epochs=1, verbose=0,
                        callbacks=[TensorBoardRecords(tmp_path, every=1)])  # fmt: skip
    assert len(history.history["loss"]) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataLossWarning)
        big = list(tbkit.read_records(tmp_path, tag="big"))
    assert [r.step for r in big] == [0, 1, 2, 3]
    for r in big:
        assert r.fields["tiled"][markers.KEY]["length"] == 6000
        assert r.fields["text"][markers.KEY]["bytes"] == 24000


def test_odd_values_in_a_recorded_branch_never_fail_the_step(tmp_path):
    """Empty vectors, extreme ints, non-finite floats and invalid UTF-8 in records,
    histograms, scalars and text: every step records and every record reads back."""
    log = tbkit.SummaryLogger(str(tmp_path), every={"info": 1})
    spec = [tf.TensorSpec([None], tf.float32), tf.TensorSpec([None], tf.int64),
            tf.TensorSpec([None], tf.string), tf.TensorSpec([None], tf.uint64)]  # fmt: skip

    @log.train_step(input_signature=spec)
    def step(f, i, s, u):
        tbkit.record("r", {"f": f, "i": i, "s": s, "u": u, "h": tf.cast(f, tf.float16)})
        for name, value in (("f", f), ("i", i), ("u", u)):
            tbkit.histogram(f"h_{name}", value, level="info")
            tbkit.scalar(f"s_{name}", tf.reduce_sum(value))
        tbkit.text("t", tf.strings.reduce_join(s))

    cases = [
        ([], [], [], []),
        ([np.nan, np.inf, -np.inf], [2**63 - 1, -(2**63)], [b"\xff\xfe", b""], [2**64 - 1]),
        ([3e38, 3e38, 1e-45], [2**62, 2**62], ["\x00\x1b"], [2**63]),
    ]
    for f, i, s, u in cases:
        step(tf.constant(f, tf.float32), tf.constant(i, tf.int64), tf.constant(s, tf.string),
             tf.constant(u, tf.uint64))  # fmt: skip
    log.close()
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataLossWarning)  # nothing skipped
        found = {(r.tag, r.step): r.fields for r in tbkit.read_records(tmp_path)}
    assert found[("r", 0)] == {"f": [], "i": [], "s": [], "u": [], "h": []}
    assert found[("r", 1)]["i"] == [2**63 - 1, -(2**63)]
    assert found[("r", 1)]["u"] == [2**64 - 1]
    assert found[("r", 1)]["h"] == ["NaN", "Infinity", "-Infinity"]
    assert found[("t", 1)] == {"message": "\ufffd\ufffd"}  # a text summary is valid UTF-8
    assert found[("r", 2)]["h"] == ["Infinity", "Infinity", 0.0]
    written = summaries(str(tmp_path))
    for tag in ("h_f", "h_i", "h_u", "s_f", "s_i", "s_u"):
        assert [step for step, _ in written[tag]] == [0, 1, 2], tag
