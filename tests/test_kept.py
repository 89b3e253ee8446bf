"""The flight recorder, ``tbkit.record(..., keep=K)``: the steps before an anomaly, written once.

Real decorated steps write real event files; they are read back with ``read_records``, with
TensorBoard's own loader and ``EventAccumulator``, and through a real ``tensorboard`` process.
"""

import json
import math
import os
import subprocess
import sys
import urllib.request

import numpy as np
import pytest
import tbserver
import tensorflow as tf
from tbreader import steps, summaries
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import tbkit
from tbkit.data import events
from tbkit.data.errors import TbkitTypeError, TbkitValueError

K = 64
EVERY = 50
END = 210  # steps each run makes


def make_step(log, keep, every, poison):
    """A deterministic step: its values depend on the step alone (a seeded stateless draw),
    and on ``poison`` (a bool variable), which turns the loss into NaN."""

    @log.train_step
    def train_step():
        step = log.step.value()
        noise = tf.random.stateless_normal([], seed=tf.stack([tf.constant(7, tf.int64), step]))
        loss = tf.where(poison, tf.constant(math.nan), 1.0 + noise * 0.1)
        fields = {"loss": loss, "grad_norm": tf.cast(noise, tf.float64) ** 2,
                  "lr": tf.constant(0.01), "count": step * 3,
                  "note": tf.strings.as_string(step)}  # fmt: skip
        tbkit.record("train", fields, every=every, keep=keep)
        tbkit.record("anomaly", {"loss": loss}, level="error", when=~tf.math.is_finite(loss))

    return train_step


def run(logdir, nan_at=(), keep=K, every=EVERY, end=END):
    poison = tf.Variable(False)
    with tbkit.SummaryLogger(str(logdir)) as log:
        step = make_step(log, keep, every, poison)
        for i in range(end):
            poison.assign(i in nan_at)
            step()


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    """Three runs of one seed: every step recorded; a NaN at 157; NaNs at 150 and 160."""
    root = tmp_path_factory.mktemp("kept")
    run(root / "every1", keep=None, every=1)
    run(root / "nan", nan_at=(157,))
    run(root / "twice", nan_at=(150, 160))
    return root


def by_step(logdir, name, tag="train"):
    out = {}
    for r in tbkit.read_records(logdir, run=name, tag=tag):
        assert r.step not in out, f"step {r.step} appears twice"
        out[r.step] = r.fields
    return out


def test_a_nan_writes_the_steps_before_it_as_an_every_step_run_records_them(logdir):
    reference = by_step(logdir, "every1")
    records = by_step(logdir, "nan")
    sampled = {0, 50, 100, 150, 200}
    kept_steps = set(range(157 - K, 157)) - sampled
    assert set(records) == sampled | kept_steps
    for step, fields in records.items():
        assert fields.pop("kept", False) is (step in kept_steps)
        assert fields == reference[step]
    assert by_step(logdir, "nan", "anomaly") == {157: {"loss": "NaN"}}
    assert list(records) == sorted(records)  # in step order among the tag's records


def test_tensorboard_sees_one_datum_at_the_trigger_and_no_step_going_back(logdir):
    written = steps(str(logdir / "nan"))
    assert written["train/kept"] == [157]
    assert written["train"] == [0, 50, 100, 150, 200]
    for tag, tag_steps in written.items():
        assert tag_steps == sorted(set(tag_steps)), tag
    ((_, texts),) = summaries(str(logdir / "nan"))["train/kept"]
    objects = [json.loads(t) for t in texts]
    assert [o["step"] for o in objects] == sorted(set(range(93, 157)) - {100, 150})
    accumulator = EventAccumulator(str(logdir / "nan"), size_guidance={"tensors": 0}).Reload()
    assert "train/kept" in accumulator.Tags()["tensors"]
    assert [e.step for e in accumulator.Tensors("train/kept")] == [157]
    assert [e.step for e in accumulator.Tensors("train")] == [0, 50, 100, 150, 200]
    meta = accumulator.SummaryMetadata("train/kept")
    assert meta.plugin_data.plugin_name == "tbkit"
    dtypes = {"loss": "float32", "grad_norm": "float64", "lr": "float32", "count": "int64",
              "note": "string"}  # the record's, as its own metadata has them
    assert json.loads(meta.plugin_data.content) == {"version": 3, "kept_of": "train",
                                                    "dtypes": dtypes}  # fmt: skip
    own = accumulator.SummaryMetadata("train").plugin_data.content
    assert json.loads(own) == {"version": 3, "dtypes": dtypes}


