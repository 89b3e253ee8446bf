"""Files named like event files that are not regular files (a FIFO, a socket, a device, a
link to nothing): every reader skips each with one warning and never blocks (issue 13,
item 3)."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import threading
import warnings
from pathlib import Path

import pytest
from tbserver import stop
from tensorboard.plugins import base_plugin
from test_cli import TBKIT, on_a_terminal, run_tbkit, write_raw

import tbkit
from tbkit.cli.terminal import printable
from tbkit.data.errors import DataLossWarning
from tbkit_plugin.plugin import TbkitPlugin

SPECIAL = {
    "events.out.tfevents.fifo": "not a regular file (a FIFO)",
    "events.out.tfevents.sock": "not a regular file (a socket)",
    "events.out.tfevents.zero": "not a regular file (a character device)",
    "events.out.tfevents.gone": "a symbolic link to nothing (/nonexistent/tbkit)",
}


@pytest.fixture
def logdir(tmp_path):
    run = tmp_path / "run"
    write_raw(run / "events.out.tfevents.1.h.1.0.v2", [(0, "t", {"n": 0}), (1, "t", {"n": 1})])
    os.mkfifo(run / "events.out.tfevents.fifo")
    listening = socket.socket(socket.AF_UNIX)
    listening.bind(str(run / "events.out.tfevents.sock"))
    os.symlink("/dev/zero", run / "events.out.tfevents.zero")  # endless, if it were read
    os.symlink("/nonexistent/tbkit", run / "events.out.tfevents.gone")
    yield tmp_path
    listening.close()


def said(logdir) -> list[str]:
    return sorted(f"tbkit: warning: skipped event file {logdir}/run/{name}: {why}"
                  for name, why in SPECIAL.items())  # fmt: skip


def warned(stderr: str) -> list[str]:
    return sorted(line for line in stderr.splitlines() if "skipped event file" in line)


def test_read_records_export_stats_and_tail_skip_them_once(logdir, tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        found = [r.fields for r in tbkit.read_records(logdir)]
    assert found == [{"n": 0}, {"n": 1}]
    assert sorted(str(w.message) for w in caught) == [
        line.replace("tbkit: warning: ", "tbkit: ") for line in said(logdir)
    ]
    # The commands run in subprocesses, each with a watchdog (a hang fails, nothing is timed).
    export = run_tbkit("export", logdir, "-o", tmp_path / "out.jsonl")
    assert export.returncode == 0 and warned(export.stderr) == said(logdir)
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 2
    stats = run_tbkit("stats", logdir)
    assert stats.returncode == 0 and warned(stats.stderr) == said(logdir)
    assert stats.stdout.startswith(f"{logdir}: 1 runs, 1 event files, ")
    tail = run_tbkit("tail", logdir)
    assert tail.returncode == 0 and warned(tail.stderr) == said(logdir)
    assert len(tail.stdout.splitlines()) == 2


def test_tail_follow_warns_once_and_keeps_following(logdir):
    follower = subprocess.Popen(
        [TBKIT, "tail", "-f", "--interval", "0.05", str(logdir)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8",
    )  # fmt: skip
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in follower.stdout], daemon=True).start()
    try:
        for _ in range(2):
            lines.get(timeout=120)  # a watchdog, not a timing assertion
        write_raw(logdir / "run" / "events.out.tfevents.2.h.1.0.v2", [(2, "t", {"n": 2})])
        assert '{"n":2}' in lines.get(timeout=120)  # many polls later, still following
    finally:
        stop(follower, signal.SIGINT, timeout=60)
    assert warned(follower.stderr.read()) == said(logdir)  # each once, however many polls


def test_the_plugin_skips_them(logdir):
    plugin = TbkitPlugin(base_plugin.TBContext(logdir=str(logdir)), min_interval=0,
                         background=False)  # fmt: skip
    done = threading.Event()

    def load():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            plugin.store.load()
            plugin.store.load()  # a second look warns about nothing new
        load.caught = caught
        done.set()

    threading.Thread(target=load, daemon=True).start()
    assert done.wait(timeout=120), "the plugin blocked on a special file"
    assert plugin.runs_impl()["runs"] == {"run": {"t": 2}}
    messages = sorted(str(w.message) for w in load.caught if w.category is DataLossWarning)
    assert messages == [line.replace("tbkit: warning: ", "tbkit: ") for line in said(logdir)]


def test_a_run_folder_whose_name_is_not_utf8_reads_everywhere(tmp_path):
    """os.fsdecode keeps bytes that are not UTF-8 as lone surrogates, which no UTF-8 output
    holds: the run is named with them escaped (``\\x9b``), in files, on terminals and in the
    plugin alike."""
    raw = os.path.join(os.fsencode(tmp_path), b"bad\x9b2J\xff")
    write_raw(Path(os.fsdecode(raw)) / "events.out.tfevents.1", [(0, "t", {"n": 0})])
    name = "bad\\x9b2J\\xff"
    assert [r.run for r in tbkit.read_records(tmp_path)] == [name]
    out = tmp_path.parent / f"{tmp_path.name}.jsonl"
    assert run_tbkit("export", tmp_path, "-o", out).returncode == 0
    assert json.loads(out.read_text(encoding="utf-8"))["run"] == name
    stats = run_tbkit("stats", Path(os.fsdecode(raw)), "--json")
    assert json.loads(stats.stdout)["logdir"].endswith(name)
    for args in (["export", tmp_path], ["tail", tmp_path], ["stats", tmp_path]):
        code, shown = on_a_terminal(*args)
        assert code == 0 and b"\x9b" not in shown and b"\xff" not in shown
        assert name.encode() in shown.replace(b"\\\\", b"\\")
    plugin = TbkitPlugin(base_plugin.TBContext(logdir=str(tmp_path)), min_interval=0,
                         background=False)  # fmt: skip
    plugin.store.load()
    assert plugin.runs_impl()["runs"] == {name: {"t": 1}}


def test_terminal_text_escapes_what_repr_escapes():
    text = "run\u202egnp.exe\u2028x\x1b[2J \x9b é 😀 \udc9b"
    assert printable(text) == "run\\u202egnp.exe\\u2028x\\x1b[2J \\x9b é 😀 \\x9b"
    assert printable("plain é 😀") == "plain é 😀"
