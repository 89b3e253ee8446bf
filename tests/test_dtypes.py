"""Field dtypes in a record's summary metadata (schema version 3): written by every writer of
records, read back by TensorBoard's loader and tbkit's event layer, served by the plugin; data of
older versions (no dtypes) still reads, as before."""

from __future__ import annotations

import json
import logging
import warnings

import numpy as np
import pytest
import tensorflow as tf
from tbreader import values
from tensorboard.compat.proto import summary_pb2
from tensorboard.plugins import base_plugin
from werkzeug.datastructures import MultiDict

import tbkit
from tbkit import metadata
from tbkit.data import events
from tbkit.data.errors import DataLossWarning
from tbkit.integrations.logbridge import LINE_DTYPES, SummaryHandler
from tbkit.summary.summary_pb import record_pb
from tbkit_plugin.plugin import TbkitPlugin

# Every kind of field a record may hold, and the dtype its metadata says it was written from.
FIELDS_AND_DTYPES = {
    "loss": (lambda x: x * 0.5, "float32"),
    "grad": (lambda x: {"norm": tf.cast(x, tf.float64) / 3.0, "count": tf.cast(x, tf.int32)},
             {"norm": "float64", "count": "int32"}),
    "half": (lambda x: tf.cast(x, tf.float16), "float16"),
    "flag": (lambda x: x > 1.0, "bool"),
    "name": (lambda x: tf.strings.as_string(x), "string"),
    "vector": (lambda x: tf.stack([x, x + 1.0]), "float32"),
    "listed": (lambda x: [x, x], "float32"),  # a list of tensors is stacked
    "big": (lambda x: tf.constant(2**40, tf.uint64), "uint64"),
    "py_float": (lambda x: 0.001, "float64"),  # written as repr: the shortest float64 text
    "py_int": (lambda x: 3, "int64"),
    "py_bool": (lambda x: True, "bool"),
    "py_str": (lambda x: "note", "string"),
    "np_float": (lambda x: np.float32(0.001), "float32"),
    "np_texts": (lambda x: np.array(["a", "b"]), "string"),
    "py_floats": (lambda x: [0.5, None, 1.5], "float64"),
    "nothing": (lambda x: None, None),  # null has no dtype
    "mixed": (lambda x: [1, "a"], None),  # nor a list of mixed values
}


def fields(x):
    return {name: make(x) for name, (make, _) in FIELDS_AND_DTYPES.items()}


def expected_dtypes() -> dict[str, str]:
    out = {}
    for name, (_, dtype) in FIELDS_AND_DTYPES.items():
        if isinstance(dtype, dict):
            out.update({f"{name}.{k}": v for k, v in dtype.items()})
        elif dtype is not None:
            out[name] = dtype
    return out


def content_of(run_dir, tag) -> dict:
    """The plugin content of ``tag``'s first value, read with TensorBoard's own loader."""
    (_, value), *_ = values(str(run_dir))[tag]
    assert value.metadata.plugin_data.plugin_name == "tbkit"
    return json.loads(value.metadata.plugin_data.content)


def old_metadata(content: bytes) -> summary_pb2.SummaryMetadata:
    """Record metadata as tbkit wrote it before version 3 (``{"version":1}`` for records,
    ``{"version":2,"kept_of":…}`` for kept steps)."""
    return summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="tbkit", content=content),
        data_class=summary_pb2.DATA_CLASS_TENSOR,
    )


def write_raw(run_dir, tag, texts_by_step, meta):
    writer = tf.summary.create_file_writer(str(run_dir))
    with writer.as_default():
        for step, texts in texts_by_step:
            tf.summary.write(tag, tf.constant(texts), step=tf.constant(step, tf.int64),
                             metadata=meta)  # fmt: skip
    writer.close()


def make_plugin(logdir) -> TbkitPlugin:
    return TbkitPlugin(base_plugin.TBContext(logdir=str(logdir)), min_interval=0, background=False)


def dtypes_of(plugin, **params) -> dict:
    args = MultiDict([(k, v) for k, vs in params.items()
                      for v in (vs if isinstance(vs, list) else [vs])])  # fmt: skip
    return {c["name"]: c["dtype"] for c in plugin.schema_impl(args)["columns"]}


def test_a_traced_record_writes_each_fields_dtype_in_its_metadata(tmp_path):
    log = tbkit.SummaryLogger(str(tmp_path / "run"), every={"info": 1})

    @log.train_step
    def step(x):
        tbkit.record("r", fields(x), every=1)

    for i in range(3):
        step(tf.constant(float(i)))
    log.close()
    want = expected_dtypes()
    assert content_of(tmp_path / "run", "r") == {"version": 3, "dtypes": want}
    run = events.scan("run", [str(p) for p in sorted((tmp_path / "run").iterdir())])
    assert run.reader.series["r"].dtypes == want
    # The pure twin records the same, from the same values taken eagerly.
    twin = record_pb("r", fields(tf.constant(2.0))).value[0].metadata.plugin_data.content
    assert json.loads(twin) == {"version": 3, "dtypes": want}
    # The records read as before: the dtypes change no value.
    (last, *_) = reversed(list(tbkit.read_records(tmp_path)))
    assert (last.fields["loss"], last.fields["py_float"], last.fields["np_float"]) == (
        1.0, 0.001, 0.00100000005)  # fmt: skip