def test_two_triggers_within_keep_write_no_step_twice(logdir):
    records = by_step(logdir, "twice")  # asserts each step once
    sampled = {0, 50, 100, 150, 200}
    assert set(records) == sampled | set(range(150 - K, 160))
    assert {s for s, f in records.items() if f.get("kept")} == set(range(86, 160)) - sampled
    assert steps(str(logdir / "twice"))["train/kept"] == [150, 160]
    reference = by_step(logdir, "every1")
    for step, fields in records.items():
        fields.pop("kept", None)
        assert fields == reference[step] or step == 150  # poisoned: the loss is NaN


def test_dumps_are_no_restart_and_supersede_nothing(logdir):
    for name in ("nan", "twice"):
        paths = [os.path.join(logdir, name, f) for f in sorted(os.listdir(logdir / name))]
        scan = events.scan(name, paths)
        assert scan.restarts == {}
        assert events.superseded(scan) == 0
        assert scan.tags() == ["train", "anomaly"]
        assert not any(d.restart for d in events.RunReader(name).read(paths))


def test_write_kept_from_an_exception_handler(tmp_path):
    with tbkit.SummaryLogger(str(tmp_path)) as log:

        @log.train_step
        def train_step(x):
            loss = x * 2.0
            tbkit.record("train", {"loss": loss}, every=10, keep=16)
            return loss

        try:
            for i in range(60):
                if not math.isfinite(train_step(tf.constant(math.nan if i == 45 else float(i)))):
                    raise FloatingPointError(f"the loss is NaN at step {i}")
        except FloatingPointError:
            log.write_kept()  # at step 46: steps 30-45
            log.write_kept()  # nothing new: writes nothing
    records = by_step(tmp_path, ".")
    expected = {s: 2.0 * s for s in range(31, 46) if s % 10}
    expected[45] = "NaN"
    assert {s: f["loss"] for s, f in records.items() if f.get("kept")} == expected
    assert steps(str(tmp_path))["train/kept"] == [46]


def test_a_restored_checkpoint_dumps_only_steps_of_the_current_attempt(tmp_path):
    poison = tf.Variable(False)
    with tbkit.SummaryLogger(str(tmp_path)) as log:
        step = make_step(log, K, EVERY, poison)
        checkpoint = tf.train.Checkpoint(logger=log)
        for _ in range(100):
            step()
        path = checkpoint.save(str(tmp_path / "ckpt" / "c"))
        for _ in range(20):
            step()
        checkpoint.restore(path)
        for _ in range(5):
            step()
        poison.assign(True)
        step()  # a NaN at step 105
    assert not any("kept" in name for name, _ in tf.train.list_variables(path))
    records = by_step(tmp_path, ".")
    assert {s for s, f in records.items() if f.get("kept")} == {101, 102, 103, 104}
    assert set(records) == {0, 50, 100, 101, 102, 103, 104}
    assert steps(str(tmp_path))["train/kept"] == [105]


