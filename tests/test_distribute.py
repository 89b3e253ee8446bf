"""tbkit under tf.distribute: MirroredStrategy on 2 logical CPUs and MultiWorkerMirroredStrategy
with 2 worker processes, each run as processes of their own (logical devices must be set
before TensorFlow initialises them); exact (tag, step, value) sets compared."""

import json
import os
import socket
import subprocess
import sys
import time

import pytest
import tensorflow as tf
from tbreader import summaries

import tbkit

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "distribute_run.py")
STEPS = range(4)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(args, env=None) -> subprocess.Popen:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **(env or {}))
    return subprocess.Popen([sys.executable, SCRIPT, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=HERE)


def _finish(procs, timeout=150.0) -> list[dict]:
    """Wait for every process; a watchdog kills them all by PID past ``timeout`` (a worker
    whose peer died waits forever)."""
    deadline = time.monotonic() + timeout
    try:
        for proc in procs:
            proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
    except subprocess.TimeoutExpired:
        for proc in procs:
            if proc.poll() is None:
                os.kill(proc.pid, 9)
                proc.wait()
        pytest.fail("a distributed run hung: the watchdog killed its processes")
    results = []
    for proc in procs:
        out, err = proc.communicate()
        assert proc.returncode == 0, err[-3000:]
        results.append([json.loads(line) for line in out.strip().splitlines()])
    return results


def _scalars(logdir) -> set:
    return {
        (tag, step, float(value))
        for tag, pairs in summaries(str(logdir)).items() if tag != "fields"
        for step, value in pairs
    }


def _records(logdir) -> set:
    return {(r.tag, r.step, json.dumps(r.fields, sort_keys=True))
            for r in tbkit.read_records(str(logdir))}


def _expected(local, others):
    """The written set when the first replica reads ``local(s)`` and the others ``others(s)``."""
    scalars, records = set(), set()
    for s in STEPS:
        values = [local(s), *others(s)]
        scalars |= {("local", s, local(s)), ("sum", s, sum(values)), ("min", s, min(values)),
                    ("max", s, max(values)), ("mean", s, sum(values) / len(values))}
        if s % 2 == 0:
            scalars |= {(f"each/replica_{i}", s, v) for i, v in enumerate(values)}
            total = sum(values)
            fields = {"x": total, "n": int(total), "unit": "s"}
            records.add(("fields", s, json.dumps(fields, sort_keys=True)))
        if local(s) > 1.5:
            scalars.add(("late", s, max(values)))
    return scalars, records


def test_mirrored_strategy_on_two_cpus(tmp_path):
    inside, outside = tmp_path / "inside", tmp_path / "outside"
    ((made_inside, made_outside),) = _finish([_start(["mirrored", str(inside), str(outside)])])
    assert made_inside["step"] == "MirroredVariable"  # the logger was built under the scope
    assert made_outside["step"] != "MirroredVariable"
    scalars, records = _expected(lambda s: 2.0 * s, lambda s: [2.0 * s + 1])
    for logdir, made in ((inside, made_inside), (outside, made_outside)):
        assert (made["traces"], made["final_step"]) == (1, 4)
        assert _scalars(logdir) == scalars
        assert _records(logdir) == records


def test_multi_worker_mirrored_strategy_only_the_chief_writes(tmp_path):
    workers = [f"127.0.0.1:{_free_port()}" for _ in range(2)]
    procs = []
    for index in range(2):
        config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        procs.append(_start(["multiworker", str(tmp_path)], {"TF_CONFIG": json.dumps(config)}))
    (chief,), (other,) = _finish(procs)
    assert chief["run_dir"] == str(tmp_path) and other["run_dir"] != str(tmp_path)
    assert not os.path.exists(other["run_dir"])  # the other worker's scratch folder is gone
    files = os.listdir(tmp_path)
    assert files and all(f".{procs[0].pid}." in name for name in files), files
    assert chief["final_step"] == other["final_step"] == 4
    scalars, records = _expected(lambda s: float(s), lambda s: [100.0 + s])
    assert _scalars(tmp_path) == scalars
    assert _records(tmp_path) == records


# Argument checks: one replica in this process is enough to reach them.


def _one_replica_step(tmp_path, replica_body):
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    log = tbkit.SummaryLogger(str(tmp_path))

    @log.train_step
    def step(x):
        return strategy.run(replica_body, args=(x,))

    return log, step


@pytest.mark.parametrize(
    ("body", "error", "message"),
    [
        (lambda x: tbkit.scalar("n", tf.size(x), reduce="mean"), tbkit.TbkitTypeError,
         r"^tbkit.scalar\('n', reduce='mean'\) averages an integer \(dtype int32 in the "
         r"value of tbkit.scalar\('n'\)\)"),
        (lambda x: tbkit.record("r", {"ok": x > 0.0}, reduce="max"), tbkit.TbkitTypeError,
         r"^tbkit.record\('r', reduce='max'\) needs numbers to combine across replicas "
         r"\(got dtype bool in record 'r' field 'ok'\)"),
        (lambda x: tbkit.record("r", {"t": tf.strings.as_string(x)}, reduce="replicas"),
         tbkit.TbkitValueError,
         r"^tbkit.record\('r', reduce='replicas'\) cannot combine the string tensor "
         r"record 'r' field 't' across replicas"),
    ],
)
def test_what_reduce_cannot_combine_is_refused_at_trace_time(tmp_path, body, error, message):
    log, step = _one_replica_step(tmp_path, body)
    with log, pytest.raises(error, match=message):
        step(tf.constant(1.0))


def test_reduce_must_be_a_known_reduction(tmp_path):
    with tbkit.SummaryLogger(str(tmp_path)):
        with pytest.raises(tbkit.TbkitValueError, match=r"^'reduce' must be None or one of "
                           r"'mean', 'sum', 'min', 'max', 'replicas' \(got 'avg'"):
            tbkit.scalar("x", 1.0, reduce="avg")


def test_reduce_outside_strategy_run_writes_the_value_as_is(tmp_path):
    with tbkit.SummaryLogger(str(tmp_path)) as log:

        @log.train_step
        def step(x):
            tbkit.scalar("x", x, reduce="sum", every=1)

        step(tf.constant(3.0))
    assert _scalars(tmp_path) == {("x", 0, 3.0)}


def test_the_docs_example_runs(tmp_path):
    example = os.path.join(os.path.dirname(HERE), "docs", "examples", "distributed_xla.py")
    proc = subprocess.run([sys.executable, example, str(tmp_path)], capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {tag: [s for s, _ in pairs] for tag, pairs in summaries(str(tmp_path / "xla")).items()
            } == {"loss": [0, 5, 10, 15], "weights": [0, 10], "train": [0, 5, 10, 15]}
    mirrored = summaries(str(tmp_path / "mirrored"))
    assert set(mirrored) == {"loss/first_replica", "loss/mean", "loss/each/replica_0",
                             "loss/each/replica_1"}
    for i in range(4):
        first, mean = mirrored["loss/first_replica"][i], mirrored["loss/mean"][i]
        each = [mirrored[f"loss/each/replica_{r}"][i] for r in (0, 1)]
        assert first[0] == mean[0] == each[0][0] == each[1][0] == 5 * i
        assert float(first[1]) == float(each[0][1])
        assert abs(float(mean[1]) - (float(each[0][1]) + float(each[1][1])) / 2) < 1e-5
    records = [r for r in tbkit.read_records(str(tmp_path / "xla"))]
    assert [r.fields["optimizer"] for r in records] == ["sgd"] * 4


def test_a_jit_compiled_step_refuses_ops_inside_strategy_run(tmp_path):
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with tbkit.SummaryLogger(str(tmp_path)) as log:

        @log.train_step(jit_compile=True)
        def step(x):
            return strategy.run(lambda x: tbkit.scalar("x", x), args=(x,))

        with pytest.raises(tbkit.TbkitValueError, match=r"runs inside strategy.run: XLA "
                           r"compiles a step for one device"):
            step(tf.constant(1.0))


def test_reduce_inside_a_branch_is_refused(tmp_path):
    def body(x):
        if x > 0:
            tbkit.scalar("x", x, reduce="sum")

    log, step = _one_replica_step(tmp_path, body)
    with log, pytest.raises(tbkit.TbkitValueError, match=r"^tbkit.scalar\('x', reduce='sum'\) "
                            r"is inside a branch .*wait forever"):
        step(tf.constant(1.0))
