"""The plugin's ``*_impl`` methods on real logdirs written by tbkit (no server, no mocks)."""

from __future__ import annotations

import csv
import io
import json
import time
import warnings

import pytest
import tensorflow as tf
from eventfiles import next_second
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tensorboard import errors
from tensorboard.plugins import base_plugin
from werkzeug.datastructures import MultiDict

import tbkit
from tbkit import metadata, query
from tbkit.data.levels import LEVELS
from tbkit.data.rows import flatten
from tbkit_plugin import selection
from tbkit_plugin.plugin import TbkitPlugin

BIG = 2**60 + 1  # past 2**53: the browser gets it as a string


def loss(step: int) -> float:
    return step * 0.5  # exact in float32


def write_run(run_dir, steps, *, start=0, close=True):
    """A tbkit run: "train" every step (info), "alert" every 50 steps (warning)."""
    counter = tf.Variable(start, dtype=tf.int64)  # the user's step: the loop advances it
    log = tbkit.SummaryLogger(str(run_dir), every={"debug": 1, "info": 1}, step=counter)

    @log.train_step
    def step(x):
        note = tf.where(x % 7.0 == 0.0, tf.constant("seven NaN"), tf.constant("plain"))
        tbkit.record("train", {"loss": x * 0.5, "opt": {"lr": 0.25}, "note": note,
                               "big": tf.constant(BIG, tf.int64)}, every=1)  # fmt: skip
        tbkit.record("alert", {"x": x}, level="warning", every=50)

    for i in range(start, start + steps):
        step(tf.constant(float(i)))
        counter.assign_add(1)
    if close:
        log.close()
    return log


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("logs")
    write_run(root / "exp" / "train", 120)
    write_run(root / "exp" / "deep" / "validation", 10)
    return root


def make_plugin(logdir) -> TbkitPlugin:
    return TbkitPlugin(base_plugin.TBContext(logdir=str(logdir)), min_interval=0, background=False)


@pytest.fixture(scope="module")
def plugin(logdir):
    return make_plugin(logdir)


def records(plugin, **params):
    args = MultiDict([(k, v) for k, vs in params.items()
                      for v in (vs if isinstance(vs, list) else [vs])])  # fmt: skip
    return plugin.records_impl(args)


def test_runs_tags_and_counts_nested_runs(plugin):
    assert plugin.runs_impl() == {"complete": True, "superseded": {}, "runs": {
        "exp/deep/validation": {"alert": 1, "train": 10},
        "exp/train": {"alert": 3, "train": 120},
    }}  # fmt: skip
    assert plugin.is_active()


def test_schema_types_and_flattened_names(plugin):
    got = plugin.schema_impl(MultiDict([("run", "exp/train"), ("tag", "train")]))["columns"]
    assert got == [
        {"name": "run", "type": "string", "dtype": "string"},
        {"name": "tag", "type": "string", "dtype": "string"},
        {"name": "step", "type": "number", "dtype": "int64"},
        {"name": "wall_time", "type": "number", "dtype": "float64"},
        {"name": "level", "type": "string", "dtype": "string"},
        {"name": "loss", "type": "number", "dtype": "float32"},
        {"name": "opt.lr", "type": "number", "dtype": "float64"},  # a Python float
        {"name": "note", "type": "string", "dtype": "string"},
        {"name": "big", "type": "number", "dtype": "int64"},
    ]  # fmt: skip
    alert = plugin.schema_impl(MultiDict([("tag", "alert")]))["columns"]
    assert [c["name"] for c in alert][5:] == ["x"]


