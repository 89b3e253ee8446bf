"""A run restarted in its folder: the logger warns before it hides the earlier records, and
``tbkit stats`` and the plugin say how many newer writes superseded (issue 13, item 10)."""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
import warnings

import keras
import numpy as np
import pytest
import tbserver
import tensorflow as tf
from eventfiles import next_second
from tensorboard.plugins import base_plugin
from test_cli import run_tbkit

import tbkit
from tbkit.keras import TensorBoardRecords
from tbkit_plugin.plugin import TbkitPlugin


def train(run_dir, steps, *, restore_from=None):
    """A run that records every 10th step; ``restore_from``: a checkpoint to restore the
    logger's step from after the logger is made and before the first step."""
    if run_dir.exists():
        next_second()
    log = tbkit.SummaryLogger(str(run_dir), every={"info": 10})
    if restore_from is not None:
        tf.train.Checkpoint(logger=log).restore(restore_from).assert_consumed()

    @log.train_step
    def step():
        tbkit.record("train", {"x": tf.cast(log.step, tf.float32)})
        tbkit.scalar("x", tf.cast(log.step, tf.float32))  # a scalar too: not a record

    for _ in range(steps):
        step()
    saved = tf.train.Checkpoint(logger=log).save(str(run_dir.parent / "ckpt" / "c"))
    log.close()
    return saved


def scalar_steps(logdir, run, tag) -> list[int]:
    """The steps a real TensorBoard (its default Rust data server) shows for a scalar tag."""
    with tbserver.tensorboard(str(logdir)) as port:
        url = f"http://127.0.0.1:{port}/data/plugin/scalars/scalars?run={run}&tag={tag}"
        deadline, steps = time.monotonic() + 60, []
        while time.monotonic() < deadline:  # its first load runs in the background
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    steps = [step for _, step, _ in json.load(response)]
            except urllib.error.HTTPError:
                steps = []
            if steps and steps[-1] < 440:  # the restarted run's data arrived
                break
            time.sleep(0.5)
        return steps


def test_rerun_from_step_0_warns_with_the_count_tensorboard_hides(tmp_path):
    train(tmp_path / "run", 450)
    with pytest.warns(tbkit.SupersedeWarning) as caught:
        train(tmp_path / "run", 150)
    (warning,) = caught
    assert str(warning.message).startswith(
        f"tbkit: {str(tmp_path / 'run')!r} already holds 45 records at steps 0-440 from an "
        "earlier run (by tag: 'train' 45), and this run starts at step 0:"
    )
    assert warning.filename == __file__  # points at the user's call
    assert scalar_steps(tmp_path, "run", "x") == list(range(0, 150, 10))  # TensorBoard's rule
    assert [r.step for r in tbkit.read_records(tmp_path)] == list(range(0, 150, 10))

    report = json.loads(run_tbkit("stats", tmp_path, "--json").stdout)
    assert [(r["run"], r["superseded"]) for r in report["runs"]] == [("run", 45)]
    text = run_tbkit("stats", tmp_path).stdout
    assert "45 records superseded by newer writes" in text

    plugin = TbkitPlugin(base_plugin.TBContext(logdir=str(tmp_path)), min_interval=0,
                         background=False)  # fmt: skip
    plugin.store.load()
    assert plugin.runs_impl()["superseded"] == {"run": 45}
    assert plugin.runs_impl()["runs"] == {"run": {"train": 15}}


def test_the_plugin_counts_superseded_records_live(tmp_path):
    train(tmp_path / "a", 300)
    train(tmp_path / "b", 20)
    plugin = TbkitPlugin(base_plugin.TBContext(logdir=str(tmp_path)), min_interval=0,
                         background=False)  # fmt: skip
    plugin.store.load()
    assert plugin.runs_impl()["superseded"] == {}
    with pytest.warns(tbkit.SupersedeWarning):
        train(tmp_path / "a", 100)
    plugin.store.load()
    assert plugin.runs_impl()["superseded"] == {"a": 30}
    assert plugin.runs_impl()["runs"]["a"] == {"train": 10}
    report = json.loads(run_tbkit("stats", tmp_path, "--json").stdout)
    assert {r["run"]: r["superseded"] for r in report["runs"]} == {"a": 30, "b": 0}


