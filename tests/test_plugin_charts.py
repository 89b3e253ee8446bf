"""The /chart and /groups impls over real logdirs written by tbkit, checked against the same
figures computed in Python over ``tbkit.read_records`` (no server, no mocks)."""

from __future__ import annotations

import math

import pytest
import tensorflow as tf
from tensorboard import errors
from tensorboard.plugins import base_plugin
from werkzeug.datastructures import MultiDict

import tbkit
from tbkit.data.rows import NON_FINITE
from tbkit_plugin.plugin import TbkitPlugin

STEPS = {"a": 240, "b": 150}


def write_run(run_dir, steps, wobble):
    """"train": loss (NaN at step 13, +Infinity at 17, -Infinity at 19), acc and a phase
    string (the text "NaN" at step 5) every step; "eval": loss every 10 steps (a field under
    two tags)."""
    log = tbkit.SummaryLogger(str(run_dir), every={"debug": 1, "info": 1})

    @log.train_step
    def step(x):
        loss = 10.0 / (x + 1.0) + wobble * tf.sin(x)
        loss = tf.where(x == 13.0, float("nan"), loss)
        loss = tf.where(x == 17.0, float("inf"), loss)
        loss = tf.where(x == 19.0, float("-inf"), loss)
        phase = tf.where(x < 100.0, tf.constant("warmup"), tf.constant("main"))
        phase = tf.where(x == 5.0, tf.constant("NaN"), phase)  # text in a string field
        tbkit.record("train", {"loss": loss, "acc": x / 1000.0, "phase": phase}, every=1)
        tbkit.record("eval", {"loss": loss * 2.0}, every=10)

    for i in range(steps):
        step(tf.constant(float(i)))
    log.close()


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("logs")
    write_run(root / "a", STEPS["a"], 0.5)
    write_run(root / "b", STEPS["b"], 2.0)
    return root


@pytest.fixture(scope="module")
def plugin(logdir):
    return TbkitPlugin(base_plugin.TBContext(logdir=str(logdir)), min_interval=0, background=False)


@pytest.fixture(scope="module")
def records(logdir):
    return list(tbkit.read_records(logdir))


def args(**params):
    return MultiDict([(k, v) for k, vs in params.items()
                      for v in (vs if isinstance(vs, list) else [vs])])  # fmt: skip


def number(value):
    return NON_FINITE.get(value, value) if isinstance(value, str) else value


def test_chart_series_equal_the_records_and_mark_non_finite(plugin, records):
    answer = plugin.chart_impl(args(field="loss", tag="train"))
    assert [(s["run"], s["tag"]) for s in answer["series"]] == [("a", "train"), ("b", "train")]
    for s in answer["series"]:
        mine = [r for r in records if r.run == s["run"] and r.tag == "train"]
        finite = [(r.step, r.fields["loss"]) for r in mine
                  if math.isfinite(number(r.fields["loss"]))]  # fmt: skip
        assert list(zip(s["x"], s["y"], strict=True)) == finite
        assert [(m["x"], m["value"]) for m in s["nonfinite"]] == \
            [(13, "NaN"), (17, "Infinity"), (19, "-Infinity")]  # fmt: skip
        assert s["total"] == len(finite) and s["nonfinite_total"] == 3 and not s["downsampled"]
        record = plugin.record_impl(args(id=str(s["ids"][5])))["record"]
        assert (record["run"], record["step"], record["loss"]) == (s["run"], s["x"][5], s["y"][5])
        nan = plugin.record_impl(args(id=str(s["nonfinite"][0]["id"])))["record"]
        assert (nan["step"], nan["loss"]) == (13, "NaN")


def test_chart_against_wall_time_with_filters(plugin, records):
    answer = plugin.chart_impl(args(field="loss", x="wall_time", run="b", where="step >= 100",
                                    step_max="139"))  # fmt: skip
    assert [(s["run"], s["tag"]) for s in answer["series"]] == [("b", "train"), ("b", "eval")]
    for s in answer["series"]:
        want = [(r.wall_time, r.fields["loss"]) for r in records
                if r.run == "b" and r.tag == s["tag"] and 100 <= r.step <= 139]  # fmt: skip
        assert list(zip(s["x"], s["y"], strict=True)) == want