def test_schema_kinds(tmp_path):
    run = tmp_path / "r"
    writer = tf.summary.create_file_writer(str(run))
    objs = [{"n": 1, "nf": "NaN", "s": "a", "b": True, "a": [1], "o": {}, "z": None, "m": 1},
            {"n": "Infinity", "nf": "-Infinity", "s": "b", "b": False, "a": [], "o": {},
             "z": None, "m": "x"}]  # fmt: skip
    with writer.as_default():
        for step, obj in enumerate(objs):
            tf.summary.write("t", tf.constant([json.dumps({**obj, "level": "info"})]),
                             step=tf.constant(step, tf.int64),
                             metadata=metadata.create_summary_metadata())  # fmt: skip
    writer.close()
    columns = make_plugin(tmp_path).schema_impl(MultiDict())["columns"]
    assert {c["name"]: c["type"] for c in columns} == {
        "run": "string", "tag": "string", "step": "number", "wall_time": "number",
        "level": "string", "n": "number", "nf": "number", "s": "string", "b": "bool",
        "a": "array", "o": "object", "z": "null", "m": "mixed"}  # fmt: skip


def test_filter_sort_page_total(plugin):
    got = records(plugin, run="exp/train", tag="train", where='loss >= 25 and note contains "nan"',
                  sort="loss", order="desc", limit="3", offset="1")  # fmt: skip
    expected_steps = sorted((s for s in range(50, 120) if s % 7 == 0), reverse=True)
    assert got["total"] == len(expected_steps)
    assert [r["step"] for r in got["rows"]] == expected_steps[1:4]
    assert got["rows"][0] == {"run": "exp/train", "tag": "train", "step": expected_steps[1],
                              "wall_time": got["rows"][0]["wall_time"], "level": "info",
                              "loss": loss(expected_steps[1]), "opt.lr": 0.25,
                              "note": "seven NaN", "big": str(BIG)}  # fmt: skip
    assert [c["name"] for c in got["columns"]][5:] == ["loss", "opt.lr", "note", "big"]


def test_default_order_is_runs_then_write_order(plugin):
    got = records(plugin, limit="1000")
    assert got["total"] == 134
    keys = [(r["run"], r["step"], r["tag"]) for r in got["rows"]]
    assert keys[:3] == [("exp/deep/validation", 0, "train"), ("exp/deep/validation", 0, "alert"),
                        ("exp/deep/validation", 1, "train")]  # fmt: skip
    assert keys[11] == ("exp/train", 0, "train")
    assert records(plugin, limit="5", offset="133")["rows"][0]["step"] == 119


def test_levels_step_range_and_search(plugin):
    warn = records(plugin, level="warning")
    assert [(r["run"], r["step"]) for r in warn["rows"]] == [
        ("exp/deep/validation", 0), ("exp/train", 0), ("exp/train", 50), ("exp/train", 100)]
    both = records(plugin, run="exp/train", level=["warning", "info"], step_min="49", step_max="50")
    assert [(r["tag"], r["step"]) for r in both["rows"]] == [
        ("train", 49), ("train", 50), ("alert", 50)]  # fmt: skip
    assert records(plugin, run="exp/train", search="SEVEN nan")["total"] == len(range(0, 120, 7))
    assert records(plugin, search='"tag":"alert"')["total"] == 4


def test_export_jsonl_and_csv(plugin):
    args = MultiDict([("run", "exp/train"), ("tag", "alert"), ("format", "jsonl")])
    chunks, content_type, name = plugin.export_impl(args)
    lines = [json.loads(line) for line in b"".join(chunks).decode().splitlines()]
    assert (content_type, name) == ("application/jsonl; charset=utf-8", "records.jsonl")
    assert [(o["step"], o["x"], o["level"]) for o in lines] == [
        (0, 0.0, "warning"), (50, 50.0, "warning"), (100, 100.0, "warning")]
    args = MultiDict([("run", "exp/train"), ("tag", "train"), ("format", "csv"), ("limit", "1"),
                      ("sort", "step"), ("order", "desc")])  # fmt: skip
    chunks, content_type, _ = plugin.export_impl(args)
    table = list(csv.reader(io.StringIO(b"".join(chunks).decode())))
    assert content_type == "text/csv; charset=utf-8"
    assert table[0] == [
        "run", "tag", "step", "wall_time", "level", "loss", "opt.lr", "note", "big"]  # fmt: skip
    assert len(table) == 121  # limit and offset do not apply to an export
    assert table[1][:3] + table[1][4:] == [
        "exp/train", "train", "119", "info", "59.5", "0.25", "seven NaN", str(BIG)]  # fmt: skip


