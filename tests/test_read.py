"""tbkit.read against event files written by real TensorFlow and read by TensorBoard too."""

from __future__ import annotations

import json
import math
import re
import struct
import tempfile
import warnings
from pathlib import Path

import google_crc32c
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.compat.proto import summary_pb2

import tbkit
from tbkit import metadata
from tbkit.data.errors import DataLossWarning, TbkitTypeError
from tbkit.data.rows import json_line
from tbkit.read import Record, read_records, to_pandas


def write_events(run_dir: Path, items, *, meta=None) -> Path:
    """Write ``items`` with one TensorFlow writer into ``run_dir``; return the new event file.

    ``items`` are ``(tag, step, [object, ...])``; a dict object is written as strict JSON, str
    and bytes as they are. A plain scalar "loss" is written before each datum (the reader must
    ignore it), so a file's last record is the last datum.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    before = set(run_dir.iterdir())
    writer = tf.summary.create_file_writer(str(run_dir))
    with writer.as_default():
        for tag, step, objects in items:
            tf.summary.scalar("loss", step / 10, step=tf.constant(step, tf.int64))
            texts = [
                o if isinstance(o, str | bytes) else json.dumps(o, allow_nan=False) for o in objects
            ]
            tf.summary.write(
                tag,
                tf.constant(texts),
                step=tf.constant(step, tf.int64),
                metadata=meta or metadata.create_summary_metadata(),
            )
    writer.close()
    (path,) = set(run_dir.iterdir()) - before
    return path


def expected_rows(run: str, items) -> list[tuple]:
    """What read_records should give for ``items`` (wall time aside)."""
    return [
        (run, tag, step, o["level"], {k: v for k, v in o.items() if k != "level"})
        for tag, step, objects in items
        for o in objects
    ]


def rows(records) -> list[tuple]:
    return [(r.run, r.tag, r.step, r.level, r.fields) for r in records]


def read_quietly(logdir, **filters) -> list[Record]:
    """read_records, asserting that it warns about nothing."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        records = list(read_records(logdir, **filters))
    assert [str(w.message) for w in caught] == []
    return records


def tensorboard_view(run_dir: Path) -> dict[tuple[str, int], list[dict]]:
    """TensorBoard's own reading of a run: (tag, step) → the JSON objects of that datum."""
    acc = event_accumulator.EventAccumulator(
        str(run_dir), size_guidance={event_accumulator.TENSORS: 0}
    )
    acc.Reload()
    return {
        (tag, event.step): [json.loads(s) for s in event.tensor_proto.string_val]
        for tag in acc.PluginTagToContent(metadata.PLUGIN_NAME)
        for event in acc.Tensors(tag)
    }


def tbkit_view(records) -> dict[tuple[str, int], list[dict]]:
    view: dict[tuple[str, int], list[dict]] = {}
    for r in records:
        view.setdefault((r.tag, r.step), []).append({**r.fields, "level": r.level})
    return view


def frames(data: bytes) -> list[tuple[int, int]]:
    """``(offset, end)`` of each TFRecord frame, from the framing alone (no CRC checks)."""
    out, offset = [], 0
    while offset + 12 <= len(data):
        (length,) = struct.unpack_from("<Q", data, offset)
        out.append((offset, offset + 16 + length))
        offset += 16 + length
    return out


