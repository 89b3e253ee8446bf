"""Parquet export: typed columns, one run=NAME/ folder per run, read back by DuckDB and pandas."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
import tensorflow as tf

import tbkit
from tbkit.data.parquet import run_folder
from tbkit.data.rows import NON_FINITE, flatten

TBKIT = os.path.join(os.path.dirname(sys.executable), "tbkit")
NUMERIC = ["loss", "epoch", "big", "opt.lr", "acc"]


@pytest.fixture(scope="module")
def logdir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("logs")
    log = tbkit.SummaryLogger(root / "exp" / "train", every={"info": 1})

    @log.train_step
    def step(x):
        loss = tf.where(tf.equal(x, 3.0), float("nan"), tf.where(tf.equal(x, 5.0),
                                                                 float("inf"), 1.0 / (x + 1.0)))
        tbkit.record("train", {"loss": loss, "epoch": tf.cast(x, tf.int64) // 2,
                               "big": tf.constant(2**62 + 1, tf.int64) + tf.cast(x, tf.int64),
                               "opt": {"lr": 0.1 * x}, "ok": x > 2.0, "note": "a,\"b\"",
                               "sizes": tf.stack([x, x])})  # fmt: skip
        tbkit.text("msg", tf.strings.as_string(x))

    with log:
        for i in range(8):
            step(tf.constant(float(i)))
    validation = tbkit.SummaryLogger(root / "exp" / "validation", every={"info": 1})

    @validation.train_step
    def evaluate(acc):
        tbkit.record("eval", {"acc": acc})

    with validation:
        for acc in (0.25, 0.75, 1.0):
            evaluate(tf.constant(acc))
    return root


def export(logdir: Path, out: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([TBKIT, "export", str(logdir), "--format", "parquet", "-o", str(out),
                           *args], capture_output=True, text=True, timeout=300)  # fmt: skip


def sql(out: Path, text: str) -> list[tuple]:
    """Run ``text`` in DuckDB with ``{t}`` standing for the exported folder read as one table."""
    t = (f"read_parquet('{out}/**/*.parquet', hive_partitioning=true, "
         "hive_types={'run': 'VARCHAR'})")
    return duckdb.sql(text.format(t=t)).fetchall()


def python_figures(records, name):
    """count, avg, min, max of a numeric field as DuckDB computes them (NaN sorts last)."""
    values = []
    for r in records:
        value = flatten(r.fields).get(name)
        if value is not None:
            values.append(NON_FINITE.get(value, value) if isinstance(value, str) else value)
    if not values:
        return (0, None, None, None)
    finite = [float(v) for v in values if not math.isnan(v)]
    has_nan = len(finite) < len(values)
    avg = math.nan if has_nan else math.fsum(finite) / len(finite)
    return (len(values), avg, min(finite) if finite else math.nan,
            math.nan if has_nan else max(finite))  # fmt: skip


def same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or a == b or math.isclose(a, b, rel_tol=1e-12)
    return a == b


def test_duckdb_reads_the_export_as_one_table_with_read_records_figures(logdir, tmp_path):
    out = tmp_path / "out"
    done = export(logdir, out)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    assert sorted(p.name for p in out.iterdir()) == [
        "_SUCCESS", "run=exp%2Ftrain", "run=exp%2Fvalidation"]  # fmt: skip
    records = list(tbkit.read_records(logdir))
    runs = sorted({r.run for r in records})
    got = dict(sql(out, "select run, count(*) from {t} group by run"))
    assert got == {run: sum(r.run == run for r in records) for run in runs}
    for name in NUMERIC:
        for run in runs:
            want = python_figures([r for r in records if r.run == run], name)
            if want[0] == 0:
                continue
            (row,) = sql(out, f'select count("{name}"), avg("{name}"), min("{name}"), '
                              f"max(\"{name}\") from {{t}} where run = '{run}'")  # fmt: skip
            assert all(same(float(g) if g is not None and name == "big" else g,
                            float(w) if w is not None and name == "big" else w)
                       for g, w in zip(row, want, strict=True)), (name, run, row, want)
    types = dict(sql(out, "select column_name, column_type from (describe select * from {t})"))
    assert {k: types[k] for k in ("step", "loss", "epoch", "big", "opt.lr", "ok", "note",
                                  "sizes", "message", "run")} == {
        "step": "BIGINT", "loss": "DOUBLE", "epoch": "BIGINT", "big": "BIGINT",
        "opt.lr": "DOUBLE", "ok": "BOOLEAN", "note": "VARCHAR", "sizes": "VARCHAR",
        "message": "VARCHAR", "run": "VARCHAR"}  # fmt: skip
    big = sql(out, "select big from {t} where run = 'exp/train' order by step")
    assert [b for (b,) in big if b is not None][:2] == [2**62 + 1, 2**62 + 2]  # exact


def test_integers_beyond_int64_stay_exact(tmp_path):
    from tensorboard.compat.proto import event_pb2

    from tbkit.data import frames
    from tbkit.summary import summary_pb

    run = tmp_path / "logs" / "run"
    run.mkdir(parents=True)
    data = b""
    for step, value in enumerate((2**70, -(2**64), 5)):
        event = event_pb2.Event(step=step, wall_time=1.0 + step)
        event.summary.CopyFrom(summary_pb.record_pb("t", {"n": 0}))
        event.summary.value[0].tensor.string_val[0] = f'{{"n":{value},"level":"info"}}'.encode()
        data += frames.frame(event.SerializeToString())
    (run / "events.out.tfevents.1").write_bytes(data)
    assert tbkit.read.to_parquet(tmp_path / "logs", tmp_path / "out") == 3
    assert [int(n) for (n,) in sql(tmp_path / "out", "select n from {t} order by step")] == [
        2**70, -(2**64), 5]  # fmt: skip


def test_filters_narrow_the_rows_and_the_output_folder_must_be_new(logdir, tmp_path):
    out = tmp_path / "out"
    done = export(logdir, out, "--tag", "train", "--where", "loss < 0.3")
    assert done.returncode == 0, done.stderr
    want = [(r.run, r.step) for r in tbkit.read_records(logdir, tag="train")
            if isinstance(r.fields["loss"], float) and r.fields["loss"] < 0.3]  # fmt: skip
    assert sql(out, "select run, step from {t} order by step") == want
    again = export(logdir, out)
    assert (again.returncode, again.stderr) == (
        2, f"tbkit export: output {str(out)!r} is not empty: give a new folder\n")  # fmt: skip
    folder = subprocess.run([TBKIT, "export", str(logdir), "--format", "parquet"],
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert (folder.returncode, folder.stderr) == (
        2, "tbkit export: --format parquet writes a folder: give it with -o DIR\n")  # fmt: skip


def test_pandas_reads_a_run_of_the_export(logdir, tmp_path):
    import pandas as pd

    out = tmp_path / "out"
    assert tbkit.read.to_parquet(logdir, out, run="exp/validation") == 3
    frame = pd.read_parquet(run_folder(str(out), "exp/validation"))
    assert frame["acc"].tolist() == [0.25, 0.75, 1.0]
    assert list(frame.columns) == ["tag", "step", "wall_time", "level", "acc"]


def test_every_file_has_the_same_columns_so_any_reader_takes_the_folder(tmp_path):
    """A field that is an int in one run and a float in another, and one that only a later run
    has: one schema for all files, which pandas (pyarrow) reads as one table."""
    import pandas as pd
    from tensorboard.compat.proto import event_pb2

    from tbkit.data import frames
    from tbkit.summary import summary_pb

    for run, objects in (("0001", ['{"a":1,"level":"info"}']),
                         ("0002", ['{"a":0.5,"b":"x","level":"info"}'])):  # fmt: skip
        (tmp_path / "logs" / run).mkdir(parents=True)
        event = event_pb2.Event(step=0, wall_time=1.0)
        event.summary.CopyFrom(summary_pb.record_pb("t", {"n": 0}))
        event.summary.value[0].tensor.string_val[0] = objects[0].encode()
        (tmp_path / "logs" / run / "events.out.tfevents.1").write_bytes(
            frames.frame(event.SerializeToString()))
    assert tbkit.read.to_parquet(tmp_path / "logs", tmp_path / "out") == 2
    frame = pd.read_parquet(tmp_path / "out").sort_values("a")
    assert frame["a"].tolist() == [0.5, 1.0] and frame["b"].isna().tolist() == [False, True]
    assert sql(tmp_path / "out", "select run, a from {t} order by run") == [
        ("0001", 1.0), ("0002", 0.5)]  # fmt: skip (run names stay text)


def test_a_failed_export_leaves_no_part_that_looks_whole(tmp_path):
    from tbkit.data import logdir, parquet
    from tbkit.data.rows import Record

    def records(quiet: bool):
        for step in range(parquet.BATCH + 5):
            if step == parquet.BATCH + 2 and not quiet:
                raise OSError("the disk went away")
            yield Record("r", "t", step, 1.0, "info", {"x": step})

    target = logdir.Logdir(tmp_path / "out")
    with pytest.raises(OSError, match="the disk went away"):
        parquet.write(target, [("r", records)])
    assert [p.name for p in (tmp_path / "out").rglob("*") if p.is_file()] == []


def test_an_output_named_parquet_means_parquet(logdir, tmp_path):
    done = subprocess.run([TBKIT, "export", str(logdir), "-o", str(tmp_path / "x.parquet")],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "x.parquet" / "_SUCCESS").exists()