def test_exports_agree_with_read_records(plugin, logdir):
    chunks, _, _ = plugin.export_impl(MultiDict())
    exported = [json.loads(line) for line in b"".join(chunks).decode().splitlines()]
    expected = [{"run": r.run, "tag": r.tag, "step": r.step, "wall_time": r.wall_time,
                 "level": r.level, **r.fields} for r in tbkit.read_records(logdir)]  # fmt: skip
    assert exported == expected


@pytest.mark.parametrize(("params", "error", "message"), [
    ({"run": "nope"}, errors.NotFoundError, "Not found: unknown run 'nope'"),
    ({"run": "exp/train", "tag": "nope"}, errors.NotFoundError, "Not found: unknown tag 'nope'"),
    ({"where": "loss >"}, errors.InvalidArgumentError,
     "Invalid argument: 'where': expected a value after '>' (got end of query)"),
    ({"where": "los > 1"}, errors.InvalidArgumentError,
     "Invalid argument: 'where': unknown field 'los' (did you mean 'loss'?)"),
    ({"limit": "0"}, errors.InvalidArgumentError,
     "Invalid argument: 'limit': must be an integer from 1 to 1000 (got '0')"),
    ({"limit": "1001"}, errors.InvalidArgumentError,
     "Invalid argument: 'limit': must be an integer from 1 to 1000 (got '1001')"),
    ({"offset": "-1"}, errors.InvalidArgumentError,
     "Invalid argument: 'offset': must be an integer at least 0 (got '-1')"),
    ({"step_min": "1.5"}, errors.InvalidArgumentError,
     "Invalid argument: 'step_min': must be an integer (got '1.5')"),
    ({"level": "warn"}, errors.InvalidArgumentError,
     "Invalid argument: 'level': must be one of debug, info, warning, error (got 'warn')"),
    ({"sort": "nope"}, errors.InvalidArgumentError,
     "Invalid argument: 'sort': unknown column 'nope'"),
    ({"order": "up"}, errors.InvalidArgumentError,
     "Invalid argument: 'order': must be 'asc' or 'desc' (got 'up')"),
])  # fmt: skip
def test_errors_name_the_parameter(plugin, params, error, message):
    with pytest.raises(error) as caught:
        records(plugin, **params)
    assert str(caught.value) == message


def test_where_error_carries_the_position(plugin):
    with pytest.raises(selection.BadParameter) as caught:
        records(plugin, where="loss > 1 and los < 2")
    assert (caught.value.parameter, caught.value.position) == ("where", 13)


def test_incremental_read_sees_appended_records_and_resumed_runs(tmp_path):
    plugin = make_plugin(tmp_path)
    log = write_run(tmp_path / "live", 30, close=False)
    log.flush()
    assert plugin.runs_impl()["runs"]["live"]["train"] == 30
    offsets = plugin.store._follower.readers["live"].offsets()
    log_more = log  # the same open writer appends to the same file

    @log_more.train_step
    def more(x):
        tbkit.record("train", {"loss": x, "opt": {"lr": 0.5}}, every=1)

    for i in range(30, 45):
        more(tf.constant(float(i)))
        log.step.assign_add(1)
    log.close()
    assert plugin.runs_impl()["runs"]["live"]["train"] == 45
    # read on, not again
    assert plugin.store._follower.readers["live"].offsets().keys() == offsets.keys()
    assert records(plugin, run="live", tag="train", step_min="44")["rows"][0]["opt.lr"] == 0.5
    next_second()
    with pytest.warns(tbkit.SupersedeWarning, match="35 records at steps 10-44"):
        write_run(tmp_path / "live", 5, start=10)  # a resumed run: a new file pre-empts 10 on
    assert plugin.runs_impl()["runs"]["live"] == {"alert": 1, "train": 15}
    steps = [r["step"] for r in records(plugin, run="live", tag="train", limit="100")["rows"]]
    assert steps == list(range(15))
    assert records(plugin, run="live", tag="train", step_min="10")["total"] == len(
        [r for r in tbkit.read_records(tmp_path, run="live", tag="train") if r.step >= 10])


