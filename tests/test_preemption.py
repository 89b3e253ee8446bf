"""SIGTERM and SIGINT flush every open writer, which stays open, before the previous handler runs.

Training scripts run in processes of their own and get real signals from the test; what they
logged before the signal is read back with TensorBoard's own loader and with read_records. The
scripts log with a huge ``max_queue`` and ``flush_millis``, so nothing reaches disk by itself.
Scripts that only need the JSON Lines handler do not import TensorFlow and run in a blink.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import tbreader

import tbkit

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

TRAINING = """
import logging, os, signal, sys
import tensorflow as tf
import tbkit

logdir = sys.argv[1]
log = tbkit.SummaryLogger(logdir, max_queue=1_000_000, flush_millis=3_600_000)
w = tf.Variable(0.0)

@log.train_step
def train_step():
    w.assign_add(1.0)
    tbkit.record("train", {"w": w}, every=1)

def train(steps=10**9, first=0, say="ready"):
    for n in range(first, first + steps):
        train_step()
        print(f"{say} {n}", flush=True)
"""


def _script(tmp_path, *parts: str) -> str:
    path = tmp_path / "script.py"
    path.write_text("".join(textwrap.dedent(part) for part in parts))
    return str(path)


def _start(script: str, *args: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.path.join(ROOT, "plugin")]),
               TF_CPP_MIN_LOG_LEVEL="2")  # fmt: skip
    return subprocess.Popen(
        [sys.executable, script, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip


def _signal_after(proc: subprocess.Popen, line: str, signum: int) -> None:
    """Read the script's output up to ``line`` and send it ``signum`` (it goes on training)."""
    for out in proc.stdout:
        if out.rstrip("\n") == line:
            proc.send_signal(signum)
            return
    proc.wait(60)
    pytest.fail(f"the script ended before {line!r}: {proc.stderr.read()[-3000:]}")


def _last_ready(seen: list[str], prefix: str = "ready") -> int:
    return max(int(line.split()[1]) for line in seen if line.startswith(prefix + " "))


def _assert_all_steps(run_dir: str, tag: str, logged: int) -> list[int]:
    """The records of ``tag`` cover steps 0..logged-1, and at most the one step after (logged,
    its "ready" line not printed yet), read by TensorBoard's loader and by read_records."""
    by_tensorboard = tbreader.steps(run_dir).get(tag, [])
    by_tbkit = [r.step for r in tbkit.read_records(run_dir, tag=tag)]
    assert by_tensorboard == by_tbkit
    assert by_tbkit in (list(range(logged)), list(range(logged + 1))), (logged, by_tbkit[-5:])
    return by_tbkit


def test_sigterm_flushes_the_logger_the_bridge_and_json_lines_then_the_process_dies_of_it(
    tmp_path,
):
    script = _script(tmp_path, TRAINING, """
        root = logging.getLogger()
        root.setLevel(logging.INFO)
        root.addHandler(tbkit.SummaryHandler(log))
        root.addHandler(tbkit.JsonLinesHandler(sys.argv[2], step=log))
        for n in range(10**9):
            train_step()
            logging.info("line %d", n)
            print(f"ready {n}", flush=True)
    """)  # fmt: skip
    run_dir, jsonl = str(tmp_path / "run"), str(tmp_path / "lines.jsonl")
    proc = _start(script, run_dir, jsonl)
    _signal_after(proc, "ready 60", signal.SIGTERM)
    seen = proc.stdout.read().splitlines() + ["ready 60"]
    assert proc.wait(60) == -signal.SIGTERM, proc.stderr.read()[-3000:]

    logged = _last_ready(seen) + 1  # steps 0..logged-1 were logged before the signal
    _assert_all_steps(run_dir, "train", logged)
    bridge = [m for r in tbkit.read_records(run_dir, tag="log") for m in [r.fields["message"]]]
    lines = [json.loads(line)["message"] for line in open(jsonl, encoding="utf-8")]
    for written in (bridge, lines):
        assert written[:logged] == [f"line {n}" for n in range(logged)]
        assert len(written) <= logged + 1
    by_tensorboard = [json.loads(line)["message"]
                      for _, lines in tbreader.summaries(run_dir)["log"] for line in lines]
    assert by_tensorboard == bridge  # one line per step: no datum pre-empts another