def tfrecord(data: bytes) -> bytes:
    """Frame ``data`` as a TFRecord (written here from the format, not with tbkit's code)."""

    def masked(b: bytes) -> bytes:
        crc = google_crc32c.value(b)
        return struct.pack("<I", (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF)

    length = struct.pack("<Q", len(data))
    return length + masked(length) + data + masked(data)


def frame_holding(data: bytes, marker: bytes) -> tuple[int, int]:
    position = data.index(marker)
    return next((start, end) for start, end in frames(data) if start <= position < end)


def datum(step: int, n: int = 2) -> list[dict]:
    return [{"level": "info", "i": step, "k": k, "m": f"m{step:04d}k{k}"} for k in range(n)]


ITEMS = [("train", step, datum(step)) for step in range(5)]


def test_reads_what_tensorflow_wrote_and_agrees_with_tensorboard(tmp_path):
    items = [
        ("train", 0, [{"level": "info", "loss": 0.25, "opt": {"lr": 0.1, "beta": [0.9, 0.99]}}]),
        ("train", 1, [{"level": "debug", "loss": "NaN", "note": "ünïcode \"quoted\"\n"}]),
        ("eval", 1, [{"level": "warning", "acc": 1}, {"level": "error", "acc": None}]),
        ("train", 2, [{"level": "info", "loss": "-Infinity", "big": 2**63 - 1}]),
    ]
    write_events(tmp_path / "train", items)
    records = read_quietly(tmp_path)
    assert rows(records) == expected_rows("train", items)
    assert all(isinstance(r.wall_time, float) and r.wall_time > 1e9 for r in records)
    assert [r.wall_time for r in records] == sorted(r.wall_time for r in records)
    assert tbkit_view(records) == tensorboard_view(tmp_path / "train")
    assert tbkit.read_records is read_records


def test_other_summaries_are_ignored(tmp_path):
    writer = tf.summary.create_file_writer(str(tmp_path))
    with writer.as_default():
        tf.summary.scalar("loss", 1.0, step=0)
        tf.summary.histogram("w", tf.constant([1.0, 2.0]), step=0)
        tf.summary.write("raw", tf.constant(['{"level": "info"}']), step=0)  # no metadata
    writer.close()
    assert read_quietly(tmp_path) == []


def test_runs_nested_sorted_and_filtered(tmp_path):
    layout = {".": "root", "b/train": "bt", "a": "a", "a/eval": "ae"}
    for run, marker in layout.items():
        write_events(
            tmp_path / run,
            [("x", 0, [{"level": "info", "marker": marker}]), ("y", 1, [{"level": "info"}])],
        )
    (tmp_path / "empty" / "deeper").mkdir(parents=True)
    (tmp_path / "a" / "notes.txt").write_text("not an event file")
    records = read_quietly(tmp_path)
    assert [(r.run, r.tag) for r in records] == [
        (".", "x"), (".", "y"), ("a", "x"), ("a", "y"),
        ("a/eval", "x"), ("a/eval", "y"), ("b/train", "x"), ("b/train", "y"),
    ]  # fmt: skip
    assert [r.fields for r in records if r.tag == "x"] == [
        {"marker": "root"}, {"marker": "a"}, {"marker": "ae"}, {"marker": "bt"}
    ]  # fmt: skip
    assert rows(read_quietly(tmp_path, run="a")) == [
        ("a", "x", 0, "info", {"marker": "a"}), ("a", "y", 1, "info", {})
    ]  # fmt: skip
    assert [r.run for r in read_quietly(tmp_path, tag="y")] == [".", "a", "a/eval", "b/train"]
    assert rows(read_quietly(tmp_path / "b", run="train", tag="x")) == [
        ("train", "x", 0, "info", {"marker": "bt"})
    ]
    assert read_quietly(tmp_path, run="a/", tag="x") == []
    assert read_quietly(tmp_path, run="b") == []


def test_records_keep_write_order_across_tags(tmp_path):
    items = [("b", 0, datum(0)), ("a", 0, datum(1)), ("b", 1, datum(2)), ("a", 3, datum(3))]
    write_events(tmp_path, items)
    assert rows(read_quietly(tmp_path)) == expected_rows(".", items)


def test_missing_logdir_and_bad_filters(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError) as info:
        read_records(missing)  # raised at the call, not at the first next()
    assert str(info.value) == f"logdir {str(missing)!r} does not exist"
    (tmp_path / "file").write_text("")
    with pytest.raises(NotADirectoryError, match="is not a directory"):
        read_records(tmp_path / "file")
    with pytest.raises(TbkitTypeError) as info:
        read_records(tmp_path, run=3)
    assert str(info.value) == "'run' must be a str or None (got 3 that is a <class 'int'>)."
    with pytest.raises(TbkitTypeError, match=re.escape("'tag' must be a str or None (got [")):
        read_records(tmp_path, tag=["x"])


@pytest.mark.parametrize("cut", ["header", "data", "footer"])
def test_truncated_tail_ends_the_file_quietly(tmp_path, cut):
    path = write_events(tmp_path / "src", ITEMS)
    data = path.read_bytes()
    start, end = frames(data)[-1]
    keep = {"header": start + 5, "data": (start + end) // 2, "footer": end - 1}[cut]
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / path.name).write_bytes(data[:keep])
    assert rows(read_quietly(tmp_path / "logs")) == expected_rows(".", ITEMS[:-1])


@pytest.mark.parametrize("step", [0, 2])  # step 0's event is the first to carry the metadata
def test_corrupt_data_skips_one_record_with_a_warning(tmp_path, step):
    path = write_events(tmp_path, ITEMS)
    data = bytearray(path.read_bytes())
    start, _ = frame_holding(data, f"m{step:04d}k1".encode())
    data[data.index(f"m{step:04d}k1".encode())] ^= 0x01
    path.write_bytes(data)
    with pytest.warns(DataLossWarning) as caught:
        records = list(read_records(tmp_path))
    assert [str(w.message) for w in caught] == [
        f"tbkit: skipped a corrupt record (data checksum mismatch) in {path} "
        f"at byte offset {start}."
    ]
    assert rows(records) == expected_rows(".", [i for i in ITEMS if i[1] != step])


@pytest.mark.parametrize("byte", [0, 3, 7, 8, 11])  # length bytes, then its CRC's bytes
def test_corrupt_length_resynchronises(tmp_path, byte):
    path = write_events(tmp_path, ITEMS)
    data = bytearray(path.read_bytes())
    start, _ = frame_holding(data, b"m0002k0")
    data[start + byte] ^= 0x40
    path.write_bytes(data)
    with pytest.warns(DataLossWarning) as caught:
        records = list(read_records(tmp_path))
    assert [str(w.message) for w in caught] == [
        f"tbkit: corrupt record length in {path} at byte offset {start}; "
        "skipping to the next intact record."
    ]
    assert rows(records) == expected_rows(".", [i for i in ITEMS if i[1] != 2])


def test_a_framed_record_that_is_not_an_event_is_skipped(tmp_path):
    path = write_events(tmp_path, ITEMS[:2])
    data = path.read_bytes()
    start, end = frame_holding(data, b"m0000k0")  # step 0's datum again: it pre-empts step 1
    path.write_bytes(data + tfrecord(b"\x0a\xff") + tfrecord(data[start + 12 : end - 4]))
    with pytest.warns(DataLossWarning) as caught:
        records = list(read_records(tmp_path))
    assert [str(w.message) for w in caught] == [
        f"tbkit: skipped a record that is not an Event in {path} at byte offset {len(data)}."
    ]
    assert rows(records) == expected_rows(".", ITEMS[:1])


def test_an_event_file_that_cannot_be_opened_is_skipped(tmp_path):
    write_events(tmp_path, ITEMS[:1])
    (tmp_path / "events.out.tfevents.zz.broken").symlink_to(tmp_path / "nowhere")
    with pytest.warns(DataLossWarning) as caught:
        records = list(read_records(tmp_path))
    (message,) = [str(w.message) for w in caught]
    assert message.startswith(f"tbkit: skipped event file {tmp_path}/events.out.tfevents.zz.broken")
    assert rows(records) == expected_rows(".", ITEMS[:1])


@pytest.fixture(scope="module")
def event_bytes(tmp_path_factory) -> bytes:
    return write_events(tmp_path_factory.mktemp("src"), ITEMS).read_bytes()


def read_bytes_as_logdir(data: bytes):
    with tempfile.TemporaryDirectory() as logdir:
        Path(logdir, "events.out.tfevents.test").write_bytes(data)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            records = rows(read_records(logdir))
    return records, [str(w.message) for w in caught]


@settings(max_examples=60, deadline=None)
@given(position=st.integers(min_value=0), flip=st.integers(min_value=1, max_value=255))
def test_any_flipped_byte_loses_only_its_record(event_bytes, position, flip):
    data = bytearray(event_bytes)
    position %= len(data)
    data[position] ^= flip
    records, messages = read_bytes_as_logdir(bytes(data))
    start, end = next(f for f in frames(event_bytes) if f[0] <= position < f[1])
    lost = event_bytes[start:end]
    assert records == expected_rows(".", [i for i in ITEMS if b"m%04d" % i[1] not in lost])
    assert len(messages) == 1 and f"at byte offset {start}" in messages[0]


@settings(max_examples=40, deadline=None)
@given(length=st.integers(min_value=0))
def test_any_truncation_keeps_whole_records_quietly(event_bytes, length):
    length %= len(event_bytes) + 1
    records, messages = read_bytes_as_logdir(event_bytes[:length])
    whole = event_bytes[: max([end for _, end in frames(event_bytes) if end <= length] or [0])]
    assert records == expected_rows(".", [i for i in ITEMS if b"m%04d" % i[1] in whole])
    assert messages == []


def test_resumed_run_preempts_like_tensorboard(tmp_path):
    run = tmp_path / "train"
    first = [("t", s, datum(s)) for s in range(0, 101, 10)] + [("u", 7, datum(7))]
    first = first[:3] + [("t", 20, [{"level": "info", "again": 20}])] + first[3:]
    second = [("t", s, [{"level": "info", "w": 2, "s": s}]) for s in range(50, 151, 10)]
    # Name the files so that sorting puts the restart second, whatever the clock says.
    write_events(run, first).rename(run / "events.out.tfevents.1.host.1.0.v2")
    write_events(run, second).rename(run / "events.out.tfevents.2.host.2.0.v2")
    records = read_quietly(tmp_path)
    assert [(r.tag, r.step, r.fields.get("w", 1)) for r in records] == [
        ("t", 0, 1), ("t", 0, 1), ("t", 10, 1), ("t", 10, 1), ("t", 20, 1),
        ("t", 30, 1), ("t", 30, 1), ("t", 40, 1), ("t", 40, 1), ("u", 7, 1), ("u", 7, 1),
        ("t", 50, 2), ("t", 60, 2), ("t", 70, 2), ("t", 80, 2), ("t", 90, 2),
        ("t", 100, 2), ("t", 110, 2), ("t", 120, 2), ("t", 130, 2), ("t", 140, 2),
        ("t", 150, 2),
    ]  # fmt: skip
    assert [r.fields for r in records if r.step == 20] == [{"again": 20}]
    assert [r.fields for r in records if r.step == 50] == [{"w": 2, "s": 50}]
    assert tbkit_view(records) == tensorboard_view(run)


def test_future_schema_is_skipped_with_one_warning(tmp_path):
    future = summary_pb2.SummaryMetadata()
    future.CopyFrom(metadata.create_summary_metadata())
    future.plugin_data.content = b'{"version": 4}'
    run = tmp_path / "r"
    write_events(run, [("new", s, datum(s)) for s in range(20)], meta=future)
    write_events(run, [("new", s, datum(s)) for s in range(20, 30)], meta=future)
    write_events(run, ITEMS[:2])
    with pytest.warns(DataLossWarning) as caught:
        records = list(read_records(tmp_path))
    assert [str(w.message) for w in caught] == [
        "tbkit: skipping run 'r' tag 'new': its records have schema version 4, newer than "
        "version 3 that this tbkit reads; upgrade tbkit."
    ]
    assert rows(records) == expected_rows("r", ITEMS[:2])


LEVELS = "('debug', 'info', 'warning', 'error')"


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ("[1]", "not a JSON object: b'[1]'"),
        ('{"level": "info", "x": ' + "[" * 101 + "]" * 101 + "}", "nested deeper than 100 levels"),
        ('{"level": "info", "x": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deeply"),
        ('{"level": "info", "tag": "mine"}', "field 'tag' is reserved for the event's tag"),
        ('{"x": 1}', f"'level' is None, not one of {LEVELS}"),
        ('{"level": "fatal"}', f"'level' is 'fatal', not one of {LEVELS}"),
        ("{", "Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"),
        (b'{"level": "info", "x": "\xff"}', "'utf-8' codec can't decode byte 0xff in position 24"),
    ],
)
def test_objects_that_are_not_strict_json_are_skipped(tmp_path, bad, reason):
    good = {"level": "info", "x": 1}
    write_events(tmp_path / "r", [("t", 3, [good, bad, good])])
    with pytest.warns(DataLossWarning) as caught:
        records = list(read_records(tmp_path))
    assert rows(records) == [("r", "t", 3, "info", {"x": 1})] * 2
    (message,) = [str(w.message) for w in caught]
    prefix = "tbkit: skipped an object that does not parse in run 'r' tag 't' step 3: "
    assert message.startswith(prefix + reason)