def test_downsampling_keeps_at_most_the_cap_and_each_series_min_and_max(plugin, records):
    for cap in (2, 10, 51):
        answer = plugin.chart_impl(args(field="loss", tag="train", points=str(cap)))
        for s in answer["series"]:
            assert len(s["x"]) <= cap and s["downsampled"]
            want = [r.fields["loss"] for r in records if r.run == s["run"] and r.tag == "train"]
            finite = [v for v in map(number, want) if math.isfinite(v)]
            assert min(s["y"]) == min(finite) and max(s["y"]) == max(finite)
            assert s["x"] == sorted(s["x"]) and s["total"] == len(finite)
            assert len(s["nonfinite"]) == min(3, cap)


FIELD = "'field': must be a numeric field of the selection"
BY = "'by': must be 'run', 'tag' or a string field of the selection"


@pytest.mark.parametrize(("params", "message"), [
    ({"field": "phase"}, f"{FIELD} (got 'phase', a string field)"),
    ({"field": "step"}, f"{FIELD} (got 'step', not a field of it)"),
    ({"field": "nope"}, f"{FIELD} (got 'nope', not a field of it)"),
    ({"field": "loss", "x": "level"}, "'x': must be 'step' or 'wall_time' (got 'level')"),
    ({"field": "loss", "points": "1"}, "'points': must be an integer from 2 to 100000 (got '1')"),
    ({"by": "acc"}, f"{BY} (got 'acc', a number field)"),
    ({"by": "level"}, f"{BY} (got 'level', a string field)"),
])  # fmt: skip
def test_bad_chart_and_group_parameters_are_named(plugin, params, message):
    impl = plugin.groups_impl if "by" in params else plugin.chart_impl
    with pytest.raises(errors.InvalidArgumentError) as caught:
        impl(args(**params))
    assert str(caught.value) == f"Invalid argument: {message}"


def python_groups(records, key, numeric):
    """The reference: group, then mean/min/max over finite values, NaN/Inf counted, last at
    the highest step (ties: latest wall time, then the later record)."""
    out = {}
    for i, r in enumerate(records):
        out.setdefault(key(r), []).append((i, r))
    answer = {}
    for k, members in out.items():
        fields = {}
        for name in numeric:
            have = [(i, r) for i, r in members if name in r.fields]
            if not have:
                continue
            values = [number(r.fields[name]) for _, r in have]
            finite = [v for v in values if math.isfinite(v)]
            _, last = max(have, key=lambda ir: (ir[1].step, ir[1].wall_time, ir[0]))
            fields[name] = {"count": len(values), "nonfinite": len(values) - len(finite),
                            "mean": sum(finite) / len(finite) if finite else None,
                            "min": min(finite, default=None), "max": max(finite, default=None),
                            "last": last.fields[name], "last_step": last.step}  # fmt: skip
        answer[k] = {"count": len(members), "fields": fields}
    return answer


@pytest.mark.parametrize(("params", "keep"), [
    ({}, lambda r: True),
    ({"run": "b"}, lambda r: r.run == "b"),
    ({"tag": "train", "where": "acc > 0.05"},
     lambda r: r.tag == "train" and r.fields["acc"] > 0.05),
    ({"step_min": "10", "step_max": "30"}, lambda r: 10 <= r.step <= 30),
])  # fmt: skip
@pytest.mark.parametrize("by", ["run", "tag", "phase"])
def test_group_figures_equal_python_over_read_records(plugin, records, params, keep, by):
    answer = plugin.groups_impl(args(by=by, **params))
    chosen = [r for r in records if keep(r)]
    key = {"run": lambda r: r.run, "tag": lambda r: r.tag}.get(by, lambda r: r.fields.get(by))
    want = python_groups(chosen, key, answer["fields"])
    assert set(answer["fields"]) == {"loss", "acc"} or params.get("tag") == "train"
    assert answer["total"] == len(chosen)
    got = {g["key"]: {"count": g["count"], "fields": g["fields"]} for g in answer["groups"]}
    assert list(got) == sorted(want, key=lambda k: (k is None, str(k)))
    for k, group in want.items():
        assert got[k]["count"] == group["count"]
        assert got[k]["fields"].keys() == group["fields"].keys()
        for name, figures in group["fields"].items():
            mine = got[k]["fields"][name]
            assert mine["mean"] == pytest.approx(figures["mean"], rel=1e-12)
            assert {**mine, "mean": None} == {**figures, "mean": None}
