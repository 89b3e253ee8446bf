"""Logdirs in object storage: s3:// through a real S3 API (moto's server on 127.0.0.1) and gs://
through a GCS emulator, read by read_records, the CLI, the plugin's store and (s3://) a real
TensorBoard, against the same logdir read locally; listing-only refreshes, appended objects,
Parquet to a bucket, and errors that name the URL."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
import warnings
from collections.abc import Iterator
from pathlib import Path

import fsspec.config
import pytest
import s3fs
import tbserver
import tensorflow as tf
from eventfiles import next_second
from objectstores import (
    SHORT_TIMEOUTS,
    client_env,
    gcs_emulator,
    gcs_env,
    moto_process,
    moto_server,
)
from werkzeug.datastructures import MultiDict

import tbkit
from tbkit.cli import tail
from tbkit.data import events, frames
from tbkit.data.errors import TbkitValueError
from tbkit.data.logdir import Logdir, StorageError
from tbkit.read import to_pandas
from tbkit_plugin.plugin import TbkitPlugin

TBKIT = os.path.join(os.path.dirname(sys.executable), "tbkit")
BUCKET = "tbkit-logs"


@pytest.fixture(scope="module")
def local(tmp_path_factory) -> Path:
    """exp/train (records and text, resumed at step 3) and exp/validation, written by tbkit."""
    root = tmp_path_factory.mktemp("local")

    def train(first: int, steps: int) -> None:
        log = tbkit.SummaryLogger(root / "exp" / "train", every={"info": 1},
                                  step=tf.Variable(first, dtype=tf.int64))  # fmt: skip

        @log.train_step(advance=True)
        def step(x):
            tbkit.record("train", {"loss": 1.0 / (x + 1.0), "opt": {"lr": 0.1}, "note": "a,b"})
            tbkit.text("msg", tf.strings.as_string(x), level="warning")

        with log:
            for i in range(steps):
                step(tf.constant(float(first + i)))

    train(0, 6)
    next_second()
    with pytest.warns(tbkit.SupersedeWarning, match="6 records at steps 3-5"):
        train(3, 2)
    log = tbkit.SummaryLogger(root / "exp" / "validation", every={"info": 1})

    @log.train_step
    def evaluate(acc):
        tbkit.record("eval", {"acc": acc, "ok": acc > 0.5})

    with log:
        for acc in (0.25, 0.75):
            evaluate(tf.constant(acc))
    return root


@contextlib.contextmanager
def bucket_with(local: Path, scheme: str, env: dict[str, str]) -> Iterator[str]:
    """``local`` uploaded to a new bucket, clients configured by ``env``; yields its URL."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        fs = Logdir(f"{scheme}://{BUCKET}").fs
        fs.mkdir(BUCKET)
        for path in sorted(local.rglob("*tfevents*")):
            fs.put_file(str(path), f"{BUCKET}/logs/{path.relative_to(local)}")
        yield f"{scheme}://{BUCKET}/logs"


@pytest.fixture(scope="module")
def s3(local, tmp_path_factory):
    """The local logdir uploaded to a bucket of a moto S3 server; yields (URL, request log)."""
    request_log = tmp_path_factory.mktemp("moto") / "requests.log"
    with moto_server(request_log) as endpoint, bucket_with(local, "s3", client_env(endpoint)) \
            as url:  # fmt: skip
        yield url, request_log


@pytest.fixture(scope="module")
def gs(local, tmp_path_factory):
    """The local logdir uploaded to a bucket of a GCS emulator; yields (URL, server log)."""
    server_log = tmp_path_factory.mktemp("gcs") / "server.log"
    with gcs_emulator(server_log) as endpoint, bucket_with(local, "gs", gcs_env(endpoint)) as url:
        yield url, server_log


@pytest.fixture(params=["s3", "gs"])
def remote(request):
    """Each object store in turn: (URL of the uploaded logdir, server log)."""
    return request.getfixturevalue(request.param)


def rows(records) -> list[tuple]:
    return [(r.run, r.tag, r.step, r.wall_time, r.level, r.fields) for r in records]


def run_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([TBKIT, *map(str, args)], capture_output=True, timeout=300)


def plugin_for(logdir) -> TbkitPlugin:
    context = type("Context", (), {"logdir": str(logdir)})()
    return TbkitPlugin(context, min_interval=0, background=False)