def test_write_kept_right_after_a_restore_writes_no_step_of_the_earlier_attempt(tmp_path):
    # The ring still holds steps 0-29 of the first attempt, and the slots of 4-19 hold the
    # very steps a dump at 20 would write: only the calls that wrote them tell them apart.
    poison = tf.Variable(False)
    with tbkit.SummaryLogger(str(tmp_path)) as log:
        step = make_step(log, 16, EVERY, poison)
        checkpoint = tf.train.Checkpoint(logger=log)
        for _ in range(20):
            step()
        path = checkpoint.save(str(tmp_path / "ckpt" / "c"))
        for _ in range(10):
            step()
        checkpoint.restore(path)
        log.write_kept()  # at step 20, before any call of this attempt: nothing
        step()  # step 20
        step()  # step 21
        log.write_kept()  # at step 22: steps 20 and 21
    records = by_step(tmp_path, ".")
    assert {s for s, f in records.items() if f.get("kept")} == {20, 21}
    assert steps(str(tmp_path))["train/kept"] == [22]


def test_a_step_assigned_forward_by_a_multiple_of_the_ring_dumps_only_the_new_steps(tmp_path):
    # K + 1 = 5 slots: after the jump from step 9 to 19 every slot index repeats.
    poison = tf.Variable(False)
    with tbkit.SummaryLogger(str(tmp_path)) as log:
        step = make_step(log, 4, EVERY, poison)
        for _ in range(10):
            step()
        log.step.assign(19)
        for _ in range(2):
            step()  # steps 19, 20
        poison.assign(True)
        step()  # a NaN at step 21
    records = by_step(tmp_path, ".")
    assert {s for s, f in records.items() if f.get("kept")} == {19, 20}
    assert steps(str(tmp_path))["train/kept"] == [21]


def test_a_real_tensorboard_serves_kept_steps_as_records_of_their_tag(logdir):
    with tbserver.tensorboard(str(logdir / "twice")) as port:
        prefix = f"http://127.0.0.1:{port}/data/plugin/tbkit"
        for _ in range(600):
            with urllib.request.urlopen(prefix + "/runs") as response:
                listing = json.load(response)
            if listing["complete"]:
                break
        assert listing["runs"] == {".": {"anomaly": 2, "train": 5 + 74 - 2}}
        assert listing["superseded"] == {}
        query = "/records?limit=1000&tag=train"
        with urllib.request.urlopen(prefix + query) as response:
            rows = json.load(response)["rows"]
        query = "/records?limit=1000&where=" + urllib.request.quote("kept == true")
        with urllib.request.urlopen(prefix + query) as response:
            assert json.load(response)["total"] == 74 - 2
    assert sorted(row["step"] for row in rows) == sorted(by_step(logdir, "twice"))
    assert {row["step"] for row in rows if row.get("kept")} == set(range(86, 160)) - {100, 150}


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"keep": 0}, TbkitValueError,
         "'keep' must be a positive int (got 0 that is a <class 'int'>)."),
        ({"keep": True}, TbkitValueError,
         "'keep' must be a positive int (got True that is a <class 'bool'>)."),
        ({"keep": 8, "every": 1}, TbkitValueError,
         "tbkit.record('r', keep=8) with every=1: every step is written already, so there is "
         "nothing to keep. Drop keep=, or sample less often."),
        ({"keep": 8, "level": "warning"}, TbkitValueError,
         "tbkit.record('r', keep=8) records every step (its level's interval is 1), so there "
         "is nothing to keep. Give it every= or a level that samples, or drop keep=."),
        ({"keep": 2**20, "every": 10}, TbkitValueError,
         "tbkit.record('r', keep=1048576) would keep 67108928 bytes ((keep + 1) × 64 bytes "
         "per step, a string field counted at 16384 bytes), over MAX_KEPT_BYTES (67108864). "
         "Keep fewer steps or fewer fields."),
    ],
)
def test_keep_is_checked_at_trace_time(tmp_path, kwargs, error, message):
    with tbkit.SummaryLogger(str(tmp_path)) as log:

        @log.train_step
        def train_step():
            tbkit.record("r", {"x": tf.zeros([16])}, **kwargs)

        with pytest.raises(error) as caught:
            train_step()
    assert str(caught.value) == message


