"""The profiler window: a real TensorFlow profiler trace of the chosen steps (Profile tab)."""

from __future__ import annotations

import glob
import gzip
import json
import os
import subprocess
import sys
import urllib.request

import pytest
import tensorflow as tf
from tensorflow.tsl.profiler.protobuf import xplane_pb2

import tbkit
from tests.tbserver import tensorboard


def _train(log: tbkit.SummaryLogger, steps: int, fail_at: int | None = None) -> None:
    w = tf.Variable(1.0)

    @log.train_step
    def step():
        if fail_at is not None:
            tf.debugging.assert_none_equal(log.step, tf.constant(fail_at, tf.int64))
        w.assign_sub(0.1 * w)
        tbkit.scalar("w", w)
        tbkit.record("train", {"w": w}, every=1)
        return w

    for _ in range(steps):
        step()


def _sessions(logdir) -> list[str]:
    return sorted(glob.glob(os.path.join(str(logdir), "plugins", "profile", "*")))


def _traced_steps(session: str) -> list[int]:
    """The step numbers of the ``train`` step markers in a session's xplane trace."""
    (path,) = glob.glob(os.path.join(session, "*.xplane.pb"))
    space = xplane_pb2.XSpace.FromString(open(path, "rb").read())
    steps = set()
    for plane in space.planes:
        names = {k: m.name for k, m in plane.event_metadata.items()}
        stats = {k: m.name for k, m in plane.stat_metadata.items()}
        for line in plane.lines:
            for event in line.events:
                if names.get(event.metadata_id) != "train":
                    continue
                for stat in event.stats:
                    if stats.get(stat.metadata_id) == "step_num":
                        steps.add(stat.int64_value or stat.uint64_value)
    return sorted(steps)


def test_window_traces_exactly_its_steps(tmp_path):
    with tbkit.SummaryLogger(tmp_path, profile_steps=(3, 6)) as log:
        _train(log, 10)
        assert log.profile_window.done
    (session,) = _sessions(tmp_path)
    assert _traced_steps(session) == [3, 4, 5]


def test_window_is_counted_from_a_restored_step(tmp_path):
    first = tbkit.SummaryLogger(tmp_path / "a")
    _train(first, 4)
    saved = tf.train.Checkpoint(logger=first).save(str(tmp_path / "ckpt" / "c"))
    first.close()

    with tbkit.SummaryLogger(tmp_path / "b", profile_steps=(5, 7)) as log:
        tf.train.Checkpoint(logger=log).restore(saved).assert_consumed()
        _train(log, 5)  # steps 4..8
    (session,) = _sessions(tmp_path / "b")
    assert _traced_steps(session) == [5, 6]


def test_close_inside_the_window_saves_the_trace(tmp_path):
    log = tbkit.SummaryLogger(tmp_path, profile_steps=(0, 100))
    _train(log, 3)
    assert log.profile_window.running
    log.close()
    (session,) = _sessions(tmp_path)
    assert _traced_steps(session) == [0, 1, 2]
    tf.profiler.experimental.start(str(tmp_path / "again"))  # the profiler was released
    tf.profiler.experimental.stop()


def test_an_error_in_the_window_stops_the_profiler(tmp_path):
    log = tbkit.SummaryLogger(tmp_path, profile_steps=(1, 5))
    with pytest.raises(tf.errors.InvalidArgumentError):
        _train(log, 5, fail_at=2)
    assert not log.profile_window.running
    log.close()
    (session,) = _sessions(tmp_path)
    assert _traced_steps(session) == [1, 2]  # the failing step is in the trace too


def test_tensorboard_lists_the_run_under_the_profile_plugin(tmp_path):
    with tbkit.SummaryLogger(tmp_path / "train", profile_steps=(1, 3)) as log:
        _train(log, 4)
    (session,) = _sessions(tmp_path / "train")
    with tensorboard(tmp_path) as port:
        request = urllib.request.Request(f"http://127.0.0.1:{port}/data/plugin/profile/runs")
        with urllib.request.urlopen(request, timeout=30) as response:
            body = response.read()
            if response.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
        runs = json.loads(body)
    assert f"train/{os.path.basename(session)}" in runs


@pytest.mark.parametrize(
    ("profile_steps", "error"),
    [
        ((5, 5), tbkit.TbkitValueError),
        ((-1, 3), tbkit.TbkitValueError),
        ((1,), tbkit.TbkitTypeError),
        ((1.0, 3), tbkit.TbkitTypeError),
        ("1:3", tbkit.TbkitTypeError),
    ],
)
def test_bad_profile_steps(tmp_path, profile_steps, error):
    with pytest.raises(error, match=r"'profile_steps' must be None or a pair \(start, stop\)"):
        tbkit.SummaryLogger(tmp_path, profile_steps=profile_steps)


def test_profile_steps_needs_an_owned_step(tmp_path):
    step = tf.Variable(0, dtype=tf.int64)
    with pytest.raises(tbkit.TbkitValueError, match="'profile_steps' needs a logger that owns"):
        tbkit.SummaryLogger(tmp_path, step=step, profile_steps=(0, 2))


def test_a_logger_never_closed_saves_its_window_at_exit(tmp_path):
    script = f"""
import tensorflow as tf
import tbkit
log = tbkit.SummaryLogger({str(tmp_path)!r}, profile_steps=(1, 100))
w = tf.Variable(1.0)

@log.train_step
def step():
    tbkit.scalar("w", w)

for _ in range(3):
    step()
assert log.profile_window.running  # training ends inside the window; no close()
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    (session,) = _sessions(tmp_path)
    assert _traced_steps(session) == [1, 2]


def test_a_restore_after_the_first_call_is_noticed_where_the_window_would_start(tmp_path):
    with tbkit.SummaryLogger(tmp_path / "run", profile_steps=(3, 6)) as log:
        _train(log, 1)  # the host count starts at 0
        log.step.assign(50)  # a checkpoint restored between calls: steps 3..5 never come
        _train(log, 4)
        assert log.profile_window.done and not log.profile_window.running
    assert _sessions(tmp_path / "run") == []