def test_other_writers_non_finite_numbers_and_lone_surrogates_are_read(tmp_path):
    """Bare NaN/Infinity (Python's json.dumps), integers and floats beyond the double range,
    and a lone surrogate escape: read, and written back as strict JSON (tbkit's strings and
    U+FFFD)."""
    objects = ['{"level": "info", "x": NaN, "y": -Infinity, "z": Infinity}',
               '{"level": "info", "big": ' + "9" * 400 + ', "neg": -' + "9" * 400
               + ', "ok": ' + str(2**64) + ', "f": 1e400, "pad": "' + "p" * 300 + '"}',
               '{"level": "info", "s": "a\\ud800b", "pair": "\\ud83d\\ude00"}']  # fmt: skip
    write_events(tmp_path / "r", [("t", 0, objects)])
    records = read_quietly(tmp_path)
    x = records[0].fields
    assert math.isnan(x["x"]) and (x["y"], x["z"]) == (-math.inf, math.inf)
    assert {k: records[1].fields[k] for k in ("big", "neg", "ok", "f")} == {
        "big": math.inf, "neg": -math.inf, "ok": 2**64, "f": math.inf}  # fmt: skip
    assert records[2].fields == {"s": "a\ufffdb", "pair": "\U0001f600"}
    lines = [json_line(r) for r in records]
    assert '"x":"NaN","y":"-Infinity","z":"Infinity"' in lines[0]
    assert f'"big":"Infinity","neg":"-Infinity","ok":{2**64},"f":"Infinity"' in lines[1]
    for line in lines:
        line.encode("utf-8")  # no lone surrogate left
        json.loads(line, parse_constant=pytest.fail)