def test_a_restored_step_or_a_new_folder_does_not_warn(tmp_path):
    saved = train(tmp_path / "run", 450)
    with warnings.catch_warnings():
        warnings.simplefilter("error", tbkit.SupersedeWarning)
        train(tmp_path / "run", 50, restore_from=saved)  # continues at step 450
        train(tmp_path / "other", 10)
    assert len(list(tbkit.read_records(tmp_path / "run"))) == 50
    report = json.loads(run_tbkit("stats", tmp_path, "--json").stdout)
    assert {r["run"]: r["superseded"] for r in report["runs"]} == {"run": 0, "other": 0}


def test_eager_ops_outside_a_decorated_step_warn_too(tmp_path):
    train(tmp_path / "run", 30)
    log = tbkit.SummaryLogger(str(tmp_path / "run"), every={"info": 1})
    with pytest.warns(tbkit.SupersedeWarning, match="already holds 3 records at steps 0-20"):
        with log:
            tbkit.record("train", {"x": 0.0})


def test_fitting_a_new_model_into_the_same_logdir_warns(tmp_path):
    x = np.ones((20, 2), np.float32)

    def fit():
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        model.compile(optimizer="sgd", loss="mse")
        model.fit(x, x[:, :1], batch_size=5, epochs=2, verbose=0, validation_data=(x, x[:, :1]),
                  callbacks=[TensorBoardRecords(tmp_path, every=1)])  # fmt: skip

    fit()
    with pytest.warns(tbkit.SupersedeWarning) as caught:
        fit()
    (warning,) = caught  # the validation run holds epoch scalars, no records
    assert str(warning.message).startswith(
        f"tbkit: {str(tmp_path / 'train')!r} already holds 8 records at steps 0-7"
    )


def test_only_the_tags_a_rerun_writes_again_are_superseded(tmp_path):
    def run(tags, steps):
        log = tbkit.SummaryLogger(str(tmp_path / "run"), every={"info": 1})

        @log.train_step
        def step():
            for tag in tags:
                tbkit.record(tag, {"x": 1.0})

        for _ in range(steps):
            step()
        log.close()

    run(["train", "eval"], 10)
    next_second()
    with pytest.warns(tbkit.SupersedeWarning, match="20 records at steps 0-9 from an earlier run "
                      r"\(by tag: 'train' 10, 'eval' 10\)"):  # fmt: skip
        run(["train"], 5)
    assert sorted(r.tag for r in tbkit.read_records(tmp_path)).count("eval") == 10
    report = json.loads(run_tbkit("stats", tmp_path, "--json").stdout)
    assert [r["superseded"] for r in report["runs"]] == [10]


def test_the_logging_bridge_adding_to_a_flushed_step_supersedes_nothing(tmp_path):
    log = tbkit.SummaryLogger(str(tmp_path / "train"))
    logger = logging.getLogger(f"tbkit.tests.{tmp_path.name}")
    logger.propagate, logger.level = False, logging.INFO
    handler = tbkit.SummaryHandler(log)
    logger.addHandler(handler)
    try:
        for _ in range(3):
            logger.info("first line of the step")
            log.flush()  # the step's lines so far reach the file
            logger.info("second line of the step")  # the step is written again, with both
            log.step.assign_add(1)
    finally:
        logger.removeHandler(handler)
        log.close()
    assert len(list(tbkit.read_records(tmp_path))) == 6
    report = json.loads(run_tbkit("stats", tmp_path, "--json").stdout)
    assert [r["superseded"] for r in report["runs"]] == [0]
    plugin = TbkitPlugin(base_plugin.TBContext(logdir=str(tmp_path)), min_interval=0,
                         background=False)  # fmt: skip
    plugin.store.load()
    assert plugin.runs_impl()["superseded"] == {}