def test_read_records_and_pandas_from_a_bucket_equal_a_local_read(local, remote):
    url, _ = remote
    want = rows(tbkit.read_records(local))
    assert len(want) == 12 and {r[1] for r in want} == {"train", "msg", "eval"}  # 5 + 5 + 2
    assert rows(tbkit.read_records(url)) == want
    assert rows(tbkit.read_records(url, run="exp/validation")) == [
        r for r in want if r[0] == "exp/validation"]  # fmt: skip
    assert to_pandas(url).equals(to_pandas(local))


@pytest.mark.parametrize(
    "args", [["export"], ["export", "--format", "csv"], ["export", "--where", "loss < 0.3"],
             ["tail", "-n", "5"], ["stats", "--json"]],  # fmt: skip
    ids=["jsonl", "csv", "where", "tail", "stats"],
)
def test_the_command_line_on_a_bucket_prints_what_it_prints_for_the_local_logdir(
    local, remote, args
):
    url, _ = remote
    remote, here = run_cli(args[0], url, *args[1:]), run_cli(args[0], local, *args[1:])
    assert (remote.returncode, remote.stderr) == (0, b""), remote.stderr
    assert here.returncode == 0
    if args[0] == "stats":
        remote_report, local_report = json.loads(remote.stdout), json.loads(here.stdout)
        assert (remote_report.pop("logdir"), local_report.pop("logdir")) == (url, str(local))
        assert remote_report == local_report
    else:
        assert remote.stdout == here.stdout and remote.stdout


def test_the_plugins_store_on_a_bucket_serves_the_local_bytes(local, remote):
    url, _ = remote
    for fmt in ("jsonl", "csv"):
        chunks, _, _ = plugin_for(url).export_impl(MultiDict({"format": fmt}))
        local_chunks, _, _ = plugin_for(local).export_impl(MultiDict({"format": fmt}))
        assert b"".join(chunks) == b"".join(local_chunks)


def test_a_tensorboard_without_tensorflow_serves_an_s3_logdir_in_the_tbkit_tab(local, s3):
    """TensorBoard itself refuses s3:// when TensorFlow (without tensorflow-io) is installed;
    on a TensorBoard-only server it reads s3:// with boto3, and the tbkit tab with fsspec."""
    url, _ = s3
    with tbserver.tensorboard(url, without_tensorflow=True) as port:
        base = f"http://127.0.0.1:{port}/data/plugin/tbkit"
        deadline = time.monotonic() + 60  # a guard against hanging, not a timing
        while not (runs := json.load(urllib.request.urlopen(base + "/runs")))["complete"]:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert runs["runs"] == plugin_for(local).runs_impl()["runs"]
        with urllib.request.urlopen(base + "/export?format=jsonl") as response:
            body = response.read()
        chunks, _, _ = plugin_for(local).export_impl(MultiDict({"format": "jsonl"}))
        assert body == b"".join(chunks)