def test_newer_schema_is_skipped_with_one_warning(tmp_path):
    meta = metadata.create_summary_metadata()
    meta.plugin_data.content = b'{"version": 99}'
    writer = tf.summary.create_file_writer(str(tmp_path / "new"))
    with writer.as_default():
        for step in range(3):
            tf.summary.write("t", tf.constant(['{"level":"info","a":1}']),
                             step=tf.constant(step, tf.int64), metadata=meta)  # fmt: skip
    writer.close()
    plugin = make_plugin(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert plugin.runs_impl() == {"runs": {}, "superseded": {}, "complete": True}
        assert plugin.runs_impl() == {"runs": {}, "superseded": {}, "complete": True}
    assert [str(w.message) for w in caught] == [
        "tbkit: skipping run 'new' tag 't': its records have schema version 99, newer than "
        "version 3 that this tbkit reads; upgrade tbkit."
    ]
    assert not plugin.is_active()


# The columnar store against the row-by-row references: tbkit.read_records with Query.matches
# for `where`, selection.sort_key for `sort`, a substring of each export line for `search`.

POOL = [0, 1, -1, 2, 7, 2**53, 2**53 + 1, 2**60 + 1, -(2**60) - 1, 2**64 + 5, 0.5, -0.0, 0.0, 2.5,
        1e-3, 1e300, 9007199254740992.0, "NaN", "Infinity", "-Infinity", "abc", "ABC", "Straße",
        "STRASSE", "got nan here", "", "1", "é", True, False, None, [1, 2], [], {}, {"x": 1},
        {"x": "deep"}]  # fmt: skip


def write_events(run_dir, data, *, metadata_first=True):
    """Event files without TensorFlow: ``data`` is [(step, [object, ...])], one datum each."""
    from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, types_pb2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    writer = EventFileWriter(str(run_dir))
    for i, (step, objects) in enumerate(data):
        tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, string_val=[
            (o if isinstance(o, str) else json.dumps(o, ensure_ascii=False)).encode()
            for o in objects])  # fmt: skip
        value = summary_pb2.Summary.Value(tag="rec", tensor=tensor)
        if i == 0 and metadata_first:
            value.metadata.CopyFrom(metadata.create_summary_metadata())
        event = event_pb2.Event(step=step, wall_time=1.7e9 + i / 8,
                                summary=summary_pb2.Summary(value=[value]))  # fmt: skip
        writer.add_event(event)
    writer.close()


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """Runs of records whose fields hold every JSON kind, big ints, NaN-like strings, nested
    objects and missing fields; a resumed run (pre-emption) and a run at steps past 2**53."""
    import random

    rng = random.Random(3)
    root = tmp_path_factory.mktemp("mixed")
    ident = iter(range(10**6))

    def obj():
        o = {"id": next(ident), "level": rng.choice(["debug", "info", "warning", "error"])}
        for name in ("a", "odd key", "s"):
            if rng.random() < 0.85:
                o[name] = rng.choice(POOL)
        if rng.random() < 0.9:
            o["b"] = rng.choice([rng.uniform(-3, 3), rng.randrange(-5, 5), "NaN", 2**60 + 3,
                                 -0.0, 0.0])  # fmt: skip
        if rng.random() < 0.5:
            o["opt"] = {"lr": rng.choice([1e-3, 2e-3, 0.5, None])}
        return o

    write_events(root / "exp" / "a", [(s, [obj() for _ in range(rng.choice([1, 1, 2]))])
                                      for s in range(60)])  # fmt: skip
    write_events(root / "exp" / "b", [(s, [obj()]) for s in range(0, 80, 2)])
    write_events(root / "resumed", [(s, [obj()]) for s in range(20)])
    write_events(root / "resumed", [(s, [obj()]) for s in range(8, 15)])  # pre-empts 8 on
    write_events(root / "big", [(2**60 + s, [obj()]) for s in range(5)])
    write_events(root, [(s, [obj()]) for s in range(12)])  # run ".", first in name order
    return root