def test_keep_is_refused_where_no_ring_can_be_updated_every_step(tmp_path):
    with tbkit.SummaryLogger(str(tmp_path)) as log:

        @log.train_step
        def in_branch(x):
            tf.cond(x > 0, lambda: tbkit.record("r", {"x": x}, keep=8) or x, lambda: x)

        with pytest.raises(TbkitTypeError, match=r"is inside a tf.cond branch of .*in_branch"):
            in_branch(tf.constant(1.0))
        with pytest.raises(TbkitTypeError, match="is outside a decorated step"):
            tbkit.record("r", {"x": 1.0}, keep=8)

        @log.train_step
        def unbounded(n):
            tbkit.record("r", {"v": tf.range(n)}, keep=8)

        with pytest.raises(TbkitValueError, match="field 'v' is a vector whose length is only"):
            unbounded(tf.constant(3))

        @log.train_step
        def named_kept():
            tbkit.record("r", {"kept": tf.constant(1)}, keep=8)

        with pytest.raises(TbkitValueError, match="has a field named 'kept'"):
            named_kept()

        @log.train_step
        def clash():
            tbkit.record("r", {"x": tf.constant(1)}, keep=8)
            tbkit.record("r/kept", {"x": tf.constant(1)})

        with pytest.raises(TbkitValueError, match="under the tag 'r/kept', which .* logs too"):
            clash()


def test_the_command_line_exports_and_tails_kept_steps_as_read_records_gives_them(logdir):
    from tbkit.data.rows import json_line

    tbkit_script = os.path.join(os.path.dirname(sys.executable), "tbkit")
    run_dir = str(logdir / "nan")
    exported = subprocess.run([tbkit_script, "export", run_dir, "--format", "jsonl"],
                              capture_output=True, check=True, timeout=300).stdout  # fmt: skip
    expected = "".join(json_line(r) + "\n" for r in tbkit.read_records(run_dir))
    assert exported.decode("utf-8") == expected
    tailed = subprocess.run([tbkit_script, "tail", run_dir], capture_output=True, text=True,
                            check=True, timeout=300).stdout.splitlines()  # fmt: skip
    train = [line for line in tailed if "  train  " in line]
    assert len(train) == 5 + 64 - 2
    assert sum('"kept":true' in line for line in train) == 64 - 2
    train_steps = [int(line.split("  step ")[1].split()[0]) for line in train]
    assert train_steps == sorted(train_steps)  # kept steps among the sampled ones


def kept_and_sampled(run_dir, tag="train"):
    """``(sampled steps, kept steps)`` of a record's tag, each step once."""
    records = by_step(run_dir, ".", tag) if os.path.isdir(run_dir) else {}
    kept_steps = {s for s, f in records.items() if f.get("kept")}
    return set(records) - kept_steps, kept_steps


def test_a_jit_compiled_step_keeps_its_ring_inside_the_compiled_body(tmp_path):
    def body(x):
        tbkit.record("train", {"loss": x * 2.0, "unit": "s", "name": tf.constant("k")},
                     every=10, keep=8)  # fmt: skip
        tbkit.record("anomaly", {"x": x}, level="error", when=~tf.math.is_finite(x))

    for jit in (False, True):
        with tbkit.SummaryLogger(str(tmp_path / f"jit{jit}")) as log:
            step = log.train_step(body, jit_compile=jit)
            for i in range(40):
                step(tf.constant(math.nan if i in (25, 27) else float(i)))
        graph = step.function.get_concrete_function(tf.constant(0.0)).graph
        top = {op.type for op in graph.get_operations()}
        assert ("ResourceScatterUpdate" in top) is not jit  # a jit step's ring is not here...
    compiled = [f for f in graph.as_graph_def().library.function
                if f.attr["_XlaMustCompile"].b]  # fmt: skip
    assert any(node.op == "ResourceScatterUpdate" for f in compiled for node in f.node_def)
    sampled, kept_steps = kept_and_sampled(tmp_path / "jitTrue")
    assert (sampled, kept_steps) == ({0, 10, 20, 30}, set(range(17, 27)) - {20})
    assert kept_and_sampled(tmp_path / "jitFalse") == (sampled, kept_steps)
    assert by_step(tmp_path / "jitTrue", ".") == by_step(tmp_path / "jitFalse", ".")
    assert steps(str(tmp_path / "jitTrue"))["train/kept"] == [25, 27]


