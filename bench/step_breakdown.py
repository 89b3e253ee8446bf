"""Where a decorated step's time goes: µs per part, and the nodes each part leaves in the graph.

Run from the repository root (about 3 minutes; ``--quick`` for a smoke run)::

    python bench/step_breakdown.py [--rounds 60] [--json out.json]
    python bench/step_breakdown.py --rounds 200 --parts ring scalar   # those parts only

It uses bench/step_overhead.py's trivial step and configuration (a record every 10 steps, two
scalars at info every 100, histograms of six weights at debug every 1 000) and takes it apart,
side by side in one process: variants run interleaved in pieces of 100 steps, one intra-op and
one inter-op thread, and each part is the median over rounds of the difference of two
variants' µs per step within a round (a slow spell of the machine falls on both alike).

Parts:

* **host**: what ``TrainStep.__call__`` adds to calling its ``tf.function`` (timed on its own);
* **gate**: one record op, threshold above it, against the floor (the bare step plus a
  ``tf.cond`` on ``step % 10`` that never records);
* **the other ops**: the whole configuration with the threshold above every op, against one
  op: what each further op or level leaves on the every-step path;
* **recorded steps**: the configuration recording, against the threshold above it, averaged
  over all its steps (blocks of 1 000 steps cover every period whole);
* **the ring**: a record of 5 scalar fields every 10 steps with ``keep=64``, against the same
  record without it, beside one unguarded ``tf.summary.scalar``; and the same pair with the
  five values returned by the step, so both compute them every step and the difference is
  the ring's own work.

Then **one recorded step**: every call of a variant timed on its own, in pieces of 100 calls
taking turns, and the median call of each kind of step (a record, the record with the info
scalars, the histograms too) less the median call that records nothing, of the same variant:
what a write costs when it comes, for the configuration and for a lone scalar, a record of
one float field and the record of four.

Nodes: the number of nodes in each variant's function graph as TensorFlow runs it (after
Grappler), from ``RunMetadata``; the difference to the floor is what tbkit leaves outside the
gate. Also run at an older commit to get the "before" column of docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import timeit

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from tensorflow.python.eager import context  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import step_overhead as so  # noqa: E402  (it puts the repository root on sys.path)

import tbkit  # noqa: E402


def logged(body, weights, tmp, *, level="debug", config=True):
    """A decorated step with the configuration (``config``) or with its record alone."""
    log = tbkit.SummaryLogger(tempfile.mkdtemp(dir=tmp),
                              every={"info": so.INFO_EVERY, "debug": so.DEBUG_EVERY})
    log.set_level(level)

    @log.train_step
    def step(x, y):
        m = body(x, y)
        tbkit.record("train", m, every=so.REC_EVERY)
        if config:
            tbkit.scalar("loss", m["loss"])
            tbkit.scalar("accuracy", m["accuracy"])
            for v in weights:
                tbkit.histogram(v.path, v.value, level="debug")
        return m["loss"]

    so.CLOSERS.append(log.close)
    return step


VARIANTS = {
    "bare": lambda body, weights, tmp: so.bare(body, weights, tmp),
    "floor": lambda body, weights, tmp: so.own_counter_and_skip(body),
    "one record, threshold above": lambda *a: logged(*a, level="error", config=False),
    "configuration, threshold above": lambda *a: logged(*a, level="error"),
    "configuration": lambda *a: logged(*a),
    "record of 5 fields every 10": so.five_fields,
    "record of 5 fields every 10, keep=64": lambda *a: so.five_fields(*a, keep=64),
    so.RETURNED: lambda *a: so.five_fields(*a, returned=True),
    so.RETURNED + ", keep=64": lambda *a: so.five_fields(*a, keep=64, returned=True),
    "one unguarded tf.summary.scalar": so.one_scalar,
}

#: (part, variant, minus variant)
PARTS = [
    ("gate: one record, threshold above − floor", "one record, threshold above", "floor"),
    ("the other ops and levels, threshold above", "configuration, threshold above",
     "one record, threshold above"),
    ("threshold above every op − floor (target ≤ 10)", "configuration, threshold above",
     "floor"),
    ("recorded steps, averaged over 1 000", "configuration", "configuration, threshold above"),
    ("whole configuration − floor (target ≤ 30)", "configuration", "floor"),
    ("ring of keep=64 (5 scalar fields)", "record of 5 fields every 10, keep=64",
     "record of 5 fields every 10"),
    ("ring alone: keep=64, the 5 values returned by the step", so.RETURNED + ", keep=64",
     so.RETURNED),
    ("one unguarded tf.summary.scalar", "one unguarded tf.summary.scalar", "bare"),
]


def as_callable(made):
    """A variant's host step ``(i, x, y)``; a decorated step is wrapped."""
    if hasattr(made, "function"):  # a TrainStep
        return lambda i, x, y: made(x, y)
    return made