def test_a_record_logged_eagerly_under_with_log_writes_its_dtypes(tmp_path):
    with tbkit.SummaryLogger(str(tmp_path), every={"info": 1}) as log:
        tbkit.record("r", {"lr": tf.constant(0.001), "epoch": tf.constant(2, tf.int64)})
    log.close()
    assert content_of(tmp_path, "r")["dtypes"] == {"lr": "float32", "epoch": "int64"}


def test_the_logging_bridge_records_its_own_fields_as_text(tmp_path):
    log = tbkit.SummaryLogger(str(tmp_path), every={"info": 1})
    handler = SummaryHandler(log)
    logger = logging.getLogger("tbkit.test.dtypes")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("slow step", extra={"seconds": np.float32(0.25)})
    finally:
        logger.removeHandler(handler)
        log.close()
    # extra= values go under "fields": a call may give any type, so they have no dtype.
    assert content_of(tmp_path, "log") == {"version": 3, "dtypes": LINE_DTYPES}
    assert set(LINE_DTYPES) == {"logger", "message", "exception", "stack"}
    plugin = make_plugin(tmp_path)
    assert dtypes_of(plugin)["fields.seconds"] is None
    assert dtypes_of(plugin)["message"] == "string"


def test_data_of_older_schema_versions_still_read_without_dtypes(tmp_path):
    """Records (version 1) and kept steps (version 2) written with the old metadata."""
    run = tmp_path / "old"
    record = '{"lr":0.00100000005,"loss":15.4499998,"level":"info"}'
    write_raw(run, "train", [(0, [record]), (10, [record])], old_metadata(b'{"version":1}'))
    kept = '{"step":5,"lr":0.00100000005,"loss":15.4499998,"level":"info"}'
    write_raw(run, "train/kept", [(11, [kept])],
              old_metadata(b'{"version":2,"kept_of":"train"}'))  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning: old versions are read, not skipped
        records = list(tbkit.read_records(tmp_path))
    assert [(r.tag, r.step, r.fields) for r in records] == [
        ("train", 0, {"lr": 0.00100000005, "loss": 15.4499998}),
        ("train", 5, {"lr": 0.00100000005, "loss": 15.4499998, "kept": True}),
        ("train", 10, {"lr": 0.00100000005, "loss": 15.4499998}),
    ]
    scanned = events.scan("old", [str(p) for p in sorted(run.iterdir())])
    assert scanned.reader.series["train"].dtypes is None
    assert scanned.reader.series["train/kept"].dtypes is None

    # The plugin: no dtype for the old run's fields; beside a new run, none for the fields
    # they share (a column shows as before), the new run's own for the fields only it has.
    plugin = make_plugin(tmp_path)
    assert dtypes_of(plugin, run="old") == {
        "run": "string", "tag": "string", "step": "int64", "wall_time": "float64",
        "level": "string", "lr": None, "loss": None, "kept": None}  # fmt: skip
    log = tbkit.SummaryLogger(str(tmp_path / "new"), every={"info": 1})
    with log:
        tbkit.record("train", {"lr": tf.constant(0.001), "loss": tf.constant(15.45),
                               "acc": tf.constant(0.5)})  # fmt: skip
    log.close()
    plugin = make_plugin(tmp_path)
    assert dtypes_of(plugin, run="new") == {
        "run": "string", "tag": "string", "step": "int64", "wall_time": "float64",
        "level": "string", "lr": "float32", "loss": "float32", "acc": "float32"}  # fmt: skip
    both = dtypes_of(plugin)
    assert (both["lr"], both["loss"], both["acc"]) == (None, None, "float32")
    # The values are the same either way: formatting is the browser's business.
    rows = plugin.records_impl(MultiDict([("run", "new")]))["rows"]
    assert [(r["lr"], r["loss"]) for r in rows] == [(0.00100000005, 15.4499998)]


def test_kept_steps_of_a_record_not_yet_written_take_the_dump_dtypes(tmp_path):
    """A dump read before its record's own first datum: its records carry the dump's dtypes."""
    run = tmp_path / "run"
    dtypes = b'"dtypes":{"lr":"float32"}'
    write_raw(run, "train/kept", [(7, ['{"step":3,"lr":0.00100000005,"level":"info"}'])],
              old_metadata(b'{"version":3,"kept_of":"train",' + dtypes + b"}"))  # fmt: skip
    write_raw(run, "train", [(8, ['{"lr":0.00100000005,"level":"info"}'])],
              old_metadata(b'{"version":3,' + dtypes + b"}"))  # fmt: skip
    assert dtypes_of(make_plugin(tmp_path))["lr"] == "float32"
    assert [r.step for r in tbkit.read_records(tmp_path)] == [3, 8]


@pytest.mark.parametrize("content", [
    b'{"version":3,"dtypes":["float32"]}',
    b'{"version":3,"dtypes":{"lr":3}}',
    b'{"version":3,"dtypes":{"lr":""}}',
])  # fmt: skip
def test_dtypes_that_are_not_a_map_of_names_skip_the_tag_with_a_warning(tmp_path, content):
    write_raw(tmp_path / "r", "t", [(0, ['{"a":1,"level":"info"}'])], old_metadata(content))
    with pytest.warns(DataLossWarning) as caught:
        assert list(tbkit.read_records(tmp_path)) == []
    (message,) = [str(w.message) for w in caught]
    assert message.startswith("tbkit: skipping run 'r' tag 't': not tbkit plugin content: dtypes")


def test_metadata_refuses_dtypes_that_are_not_names():
    with pytest.raises(ValueError, match="not tbkit plugin content: dtypes"):
        metadata.create_summary_metadata(dtypes={"lr": None})
