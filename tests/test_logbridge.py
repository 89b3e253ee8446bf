"""The logging bridge: Python logging lines as tbkit records at the training step.

Real SummaryLoggers in tmp_path, real decorated steps, lines read back with tbkit.read_records,
TensorBoard's own event-file loader and the plugin's ``records_impl``. Every test gets its own
Python logger from the ``pylog`` fixture, which puts the logging configuration back after.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
import warnings

import numpy as np
import pytest
import tensorflow as tf
from tbreader import values
from tensorboard.plugins import base_plugin
from tensorboard.util import tensor_util
from werkzeug.datastructures import MultiDict

import tbkit
from tbkit.data.errors import LoggerClosedError, TbkitTypeError, TbkitValueError
from tbkit.integrations.logbridge import SummaryHandler
from tbkit_plugin.plugin import TbkitPlugin


def strict_loads(text):
    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def bridge_lines(logdir, tag="log"):
    """``{(step, message, level)}`` of the bridge's records, through tbkit's reader."""
    found = [(r.step, r.fields["message"], r.level) for r in tbkit.read_records(logdir, tag=tag)]
    assert len(found) == len(set(found)), f"a line came back twice: {found}"
    return set(found)


def tensorboard_lines(run_dir, tag="log"):
    """``[(step, object), ...]`` as TensorBoard keeps them: one datum per (tag, step), a later
    datum at the same or a smaller step pre-empting the earlier ones."""
    kept: list[tuple[int, np.ndarray]] = []
    for step, value in values(str(run_dir)).get(tag, []):
        assert value.metadata.plugin_data.plugin_name in ("", "tbkit")
        while kept and kept[-1][0] >= step:
            kept.pop()
        kept.append((step, tensor_util.make_ndarray(value.tensor)))
    return [(step, strict_loads(raw.decode())) for step, datum in kept for raw in datum]


def train(log, steps, before_each=None):
    @log.train_step
    def step():
        tbkit.scalar("x", 1.0, every=1)

    for i in range(steps):
        if before_each is not None:
            before_each(i)
        step()
    return step


def test_lines_land_at_their_step_beside_the_step_records(tmp_path, pylog):
    log = tbkit.SummaryLogger(tmp_path)
    pylog.addHandler(SummaryHandler(log))

    def lines(i):
        pylog.info("step %d", i)
        if i % 2:
            pylog.debug("odd %d", i)
        if i == 3:
            pylog.warning("three")

    train(log, 5, lines)
    pylog.error("after training")
    log.close()
    expected = {(i, f"step {i}", "info") for i in range(5)}
    expected |= {(1, "odd 1", "debug"), (3, "odd 3", "debug"), (3, "three", "warning")}
    expected |= {(5, "after training", "error")}
    assert bridge_lines(tmp_path) == expected
    kept = tensorboard_lines(tmp_path)
    assert {(s, o["message"], o["level"]) for s, o in kept} == expected
    assert len(kept) == len(expected)
    assert {o["logger"] for _, o in kept} == {pylog.name}
    # one datum per step, in step order, each holding its step's lines in the order logged
    assert [s for s, _ in values(str(tmp_path))["log"]] == [0, 1, 2, 3, 4, 5]
    assert [o["message"] for s, o in kept if s == 3] == ["step 3", "odd 3", "three"]


def test_the_plugin_shows_the_lines_under_its_level_filter(tmp_path, pylog):
    log = tbkit.SummaryLogger(tmp_path / "train")
    pylog.addHandler(SummaryHandler(log))
    train(log, 3, lambda i: pylog.warning("warn %d", i) if i == 1 else pylog.info("info %d", i))
    log.close()
    plugin = TbkitPlugin(base_plugin.TBContext(logdir=str(tmp_path)), min_interval=0,
                         background=False)  # fmt: skip
    got = plugin.records_impl(MultiDict([("tag", "log"), ("level", "warning")]))
    assert [(r["run"], r["step"], r["message"], r["level"]) for r in got["rows"]] == [
        ("train", 1, "warn 1", "warning")
    ]
    every = plugin.records_impl(MultiDict([("tag", "log")]))
    assert sorted((r["step"], r["message"]) for r in every["rows"]) == [
        (0, "info 0"), (1, "warn 1"), (2, "info 2")
    ]


def test_the_threshold_drops_lines_below_it_when_they_are_logged(tmp_path, pylog):
    log = tbkit.SummaryLogger(tmp_path)
    pylog.addHandler(SummaryHandler(log))
    log.set_level("warning")
    pylog.debug("d1")
    pylog.info("i1")
    pylog.warning("w1")
    pylog.error("e1")
    pylog.critical("c1")
    log.set_level("error")
    pylog.warning("w2")
    pylog.critical("c2")
    log.set_level("debug")
    pylog.debug("d2")
    pylog.setLevel(1)
    pylog.log(5, "below debug")
    log.close()
    assert bridge_lines(tmp_path) == {
        (0, "w1", "warning"), (0, "e1", "error"), (0, "c1", "error"), (0, "c2", "error"),
        (0, "d2", "debug"), (0, "below debug", "debug"),
    }  # fmt: skip


def test_exception_stack_and_extra_fields(tmp_path, pylog):
    log = tbkit.SummaryLogger(tmp_path)
    pylog.addHandler(SummaryHandler(log))

    class Opaque:
        def __str__(self):
            return "opaque!"

    try:
        raise ZeroDivisionError("division by zero")
    except ZeroDivisionError:
        pylog.exception("failed", extra={
            "epoch": 3, "lr": np.float32(0.1), "loss": float("nan"), "inf": float("-inf"),
            "t": tf.constant([1.5, 2.0]), "obj": Opaque(), "nested": {"a": [1, 2], 3: None},
            "step": 7, "level": "mine", "message_id": "\ud800x",
        })  # fmt: skip
    pylog.info("with stack", stack_info=True)
    log.close()
    (failed,), (stacked,) = ([r for r in tbkit.read_records(tmp_path) if r.fields["message"] == m]
                             for m in ("failed", "with stack"))  # fmt: skip
    assert failed.level == "error" and failed.step == 0
    assert failed.fields["exception"].startswith("Traceback (most recent call last):")
    assert failed.fields["exception"].endswith("ZeroDivisionError: division by zero")
    assert failed.fields["fields"] == {
        "epoch": 3, "lr": 0.100000001, "loss": "NaN", "inf": "-Infinity", "t": [1.5, 2.0],
        "obj": "opaque!", "nested": {"a": [1, 2], "3": None}, "step": 7, "level": "mine",
        "message_id": "\ufffd\ufffd\ufffdx",
    }  # fmt: skip
    assert np.float32(failed.fields["fields"]["lr"]) == np.float32(0.1)
    assert "stack" not in failed.fields
    assert "fields" not in stacked.fields and "exception" not in stacked.fields
    assert stacked.fields["stack"].startswith("Stack (most recent call last):")
    # strict JSON as TensorBoard stores it, too
    assert {o["message"] for _, o in tensorboard_lines(tmp_path)} == {"failed", "with stack"}


def test_lines_from_other_threads_are_all_kept_at_the_step_they_read(tmp_path, pylog):
    log = tbkit.SummaryLogger(tmp_path)
    pylog.addHandler(SummaryHandler(log))
    per_thread, threads = 50, 4
    seen: dict[str, tuple[int, int]] = {}
    mains = []

    def worker(name):
        for i in range(per_thread):
            before = int(log.step.numpy())
            pylog.info("%s %d", name, i)
            seen[f"{name} {i}"] = (before, int(log.step.numpy()))

    workers = [threading.Thread(target=worker, args=(f"t{n}",)) for n in range(threads)]

    @log.train_step
    def step():
        tbkit.scalar("x", 1.0, every=1)

    for w in workers:
        w.start()
    while any(w.is_alive() for w in workers):
        step()
        mains.append(f"main {int(log.step.numpy())}")
        pylog.info(mains[-1])
    for w in workers:
        w.join()
    # lines logged between steps from several threads at once: their step is known exactly
    at = int(log.step.numpy())

    def burst_of(n):
        for i in range(20):
            pylog.warning("burst %d %d", n, i)

    burst = [threading.Thread(target=burst_of, args=(n,)) for n in range(3)]
    for b in burst:
        b.start()
    for b in burst:
        b.join()
    log.close()
    got = {message: step for step, message, _ in bridge_lines(tmp_path)}
    assert len(got) == threads * per_thread + len(mains) + 60
    for message, (before, after) in seen.items():
        assert before <= got[message] <= after, message
    assert {got[m] for m in mains} == {int(m.split()[1]) for m in mains}
    assert all(got[m] == int(m.split()[1]) for m in mains)
    assert {got[f"burst {n} {i}"] for n in range(3) for i in range(20)} == {at}
    kept = tensorboard_lines(tmp_path)
    assert sorted(o["message"] for _, o in kept) == sorted(got)


def test_nothing_is_lost_on_close_and_the_last_step_is_written(tmp_path, pylog):
    log = tbkit.SummaryLogger(tmp_path, max_queue=1000, flush_millis=10**9)
    pylog.addHandler(SummaryHandler(log))
    train(log, 3, lambda i: [pylog.info("line %d %d", i, k) for k in range(500)])
    for k in range(500):
        pylog.info("last %d", k)
    log.close()
    expected = {(i, f"line {i} {k}", "info") for i in range(3) for k in range(500)}
    expected |= {(3, f"last {k}", "info") for k in range(500)}
    assert bridge_lines(tmp_path) == expected
    assert len(tensorboard_lines(tmp_path)) == 2000


def test_leaving_with_log_drains_the_handler_and_later_lines_are_dropped(tmp_path, pylog):
    with tbkit.SummaryLogger(tmp_path) as log:
        handler = SummaryHandler(log)
        pylog.addHandler(handler)
        pylog.info("inside")
    assert handler.closed
    with pytest.warns(RuntimeWarning, match="SummaryHandler is closed"):
        pylog.info("after close")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pylog.info("warned once only")
    assert bridge_lines(tmp_path) == {(0, "inside", "info")}


def test_flush_writes_the_current_step_and_later_lines_there_supersede_it(tmp_path, pylog):
    log = tbkit.SummaryLogger(tmp_path)
    handler = SummaryHandler(log)
    pylog.addHandler(handler)
    pylog.info("a")
    handler.flush()
    assert bridge_lines(tmp_path) == {(0, "a", "info")}
    pylog.info("b")
    handler.flush()
    handler.flush()  # nothing new: no third datum
    assert bridge_lines(tmp_path) == {(0, "a", "info"), (0, "b", "info")}
    assert [s for s, _ in values(str(tmp_path))["log"]] == [0, 0]
    assert [o["message"] for _, o in tensorboard_lines(tmp_path)] == ["a", "b"]
    log.close()


def test_the_loggers_flush_writes_the_lines_waiting_in_the_handler(tmp_path, pylog):
    log = tbkit.SummaryLogger(tmp_path)
    pylog.addHandler(SummaryHandler(log))
    train(log, 2, lambda i: pylog.warning("step %d", i))
    log.flush()  # not the handler's: the logger hands its flush on
    assert bridge_lines(tmp_path) == {(0, "step 0", "warning"), (1, "step 1", "warning")}
    log.close()


def test_the_writer_thread_writes_a_step_once_the_step_variable_moves_on(tmp_path, pylog):
    log = tbkit.SummaryLogger(tmp_path, flush_millis=50)
    pylog.addHandler(SummaryHandler(log))
    pylog.info("waiting")
    train(log, 1)  # no later line, no flush: the writer thread sees the step advance
    deadline = time.monotonic() + 120
    while not (tmp_path.exists() and bridge_lines(tmp_path)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert bridge_lines(tmp_path) == {(0, "waiting", "info")}
    log.close()


def test_a_line_logged_while_a_step_traces_reads_the_step_eagerly(tmp_path, pylog):
    log = tbkit.SummaryLogger(tmp_path)
    pylog.addHandler(SummaryHandler(log))

    @log.train_step
    def step():
        pylog.info("tracing")  # Python: runs when the step traces, not on every call
        tbkit.scalar("x", 1.0)

    for _ in range(3):
        step()
    pylog.info("done")
    log.close()
    assert bridge_lines(tmp_path) == {(0, "tracing", "info"), (3, "done", "info")}


def test_rewinding_the_step_writes_at_the_lower_step_as_a_resumed_run_does(tmp_path, pylog):
    counter = tf.Variable(10, dtype=tf.int64)
    log = tbkit.SummaryLogger(tmp_path, step=counter)
    pylog.addHandler(SummaryHandler(log))
    pylog.info("ten")
    counter.assign(12)
    pylog.info("twelve")
    counter.assign(11)  # restored from an older checkpoint
    pylog.info("eleven again")
    log.close()
    # TensorBoard (and tbkit's reader) let the write at 11 pre-empt step 12 of the tag
    assert bridge_lines(tmp_path) == {(10, "ten", "info"), (11, "eleven again", "info")}


def test_handler_errors_name_the_argument(tmp_path):
    log = tbkit.SummaryLogger(tmp_path)
    with pytest.raises(TbkitTypeError) as raised:
        SummaryHandler("logs")
    assert str(raised.value) == (
        "'logger' must be a tbkit.SummaryLogger (got 'logs' that is a <class 'str'>)."
    )
    with pytest.raises(TbkitTypeError, match="^'tag' must be a non-empty str"):
        SummaryHandler(log, tag="")
    first = SummaryHandler(log)
    with pytest.raises(TbkitValueError, match="already has an open SummaryHandler writing tag"):
        SummaryHandler(log)
    SummaryHandler(log, tag="other").close()
    first.close()
    SummaryHandler(log).close()  # the tag is free again once the first handler closed
    log.close()
    with pytest.raises(LoggerClosedError):
        SummaryHandler(log)


def test_close_hooks_run_in_order_before_the_writer_closes(tmp_path):
    log = tbkit.SummaryLogger(tmp_path, max_queue=1000, flush_millis=10**9)
    writer = log.writer
    calls = []

    def write_late():
        calls.append("first")
        with writer.as_default():
            tf.summary.write("late", tf.constant(1.0), step=0)  # the writer is still open

    def failing():
        calls.append("second")
        raise ZeroDivisionError("a failing hook")

    log.add_close_hook(write_late)
    log.add_close_hook(failing)
    log.add_close_hook(lambda: calls.append("third"))
    with pytest.raises(ZeroDivisionError):
        log.close()
    assert calls == ["first", "second", "third"]
    assert values(str(tmp_path)).keys() == {"late"}
    log.close()  # once only
    assert calls == ["first", "second", "third"]
    with pytest.raises(TbkitTypeError, match="^'hook' must be a callable"):
        tbkit.SummaryLogger(tmp_path / "b").add_close_hook("not callable")
    with pytest.raises(LoggerClosedError):
        log.add_close_hook(lambda: None)


def test_nothing_is_lost_at_interpreter_exit(tmp_path):
    script = textwrap.dedent(
        f"""
        import logging, threading
        import tbkit
        from tbkit.integrations.logbridge import SummaryHandler

        log = tbkit.SummaryLogger({str(tmp_path / "a")!r}, max_queue=1000, flush_millis=10**9)
        other = tbkit.SummaryLogger({str(tmp_path / "b")!r}, max_queue=1000, flush_millis=10**9,
                                    step=log.step)
        logging.basicConfig(level=logging.DEBUG, handlers=[SummaryHandler(log)])
        mine = logging.getLogger("mine")
        mine.addHandler(SummaryHandler(other))

        @log.train_step
        def step():
            tbkit.scalar("x", 1.0, every=1)

        def worker():
            for k in range(300):
                logging.getLogger("worker").debug("worker %d", k)

        thread = threading.Thread(target=worker)
        thread.start()
        for i in range(3):
            for k in range(100):
                mine.info("line %d %d", i, k)
            step()
        thread.join()
        mine.warning("the last line")
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=300)
    a = {(r.fields["message"], r.level) for r in tbkit.read_records(tmp_path / "a")
         if r.fields["logger"] in ("mine", "worker")}  # the root logger hears TensorFlow too
    b = bridge_lines(tmp_path / "b")
    lines = {(f"line {i} {k}", "info") for i in range(3) for k in range(100)}
    assert a == lines | {(f"worker {k}", "debug") for k in range(300)} | {("the last line",
                                                                          "warning")}
    assert b == {(i, f"line {i} {k}", "info") for i in range(3) for k in range(100)} | {
        (3, "the last line", "warning")
    }
