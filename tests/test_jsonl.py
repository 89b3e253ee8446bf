"""The JSON Lines sink: strict-JSON lines, the step of a real training loop, size rotation."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import textwrap
import threading

import pytest
import tensorflow as tf

import tbkit
from tbkit.data.errors import TbkitTypeError, TbkitValueError
from tbkit.integrations.jsonl import JsonLinesHandler
from tbkit.integrations.logbridge import SummaryHandler

KEYS = ["timestamp", "run", "step", "level", "logger", "message", "fields"]


def strict_loads(text):
    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def read_lines(path):
    """Every line of ``path`` as an object; each must be one strict-JSON object ending in \\n."""
    with open(path, "rb") as f:
        data = f.read()
    assert data == b"" or data.endswith(b"\n")
    objects = [strict_loads(line.decode("utf-8")) for line in data.splitlines()]
    assert all(isinstance(o, dict) for o in objects)
    return objects


def test_each_line_is_one_strict_json_object_at_the_training_step(tmp_path, pylog):
    log = tbkit.SummaryLogger(tmp_path / "logs")
    path = tmp_path / "train.jsonl"
    handler = JsonLinesHandler(path, run="train", step=log)
    pylog.addHandler(handler)

    @log.train_step
    def step():
        tbkit.scalar("x", 1.0)

    for i in range(3):
        pylog.info("step %d", i, extra={"loss": float("nan"), "lr": 1e-3, "note": "a\nb\"c"})
        step()
    try:
        raise KeyError("missing")
    except KeyError:
        pylog.critical("crashed", exc_info=True)
    pylog.debug("\u2028 unicode \u00e9 \ud83d")
    handler.close()
    log.close()
    lines = read_lines(path)
    assert [(o["step"], o["message"], o["level"]) for o in lines] == [
        (0, "step 0", "info"), (1, "step 1", "info"), (2, "step 2", "info"),
        (3, "crashed", "error"), (3, "\u2028 unicode \u00e9 \ufffd\ufffd\ufffd", "debug"),
    ]  # fmt: skip
    assert [list(o) for o in lines] == [KEYS] * 3 + [KEYS[:-1] + ["exception", "fields"], KEYS]
    assert lines[0]["fields"] == {"loss": "NaN", "lr": 0.001, "note": "a\nb\"c"}
    assert lines[3]["fields"] == {} and lines[3]["exception"].endswith("KeyError: 'missing'")
    assert {o["run"] for o in lines} == {"train"}
    assert {o["logger"] for o in lines} == {pylog.name}
    for o in lines:
        when = datetime.datetime.strptime(o["timestamp"], "%Y-%m-%dT%H:%M:%S.%f%z")
        assert when.tzinfo == datetime.UTC
        assert abs(when - datetime.datetime.now(datetime.UTC)).total_seconds() < 3600


def test_without_a_step_the_step_and_run_are_null_and_no_tensorflow_is_needed(tmp_path):
    script = textwrap.dedent(
        f"""
        import importlib.abc, logging, sys

        class NoTensorFlow(importlib.abc.MetaPathFinder):  # as on a machine without it
            def find_spec(self, name, path=None, target=None):
                if name.startswith("tensorflow"):
                    raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)

        sys.meta_path.insert(0, NoTensorFlow())
        from tbkit.integrations.jsonl import JsonLinesHandler
        logging.basicConfig(level=logging.INFO,
                            handlers=[JsonLinesHandler({str(tmp_path / "a.jsonl")!r})])
        for k in range(1000):
            logging.getLogger("app").info("line %d", k, extra={{"k": k}})
        assert "tensorflow" not in sys.modules, "tbkit.jsonl loaded TensorFlow"
        """  # never closed: logging's exit handler drains the queue
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    lines = read_lines(tmp_path / "a.jsonl")
    assert [(o["run"], o["step"], o["message"], o["fields"]) for o in lines] == [
        (None, None, f"line {k}", {"k": k}) for k in range(1000)
    ]


def fixed_lines(pylog, handler, count, width=20):
    """Log ``count`` lines of one byte length; returns that length."""
    pylog.addHandler(handler)
    for k in range(count):
        pylog.info(f"{k:0{width}d}")
    handler.flush()
    with open(handler.path, "rb") as f:
        return len(f.readline())


def test_rotation_keeps_files_within_max_bytes_and_backup_count_files(tmp_path, pylog):
    probe = JsonLinesHandler(tmp_path / "probe.jsonl")
    size = fixed_lines(pylog, probe, 1)
    assert os.path.getsize(probe.path) == size
    pylog.removeHandler(probe)
    probe.close()
    path = tmp_path / "app.jsonl"
    handler = JsonLinesHandler(path, max_bytes=3 * size, backup_count=2)
    fixed_lines(pylog, handler, 10)
    handler.close()
    # 10 lines, 3 a file: 1-3 rotated away, 4-6 in .2, 7-9 in .1, 10 in the file itself
    assert [int(o["message"]) for o in read_lines(f"{path}.2")] == [3, 4, 5]
    assert [int(o["message"]) for o in read_lines(f"{path}.1")] == [6, 7, 8]
    assert [int(o["message"]) for o in read_lines(path)] == [9]
    assert os.path.getsize(f"{path}.1") == 3 * size  # exactly full: the boundary is <=
    assert sorted(os.listdir(tmp_path)) == ["app.jsonl", "app.jsonl.1", "app.jsonl.2",
                                            "probe.jsonl"]  # fmt: skip


def test_rotation_across_handlers_appends_and_counts_the_existing_size(tmp_path, pylog):
    path = tmp_path / "app.jsonl"
    first = JsonLinesHandler(path, max_bytes=10**6, backup_count=1)
    size = fixed_lines(pylog, first, 2)
    pylog.removeHandler(first)
    first.close()
    second = JsonLinesHandler(path, max_bytes=3 * size, backup_count=1)
    fixed_lines(pylog, second, 2)  # the file holds 2 lines: the 2nd new one rotates
    second.close()
    assert [int(o["message"]) for o in read_lines(f"{path}.1")] == [0, 1, 0]
    assert [int(o["message"]) for o in read_lines(path)] == [1]


def test_a_line_longer_than_max_bytes_gets_a_file_of_its_own(tmp_path, pylog):
    path = tmp_path / "app.jsonl"
    handler = JsonLinesHandler(path, max_bytes=400, backup_count=3)
    pylog.addHandler(handler)
    pylog.info("short")
    pylog.info("x" * 1000)
    pylog.info("short again")
    handler.close()
    assert [o["message"] for o in read_lines(f"{path}.2")] == ["short"]
    assert [o["message"] for o in read_lines(f"{path}.1")] == ["x" * 1000]
    assert [o["message"] for o in read_lines(path)] == ["short again"]
    assert not os.path.exists(f"{path}.3")


def test_lines_from_many_threads_are_whole_and_none_is_lost(tmp_path, pylog):
    path = tmp_path / "app.jsonl"
    handler = JsonLinesHandler(path, max_bytes=20_000, backup_count=1000)
    pylog.addHandler(handler)

    def worker(n):
        for k in range(250):
            pylog.warning("thread %d line %d", n, k, extra={"n": n, "k": k})

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    handler.close()
    files = sorted(tmp_path.glob("app.jsonl.*"), key=lambda p: -int(p.suffix[1:])) + [path]
    assert len(files) > 3
    lines = [o for p in files for o in read_lines(p)]
    assert sorted((o["fields"]["n"], o["fields"]["k"]) for o in lines) == [
        (n, k) for n in range(4) for k in range(250)
    ]
    assert all(os.path.getsize(p) <= 20_000 for p in files)
    for n in range(4):  # oldest file first: each thread's lines stay in the order logged
        assert [o["fields"]["k"] for o in lines if o["fields"]["n"] == n] == list(range(250))


def test_beside_the_event_file_bridge_both_sinks_hold_the_same_lines(tmp_path, pylog):
    log = tbkit.SummaryLogger(tmp_path / "logs" / "train")
    pylog.addHandler(SummaryHandler(log))
    pylog.addHandler(JsonLinesHandler(tmp_path / "train.jsonl", run="train", step=log.step))

    @log.train_step
    def step():
        tbkit.scalar("x", 1.0)

    for i in range(4):
        pylog.info("step %d", i, extra={"i": i})
        if i == 2:
            pylog.warning("two")
        step()
    log.close()
    for handler in pylog.handlers:
        handler.close()
    in_events = {(r.step, r.level, r.fields["message"], json.dumps(r.fields.get("fields", {})))
                 for r in tbkit.read_records(tmp_path / "logs")}  # fmt: skip
    in_lines = {(o["step"], o["level"], o["message"], json.dumps(o["fields"]))
                for o in read_lines(tmp_path / "train.jsonl")}  # fmt: skip
    assert in_events == in_lines
    assert len(in_lines) == 5


def test_a_line_logged_while_a_step_traces_reads_the_step_eagerly(tmp_path, pylog):
    log = tbkit.SummaryLogger(tmp_path / "logs")
    handler = JsonLinesHandler(tmp_path / "a.jsonl", step=log)
    pylog.addHandler(handler)

    @log.train_step
    def step():
        pylog.info("tracing")
        tbkit.scalar("x", 1.0)

    step()
    step()
    handler.flush()
    assert [(o["step"], o["message"]) for o in read_lines(handler.path)] == [(0, "tracing")]
    log.close()


def test_bad_arguments_are_named(tmp_path):
    def message(**kwargs):
        with pytest.raises((TbkitTypeError, TbkitValueError)) as raised:
            JsonLinesHandler(kwargs.pop("path", tmp_path / "x.jsonl"), **kwargs)
        return str(raised.value)

    assert message(path=3) == (
        "'path' must be a file path (str or os.PathLike) (got 3 that is a <class 'int'>)."
    )
    assert message(max_bytes=-1) == "'max_bytes' must be a non-negative int (got -1 that is a " \
        "<class 'int'>)."  # fmt: skip
    assert message(max_bytes=100) == (
        "'backup_count' must be a positive int when 'max_bytes' is set (got 0 that is a "
        "<class 'int'>)."
    )
    assert message(run=1).startswith("'run' must be a str or None")
    assert message(step=3) == (
        "'step' must be a tbkit.SummaryLogger or a scalar int64 tf.Variable (got 3 that is a "
        "<class 'int'>)."
    )
    assert message(step=tf.Variable(0)).startswith("'step' must be a tbkit.SummaryLogger")
    assert not (tmp_path / "x.jsonl").exists()
    with pytest.raises(FileNotFoundError):
        JsonLinesHandler(tmp_path / "no" / "such" / "folder.jsonl")


def test_a_relative_path_keeps_rotating_after_the_program_changes_folder(
    tmp_path, pylog, monkeypatch
):
    (tmp_path / "logs").mkdir()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "logs")
    probe = JsonLinesHandler("probe.jsonl")
    size = fixed_lines(pylog, probe, 1)
    pylog.removeHandler(probe)
    probe.close()
    handler = JsonLinesHandler("app.jsonl", max_bytes=3 * size, backup_count=2)
    monkeypatch.chdir(tmp_path / "elsewhere")  # the program changes folder after setup
    fixed_lines(pylog, handler, 7)
    handler.close()
    assert os.listdir(tmp_path / "elsewhere") == []
    logs = tmp_path / "logs"
    assert [int(o["message"]) for o in read_lines(logs / "app.jsonl.2")] == [0, 1, 2]
    assert [int(o["message"]) for o in read_lines(logs / "app.jsonl.1")] == [3, 4, 5]
    assert [int(o["message"]) for o in read_lines(logs / "app.jsonl")] == [6]


FORK = """
import logging, os, sys, warnings
{setup}
pylog = logging.getLogger("forked")
pylog.setLevel(logging.INFO)
pylog.propagate = False
pylog.addHandler(handler)
pylog.info("parent before")
pid = os.fork()
if pid == 0:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for k in range(3):
            pylog.info("child %d", k)
        handler.flush()
    print("child warnings:", [str(w.message) for w in caught], flush=True)
    os._exit(0)
os.waitpid(pid, 0)
pylog.info("parent after")
handler.close()
"""


def test_a_forked_child_writes_its_lines_with_a_thread_of_its_own(tmp_path):
    path = tmp_path / "app.jsonl"
    setup = f"from tbkit import JsonLinesHandler\nhandler = JsonLinesHandler({str(path)!r})"
    done = subprocess.run([sys.executable, "-c", FORK.format(setup=setup)], capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "child warnings: []" in done.stdout
    messages = [o["message"] for o in read_lines(path)]
    assert sorted(messages) == ["child 0", "child 1", "child 2", "parent after", "parent before"]


def test_a_handler_that_needs_tensorflow_drops_a_forked_childs_lines_with_a_warning(tmp_path):
    setup = (
        "import tbkit\n"
        f"log = tbkit.SummaryLogger({str(tmp_path)!r})\n"
        "handler = tbkit.SummaryHandler(log)"
    )
    done = subprocess.run([sys.executable, "-c", FORK.format(setup=setup) + "log.close()"],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "was made before this process forked" in done.stdout
    assert [r.fields["message"] for r in tbkit.read_records(tmp_path, tag="log")] == [
        "parent before", "parent after"]  # fmt: skip