def test_objects_that_do_not_parse_warn_once_per_tag_then_count(tmp_path):
    items = [(t, s, ["{", {"level": "info"}, "{"]) for s in range(50) for t in ("a", "b")]
    write_events(tmp_path / "r", items + [("c", 0, ["{"])])
    with pytest.warns(DataLossWarning) as caught:
        records = list(read_records(tmp_path))
    assert len(records) == 100
    reason = "Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"
    assert [str(w.message) for w in caught] == [
        f"tbkit: skipped an object that does not parse in run 'r' tag 'a' step 0: {reason}",
        f"tbkit: skipped an object that does not parse in run 'r' tag 'b' step 0: {reason}",
        f"tbkit: skipped an object that does not parse in run 'r' tag 'c' step 0: {reason}",
        "tbkit: skipped 100 objects that do not parse in run 'r' tag 'a'.",
        "tbkit: skipped 100 objects that do not parse in run 'r' tag 'b'.",
    ]


def test_symlinked_runs_are_followed_and_loops_end(tmp_path):
    write_events(tmp_path / "exp1" / "train", ITEMS[:1])
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "exp1").symlink_to(tmp_path / "exp1" / "train")
    (tmp_path / "exp1" / "train" / "loop").symlink_to(tmp_path / "exp1")
    assert rows(read_quietly(tmp_path / "logs")) == expected_rows("exp1", ITEMS[:1])