def test_sigint_flushes_and_the_except_keyboard_interrupt_block_goes_on_logging(tmp_path):
    script = _script(tmp_path, TRAINING, """
        try:
            train()
        except KeyboardInterrupt:
            print("interrupted", flush=True)
        sys.stdin.readline()  # the test reads the files now
        train(steps=5, first=int(log.step.numpy()), say="after")
        log.close()
        print("closed", flush=True)
    """)  # fmt: skip
    run_dir = str(tmp_path / "run")
    proc = _start(script, run_dir)
    _signal_after(proc, "ready 40", signal.SIGINT)
    seen = ["ready 40"]
    for line in proc.stdout:
        seen.append(line.rstrip("\n"))
        if seen[-1] == "interrupted":
            break
    assert seen[-1] == "interrupted", proc.stderr.read()[-3000:]

    steps = _assert_all_steps(run_dir, "train", _last_ready(seen) + 1)  # while it still runs
    proc.stdin.write("go on\n")
    proc.stdin.flush()
    rest = proc.stdout.read().splitlines()
    assert proc.wait(60) == 0, proc.stderr.read()[-3000:]
    assert rest == [f"after {n}" for n in range(len(steps), len(steps) + 5)] + ["closed"]
    _assert_all_steps(run_dir, "train", len(steps) + 5)


def test_a_handler_installed_before_the_logger_still_runs_after_the_flush(tmp_path):
    script = _script(tmp_path, """
        import os, signal

        def on_sigterm(signum, frame):  # a job wrapper's handler that ends the process at once
            print("user handler", flush=True)
            os._exit(143)

        signal.signal(signal.SIGTERM, on_sigterm)
    """, TRAINING, """
        train()
    """)  # fmt: skip
    run_dir = str(tmp_path / "run")
    proc = _start(script, run_dir)
    _signal_after(proc, "ready 30", signal.SIGTERM)
    seen = proc.stdout.read().splitlines() + ["ready 30"]
    assert proc.wait(60) == 143, proc.stderr.read()[-3000:]
    assert "user handler" in seen
    _assert_all_steps(run_dir, "train", _last_ready(seen) + 1)


def test_a_mirrored_strategy_worker_keeps_what_it_logged_before_sigterm(tmp_path):
    script = _script(tmp_path, """
        import sys
        import tensorflow as tf
        import tbkit

        cpu = tf.config.list_physical_devices("CPU")[0]
        two = [tf.config.LogicalDeviceConfiguration()] * 2
        tf.config.set_logical_device_configuration(cpu, two)
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        with strategy.scope():
            log = tbkit.SummaryLogger(sys.argv[1], max_queue=1_000_000, flush_millis=3_600_000)

        @log.train_step
        def train_step():
            def replica():
                replica_id = tf.distribute.get_replica_context().replica_id_in_sync_group
                x = tf.cast(replica_id, tf.float32)
                tbkit.record("train", {"x": x}, reduce="sum", every=1)
                return x
            return strategy.reduce("SUM", strategy.run(replica), axis=None)

        for n in range(10**9):
            train_step()
            print(f"ready {n}", flush=True)
    """)  # fmt: skip
    run_dir = str(tmp_path / "run")
    proc = _start(script, run_dir)
    _signal_after(proc, "ready 20", signal.SIGTERM)
    seen = proc.stdout.read().splitlines() + ["ready 20"]
    assert proc.wait(60) == -signal.SIGTERM, proc.stderr.read()[-3000:]
    _assert_all_steps(run_dir, "train", _last_ready(seen) + 1)
    assert {r.fields["x"] for r in tbkit.read_records(run_dir, tag="train")} == {1.0}


# -- the handlers themselves, with the JSON Lines handler alone (no TensorFlow) ------------------

