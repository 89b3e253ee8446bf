"""The `tbkit` command line's reading commands: export, tail and stats, through the real script.

Logdirs are written with tbkit.SummaryLogger and plain tf.summary; what the commands print is
compared with tbkit.read_records (export), TensorBoard's own event loader (tail, stats) and what
the test wrote.
"""

from __future__ import annotations

import csv
import io
import json
import os
import pty
import queue
import signal
import struct
import subprocess
import sys
import threading
import time
import tracemalloc
import tty
from pathlib import Path

import google_crc32c
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tbserver import stop
from tensorboard.backend.event_processing import event_file_loader
from tensorboard.compat.proto import event_pb2
from test_imports import BLOCK_TENSORFLOW

import tbkit
from tbkit.cli import export
from tbkit.cli import main as cli
from tbkit.data import events
from tbkit.data import logdir as logdirs
from tbkit.data.rows import flatten
from tbkit.summary import summary_pb

TBKIT = os.path.join(os.path.dirname(sys.executable), "tbkit")
BIG = 2**62 + 1
NOTES = ["plain", 'comma, "quoted"\nnew line', "Straße ünïcode", "", "tab\there", "x"]


def run_tbkit(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([TBKIT, *map(str, args)], capture_output=True, text=True,
                          encoding="utf-8", timeout=300, env=env)  # fmt: skip


def rename_new(folder: Path, before: set, name: str) -> None:
    """Give the event file a writer just made a name that sorts where the test wants it."""
    (new,) = set(folder.iterdir()) - before
    new.rename(folder / name)


@pytest.fixture(scope="module")
def logdir(tmp_path_factory) -> Path:
    """exp/train (records, scalars, histograms, text; resumed at step 4, which pre-empts steps
    4 and 5), exp/validation (other fields), plain (TensorBoard's own summaries only: its text
    summaries are records too), scalars (no records)."""
    import tensorflow as tf

    root = tmp_path_factory.mktemp("logs")
    train_dir = root / "exp" / "train"
    train_dir.mkdir(parents=True)

    def write_train(first_step: int, steps: int, note_prefix: str, file_name: str) -> None:
        before = set(train_dir.iterdir())
        log = tbkit.SummaryLogger(train_dir, every={"info": 1, "debug": 2})
        log.step.assign(first_step)

        @log.train_step
        def step(note):
            s = tf.cast(log.step, tf.float32)
            loss = tf.where(tf.equal(s, 3.0), float("nan"), 1.0 / (s + 1.0))
            tbkit.scalar("loss", loss)
            tbkit.histogram("weights", tf.range(10.0) * s, level="debug")
            tbkit.record("train", {"loss": loss, "big": tf.constant(BIG, tf.int64),
                                   "note": note, "opt": {"lr": 0.1 / (s + 1.0)}})  # fmt: skip
            tbkit.text("msg", tf.strings.join(["debug at ", tf.strings.as_string(log.step)]),
                       level="debug")  # fmt: skip

        with log:
            for i in range(steps):
                step(tf.constant(note_prefix + NOTES[i % len(NOTES)]))
        rename_new(train_dir, before, file_name)

    write_train(0, 6, "", "events.out.tfevents.1.host.1.0.v2")
    with pytest.warns(tbkit.SupersedeWarning, match="3 records at steps 4-5"):
        write_train(4, 2, "resumed ", "events.out.tfevents.2.host.1.0.v2")

    validation = tbkit.SummaryLogger(root / "exp" / "validation", every={"info": 1})

    @validation.train_step
    def evaluate(acc):
        tbkit.record("eval", {"acc": acc, "opt": {"beta": 0.9}, "ok": acc > 0.5})

    with validation:
        for acc in (0.25, 0.75, 1.0):
            evaluate(tf.constant(acc))

    writer = tf.summary.create_file_writer(str(root / "plain"))
    with writer.as_default():
        for step in range(4):
            tf.summary.scalar("s", step / 2, step=step)
            tf.summary.histogram("h", tf.range(100.0) * step, step=step)
            tf.summary.text("t", f"note {step}", step=step)
            tf.summary.image("img", tf.zeros([1, 8, 8, 3]) + step / 4, step=step)
    writer.close()
    writer = tf.summary.create_file_writer(str(root / "scalars"))
    with writer.as_default():
        tf.summary.scalar("s", 1.0, step=0)
    writer.close()
    return root


def json_line(r: tbkit.Record) -> str:
    obj = {"run": r.run, "tag": r.tag, "step": r.step, "wall_time": r.wall_time,
           "level": r.level, **r.fields}  # fmt: skip
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def strict_loads(line: str):
    def refuse(name):
        raise ValueError(f"{name} is not strict JSON")

    return json.loads(line, parse_constant=refuse)


def export_lines(logdir: Path, *args: str, tmp_path: Path) -> list[str]:
    out = tmp_path / "out.jsonl"
    assert cli.main(["export", str(logdir), "-o", str(out), *args]) == 0
    return out.read_text(encoding="utf-8").splitlines()


# -- export ---------------------------------------------------------------------------------


def test_export_jsonl_is_read_records_one_strict_object_a_line(logdir):
    done = run_tbkit("export", logdir)
    assert done.returncode == 0 and done.stderr == ""
    records = list(tbkit.read_records(logdir))
    assert done.stdout.splitlines() == [json_line(r) for r in records]
    objects = [strict_loads(line) for line in done.stdout.splitlines()]
    train = [o for o in objects if o["tag"] == "train"]
    assert [o["step"] for o in train] == [0, 1, 2, 3, 4, 5]  # 4 and 5 from the resumed run
    assert [o["note"] for o in train][4:] == ["resumed plain", 'resumed comma, "quoted"\nnew line']
    assert {o["big"] for o in train} == {BIG}  # int64 exact
    assert [o["loss"] for o in train if o["step"] == 3] == ["NaN"]
    assert list(objects[0])[:5] == ["run", "tag", "step", "wall_time", "level"]


def _number(value) -> float | None:
    if isinstance(value, str) and value in ("NaN", "Infinity", "-Infinity"):
        return float(value.replace("Infinity", "inf"))
    return value if type(value) in (int, float) else None


FILTERS = [
    (["--where", "loss > 0.2"], lambda r: (_number(r.fields.get("loss")) or 0) > 0.2),
    (["--where", "loss == NaN"], lambda r: r.fields.get("loss") == "NaN"),
    (["--where", 'note contains "STRASSE"'],
     lambda r: "strasse" in r.fields.get("note", "").casefold()),
    (["--where", f"big == {BIG} and step >= 2"], lambda r: r.fields.get("big") == BIG
     and r.step >= 2),  # fmt: skip
    (["--where", "opt.lr < 0.04 or ok == true"],
     lambda r: (_number(r.fields.get("opt", {}).get("lr")) or 1) < 0.04
     or r.fields.get("ok") is True),
    (["--where", "level >= info and not tag == \"train\""],
     lambda r: r.level in ("info", "warning", "error") and r.tag != "train"),
    (["--run", "exp/validation"], lambda r: r.run == "exp/validation"),
    (["--tag", "msg", "--tag", "eval"], lambda r: r.tag in ("msg", "eval")),
    (["--run", "exp/train", "--tag", "msg", "--where", "step > 0"],
     lambda r: r.run == "exp/train" and r.tag == "msg" and r.step > 0),
]  # fmt: skip


@pytest.mark.parametrize(("args", "keep"), FILTERS, ids=[" ".join(a) for a, _ in FILTERS])
def test_export_filters_match_a_python_filter_over_read_records(logdir, tmp_path, args, keep):
    expected = [json_line(r) for r in tbkit.read_records(logdir) if keep(r)]
    assert expected  # every case selects something...
    assert len(expected) < len(list(tbkit.read_records(logdir)))  # ...and leaves something out
    assert export_lines(logdir, *args, tmp_path=tmp_path) == expected


def expected_columns(records) -> list[str]:
    """Built-ins, then per run, per tag in first-seen order, each tag's flat fields in order."""
    per_run: dict[str, dict[str, dict[str, None]]] = {}
    for r in records:
        keys = per_run.setdefault(r.run, {}).setdefault(r.tag, {})
        keys.update(dict.fromkeys(flatten(r.fields)))
    columns = dict.fromkeys(["run", "tag", "step", "wall_time", "level"])
    for tags in per_run.values():
        for keys in tags.values():
            columns.update(keys)
    return list(columns)


def test_export_csv_is_rfc4180_and_parses_back(logdir):
    done = subprocess.run([TBKIT, "export", str(logdir), "--format", "csv"], capture_output=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    text = done.stdout.decode("utf-8")
    records = list(tbkit.read_records(logdir))
    table = list(csv.reader(io.StringIO(text, newline="")))
    columns = expected_columns(records)
    assert table[0] == columns
    assert columns[5:] == ["loss", "big", "note", "opt.lr", "message", "acc", "opt.beta", "ok"]
    inner = sum(r.fields.get("note", "").count("\n") for r in records)
    assert inner > 0
    assert text.count("\r\n") == len(records) + 1  # CRLF ends every row and the header...
    assert text.count("\n") == len(records) + 1 + inner  # ...a newline in a cell stays as is
    rows = [dict(zip(columns, row, strict=True)) for row in table[1:]]
    assert len(rows) == len(records)
    for row, r in zip(rows, records, strict=True):
        flat = flatten(r.fields)
        assert (row["run"], row["tag"], row["step"], row["level"]) == (
            r.run, r.tag, str(r.step), r.level)  # fmt: skip
        assert float(row["wall_time"]) == r.wall_time
        for name in columns[5:]:
            value = flat.get(name)
            if value is None:
                assert row[name] == ""
            elif isinstance(value, bool):
                assert row[name] == json.dumps(value)
            elif isinstance(value, float):
                assert float(row[name]) == value
            else:
                assert row[name] == str(value)  # strings as written, ints exact
    assert {row["big"] for row in rows if row["tag"] == "train"} == {str(BIG)}
    assert {row["ok"] for row in rows if row["tag"] == "eval"} == {"false", "true"}


def test_export_format_follows_the_output_suffix_and_where_narrows_csv(logdir, tmp_path):
    out = tmp_path / "losses.csv"
    assert cli.main(["export", str(logdir), "--where", "loss < 0.3", "-o", str(out)]) == 0
    with open(out, newline="", encoding="utf-8") as f:
        table = list(csv.reader(f))
    keep = [r for r in tbkit.read_records(logdir) if (_number(r.fields.get("loss")) or 1) < 0.3]
    assert table[0] == expected_columns(list(tbkit.read_records(logdir)))
    assert [(row[1], int(row[2])) for row in table[1:]] == [(r.tag, r.step) for r in keep]


def test_export_memory_is_bounded_by_its_budget(tmp_path, monkeypatch):
    """Beyond its budget an export reads the files twice instead of holding the data: peak
    memory with 4x the records stays put (read_records' own peak grows with them)."""
    monkeypatch.setattr(export, "MEMORY_BUDGET", 1 << 20)

    def peak(n: int) -> tuple[int, int]:
        root = tmp_path / f"n{n}"
        items = [(step, "train", {"i": step, "pad": "p" * 3000}) for step in range(n)]
        write_raw(root / "run" / "events.out.tfevents.1.h.1.0.v2", items)
        tracemalloc.start()
        assert cli.main(["export", str(root), "--format", "csv", "-o", str(tmp_path / "o")]) == 0
        exported = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        list(tbkit.read_records(root))
        whole = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return exported, whole

    (small, small_whole), (big, big_whole) = peak(500), peak(2000)  # 1.5 and 6 MB files
    assert big_whole > 3 * small_whole  # what holding every record costs
    assert big < 1.3 * small


def test_output_file_appears_whole_or_not_at_all(logdir, tmp_path):
    out = tmp_path / "out.jsonl"
    assert cli.main(["export", str(logdir), "--where", "los > 1", "-o", str(out)]) == 2
    assert list(tmp_path.iterdir()) == []


ERRORS = [
    (["export", "{missing}"], 1, "tbkit export: logdir '{missing}' does not exist"),
    (["export", "{empty}"], 1, "tbkit export: no tbkit records under '{empty}'"),
    (["export", "{logdir}", "--run", "scalars"], 1,
     "tbkit export: no tbkit records in run 'scalars' under '{logdir}'"),
    (["export", "{logdir}", "--where", "loss >"], 2,
     "tbkit export: --where: expected a value after '>' (got end of query) at 6"),
    (["export", "{logdir}", "--where", "los > 1"], 2,
     "tbkit export: --where: unknown field 'los' (did you mean 'loss'?) at 0"),
    (["export", "{logdir}", "--where", 'msg matches "a+"'], 2,
     "tbkit export: --where: 'matches' is not supported (a regular expression can take "
     "exponential time); use 'contains' at 4"),
    (["export", "{logdir}", "--run", "exp/trian"], 2,
     "tbkit export: no run 'exp/trian' under '{logdir}' (did you mean 'exp/train'?)"),
    (["export", "{logdir}", "--tag", "evl"], 2,
     "tbkit export: no tbkit records with tag 'evl' (did you mean 'eval'?)"),
    (["export", "{logdir}", "-o", "{missing}/out.jsonl"], 1,
     "tbkit export: No such file or directory: '{missing}/out.jsonl'"),
    (["tail", "{missing}"], 1, "tbkit tail: logdir '{missing}' does not exist"),
    (["tail", "{empty}"], 1, "tbkit tail: no tbkit records under '{empty}'"),
    (["stats", "{missing}"], 1, "tbkit stats: logdir '{missing}' does not exist"),
    (["stats", "{empty}"], 1, "tbkit stats: no event files under '{empty}'"),
]  # fmt: skip


@pytest.mark.parametrize(("args", "code", "message"), ERRORS, ids=[" ".join(e[0]) for e in ERRORS])
def test_errors_are_one_line_and_a_nonzero_exit(logdir, tmp_path, args, code, message):
    names = {"missing": str(tmp_path / "missing"), "empty": str(tmp_path / "empty"),
             "logdir": str(logdir)}  # fmt: skip
    (tmp_path / "empty").mkdir()
    done = run_tbkit(*[a.format(**names) for a in args])
    assert (done.returncode, done.stdout) == (code, "")
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith(message.format(**names))


def on_a_terminal(*args: str, stdout: bool = True) -> tuple[int, bytes]:
    """Run ``tbkit ARGS`` with stderr (and, if ``stdout``, stdout) on a real pty; its exit
    status and the bytes it wrote there. With stdout on it, the pty is raw: no "\\n" → "\\r\\n"
    on the way."""
    leader, follower = pty.openpty()
    if stdout:
        tty.setraw(follower)
    try:
        done = subprocess.Popen([TBKIT, *map(str, args)], stderr=follower,
                                stdout=follower if stdout else subprocess.DEVNULL,
                                env={**os.environ, "TERM": "xterm"})  # fmt: skip
        os.close(follower)
        shown = b""
        while True:  # read while it runs: a full terminal buffer would block it
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: every writer has closed the terminal
                break
            if not chunk:
                break
            shown += chunk
        return done.wait(timeout=300), shown
    finally:
        os.close(leader)


def test_progress_bar_on_a_terminal_only(logdir, tmp_path):
    out = tmp_path / "out.jsonl"
    code, shown = on_a_terminal("export", logdir, "-o", out, stdout=False)
    assert code == 0
    count = len(list(tbkit.read_records(logdir)))
    assert b"\x1b[?25l" in shown  # rich's live display took the terminal (hid the cursor)
    assert f"{count} records to {out}".encode() in shown
    quiet = run_tbkit("export", logdir, "-o", out)  # stderr is a pipe here
    assert (quiet.returncode, quiet.stderr) == (0, "")


# -- the stream behind export -------------------------------------------------------------


def masked_crc(data: bytes) -> bytes:
    crc = google_crc32c.value(data)
    return struct.pack("<I", (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF)


def frame(event: event_pb2.Event) -> bytes:
    data = event.SerializeToString()
    length = struct.pack("<Q", len(data))
    return length + masked_crc(length) + data + masked_crc(data)


def record_event(step: int, tag: str, fields: dict, *, metadata: bool = True) -> event_pb2.Event:
    event = event_pb2.Event(step=step, wall_time=1_700_000_000 + step / 8)
    event.summary.CopyFrom(summary_pb.record_pb(tag, fields))
    if not metadata:
        event.summary.value[0].ClearField("metadata")
    return event


def write_raw(path: Path, items, mode: str = "wb") -> None:
    """Frames of ``(step, tag, fields)`` records, written without TensorFlow."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, mode) as f:
        for step, tag, fields in items:
            f.write(frame(record_event(step, tag, fields)))


def tensorboard_rule(items) -> dict[str, list[tuple]]:
    """The records of ``items`` (tag, step, has metadata, file) per run by TensorBoard's rule,
    written independently of the event layer: a tag's data wait for its first metadata, then
    a datum at the same or a smaller step than its tag's last one pre-empts those at or above
    its step."""
    runs: dict[str, dict] = {}
    in_file_order = sorted(enumerate(items), key=lambda item: item[1][3])  # files by name
    for i, (tag, step, with_metadata, where) in in_file_order:
        run = runs.setdefault("r1" if where < 2 else "r2", {"order": [], "tags": {}})
        state = run["tags"].setdefault(tag, {"decided": False, "data": []})
        state["data"].append((step, tag, i))
        if with_metadata and not state["decided"]:
            state["decided"] = True
        if state["decided"]:
            for datum in state["data"]:
                kept = [d for d in run["order"] if d[1] != tag or d[0] < datum[0]]
                run["order"] = [*kept, datum]
            state["data"] = []
    return {name: [(tag, step, {"i": i}) for step, tag, i in run["order"]]
            for name, run in sorted(runs.items())}  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("ab"), st.integers(0, 6), st.booleans(),
                          st.integers(0, 2)), max_size=30))  # fmt: skip
def test_whole_runs_follow_tensorboards_rule_in_one_pass_or_two(items):
    """Random step sequences with restarts, data before metadata, several files and runs: held
    in memory or read twice (no budget), a run's records are TensorBoard's."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        for i, (tag, step, with_metadata, where) in enumerate(items):
            path = root / ("r1" if where < 2 else "r2") / f"events.out.tfevents.{where}.h.1.0.v2"
            path.parent.mkdir(exist_ok=True)
            with open(path, "ab") as f:
                f.write(frame(record_event(step, tag, {"i": i}, metadata=with_metadata)))
        want = tensorboard_rule(items)
        for name, paths in logdirs.Logdir(root).runs():
            for budget in (events.DEFAULT_BUDGET, 0):
                run = events.scan(name, paths, events.Budget(budget))
                assert (run.kept is None) == (budget == 0 and bool(run.counts))
                got = [(r.tag, r.step, r.fields) for d in events.kept(run)
                       for r in events.records(d)]  # fmt: skip
                assert got == want[name]


def test_csv_columns_leave_out_fields_only_pre_empted_data_had(tmp_path):
    run = tmp_path / "run"
    write_raw(
        run / "events.out.tfevents.1.h.1.0.v2",
        [(0, "t", {"a": 0}), (5, "t", {"a": 5, "old": 1}), (1, "u", {"b": 1})],
    )
    write_raw(run / "events.out.tfevents.2.h.1.0.v2", [(3, "t", {"a": 3, "new": 1})])  # resumed
    out = tmp_path / "out.csv"
    assert cli.main(["export", str(tmp_path), "-o", str(out)]) == 0
    with open(out, newline="", encoding="utf-8") as f:
        table = list(csv.reader(f))
    assert table[0] == ["run", "tag", "step", "wall_time", "level", "a", "new", "b"]
    assert [row[1:3] for row in table[1:]] == [["t", "0"], ["u", "1"], ["t", "3"]]
    done = run_tbkit("export", tmp_path, "--where", "old == 1")
    assert (done.returncode, done.stderr) == (
        2, "tbkit export: --where: unknown field 'old' at 0\n")  # fmt: skip


# -- tail ------------------------------------------------------------------------------------


def written_records(logdir: Path) -> list[tuple]:
    """Every tbkit and text record in write order, pre-empted ones too, read with TensorBoard's
    loader."""
    out = []
    for run, paths in logdirs.Logdir(logdir).runs():
        for path in paths:
            for event in event_file_loader.EventFileLoader(path).Load():
                for value in event.summary.value:
                    plugin = value.metadata.plugin_data.plugin_name
                    for raw in value.tensor.string_val if plugin in ("tbkit", "text") else ():
                        fields = json.loads(raw) if plugin == "tbkit" else {
                            "message": raw.decode(), "level": value.metadata.summary_description
                            .removeprefix("tbkit level: ") or "info"}  # fmt: skip
                        level = fields.pop("level")
                        out.append((event.wall_time, run, value.tag, event.step, level, fields))
    return out


def tail_line(wall_time, run, tag, step, level, fields) -> str:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(int(wall_time)))
    millis = int((wall_time - int(wall_time)) * 1000)
    text = json.dumps(fields, ensure_ascii=False, separators=(",", ":"))
    return f"{stamp}.{millis:03d}  {run}  {tag}  step {step}  {level.upper():<7}  {text}"


def test_tail_prints_the_records_there_as_read_records_reads_them(logdir):
    done = run_tbkit("tail", logdir, env={**os.environ, "TZ": "UTC"})
    assert done.returncode == 0 and done.stderr == ""
    records = list(tbkit.read_records(logdir))
    assert len(written_records(logdir)) > len(records)  # the resumed run pre-empted some
    assert done.stdout.splitlines() == [
        tail_line(r.wall_time, r.run, r.tag, r.step, r.level, r.fields) for r in records
    ]


def test_tail_lines_starts_with_the_most_recent_records(tmp_path):
    write_raw(tmp_path / "a" / "events.out.tfevents.1.h.1.0.v2", [(10, "t", {}), (11, "t", {})])
    write_raw(tmp_path / "b" / "events.out.tfevents.1.h.1.0.v2", [(0, "t", {}), (1, "t", {})])
    done = run_tbkit("tail", tmp_path, "-n", "3")  # file order: a 10, a 11, b 0, b 1
    assert (done.returncode, done.stderr) == (0, "")
    assert [line.split("  ")[1:4] for line in done.stdout.splitlines()] == [
        ["b", "t", "step 1"], ["a", "t", "step 10"], ["a", "t", "step 11"]]  # fmt: skip
    done = run_tbkit("tail", tmp_path, "-n", "0")
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_tail_follow_picks_up_new_records_files_and_runs(tmp_path):
    first = tmp_path / "train" / "events.out.tfevents.1.h.1.0.v2"
    write_raw(first, [(0, "log", {"n": 0})])
    follower = subprocess.Popen(
        [TBKIT, "tail", "-f", "--interval", "0.05", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8",
        env={**os.environ, "TZ": "UTC"},
    )  # fmt: skip
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in follower.stdout], daemon=True).start()

    def next_line() -> str:
        return lines.get(timeout=120).rstrip("\n")  # a watchdog, not a timing assertion

    try:
        assert json.loads(next_line().split("  ")[-1]) == {"n": 0}
        write_raw(first, [(1, "log", {"n": 1})], mode="ab")  # appended to the same file
        assert json.loads(next_line().split("  ")[-1]) == {"n": 1}
        whole = frame(record_event(2, "log", {"n": 2}))
        with open(first, "ab") as f:  # half a record: nothing to print until it is whole
            f.write(whole[:30])
            f.flush()
            write_raw(
                tmp_path / "train" / "events.out.tfevents.2.h.1.0.v2", [(3, "log", {"n": 3})]
            )  # a new file in the run
            assert next_line().split("  ")[1:4] == ["train", "log", "step 3"]
            f.write(whole[30:])
        assert next_line().split("  ")[1:4] == ["train", "log", "step 2"]
        write_raw(tmp_path / "eval" / "events.out.tfevents.1.h.1.0.v2", [(4, "e", {"n": 4})])
        line = next_line()
        assert line == tail_line(1_700_000_000.5, "eval", "e", 4, "info", {"n": 4})
    finally:
        stop(follower, signal.SIGINT, timeout=60)
    assert follower.returncode == 0
    assert follower.stderr.read() == ""
    assert lines.empty()


def test_following_ends_at_the_poll_where_stopped_says_so(tmp_path):
    """The CLI's Ctrl-C handler also sets a flag the loop checks after each poll: Python drops
    a KeyboardInterrupt raised inside a finalizer, and one Ctrl-C must still end tail -f."""
    from tbkit.cli import tail

    write_raw(tmp_path / "a" / "events.out.tfevents.1.h.1.0.v2", [(0, "t", {"n": 0})])
    checks = []

    def stopped() -> bool:
        checks.append(len(checks))
        return len(checks) == 3

    out = io.StringIO()
    assert tail.tail(tmp_path, out, follow=True, interval=0.01, stopped=stopped) == 1
    assert len(checks) == 3 and len(out.getvalue().splitlines()) == 1


# -- stats -----------------------------------------------------------------------------------


def event_bytes_per_tag(run_dir: Path) -> dict[str, tuple[int, int, set]]:
    """tag → (bytes, events, steps), walking the TFRecord framing here: TF writes one summary
    value an event, so a tag's bytes are its events' data plus 16 bytes of framing each."""
    out: dict[str, tuple[int, int, set]] = {}
    for path in sorted(run_dir.glob("*tfevents*")):
        data, offset = path.read_bytes(), 0
        while offset < len(data):
            (length,) = struct.unpack_from("<Q", data, offset)
            event = event_pb2.Event.FromString(data[offset + 12 : offset + 12 + length])
            offset += 16 + length
            if event.HasField("summary"):
                assert len(event.summary.value) == 1
                tag = event.summary.value[0].tag
            else:
                tag = f"({event.WhichOneof('what')})"
            nbytes, events, steps = out.get(tag, (0, 0, set()))
            out[tag] = (nbytes + 16 + length, events + 1, steps | {event.step})
    return out


def test_stats_json_counts_every_plugin(logdir):
    done = run_tbkit("stats", logdir, "--json")
    assert done.returncode == 0 and done.stderr == ""
    report = json.loads(done.stdout)
    by_tag = {(t["run"], t["tag"]): t for t in report["tags"]}
    for run in ("exp/train", "exp/validation", "plain"):
        expected = event_bytes_per_tag(logdir / run)
        got = {tag: (t["bytes"], t["events"], t["steps"]) for (r, tag), t in by_tag.items()
               if r == run}  # fmt: skip
        assert got == {tag: (b, e, len(s)) for tag, (b, e, s) in expected.items()}
        files = sorted((logdir / run).glob("*tfevents*"))
        (row,) = [r for r in report["runs"] if r["run"] == run]
        assert row["bytes"] == sum(f.stat().st_size for f in files)
        assert (row["files"], row["unreadable_bytes"]) == (len(files), 0)
    plain = {tag: by_tag[("plain", tag)] for tag in ("s", "h", "t", "img")}
    assert {tag: (t["plugin"], t["events"], t["steps"]) for tag, t in plain.items()} == {
        "s": ("scalars", 4, 4), "h": ("histograms", 4, 4), "t": ("text", 4, 4),
        "img": ("images", 4, 4)}  # fmt: skip
    train = {tag: by_tag[("exp/train", tag)] for tag in ("train", "msg", "loss", "weights")}
    assert {tag: (t["plugin"], t["events"], t["steps"]) for tag, t in train.items()} == {
        "train": ("tbkit", 8, 6),
        "msg": ("text", 4, 3),
        "loss": ("scalars", 8, 6),
        "weights": ("histograms", 4, 3),
    }  # fmt: skip (6 + 2 resumed steps; debug every 2)
    assert report["bytes"] == sum(r["bytes"] for r in report["runs"])
    assert report["bytes"] == sum(t["bytes"] for t in report["tags"])
    assert report["bytes"] == sum(p["bytes"] for p in report["plugins"])
    for rows in (report["runs"], report["plugins"], report["tags"]):
        assert [r["bytes"] for r in rows] == sorted((r["bytes"] for r in rows), reverse=True)
    plugins = {p["plugin"]: p for p in report["plugins"]}
    assert plugins["tbkit"]["tags"] == 2 and plugins["images"]["events"] == 4


def test_stats_table_and_damaged_files(logdir, tmp_path):
    damaged = tmp_path / "run"
    damaged.mkdir()
    source = sorted((logdir / "plain").glob("*tfevents*"))[0].read_bytes()
    (damaged / "events.out.tfevents.1.h.1.0.v2").write_bytes(source[:-10])  # last record cut
    last_frame, offset = 0, 0
    while offset < len(source):  # walk the framing: length, its CRC, data, the data's CRC
        last_frame = 16 + struct.unpack_from("<Q", source, offset)[0]
        offset += last_frame
    report = json.loads(run_tbkit("stats", tmp_path, "--json").stdout)
    last = next(t for t in report["tags"] if t["tag"] == "img")  # images were written last
    assert last["events"] == 3
    assert report["unreadable_bytes"] == last_frame - 10
    assert report["bytes"] == len(source) - 10

    done = run_tbkit("stats", logdir, "--top", "2")
    assert done.returncode == 0 and done.stderr == ""
    lines = done.stdout.splitlines()
    report = json.loads(run_tbkit("stats", logdir, "--json").stdout)
    assert lines[0].startswith(f"{logdir}: 4 runs, ")
    header = lines.index(next(x for x in lines if x.startswith("run  ") and "plugin" in x))
    biggest = report["tags"][0]
    assert lines[header + 1].split()[:3] == [biggest["run"], biggest["tag"], biggest["plugin"]]
    assert lines[header + 3] == f"… {len(report['tags']) - 2} more tags (--top 0 shows all)"


# -- no TensorFlow --------------------------------------------------------------------------


def test_export_tail_and_stats_do_not_import_tensorflow(logdir):
    code = (
        BLOCK_TENSORFLOW
        + """
import contextlib, io, sys
from tbkit.cli import main as cli
for argv in (["export", sys.argv[1], "--format", "csv", "--where", "loss > 0"],
             ["tail", sys.argv[1]], ["stats", sys.argv[1], "--json"]):
    with contextlib.redirect_stdout(io.TextIOWrapper(io.BytesIO())):
        assert cli.main(argv) == 0, argv
print(sorted(m for m in sys.modules if m.split(".")[0] == "tensorflow"))
"""
    )
    done = subprocess.run([sys.executable, "-c", code, str(logdir)], capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert (done.returncode, done.stdout, done.stderr) == (0, "[]\n", "")


def test_a_record_finished_after_the_first_pass_is_left_for_the_next_export(tmp_path):
    """Both passes see the same bytes: a record half-written at the first look stays out, even
    when it is complete by the second (here a resumed step 0 with a new field)."""
    path = tmp_path / "run" / "events.out.tfevents.1"
    path.parent.mkdir()
    path.write_bytes(b"".join(frame(record_event(s, "t", {"x": s})) for s in range(3)))
    late = frame(record_event(0, "t", {"x": 100, "new": "field"}))
    with open(path, "ab") as f:
        f.write(late[:20])  # the writer is mid-record
    job = export.prepare(str(tmp_path), format="csv")
    with open(path, "ab") as f:
        f.write(late[20:])
    out = io.StringIO()
    job.write(out)
    rows = list(csv.reader(io.StringIO(out.getvalue())))
    assert rows[0] == ["run", "tag", "step", "wall_time", "level", "x"]
    assert [r[2] for r in rows[1:]] == ["0", "1", "2"]


def test_numbers_beyond_the_double_range_export_as_tbkit_writes_infinity(tmp_path):
    event = record_event(0, "t", {"x": 0})
    event.summary.value[0].tensor.string_val[0] = b'{"x":1e400,"y":[-1e400],"level":"info"}'
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "events.out.tfevents.1").write_bytes(frame(event))
    for command in ("export", "tail"):
        done = run_tbkit(command, str(tmp_path))
        assert done.returncode == 0 and done.stderr == "", done.stderr
        assert '"x":"Infinity"' in done.stdout and '"y":["-Infinity"]' in done.stdout


def test_an_exported_file_gets_the_usual_permissions(logdir, tmp_path):
    out = tmp_path / "out.jsonl"
    umask = os.umask(0o022)
    try:
        assert cli.main(["export", str(logdir), "-o", str(out)]) == 0
    finally:
        os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o644


def test_names_cannot_drive_the_terminal(tmp_path):
    """A run folder and a tag named with escape sequences (clear the screen, retitle the window)
    print as visible escapes in tail and stats; the data formats stay exact."""
    hostile = "run\x1b[2J\x1b]0;owned\x07"
    write_raw(tmp_path / hostile / "events.out.tfevents.1",
              [(0, "tag\x9b31m", {"note": "bell\x07 and \x85"})])  # fmt: skip
    for args in (["tail"], ["stats"]):
        done = run_tbkit(args[0], tmp_path, *args[1:])
        assert done.returncode == 0, done.stderr
        raw = done.stdout.encode("utf-8")
        assert not any(byte in raw for byte in (b"\x1b", b"\x07", "\x9b".encode(), "\x85".encode()))
        assert "run\\x1b[2J\\x1b]0;owned\\x07" in done.stdout
    assert "tag\\x9b31m" in run_tbkit("tail", tmp_path).stdout
    exported = json.loads(run_tbkit("export", tmp_path).stdout)
    assert (exported["run"], exported["tag"], exported["note"]) == (
        hostile, "tag\x9b31m", "bell\x07 and \x85")  # fmt: skip


RAW_CONTROLS = (b"\x1b", b"\x07", b"\x7f", "\x9b".encode(), "\x85".encode())


@pytest.fixture
def hostile(tmp_path) -> Path:
    """A run, a tag, a field name and values holding C0, DEL and C1 controls."""
    write_raw(tmp_path / "logs" / "run\x1b[2J\x1b]0;owned\x07" / "events.out.tfevents.1",
              [(0, "tag\x9b31m", {"note": "bell\x07 and \x85", "k\x9b": "x\x7fy"})])  # fmt: skip
    return tmp_path / "logs"


def test_export_to_a_terminal_shows_control_characters_escaped(hostile):
    code, shown = on_a_terminal("export", hostile)
    assert code == 0 and not any(c in shown for c in RAW_CONTROLS), shown
    line = shown.decode().strip()  # still one JSON object, of the same values
    assert json.loads(line) == {"run": "run\x1b[2J\x1b]0;owned\x07", "tag": "tag\x9b31m",
                                "step": 0, "wall_time": json.loads(line)["wall_time"],
                                "level": "info", "note": "bell\x07 and \x85",
                                "k\x9b": "x\x7fy"}  # fmt: skip
    assert '"tag\\u009b31m"' in line and '"k\\u009b":"x\\u007fy"' in line
    code, shown = on_a_terminal("export", hostile, "--format", "csv")
    assert code == 0 and not any(c in shown for c in RAW_CONTROLS), shown
    text = shown.decode()
    assert "run\\x1b[2J\\x1b]0;owned\\x07,tag\\x9b31m,0," in text
    assert text.endswith(",info,bell\\x07 and \\x85,x\\x7fy\r\n")
    assert text.startswith("run,tag,step,wall_time,level,note,k\\x9b\r\n")
    code, shown = on_a_terminal("stats", hostile, "--json")
    assert code == 0 and not any(c in shown for c in RAW_CONTROLS), shown
    assert json.loads(shown.decode())["runs"][0]["run"] == "run\x1b[2J\x1b]0;owned\x07"


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_export_to_a_pipe_is_the_data_as_exported_to_a_file(hostile, tmp_path, fmt):
    out = tmp_path / f"out.{fmt}"
    assert cli.main(["export", str(hostile), "--format", fmt, "-o", str(out)]) == 0
    piped = subprocess.run([TBKIT, "export", hostile, "--format", fmt], capture_output=True,
                           timeout=300)  # fmt: skip
    assert piped.returncode == 0 and piped.stdout == out.read_bytes()
    assert "tag\x9b31m".encode() in piped.stdout and "\x85".encode() in piped.stdout


def test_error_messages_show_control_characters_escaped(hostile, tmp_path):
    args = [("export", hostile, "--where", '"\x1b[2J\x9b"'),
            ("export", hostile, "--run", "r\x1b[2J\x9b"),
            ("export", tmp_path / "no\x1b[2J\x9b"),
            ("tail", tmp_path / "no\x1b[2J\x9b"),
            ("stats", tmp_path / "no\x1b[2J\x9b")]  # fmt: skip
    for command in args:
        done = run_tbkit(*command)
        assert done.returncode in (1, 2) and done.stderr.count("\n") == 1, done.stderr
        assert "\\x1b[2J\\x9b" in done.stderr, done.stderr
        assert not any(c in done.stderr.encode() for c in RAW_CONTROLS), done.stderr
    code, shown = on_a_terminal("export", hostile, "-o", tmp_path / "out\x1b[2J\x9b.jsonl")
    assert code == 0 and "1 records to " in shown.decode()
    assert b"out\\x1b[2J\\x9b.jsonl" in shown and "\x9b".encode() not in shown