def test_to_pandas_columns_and_non_finite_numbers(tmp_path):
    items = [
        ("t", 0, [{"level": "info", "loss": 0.5, "opt": {"lr": 0.1, "m": {"b": 1}}, "v": [1, 2]}]),
        ("t", 1, [{"level": "debug", "loss": "NaN", "n": 3, "v": []}]),
        ("t", 2, [{"level": "info", "loss": "Infinity", "n": 4, "name": "NaN", "e": {},
                   "z": "-Infinity"}]),
        ("t", 3, [{"level": "info", "loss": "-Infinity", "n": 5, "name": "x"}]),
        ("u", 3, [{"level": "info", "other": 1}]),
    ]
    write_events(tmp_path / "r", items)
    frame = to_pandas(tmp_path, tag="t")
    assert list(frame.columns) == [
        "run", "tag", "step", "wall_time", "level", "loss", "opt.lr", "opt.m.b", "v", "n",
        "name", "e", "z",
    ]  # fmt: skip
    assert frame["step"].tolist() == [0, 1, 2, 3]
    assert str(frame["step"].dtype) == "int64" and str(frame["loss"].dtype) == "float64"
    loss = frame["loss"].tolist()
    assert loss[0] == 0.5 and math.isnan(loss[1]) and loss[2:] == [math.inf, -math.inf]
    assert frame["opt.m.b"].tolist()[0] == 1 and math.isnan(frame["opt.m.b"].tolist()[1])
    assert frame["v"].tolist()[:2] == [[1, 2], []]
    assert frame["name"].tolist()[2:] == ["NaN", "x"]  # a text column keeps its strings
    assert frame["e"].tolist()[2] == {}
    assert frame["z"].tolist()[2] == -math.inf  # non-finite strings alone are numbers too
    assert str(frame["n"].dtype) == "float64" and frame["n"].tolist()[1:] == [3, 4, 5]
    again = to_pandas(read_records(tmp_path), run="r", tag="t")
    assert again.drop(columns="wall_time").equals(frame.drop(columns="wall_time"))
    assert to_pandas(tmp_path, run="elsewhere").columns.tolist() == list(Record._fields[:5])