@pytest.fixture(scope="module")
def mixed_plugin(mixed):
    return make_plugin(mixed)


@pytest.fixture(scope="module")
def mixed_rows(mixed):
    """Every record as a flat row (built-ins win over fields of the same name), in order."""
    out = []
    for r in tbkit.read_records(mixed):
        row = flatten(r.fields)
        row.update(run=r.run, tag=r.tag, step=r.step, wall_time=r.wall_time, level=r.level)
        out.append(row)
    return out


def ids(plugin, **params):
    got = records(plugin, limit="1000", **params)
    assert got["total"] == len(got["rows"]) and got["complete"] is True
    return [row["id"] for row in got["rows"]]


def test_the_store_reads_what_read_records_reads(mixed_plugin, mixed_rows):
    assert ids(mixed_plugin) == [row["id"] for row in mixed_rows]
    resumed = [row["step"] for row in mixed_rows if row["run"] == "resumed"]
    assert resumed == list(range(15))
    got = records(mixed_plugin, run="big", limit="10")["rows"]
    assert [r["step"] for r in got] == [str(2**60 + s) for s in range(5)]


LITERALS = ["0", "1", "-1", "2", "7", "9007199254740992", "9007199254740993", "1152921504606846977",
            "1152921504606846976", "18446744073709551621", "-1152921504606846977", "0.5", "-0.0",
            "0.0", "2.5", "1e300", "1.152921504606847e18", "9007199254740992.0", "nan", "infinity",
            "-infinity", "1e-3", '"abc"', '"NaN"', '"Straße"', '""', '"1"', '"é"',
            '"Infinity"']  # fmt: skip
FIELDS_Q = ["a", "b", "s", "`odd key`", "opt.lr", "a.x", "id", "step", "wall_time", "run", "tag"]
NEEDLES = ["nan", "ABC", "strasse", "ß", "1", "2", "true", "[1", "{}", "deep", "e", "0.5", "é",
           "exp/", "115292150460684697", "-", "-0", "0.0"]  # fmt: skip


@st.composite
def where_text(draw, depth=0):
    kind = draw(st.sampled_from(["cmp", "cmp", "cmp", "null", "contains", "exists", "level"]
                                + (["and", "or", "not"] if depth < 3 else [])))  # fmt: skip
    if kind in ("and", "or"):
        parts = [draw(where_text(depth + 1)) for _ in range(draw(st.integers(2, 3)))]
        return "(" + f" {kind} ".join(parts) + ")"
    if kind == "not":
        return "not (" + draw(where_text(depth + 1)) + ")"
    if kind == "level":
        op = draw(st.sampled_from(["==", "!=", "<", "<=", ">", ">="]))
        return f"level {op} {draw(st.sampled_from(['debug', 'info', 'warning', 'error']))}"
    name = draw(st.sampled_from(FIELDS_Q))
    if kind == "exists":
        return f"exists {name}"
    if kind == "contains":
        return f'{name} contains "{draw(st.sampled_from(NEEDLES))}"'
    if kind == "null":
        return f"{name} {draw(st.sampled_from(['==', '!=']))} " + \
            draw(st.sampled_from(["null", "true", "false"]))  # fmt: skip
    op = draw(st.sampled_from(["==", "!=", "<", "<=", ">", ">="]))
    return f"{name} {op} {draw(st.sampled_from(LITERALS))}"