def new_requests(request_log: Path, since: int) -> list[str]:
    """The S3 requests moto logged after byte ``since`` of its log: ``METHOD /path?query``."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", request_log.read_bytes()[since:].decode(errors="replace"))
    return [line.split('"')[1].split(" HTTP/")[0] for line in text.splitlines() if '"' in line]


def test_a_refresh_with_nothing_new_only_lists_and_an_append_reads_only_the_new_bytes(s3):
    url, request_log = s3
    source = Logdir(url)
    fs = source.fs
    key = f"{BUCKET}/growing/run/events.out.tfevents.1"
    first = b"".join(frames.frame(e) for e in _events(0, 40))
    fs.pipe_file(key, first)
    follower = events.Follower(Logdir(f"s3://{BUCKET}/growing"))
    assert sum(len(d.values) for d in follower.poll()) == 40
    mark = request_log.stat().st_size
    assert list(follower.poll()) == []
    requests = new_requests(request_log, mark)
    assert requests and all(r.startswith(f"GET /{BUCKET}?list-type=2") for r in requests)
    more = b"".join(frames.frame(e) for e in _events(40, 45))
    fs.pipe_file(key, first + more)  # the object is uploaded again, grown
    mark = request_log.stat().st_size
    assert [d.step for d in follower.poll()] == list(range(40, 45))
    reads = [r for r in new_requests(request_log, mark) if not r.startswith(f"GET /{BUCKET}?")]
    assert reads == [f"GET /{BUCKET}/growing/run/events.out.tfevents.1"]  # one ranged GET
    assert follower.readers["run"].files[key].offset == len(first) + len(more)


def _events(start: int, stop: int) -> list[bytes]:
    from tensorboard.compat.proto import event_pb2

    from tbkit.summary import summary_pb

    out = []
    for step in range(start, stop):
        event = event_pb2.Event(step=step, wall_time=1_700_000_000 + step)
        event.summary.CopyFrom(summary_pb.record_pb("t", {"i": step}))
        out.append(event.SerializeToString())
    return out


def test_tail_follow_sees_records_appended_to_an_object_uploaded_again(s3):
    url, _ = s3
    fs = Logdir(url).fs
    key = f"{BUCKET}/tailed/run/events.out.tfevents.1"
    fs.pipe_file(key, b"".join(frames.frame(e) for e in _events(0, 3)))
    polls = []

    def stopped():
        polls.append(1)
        if len(polls) == 1:
            fs.pipe_file(key, b"".join(frames.frame(e) for e in _events(0, 5)))
        return len(polls) == 2

    import io

    out = io.StringIO()
    assert tail.tail(f"s3://{BUCKET}/tailed", out, follow=True, interval=0.01,
                     stopped=stopped) == 5  # fmt: skip
    assert [line.split("  ")[3] for line in out.getvalue().splitlines()] == [
        f"step {i}" for i in range(5)]  # fmt: skip


def test_errors_name_the_url_in_one_line(s3):
    url, _ = s3
    done = run_cli("export", f"s3://no-such-bucket-{os.getpid()}/logs")
    assert (done.returncode, done.stdout) == (1, b"")
    assert done.stderr.decode() == (
        f"tbkit export: logdir 's3://no-such-bucket-{os.getpid()}/logs' does not exist\n")
    env = {k: v for k, v in os.environ.items() if k not in ("AWS_ACCESS_KEY_ID",
                                                             "AWS_SECRET_ACCESS_KEY")}
    done = subprocess.run([TBKIT, "stats", url], capture_output=True, env=env, timeout=300)
    assert (done.returncode, done.stdout) == (1, b"")
    assert done.stderr.decode() == (
        f"tbkit stats: cannot list {url}: no credentials found; set AWS_ACCESS_KEY_ID and "
        "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), or run `aws configure`\n")
    with pytest.raises(StorageError) as caught:
        tbkit.read_records("abfs://container/logs")  # no backend installed for it
    assert str(caught.value).startswith(
        "reading abfs://container/logs needs an fsspec backend for abfs://: ")


def test_the_plugin_keeps_what_it_read_when_the_bucket_goes_away(s3, caplog):
    url, _ = s3
    fs = Logdir(url).fs
    fs.mkdir("short-lived")
    fs.pipe_file("short-lived/logs/run/events.out.tfevents.1",
                 b"".join(frames.frame(e) for e in _events(0, 4)))  # fmt: skip
    plugin = plugin_for("s3://short-lived/logs")
    assert plugin.runs_impl()["runs"] == {"run": {"t": 4}}
    fs.rm("short-lived", recursive=True)
    with caplog.at_level("WARNING"):
        assert plugin.runs_impl() == {"runs": {"run": {"t": 4}}, "superseded": {},
                                      "complete": False}
        assert plugin.runs_impl()["runs"] == {"run": {"t": 4}}
    said = [r.getMessage() for r in caplog.records if "short-lived" in r.getMessage()]
    assert said == ["tbkit: cannot list s3://short-lived/logs: its bucket does not exist; "
                    "serving what was read, retrying"]  # fmt: skip


def test_a_summary_logger_refuses_a_scheme_tensorflow_cannot_write():
    with pytest.raises(TbkitValueError) as caught:
        tbkit.SummaryLogger("s3://bucket/run")
    message = str(caught.value)
    assert message.startswith("'logdir' 's3://bucket/run': TensorFlow cannot write s3:// URLs")
    assert "gs://" in message and "sync it to s3://" in message


def test_parquet_goes_to_a_bucket_too(local, remote):
    import pyarrow.parquet as pq

    url, _ = remote
    out = url.replace("/logs", "/parquet")
    assert tbkit.read.to_parquet(url, out) == 12
    fs = Logdir(out).fs
    files = sorted(fs.find(f"{BUCKET}/parquet"))
    assert files == [f"{BUCKET}/parquet/_SUCCESS",
                     f"{BUCKET}/parquet/run=exp%2Ftrain/part-0.parquet",
                     f"{BUCKET}/parquet/run=exp%2Fvalidation/part-0.parquet"]  # fmt: skip
    files = files[1:]
    counts = [pq.read_table(fs.open(f, "rb")).num_rows for f in files]
    records = list(tbkit.read_records(local))
    assert counts == [sum(r.run == run for r in records) for run in ("exp/train",
                                                                     "exp/validation")]
    with pytest.raises(TbkitValueError, match="is not empty"):
        tbkit.read.to_parquet(url, out)


def test_an_object_that_cannot_be_read_is_skipped_with_one_warning(s3):
    """An archived object (GLACIER) lists but cannot be read: warned about, once, by URL; the
    other runs are read."""
    url, _ = s3
    fs = Logdir(url).fs
    frozen = f"{BUCKET}/archived/a/events.out.tfevents.1"
    fs.pipe_file(frozen, frames.frame(_events(0, 1)[0]), StorageClass="GLACIER")
    fs.pipe_file(f"{BUCKET}/archived/b/events.out.tfevents.1", frames.frame(_events(0, 1)[0]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert [r.run for r in tbkit.read_records(f"s3://{BUCKET}/archived")] == ["b"]
    (said,) = [str(w.message) for w in caught]
    assert said.startswith(f"tbkit: skipped event file s3://{frozen}: ")


def test_an_object_uploaded_again_shorter_is_read_again_from_the_start(s3):
    url, _ = s3
    fs = Logdir(url).fs
    key = f"{BUCKET}/replaced/run/events.out.tfevents.1"
    upload(fs, key, 0, 6)
    follower = events.Follower(Logdir(f"s3://{BUCKET}/replaced"))
    assert [d.step for d in follower.poll()] == list(range(6))
    upload(fs, key, 10, 12)  # a new, shorter file under the same name
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert [d.step for d in follower.poll()] == [10, 11]
    (said,) = [str(w.message) for w in caught]
    assert said.startswith(f"tbkit: s3://{key} is shorter than the ")


def test_a_logdir_that_is_an_object_is_not_a_directory(s3):
    url, _ = s3
    key = f"{BUCKET}/single/events.out.tfevents.1"
    Logdir(url).fs.pipe_file(key, frames.frame(_events(0, 1)[0]))
    with pytest.raises(NotADirectoryError, match="is not a directory"):
        tbkit.read_records(f"s3://{key}")
    assert Logdir(f"s3://{key}").runs() == []


def test_the_json_lines_handler_refuses_a_url():
    with pytest.raises(TbkitValueError) as caught:
        tbkit.JsonLinesHandler("s3://bucket/app.jsonl")
    assert str(caught.value) == (
        "'path' must be a local file path (it rotates files by renaming them; sync the file to "
        "object storage) (got 's3://bucket/app.jsonl' that is a <class 'str'>).")  # fmt: skip


def test_warnings_about_an_object_name_its_url(s3):
    url, _ = s3
    fs = Logdir(url).fs
    good = frames.frame(_events(0, 1)[0])
    bad = bytearray(frames.frame(_events(1, 2)[0]))
    bad[-1] ^= 0xFF
    key = f"{BUCKET}/damaged/run/events.out.tfevents.1"
    fs.pipe_file(key, good + bytes(bad))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert [r.step for r in tbkit.read_records(f"s3://{BUCKET}/damaged")] == [0]
    assert [str(w.message) for w in caught] == [
        f"tbkit: skipped a corrupt record (data checksum mismatch) in s3://{key} at byte "
        f"offset {len(good)}."]  # fmt: skip


# -- faults ----------------------------------------------------------------------------------


@pytest.fixture
def pausable(tmp_path, monkeypatch):
    """A moto server of this test's own, with short client timeouts: (endpoint, process)."""
    with moto_process(tmp_path / "moto.log") as (endpoint, proc):
        for name, value in client_env(endpoint).items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("FSSPEC_S3", SHORT_TIMEOUTS)  # for subprocesses
        # fsspec reads FSSPEC_* when it is imported: this process's copy of that configuration.
        monkeypatch.setitem(fsspec.config.conf, "s3", json.loads(SHORT_TIMEOUTS))
        monkeypatch.setattr(s3fs.S3FileSystem, "retries", 1)  # s3fs's own retry loop
        Logdir("s3://paused").fs.mkdir("paused")
        yield endpoint, proc


