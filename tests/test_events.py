"""The event layer (tbkit.data.events, frames, logdir): incremental reads, damage warned once,
text summaries, and one byte form across read_records, the CLI and the plugin."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import warnings
from pathlib import Path

import pytest
import tensorflow as tf
from eventfiles import next_second
from hypothesis import given, settings
from hypothesis import strategies as st
from tensorboard.compat.proto import event_pb2
from werkzeug.datastructures import MultiDict

import tbkit
from tbkit.cli import tail
from tbkit.data import events, frames
from tbkit.data.errors import DataLossWarning, TbkitTypeError
from tbkit.data.rows import flatten, json_line
from tbkit.summary import summary_pb
from tbkit_plugin.plugin import TbkitPlugin

TBKIT = os.path.join(os.path.dirname(sys.executable), "tbkit")


def record_frame(step: int, tag: str, fields: dict, wall_time: float | None = None) -> bytes:
    event = event_pb2.Event(step=step, wall_time=wall_time or 1_700_000_000 + step / 8)
    event.summary.CopyFrom(summary_pb.record_pb(tag, fields))
    return frames.frame(event.SerializeToString())


def raw_frame(step: int, tag: str, objects: list[bytes]) -> bytes:
    """A record datum holding ``objects`` exactly as given (hand-written JSON)."""
    event = event_pb2.Event(step=step, wall_time=1_700_000_000 + step)
    event.summary.CopyFrom(summary_pb.record_pb(tag, {}))
    tensor = event.summary.value[0].tensor
    del tensor.string_val[:]
    tensor.string_val.extend(objects)
    tensor.tensor_shape.dim[0].size = len(objects)
    return frames.frame(event.SerializeToString())


def read_all(reader: events.RunReader, path: str) -> list[tuple]:
    return [(d.series.tag, d.step, d.values, d.restart) for d in reader.read([path])]


def caught_warnings(fn):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fn()
    return result, [str(w.message) for w in caught]


# -- incremental reading ---------------------------------------------------------------------


def damaged_stream(steps: list[int], corrupt: set[int]) -> bytes:
    """Frames of records at ``steps`` (restarts where a step goes back), the data of the
    frames numbered in ``corrupt`` flipped, and a frame that is not an Event after the first."""
    out = []
    for i, step in enumerate(steps):
        data = bytearray(record_frame(step, "t" if i % 3 else "u", {"i": i}))
        if i in corrupt:
            data[14] ^= 0xFF  # in the data: its checksum fails
        out.append(bytes(data))
        if i == 0:
            out.append(frames.frame(b"\xff not an event"))
    return b"".join(out)


@settings(max_examples=40, deadline=None)
@given(
    steps=st.lists(st.integers(0, 8), min_size=1, max_size=25),
    corrupt=st.sets(st.integers(0, 24), max_size=3),
    cuts=st.lists(st.integers(1, 120), max_size=40),
)
def test_a_growing_file_read_on_and_on_gives_what_one_read_of_it_gives(steps, corrupt, cuts):
    """Random-sized appends, records cut anywhere (a frame split across two appends): the data
    read after each append add up to one read of the final file, with the same warnings."""
    import tempfile

    stream = damaged_stream(steps, corrupt)
    with tempfile.TemporaryDirectory() as folder:
        whole = Path(folder) / "whole.tfevents"
        whole.write_bytes(stream)
        want, want_warnings = caught_warnings(lambda: read_all(events.RunReader("r"), str(whole)))
        growing = Path(folder) / "growing.tfevents"
        growing.write_bytes(b"")
        reader, got, got_warnings, at = events.RunReader("r"), [], [], 0
        for cut in [*cuts, len(stream)]:
            with open(growing, "ab") as f:
                f.write(stream[at : at + cut])
            at = min(at + cut, len(stream))
            data, said = caught_warnings(lambda: read_all(reader, str(growing)))
            got += data
            got_warnings += said
        data, said = caught_warnings(lambda: read_all(reader, str(growing)))  # nothing new
        assert (data, said) == ([], [])
    assert got == want
    assert [w.replace(str(growing), "F") for w in got_warnings] == [
        w.replace(str(whole), "F") for w in want_warnings]  # fmt: skip
    assert len(want_warnings) == len(corrupt & set(range(len(steps)))) + 1  # + the non-Event


def test_a_corrupt_last_record_is_warned_about_once_however_often_it_is_read(tmp_path):
    path = tmp_path / "events.out.tfevents.1"
    bad = bytearray(record_frame(1, "t", {"i": 1}))
    bad[-1] ^= 0xFF  # the data's checksum
    path.write_bytes(record_frame(0, "t", {"i": 0}) + bytes(bad))
    reader = events.RunReader("r")
    first, said = caught_warnings(lambda: read_all(reader, str(path)))
    assert [step for _, step, _, _ in first] == [0]
    assert said == [f"tbkit: skipped a corrupt record (data checksum mismatch) in {path} at byte "
                    f"offset {len(path.read_bytes()) - len(bad)}."]  # fmt: skip
    for _ in range(3):
        assert caught_warnings(lambda: read_all(reader, str(path))) == ([], [])
    with open(path, "ab") as f:
        f.write(record_frame(2, "t", {"i": 2}))
    assert [step for _, step, _, _ in read_all(reader, str(path))] == [2]


def test_after_a_corrupt_length_the_scan_goes_on_where_it_stopped(tmp_path):
    path = tmp_path / "events.out.tfevents.1"
    garbage = bytearray(record_frame(1, "t", {"i": 1}))
    garbage[9] ^= 0xFF  # the length's checksum
    path.write_bytes(record_frame(0, "t", {"i": 0}) + bytes(garbage))
    reader = events.RunReader("r")
    first, said = caught_warnings(lambda: read_all(reader, str(path)))
    assert [step for _, step, _, _ in first] == [0] and len(said) == 1
    assert "corrupt record length" in said[0]
    assert caught_warnings(lambda: read_all(reader, str(path))) == ([], [])
    with open(path, "ab") as f:
        f.write(record_frame(2, "t", {"i": 2}))
    assert caught_warnings(lambda: [s for _, s, _, _ in read_all(reader, str(path))]) == ([2], [])


def test_restarts_are_marked_and_data_before_metadata_wait_for_it(tmp_path):
    path = tmp_path / "events.out.tfevents.1"
    orphan = event_pb2.Event(step=1, wall_time=1.0)
    orphan.summary.CopyFrom(summary_pb.record_pb("t", {"i": "early"}))
    orphan.summary.value[0].ClearField("metadata")
    path.write_bytes(frames.frame(orphan.SerializeToString()) + b"".join(
        record_frame(s, "t", {"i": s}) for s in (2, 3, 2, 5)))  # fmt: skip
    got = [(step, restart) for _, step, _, restart in read_all(events.RunReader("r"), str(path))]
    assert got == [(1, False), (2, False), (3, False), (2, True), (5, False)]


def test_an_event_file_that_is_a_fifo_is_skipped_with_one_warning(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "events.out.tfevents.1").write_bytes(record_frame(0, "t", {"i": 0}))
    os.mkfifo(tmp_path / "run" / "events.out.tfevents.2")
    result: list = []
    reading = threading.Thread(
        target=lambda: result.append(caught_warnings(lambda: list(tbkit.read_records(tmp_path)))),
        daemon=True)  # fmt: skip
    reading.start()
    reading.join(timeout=30)
    assert not reading.is_alive(), "reading blocked on the FIFO"
    records, said = result[0]
    assert [r.fields for r in records] == [{"i": 0}]
    assert said == [f"tbkit: skipped event file {tmp_path}/run/events.out.tfevents.2: "
                    "not a regular file (a FIFO)"]  # fmt: skip


def test_objects_that_use_a_built_in_name_are_skipped_with_a_warning(tmp_path):
    (tmp_path / "events.out.tfevents.1").write_bytes(
        raw_frame(0, "t", [b'{"a":1,"level":"info"}', b'{"step":1,"level":"info"}']))
    records, said = caught_warnings(lambda: list(tbkit.read_records(tmp_path)))
    assert [r.fields for r in records] == [{"a": 1}]
    assert said == ["tbkit: skipped an object that does not parse in run '.' tag 't' step 0: "
                    "field 'step' is reserved for the event's step"]  # fmt: skip


def test_data_that_never_get_metadata_are_not_held_for_ever(tmp_path):
    orphan = event_pb2.Event(step=0, wall_time=1.0)
    orphan.summary.CopyFrom(summary_pb.record_pb("raw", {"i": 0}))
    orphan.summary.value[0].ClearField("metadata")
    frame = frames.frame(orphan.SerializeToString())
    path = tmp_path / "events.out.tfevents.1"
    path.write_bytes(frame * (events.WAIT_LIMIT + 5))
    reader = events.RunReader("r")
    assert read_all(reader, str(path)) == []
    assert (reader.series["raw"].kind, reader.series["raw"].waiting) == (events.OTHER, [])


def test_a_second_pass_warns_about_nothing_the_first_did_not(tmp_path, monkeypatch):
    future = event_pb2.Event(step=0, wall_time=1.0)
    future.summary.CopyFrom(summary_pb.record_pb("future", {"i": 0}))
    future.summary.value[0].metadata.plugin_data.content = b'{"version": 4}'
    (tmp_path / "events.out.tfevents.1").write_bytes(
        frames.frame(future.SerializeToString()) + record_frame(0, "t", {"i": 0}))
    monkeypatch.setattr(events, "DEFAULT_BUDGET", 0)  # every run read twice
    records, said = caught_warnings(lambda: list(tbkit.read_records(tmp_path)))
    assert [r.tag for r in records] == ["t"]
    assert len(said) == 1 and "schema version 4" in said[0]


def test_followers_back_off_only_while_an_object_store_has_nothing_new():
    pauses, pause = [], 2.0
    for new in (False, False, False, False, False, True, False):
        pause = events.next_pause(pause, 2.0, new, remote=True)
        pauses.append(pause)
    assert pauses == [4.0, 8.0, 16.0, 30.0, 30.0, 2.0, 4.0]
    assert events.next_pause(8.0, 2.0, False, remote=False) == 2.0  # a local look is cheap
    assert events.next_pause(60.0, 60.0, False, remote=True) == 60.0  # never below the setting


# -- text summaries --------------------------------------------------------------------------


def test_text_summaries_from_any_code_are_records_with_a_message(tmp_path):
    writer = tf.summary.create_file_writer(str(tmp_path / "run"))
    with writer.as_default():
        tf.summary.text("notes", "hello ✓", step=0)
        tf.summary.text("table", tf.constant([["a", "b"], ["c", "d"]]), step=1)
        tf.summary.text("notes", "again", step=2)
    writer.close()
    got = [(r.run, r.tag, r.step, r.level, r.fields) for r in tbkit.read_records(tmp_path)]
    assert got == [
        ("run", "notes", 0, "info", {"message": "hello ✓"}),
        *[("run", "table", 1, "info", {"message": m}) for m in "abcd"],
        ("run", "notes", 2, "info", {"message": "again"}),
    ]  # fmt: skip


def test_each_tbkit_text_call_keeps_its_own_level_on_one_tag(tmp_path):
    log = tbkit.SummaryLogger(str(tmp_path), every={"info": 1})

    @log.train_step
    def ok():
        tbkit.text("status", "fine", level="info")

    @log.train_step
    def bad():
        tbkit.text("status", "broken", level="error")

    for step in (ok, bad, ok):
        step()
    log.close()
    got = [(r.step, r.level, r.fields["message"]) for r in tbkit.read_records(tmp_path)]
    assert got == [(0, "info", "fine"), (1, "error", "broken"), (2, "info", "fine")]


def test_tbkit_text_refuses_what_is_not_one_string():
    with tbkit.SummaryLogger(tempfile.mkdtemp()), pytest.raises(TbkitTypeError) as caught:
        tbkit.text("t", tf.constant(3.0))
    assert str(caught.value) == (
        "tbkit.text('t') needs a scalar string (got dtype float32 and shape ()): format a number "
        "with tf.strings.as_string, or log a record.")  # fmt: skip


# -- tail -f ---------------------------------------------------------------------------------


def test_tail_follow_prints_a_rewritten_steps_new_lines_only(tmp_path):
    """The logging bridge writes a step's late lines by writing the step again with every line
    so far: following shows each line once."""
    path = tmp_path / "events.out.tfevents.1"
    line = lambda m: json.dumps({"message": m, "level": "info"}).encode()  # noqa: E731
    path.write_bytes(raw_frame(5, "log", [line("a"), line("b")]))
    polls = []

    def stopped():
        polls.append(1)
        if len(polls) == 1:
            with open(path, "ab") as f:
                f.write(raw_frame(5, "log", [line("a"), line("b"), line("c")]))
                f.write(raw_frame(5, "log", [line("x")]))  # not a continuation: shown whole
        return len(polls) == 2

    out = io.StringIO()
    tail.tail(tmp_path, out, follow=True, interval=0, stopped=stopped)
    assert [text.rsplit("  ", 1)[1] for text in out.getvalue().splitlines()] == [
        '{"message":"a"}', '{"message":"b"}', '{"message":"c"}', '{"message":"x"}']  # fmt: skip


# -- one byte form ---------------------------------------------------------------------------


def test_csv_columns_agree_when_a_pre_empted_record_had_a_field_first(tmp_path):
    (tmp_path / "events.out.tfevents.1").write_bytes(
        record_frame(0, "t", {"x": 0}) + record_frame(1, "t", {"y": 1})
        + record_frame(1, "t", {"z": 1}) + record_frame(2, "t", {"y": 2}))  # fmt: skip
    csv_text = run_cli("export", tmp_path, "--format", "csv")
    assert csv_text.splitlines()[0] == "run,tag,step,wall_time,level,x,z,y"
    assert plugin_export(tmp_path, "csv") == csv_text


def test_runs_come_in_name_order_however_they_are_asked_for(tmp_path):
    for run in ("b", "a"):
        (tmp_path / run).mkdir()
        (tmp_path / run / "events.out.tfevents.1").write_bytes(record_frame(0, "t", {"r": run}))
    page = plugin_for(tmp_path).records_impl(MultiDict([("run", "b"), ("run", "a")]))
    assert [row["run"] for row in page["rows"]] == ["a", "b"]
    lines = run_cli("export", tmp_path, "--run", "b", "--run", "a").splitlines()
    assert [json.loads(line)["run"] for line in lines] == ["a", "b"]


@pytest.fixture(scope="module")
def mixed_logdir(tmp_path_factory) -> Path:
    """Several runs, a resumed run, a truncated file, a corrupt record, text summaries, NaN and
    infinities from tbkit, and hand-written objects with 1e400, -1e400 and bare NaN-like text."""
    root = tmp_path_factory.mktemp("mixed")
    train = root / "exp" / "train"
    log = tbkit.SummaryLogger(train, every={"info": 1})

    @log.train_step
    def step(x):
        tbkit.record("train", {"loss": x, "inv": 1.0 / x, "opt": {"lr": 0.001}, "n": "a,b\n\"c\""})
        tbkit.text("msg", tf.strings.as_string(x), level="warning")

    with log:
        for value in (2.0, 0.0, float("nan"), -0.0, 3.5):
            step(tf.constant(value))
    next_second()  # the resumed run's file sorts after the first one's
    resumed = tbkit.SummaryLogger(train, every={"info": 1}, step=tf.Variable(3, dtype=tf.int64))

    @resumed.train_step(advance=True)
    def again(x):
        tbkit.record("train", {"loss": x, "resumed": True})

    with resumed, pytest.warns(tbkit.SupersedeWarning, match="4 records at steps 3-4"):
        again(tf.constant(9.0))
    writer = tf.summary.create_file_writer(str(root / "exp" / "notes"))
    with writer.as_default():
        tf.summary.text("plain", "from tf.summary.text", step=0)
    writer.close()
    hand = root / "hand"
    hand.mkdir()
    bad = bytearray(raw_frame(1, "h", [b'{"x":2,"level":"info"}']))
    bad[-2] ^= 0xFF
    (hand / "events.out.tfevents.1").write_bytes(
        raw_frame(0, "h", [b'{"x":1e400,"y":[-1e400,1E400],"z":{"w":-1e400},"level":"info"}',
                           b'{ "x" : 1.5 ,\n "y":"NaN", "level":"error"}'])  # fmt: skip
        + bytes(bad) + raw_frame(2, "h", [b'{"x":3,"level":"debug"}']))
    whole = raw_frame(3, "h", [b'{"x":4,"level":"info"}'])
    (hand / "events.out.tfevents.2").write_bytes(whole + whole[:-7])  # truncated
    return root


def strict(line: str):
    """Parse a JSON line, refusing NaN/Infinity constants and numbers no double holds."""

    def no_constant(name):
        raise AssertionError(f"non-standard constant {name}")

    def finite(text):
        value = float(text)
        assert math.isfinite(value), f"{text} overflows a double"
        return value

    def finite_int(text):
        finite(text)
        return int(text)

    return json.loads(line, parse_constant=no_constant, parse_float=finite,
                      parse_int=finite_int)  # fmt: skip


def run_cli(*args) -> str:
    done = subprocess.run([TBKIT, *map(str, args)], capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.decode("utf-8")


def plugin_for(root: Path) -> TbkitPlugin:
    context = type("Context", (), {"logdir": str(root)})()
    return TbkitPlugin(context, min_interval=0, background=False)


def plugin_export(root: Path, fmt: str) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataLossWarning)
        chunks, _, _ = plugin_for(root).export_impl(MultiDict({"format": fmt}))
        return b"".join(chunks).decode("utf-8")


def test_every_reader_gives_the_same_rows_byte_for_byte(mixed_logdir):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        records = list(tbkit.read_records(mixed_logdir))
    assert len(caught) == 1 and "corrupt record" in str(caught[0].message)
    jsonl = "".join(json_line(r) + "\n" for r in records)
    assert run_cli("export", mixed_logdir) == jsonl
    assert plugin_export(mixed_logdir, "jsonl") == jsonl
    lines = [strict(line) for line in jsonl.splitlines()]
    assert [(r["run"], r["tag"], r["step"]) for r in lines] == [
        ("exp/notes", "plain", 0),
        *[("exp/train", tag, s) for s in (0, 1, 2) for tag in ("train", "msg")],
        ("exp/train", "msg", 3), ("exp/train", "msg", 4), ("exp/train", "train", 3),
        ("hand", "h", 0), ("hand", "h", 0), ("hand", "h", 2), ("hand", "h", 3),
    ]  # fmt: skip
    hand = [r for r in lines if r["run"] == "hand"]
    assert hand[0] == {"run": "hand", "tag": "h", "step": 0, "wall_time": 1_700_000_000.0,
                       "level": "info", "x": "Infinity", "y": ["-Infinity", "Infinity"],
                       "z": {"w": "-Infinity"}}  # fmt: skip
    assert list(hand[1])[:6] == ["run", "tag", "step", "wall_time", "level", "x"]
    msg = [r for r in lines if r["tag"] == "msg"]
    assert {r["level"] for r in msg} == {"warning"} and msg[0]["message"] == "2.000000"

    csv_text = run_cli("export", mixed_logdir, "--format", "csv")
    assert plugin_export(mixed_logdir, "csv") == csv_text
    table = list(csv.reader(io.StringIO(csv_text, newline="")))
    assert len(table) == len(records) + 1
    assert csv_text.count("\r\n") == len(table)  # RFC 4180 line ends; a "\n" inside a cell stays

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataLossWarning)
        page = plugin_for(mixed_logdir).records_impl(MultiDict({"limit": "1000"}))
    assert page["total"] == len(records)
    assert page["rows"] == [flatten(line) for line in lines]  # the table: the same values

    tail_out = run_cli("tail", mixed_logdir, "-n", len(records))
    assert sorted(tail_out.splitlines()) == sorted(tail.format_record(r) for r in records)


# (string written, CSV cell): formula starts get a leading "'", numbers and other text do not.
FORMULA_CELLS = [
    ("=1+1", "'=1+1"), ("+cmd|' /C calc'!A0", "'+cmd|' /C calc'!A0"), ("-2+3", "'-2+3"),
    ("@SUM(A1:A9)", "'@SUM(A1:A9)"), ("\t=1", "'\t=1"), ("\r=1", "'\r=1"), ("-", "'-"),
    ("--1", "'--1"), ("-NaN", "'-NaN"), ("- 1", "'- 1"), ("-1.5", "-1.5"), ("+3", "+3"),
    ("-1e5", "-1e5"), ("-.5", "-.5"), ("-Infinity", "-Infinity"), ("NaN", "NaN"),
    ("plain", "plain"), ("a=1", "a=1"), (" =1", " =1"), ("", ""), ("'=x", "'=x"),
]  # fmt: skip


def test_csv_cells_a_spreadsheet_would_run_start_with_a_quote(tmp_path):
    """OWASP's advice against formula injection, the same in the CLI's and the plugin's CSV;
    JSON numbers and the strings for non-finite numbers are never prefixed."""
    run = tmp_path / "run"
    run.mkdir()
    objects = [json.dumps({"s": text, "=HYPERLINK(x)": 1, "n": -1.5, "m": -3, "level": "info"})
               for text, _ in FORMULA_CELLS]  # fmt: skip
    (run / "events.out.tfevents.1").write_bytes(
        b"".join(raw_frame(i, "t", [o.encode()]) for i, o in enumerate(objects)))
    csv_text = run_cli("export", tmp_path, "--format", "csv")
    assert plugin_export(tmp_path, "csv") == csv_text
    header, *table = list(csv.reader(io.StringIO(csv_text, newline="")))
    assert header == ["run", "tag", "step", "wall_time", "level", "s", "'=HYPERLINK(x)", "n", "m"]
    assert [row[5] for row in table] == [cell for _, cell in FORMULA_CELLS]
    assert {(row[7], row[8]) for row in table} == {("-1.5", "-3")}
    jsonl = run_cli("export", tmp_path)  # JSON Lines keep the data as written
    assert [json.loads(line)["s"] for line in jsonl.splitlines()] == [t for t, _ in FORMULA_CELLS]