def test_mirrored_strategy_keeps_replica_0_or_the_reduced_value(tmp_path):
    script = os.path.join(os.path.dirname(__file__), "kept_mirrored_run.py")
    done = subprocess.run(
        [sys.executable, script, str(tmp_path / "inside"), str(tmp_path / "outside")],
        capture_output=True, text=True, timeout=300,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    for name in ("inside", "outside"):
        run_dir = tmp_path / name
        kept_steps = set(range(22, 30))  # NaN at 30, keep=8, sampled 20 and 30
        assert kept_and_sampled(run_dir, "local") == ({0, 10, 20, 30}, kept_steps)
        assert kept_and_sampled(run_dir, "total") == ({0, 10, 20, 30}, kept_steps)
        local, total = by_step(run_dir, ".", "local"), by_step(run_dir, ".", "total")
        for s in kept_steps:  # replica r reads 2 * s + r
            assert (local[s]["x"], total[s]["x"]) == (2.0 * s, 4.0 * s + 1)
        assert steps(str(run_dir))["local/kept"] == steps(str(run_dir))["total/kept"] == [30]


def test_keras_fit_and_optimizer_iterations_keep_steps(tmp_path):
    import keras
    from test_keras import DenseModel

    from tbkit.keras import TensorBoardRecords

    class KeptModel(DenseModel):
        def train_step(self, data):
            x, y = data
            y_pred, _, _ = self.descend(x, y)
            tbkit.record("custom", {"first_row": x[0, 0]}, every=4, keep=8)
            tbkit.record("anomaly", {"first_row": x[0, 0]}, level="error",
                         when=tf.equal(x[0, 0], 50.0))  # fmt: skip
            return self.compute_metrics(x, y, y_pred)

    keras.utils.set_random_seed(0)
    model = KeptModel()
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    x = np.stack([np.arange(70), np.linspace(-1, 1, 70)], axis=1).astype("float32")
    model.fit(x, x[:, 1:], batch_size=10, epochs=2, shuffle=False, verbose=0,
              callbacks=[TensorBoardRecords(tmp_path / "fit")])  # fmt: skip
    # 7 batches an epoch; the trigger (first row 50) at global steps 5 and 12.
    expected_kept = {1, 2, 3, 5, 6, 7, 9, 10, 11}
    assert kept_and_sampled(tmp_path / "fit" / "train", "custom") == ({0, 4, 8, 12},
                                                                      expected_kept)  # fmt: skip
    records = by_step(tmp_path / "fit" / "train", ".", "custom")
    assert all(f["first_row"] == (s % 7) * 10 for s, f in records.items())
    assert steps(str(tmp_path / "fit" / "train"))["custom/kept"] == [5, 12]

    optimizer = keras.optimizers.SGD(0.01)
    weight = keras.Variable(1.0)
    with tbkit.SummaryLogger(str(tmp_path / "loop"), step=optimizer.iterations) as log:

        @log.train_step
        def train_step(row):
            with tf.GradientTape() as tape:
                loss = (weight.value * row) ** 2
            optimizer.apply_gradients([(tape.gradient(loss, weight.value), weight)])
            tbkit.record("train", {"row": row}, every=4, keep=8)
            tbkit.record("anomaly", {"row": row}, level="error", when=tf.equal(row, 12.0))

        for i in range(20):
            train_step(tf.constant(float(i)))
    assert kept_and_sampled(tmp_path / "loop") == ({0, 4, 8, 12, 16}, {5, 6, 7, 9, 10, 11})
    assert all(f["row"] == s for s, f in by_step(tmp_path / "loop", ".").items())