RUNS = [".", "big", "exp/a", "exp/b", "resumed"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(where_text(), st.lists(st.sampled_from(RUNS), unique=True, max_size=4))
def test_vectorised_where_equals_the_python_filter(mixed_plugin, mixed_rows, text, runs):
    """Any filter over any runs, asked in any order: the rows of Query, runs in name order."""
    q = query.parse(text)
    chosen = [row for row in mixed_rows if not runs or row["run"] in runs]
    try:
        got = ids(mixed_plugin, where=text, run=runs)
    except selection.BadParameter as e:  # a field none of these runs has is refused
        assert e.message.startswith("unknown field"), e.message
        assert not q.fields <= {name for row in chosen for name in row}, (text, runs)
        return
    assert got == [row["id"] for row in chosen if q(row)], (text, runs)


@pytest.mark.parametrize("column", ["a", "b", "s", "odd key", "opt.lr", "a.x", "id", "step",
                                    "wall_time", "run", "tag", "level"])  # fmt: skip
@pytest.mark.parametrize("order", ["asc", "desc"])
def test_vectorised_sort_equals_a_stable_python_sort(mixed_plugin, mixed_rows, column, order):
    present = [row for row in mixed_rows if row.get(column) is not None]
    missing = [row for row in mixed_rows if row.get(column) is None]
    present.sort(key=lambda row: selection.sort_key(row[column], column), reverse=order == "desc")
    assert ids(mixed_plugin, sort=column, order=order) == [row["id"] for row in present + missing]


def test_level_sorts_by_severity(mixed_plugin):
    for order, levels in (("asc", LEVELS), ("desc", LEVELS[::-1])):
        got = [r["level"] for r in records(mixed_plugin, sort="level", order=order,
                                           limit="1000")["rows"]]  # fmt: skip
        assert list(dict.fromkeys(got)) == list(levels)  # each level once, in severity order
        assert got == sorted(got, key=LEVELS.index, reverse=order == "desc")


@pytest.mark.parametrize("needle", [*NEEDLES, '"tag":"rec"', '"odd key":', "STRASSE", "\n", "x"])
def test_vectorised_search_equals_a_substring_of_each_export_line(mixed_plugin, needle):
    chunks, _, _ = mixed_plugin.export_impl(MultiDict())
    lines = b"".join(chunks).decode().split("\n")[:-1]
    expected = [json.loads(line)["id"] for line in lines if needle.casefold() in line.casefold()]
    assert ids(mixed_plugin, search=needle) == expected


def test_filters_combine(mixed_plugin, mixed_rows):
    where = 'b > 0 or s contains "nan"'
    q = query.parse(where)
    expected = [row for row in mixed_rows if q(row) and row["level"] in ("info", "error")
                and 5 <= row["step"] <= 40 and row["run"] in ("exp/a", "resumed")]  # fmt: skip
    expected.sort(key=lambda row: selection.sort_key(row["wall_time"]), reverse=True)
    got = ids(mixed_plugin, run=["exp/a", "resumed"], level=["info", "error"], step_min="5",
              step_max="40", where=where, sort="wall_time", order="desc")  # fmt: skip
    assert got == [row["id"] for row in expected]


def test_background_reading_answers_coherent_prefixes_until_complete(tmp_path):
    """While the loader thread reads, every answer is the start of the final answer."""
    write_events(tmp_path / "r", [(s, [{"level": "info", "i": s}]) for s in range(30_000)])
    plugin = TbkitPlugin(base_plugin.TBContext(logdir=str(tmp_path)), min_interval=0.1)
    seen, deadline = [], time.monotonic() + 300  # a guard against hanging, not a timing
    while time.monotonic() < deadline:
        got = records(plugin, limit="1000", offset="0")
        seen.append((got["total"], [r["i"] for r in got["rows"]]))
        if got["complete"]:
            break
    assert seen[-1][0] == 30_000
    for total, rows in seen:
        assert rows == list(range(min(total, 1000)))
    assert [t for t, _ in seen] == sorted(t for t, _ in seen)
    assert records(plugin, where="i >= 29990")["total"] == 10


def test_the_schema_forgets_fields_only_pre_empted_records_held(tmp_path):
    """A resumed run pre-empts rows already committed (the first chunk is 2 000 records): the
    schema, the filter's field check and the CSV header follow the records that remain."""
    old = [(s, [{"level": "info", "old": 1, "x": "text"}]) for s in range(2500)]
    write_events(tmp_path / "run", old)
    time.sleep(0.01)  # a second file, named later
    write_events(tmp_path / "run", [(s, [{"level": "info", "x": s}]) for s in range(10)])
    plugin = make_plugin(tmp_path)
    columns = {c["name"]: c["type"] for c in plugin.schema_impl(MultiDict())["columns"]}
    assert "old" not in columns and columns["x"] == "number"
    assert {k for r in tbkit.read_records(tmp_path) for k in r.fields} == {"x"}
    with pytest.raises(selection.BadParameter, match="unknown field 'old'"):
        plugin.records_impl(MultiDict([("where", "old == 1")]))


def test_a_revision_poll_with_nothing_new_queries_no_rows(tmp_path):
    """/revision compares a counter: polling it never runs a row query (store.queries)."""
    plugin = make_plugin(tmp_path)
    write_run(tmp_path / "first", 5)
    first = plugin.revision_impl()
    assert first["complete"] is True and first["revision"] > 0
    assert records(plugin)["total"] == 6  # 5 train, 1 alert
    queries = plugin.store.queries
    assert queries > 0  # the page above was a query
    for _ in range(50):
        assert plugin.revision_impl() == first
    assert plugin.store.queries == queries
    write_run(tmp_path / "second", 3)  # a new run bumps the revision
    later = plugin.revision_impl()
    assert later["revision"] > first["revision"] and later["complete"] is True
    assert plugin.store.queries == queries
    assert records(plugin)["total"] == 6 + 4


def test_record_route_gives_the_record_as_written(plugin, logdir):
    """/records gives each row's id; /record?id= the nested record (big integers as strings)."""
    page = records(plugin, run="exp/train", tag="train", step_min="6", limit="2")
    assert len(page["ids"]) == len(page["rows"]) == 2
    written = next(r for r in tbkit.read_records(logdir, run="exp/train", tag="train")
                   if r.step == 7)  # fmt: skip
    answer = plugin.record_impl(MultiDict([("id", str(page["ids"][1]))]))
    assert answer == {"id": page["ids"][1], "record": {
        "run": "exp/train", "tag": "train", "step": 7, "wall_time": written.wall_time,
        "level": "info", "loss": 3.5, "opt": {"lr": 0.25}, "note": "seven NaN", "big": str(BIG)}}
    assert list(answer["record"]) == ["run", "tag", "step", "wall_time", "level", "loss", "opt",
                                      "note", "big"]  # fmt: skip


@pytest.mark.parametrize("value", [None, "", "x", "-1", "1.5", "²"])
def test_record_route_refuses_a_bad_id(plugin, value):
    args = MultiDict([] if value is None else [("id", value)])
    with pytest.raises(selection.BadParameter) as caught:
        plugin.record_impl(args)
    assert str(caught.value) == f"Invalid argument: 'id': must be an integer ≥ 0 (got {value!r})"


def test_record_route_answers_404_for_an_unknown_id(plugin):
    with pytest.raises(errors.NotFoundError) as caught:
        plugin.record_impl(MultiDict([("id", "999999")]))
    assert str(caught.value) == "Not found: no record with id 999999"