def upload(fs, key: str, first: int, stop: int) -> None:
    fs.pipe_file(key, b"".join(frames.frame(e) for e in _events(first, stop)))


def test_tail_follow_says_once_that_the_server_stopped_answering_and_goes_on(pausable):
    """The server paused (SIGSTOP by PID) while tail -f follows: one warning naming the URL,
    then the records written while it was paused once it answers again (SIGCONT)."""
    _, proc = pausable
    fs = Logdir("s3://paused").fs
    key = "paused/logs/run/events.out.tfevents.1"
    upload(fs, key, 0, 3)
    polls = []

    def stopped():
        polls.append(1)
        if len(polls) == 1:
            proc.send_signal(signal.SIGSTOP)
        elif len(polls) == 2:
            proc.send_signal(signal.SIGCONT)
            upload(fs, key, 0, 5)
        return len(polls) == 3

    out = io.StringIO()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tail.tail("s3://paused/logs", out, follow=True, interval=0.01, stopped=stopped)
    assert [line.split("  ")[3] for line in out.getvalue().splitlines()] == [
        f"step {i}" for i in range(5)]  # fmt: skip
    (said,) = [str(w.message) for w in caught]
    assert said.startswith("tbkit: cannot list s3://paused/logs: ") and said.endswith("; retrying")