def node_count(step, x, y) -> int:
    """Nodes of the step's outer function graph as run (after Grappler), on its first call."""
    context.enable_run_metadata()
    try:
        step(0, x, y)
        graphs = context.export_run_metadata().function_graphs
    finally:
        context.disable_run_metadata()
    # The outer function is the one with the trivial step's matmul (nested ones have none).
    for graph in graphs:
        nodes = graph.post_optimization_graph.node
        if any("MatMul" in node.op for node in nodes):
            return len(nodes)
    return -1


def host_cost(body, weights, tmp, batches, repeats=15, number=500) -> dict:
    """µs per call of a decorated step, through TrainStep.__call__ and its tf.function."""
    step = logged(body, weights, tmp, level="error")
    x, y = batches[0]
    step(x, y)
    calls = {"TrainStep.__call__": step, "its tf.function": step.function}
    times: dict = {name: [] for name in calls}
    for _ in range(repeats):  # alternating, so a slow spell falls on both
        for name, fn in calls.items():
            times[name].append(timeit.timeit(lambda fn=fn: fn(x, y), number=number) / number)
    out = {name: float(np.median(t)) * 1e6 for name, t in times.items()}
    out["host"] = out["TrainStep.__call__"] - out["its tf.function"]
    return out


def one_field_record(body, weights, tmp, fields=1, scalar=False):
    """A step that writes, every 10 steps, its loss as a scalar or a record of ``fields``
    of the four values."""
    log = tbkit.SummaryLogger(tempfile.mkdtemp(dir=tmp))

    @log.train_step
    def step(x, y):
        m = body(x, y)
        if scalar:
            tbkit.scalar("loss", m["loss"], every=so.REC_EVERY)
        else:
            tbkit.record("train", dict(list(m.items())[:fields]), every=so.REC_EVERY)
        return m["loss"]

    so.CLOSERS.append(log.close)
    return step


PER_CALL = {
    "configuration": lambda *a: logged(*a),
    "a scalar every 10": lambda *a: one_field_record(*a, scalar=True),
    "a record of 1 float every 10": lambda *a: one_field_record(*a, fields=1),
    "a record of 4 floats every 10": lambda *a: one_field_record(*a, fields=4),
}


def kind_of(step: int) -> str:
    """Which writes the configuration makes at ``step``."""
    if step % so.DEBUG_EVERY == 0:
        return "record + info + histograms"
    if step % so.INFO_EVERY == 0:
        return "record + info"
    return "record" if step % so.REC_EVERY == 0 else "nothing"