LINES = """
import json, logging, os, signal, sys, threading, warnings
from tbkit.integrations.jsonl import JsonLinesHandler
from tbkit.summary import preemption

lines = logging.getLogger("lines")
lines.setLevel(logging.INFO)
lines.propagate = False

def handler(path=sys.argv[1]):
    made = JsonLinesHandler(path)
    lines.addHandler(made)
    return made

def report(**values):
    print(json.dumps(values), flush=True)
"""


def _run(tmp_path, *parts: str) -> subprocess.CompletedProcess:
    proc = _start(_script(tmp_path, LINES, *parts), str(tmp_path / "lines.jsonl"))
    out, err = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _messages(tmp_path) -> list[str]:
    path = tmp_path / "lines.jsonl"
    return [json.loads(line)["message"] for line in path.read_text().splitlines()]


def test_json_lines_logged_just_before_sigterm_are_all_in_the_file(tmp_path):
    done = _run(tmp_path, """
        handler()
        for n in range(2000):
            lines.info("line %d", n)
        os.kill(os.getpid(), signal.SIGTERM)  # lines still queued for the writer thread
        report(alive=True)
    """)  # fmt: skip
    assert done.returncode == -signal.SIGTERM, done.stderr
    assert done.stdout == ""
    assert _messages(tmp_path) == [f"line {n}" for n in range(2000)]


def test_an_ignored_signal_stays_ignored(tmp_path):
    done = _run(tmp_path, """
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        handler()
        os.kill(os.getpid(), signal.SIGTERM)
        report(term=signal.getsignal(signal.SIGTERM) == signal.SIG_IGN,
               int=signal.getsignal(signal.SIGINT) is signal.default_int_handler)
    """)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"term": True, "int": False}


def test_the_previous_handlers_come_back_when_the_last_writer_closes(tmp_path):
    done = _run(tmp_path, """
        first, second = handler(), handler(sys.argv[1] + ".2")
        installed = [preemption.installed(s) for s in (signal.SIGTERM, signal.SIGINT)]
        first.close()
        still = [preemption.installed(s) for s in (signal.SIGTERM, signal.SIGINT)]
        second.close()
        report(installed=installed, still=still,
               term=signal.getsignal(signal.SIGTERM) == signal.SIG_DFL,
               int=signal.getsignal(signal.SIGINT) is signal.default_int_handler)
    """)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "installed": [True, True], "still": [True, True], "term": True, "int": True
    }


def test_a_handler_installed_after_tbkits_wins_and_can_chain_to_it(tmp_path):
    done = _run(tmp_path, """
        handler()
        tbkits = signal.getsignal(signal.SIGTERM)

        def mine(signum, frame):
            report(mine=True, lines=len(open(sys.argv[1]).readlines()))
            tbkits(signum, frame)  # flushes again (nothing new), then the default: death

        signal.signal(signal.SIGTERM, mine)
        for n in range(500):
            lines.info("line %d", n)
        first = lines.handlers[0]
        lines.removeHandler(first)
        first.close()  # the last writer: tbkit does not put SIG_DFL back over the user's handler
        report(kept=signal.getsignal(signal.SIGTERM) is mine)
        handler()  # installs tbkit's again, over the user's
        for n in range(500, 1000):
            lines.info("line %d", n)
        os.kill(os.getpid(), signal.SIGTERM)
    """)  # fmt: skip
    assert done.returncode == -signal.SIGTERM, done.stderr
    assert "Warning" not in done.stderr
    assert [json.loads(line) for line in done.stdout.splitlines()] == [
        {"kept": True}, {"mine": True, "lines": 1000}
    ]
    assert _messages(tmp_path) == [f"line {n}" for n in range(1000)]


def test_a_writer_opened_in_another_thread_installs_nothing_until_one_opens_in_the_main_one(
    tmp_path,
):
    done = _run(tmp_path, """
        made = []
        worker = threading.Thread(target=lambda: made.append(handler(sys.argv[1] + ".2")))
        worker.start()
        worker.join()
        report(after_thread=preemption.installed(signal.SIGTERM))
        handler()
        report(after_main=preemption.installed(signal.SIGTERM))
        for n in range(1000):
            lines.info("line %d", n)
        os.kill(os.getpid(), signal.SIGTERM)
    """)  # fmt: skip
    assert done.returncode == -signal.SIGTERM, done.stderr
    assert done.stdout.splitlines() == ['{"after_thread": false}', '{"after_main": true}']
    assert _messages(tmp_path) == [f"line {n}" for n in range(1000)]
    in_thread = (tmp_path / "lines.jsonl.2").read_text().splitlines()
    assert [json.loads(line)["message"] for line in in_thread] == [
        f"line {n}" for n in range(1000)
    ]