def test_a_read_that_times_out_after_the_listing_is_one_line_and_tried_again(pausable):
    """The server paused between a listing and the read that follows it."""
    _, proc = pausable
    fs = Logdir("s3://paused").fs
    key = "paused/logs/run/events.out.tfevents.1"
    upload(fs, key, 0, 3)
    source = Logdir("s3://paused/logs")
    reader = events.RunReader("run", source=source)
    ((_, paths),) = source.runs()
    proc.send_signal(signal.SIGSTOP)
    try:
        with pytest.raises(StorageError) as caught:
            list(reader.read(paths))
    finally:
        proc.send_signal(signal.SIGCONT)
    assert str(caught.value).startswith(f"cannot read s3://{key}: ")
    assert [d.step for d in reader.read(paths)] == [0, 1, 2]


def test_the_plugin_serves_what_it_read_while_the_server_is_paused(pausable, caplog):
    _, proc = pausable
    fs = Logdir("s3://paused").fs
    key = "paused/logs/run/events.out.tfevents.1"
    upload(fs, key, 0, 3)
    context = type("Context", (), {"logdir": "s3://paused/logs"})()
    plugin = TbkitPlugin(context, min_interval=0.05, background=True)
    deadline = time.monotonic() + 90  # guards against hanging, not timings

    def wait_for(done) -> None:
        while not done():
            assert time.monotonic() < deadline
            time.sleep(0.05)

    try:
        wait_for(lambda: plugin.runs_impl()
                 == {"runs": {"run": {"t": 3}}, "superseded": {}, "complete": True})
        proc.send_signal(signal.SIGSTOP)
        try:
            wait_for(lambda: any("cannot list s3://paused/logs" in r.getMessage()
                                 for r in caplog.records))  # fmt: skip
            assert plugin.runs_impl()["runs"] == {"run": {"t": 3}}  # from what it holds
        finally:
            proc.send_signal(signal.SIGCONT)
        upload(fs, key, 0, 5)
        wait_for(lambda: plugin.runs_impl()["runs"] == {"run": {"t": 5}})
    finally:
        plugin.store.close()
    said = [r.getMessage() for r in caplog.records if "cannot list" in r.getMessage()]
    assert len(said) == 1 and said[0].endswith("; serving what was read, retrying")


def test_wrong_credentials_are_one_line(tmp_path):
    with moto_server(tmp_path / "moto.log", check_keys=True) as endpoint:
        env = {**os.environ, **client_env(endpoint)}
        done = subprocess.run([TBKIT, "export", "s3://checked/logs"], capture_output=True,
                              text=True, env=env, timeout=300)  # fmt: skip
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == (
        "tbkit export: cannot list s3://checked/logs: permission denied (The AWS Access Key Id "
        "you provided does not exist in our records.)\n")  # fmt: skip