def per_call(body, weights, tmp, batches, rounds: int) -> dict:
    """µs a call of each kind of step costs over a call that records nothing (medians)."""
    steps = {name: make(body, weights, tmp) for name, make in PER_CALL.items()}
    x, y = batches[0]
    calls: dict = {name: {} for name in steps}
    warmup = 300  # each logger's step starts at 0 and counts the calls
    for step in steps.values():
        for _ in range(warmup):
            step(x, y)
    names = list(steps)
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            step, first = steps[name], warmup + 100 * r
            for i in range(100):
                start = time.perf_counter()
                step(x, y)
                spent = time.perf_counter() - start
                kind = kind_of(first + i)
                if name != "configuration" and kind != "nothing":
                    kind = "record"  # the others write the one thing every 10 steps
                calls[name].setdefault(kind, []).append(spent * 1e6)
    out = {}
    for name, by_kind in calls.items():
        nothing = float(np.median(by_kind["nothing"]))
        out[name] = {"nothing_us": nothing, "n": {k: len(v) for k, v in by_kind.items()}}
        out[name].update({k: float(np.median(v)) - nothing for k, v in by_kind.items()
                          if k != "nothing"})
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=60, help="rounds of 1 000 steps (default 60)")
    p.add_argument("--quick", action="store_true", help="3 rounds: a smoke run")
    p.add_argument("--json", metavar="OUT", help="also write the results to OUT as JSON")
    p.add_argument("--parts", nargs="+", metavar="WORD",
                   help="only the parts whose name has one of these words (e.g. ring), and "
                        "the variants they need; no per-call timing")
    args = p.parse_args(argv)
    rounds, steps = (3, 200) if args.quick else (args.rounds, 1000)
    chosen = [part for part in PARTS
              if not args.parts or any(word in part[0] for word in args.parts)]
    if not chosen:
        p.error(f"no part's name has any of {args.parts}")
    needed = {"bare"} | {name for _, a, b in chosen for name in (a, b)}
    tmp = tempfile.mkdtemp(prefix="tbkit-breakdown-")
    load_before = os.getloadavg()
    try:
        mlp = so.mlp_workload()
        body, weights, batches = so.tiny_workload(mlp[1], mlp[5])[:3]
        made = {name: as_callable(make(body, weights, tmp)) for name, make in VARIANTS.items()
                if name in needed}
        nodes = {name: node_count(step, *batches[0]) for name, step in made.items()}
        runners = {name: so.block_runner(step, batches) for name, step in made.items()}
        times = so.interleave(runners, rounds, steps, warmup_blocks=1, slices=steps // 100)
        host = host_cost(body, weights, tmp, batches)
        calls = {}
        if not args.parts:
            calls = per_call(body, weights, tmp, batches, rounds=10 if args.quick else 10 * rounds)
    finally:
        for close in so.CLOSERS:
            close()
    parts = []
    for part, a, b in chosen:
        diff = (times[a] - times[b]) * 1e6
        q1, med, q3 = np.percentile(diff, [25, 50, 75])
        parts.append({"part": part, "us": float(med), "q1": float(q1), "q3": float(q3),
                      "nodes": nodes[a] - nodes[b]})
    machine = {"loadavg_before": load_before, "loadavg_after": os.getloadavg(),
               "bare_us": float(np.median(times["bare"])) * 1e6}
    print(f"machine: {json.dumps(machine)}  ({rounds} rounds x {steps} steps)\n")
    print(f"host: TrainStep.__call__ {host['TrainStep.__call__']:.1f} µs, its tf.function "
          f"{host['its tf.function']:.1f} µs: {host['host']:+.1f} µs on the host\n")
    print("| part | µs/step (median) | IQR | nodes |\n|---|---:|---:|---:|")
    for r in parts:
        print(f"| {r['part']} | {r['us']:.1f} | {r['q1']:.1f} – {r['q3']:.1f} | {r['nodes']:+d} |")
    if calls:
        kinds = ["record", "record + info", "record + info + histograms"]
        print("\n| one call (µs over a call that records nothing, median) | nothing | "
              + " | ".join(kinds) + " |\n|---|---:|" + "---:|" * len(kinds))
        for name, c in calls.items():
            cells = " | ".join(f"{c[k]:+.1f}" if k in c else "" for k in kinds)
            print(f"| {name} | {c['nothing_us']:.1f} | {cells} |")
    print("\n| variant | nodes run per step |\n|---|---:|")
    for name, n in nodes.items():
        print(f"| {name} | {n} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine, "host": host, "parts": parts, "nodes": nodes,
                       "per_call": calls,
                       "us_by_round": {k: (v * 1e6).tolist() for k, v in times.items()}},
                      f, indent=2)


if __name__ == "__main__":
    main()