def test_a_writer_that_cannot_flush_is_a_warning_and_the_signal_still_ends_the_process(tmp_path):
    done = _run(tmp_path, """
        preemption.FLUSH_SECONDS = 0.5
        fifo = sys.argv[1] + ".fifo"
        os.mkfifo(fifo)
        reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # opened, never read: writes block
        stuck = JsonLinesHandler(fifo)
        lines.addHandler(stuck)
        for n in range(5000):  # far more than a pipe holds
            lines.info("line %d %s", n, "x" * 100)
        os.kill(os.getpid(), signal.SIGTERM)
    """)  # fmt: skip
    assert done.returncode == -signal.SIGTERM
    assert "RuntimeWarning: tbkit: could not flush <JsonLinesHandler" in done.stderr
    assert "TimeoutError: the writer thread did not write the queue within 0.5 s" in done.stderr


# -- in this process: the handler runs where Python stops the main thread ------------------------


def _quiet_logger(logdir) -> tbkit.SummaryLogger:
    return tbkit.SummaryLogger(str(logdir), max_queue=1_000_000, flush_millis=3_600_000)


def test_sigint_while_a_step_traces_flushes_eagerly_and_raises_keyboard_interrupt(tmp_path):
    import tensorflow as tf

    log = _quiet_logger(tmp_path)
    w = tf.Variable(0.0)

    @log.train_step
    def train_step(interrupt):
        w.assign_add(1.0)
        tbkit.record("train", {"w": w}, every=1)
        if interrupt:  # a Python bool: this call traces again, and Ctrl-C comes meanwhile
            signal.raise_signal(signal.SIGINT)

    try:
        for _ in range(7):
            train_step(False)
        with pytest.raises(KeyboardInterrupt):
            train_step(True)
        assert tbreader.steps(str(tmp_path)) == {"train": list(range(7))}  # on disk, still open
        train_step(False)
    finally:
        log.close()
    assert [r.step for r in tbkit.read_records(str(tmp_path), tag="train")] == list(range(8))


def test_sigint_while_the_bridge_holds_its_lock_flushes_without_waiting_for_it(tmp_path, pylog):
    log = _quiet_logger(tmp_path)
    bridge = tbkit.SummaryHandler(log)
    pylog.addHandler(bridge)

    class Interrupting:
        def __str__(self):  # formatted in the handler's emit, under its lock
            signal.raise_signal(signal.SIGINT)
            return "never"

    try:
        for n in range(5):
            log.step.assign(n)
            pylog.info("line %d", n)
        log.step.assign(5)
        with pytest.raises(KeyboardInterrupt):
            pylog.info("%s", Interrupting())
        written = {r.step: r.fields["message"] for r in tbkit.read_records(str(tmp_path))}
        assert written == {n: f"line {n}" for n in range(5)}
        pylog.info("after")  # the handler is open and its lock free
    finally:
        log.close()
    assert [r.fields["message"] for r in tbkit.read_records(str(tmp_path))][-1] == "after"


def test_sigterm_while_the_logger_closes_still_flushes_its_writer(tmp_path):
    script = _script(tmp_path, TRAINING, """
        train(steps=25)
        log.add_close_hook(lambda: os.kill(os.getpid(), signal.SIGTERM))  # ends inside close()
        log.close()
        print("closed", flush=True)
    """)  # fmt: skip
    run_dir = str(tmp_path / "run")
    proc = _start(script, run_dir)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGTERM, err[-3000:]
    assert out.splitlines()[-1] == "ready 24"
    _assert_all_steps(run_dir, "train", 25)
