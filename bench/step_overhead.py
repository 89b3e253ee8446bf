"""What logging costs per training step: tbkit against the usual ways, measured in one run.

Run from the repository root::

    python bench/step_overhead.py                  # full run, a few minutes
    python bench/step_overhead.py --quick          # smoke run, seconds
    python bench/step_overhead.py --json out.json  # also write the results as JSON

It measures, with one intra-op and one inter-op thread:

* **End to end**: an MLP 784-256-256-10, batch 64, Adam, on synthetic in-memory data, in a
  custom ``tf.function`` loop (and in ``model.fit``). Interleaved rounds, variant order rotated
  each round; per round each variant runs a block of ``--steps-per-block`` steps. Reported per
  variant: the median ms/step, the median and IQR of the per-round ratio to the bare step of
  the same round (a slow round slows every variant alike), and the ratio of total times.
* **Micro**: the same logging code around a trivial step (a tiny matmul), blocks of 1 000
  steps so every sampling period (every 10, 100 and 1 000 steps) is covered whole: the
  µs added per step over the bare trivial step, averaged over all steps of the block. Each
  block runs in 10 pieces of 100 steps, the variants taking turns piece by piece, so a slow
  spell of the machine (they last seconds here) falls on every variant of the round.
* **Histogram**: ``tbkit.summary.ops.bucketize`` against TensorBoard's ``tf.summary.histogram``
  bucketing on a 784×256 float32 kernel, both in ``tf.function``; and whether they agree.

Variants: bare; tbkit (record every 10, scalars at info every 100, histograms of the weights
at debug every 1 000); tbkit with the threshold at error (nothing records); naive
(``loss.numpy()`` + ``logging.info`` every step, ``json.dumps`` of the record every 10); plain
``tf.summary`` (a callable ``record_if`` per op); tensorboardX (``add_scalar`` every step);
one unguarded ``tf.summary.scalar`` every step (the yardstick the issue's targets name);
a record of 5 scalar fields every 10 steps, without and with ``keep=64`` (the flight
recorder's ring, written every step), and in the micro table the same pair with the five
values returned by the step (computed every step either way, so the pair's difference is
the ring alone); Keras ``fit`` with and without
``TensorBoard(update_freq=1)``. Also timed: one in-graph dump of 64 kept steps. Logdirs are
temporary folders.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import shutil
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorboard  # noqa: E402
import tensorboardX  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorboard.plugins.histogram.summary_v2 import _buckets  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import tbkit  # noqa: E402
import tbkit.keras  # noqa: E402
from tbkit.summary.ops import bucketize  # noqa: E402

tf.get_logger().setLevel("ERROR")
tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)

BATCH, N_BATCHES = 64, 16
REC_EVERY, INFO_EVERY, DEBUG_EVERY = 10, 100, 1000


# -- the workloads ------------------------------------------------------------------------------
# A workload's step computes the values every variant logs (loss, accuracy, learning rate,
# gradient norm), the bare step included: the variants differ only in how they log them.


def mlp_workload(seed: int = 0):
    rng = np.random.default_rng(seed)
    xs = rng.standard_normal((BATCH * N_BATCHES, 784)).astype(np.float32)
    ys = rng.integers(0, 10, BATCH * N_BATCHES).astype(np.int32)
    batches = [(tf.constant(xs[i : i + BATCH]), tf.constant(ys[i : i + BATCH]))
               for i in range(0, len(xs), BATCH)]
    model = make_model()
    opt = keras.optimizers.Adam(1e-3)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def step(x, y):
        with tf.GradientTape() as tape:
            logits = model(x, training=True)
            loss = loss_fn(y, logits)
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return values(opt, loss, logits, grads, y)

    return step, model.trainable_variables, batches, (xs, ys), model, opt


def tiny_workload(weights, opt):
    """A trivial step (a [64,4]x[4,10] matmul); the weights it logs are still the MLP's.

    It touches one element of each MLP weight, as any training step uses its weights, and
    advances the optimizer's ``iterations`` as ``apply_gradients`` does, so the bare step
    captures and does those too and the variants differ only in how they log.
    """
    w = tf.Variable(tf.fill([4, 10], 0.01))
    batches = [(tf.ones([BATCH, 4]), tf.zeros([BATCH], tf.int32))]

    def step(x, y):
        touch = tf.add_n([tf.reshape(v, [-1])[0] for v in weights])
        logits = tf.matmul(x, w) + 0.0 * touch
        opt.iterations.assign_add(1)
        return values(opt, tf.reduce_mean(logits), logits, [w], y)

    return step, weights, batches, None, None, opt


def make_model():
    return keras.Sequential([
        keras.Input((784,)),
        keras.layers.Dense(256, activation="relu"),
        keras.layers.Dense(256, activation="relu"),
        keras.layers.Dense(10),
    ])


def values(opt, loss, logits, grads, y):
    """What the variants log: loss, accuracy, learning rate, gradient norm."""
    hits = tf.equal(tf.argmax(logits, axis=1, output_type=tf.int32), y)
    return {
        "loss": loss,
        "accuracy": tf.reduce_mean(tf.cast(hits, tf.float32)),
        "lr": tf.cast(tf.convert_to_tensor(opt.learning_rate), tf.float32),
        "grad_norm": tf.linalg.global_norm(grads),
    }


# -- the variants: each is a host callable step(i, x, y), i the host step counter ---------------


def bare(body, weights, tmp):
    fn = tf.function(lambda x, y: body(x, y)["loss"])
    return lambda i, x, y: fn(x, y)


def with_tbkit(body, weights, tmp, level="debug", step=None):
    log = tbkit.SummaryLogger(tempfile.mkdtemp(dir=tmp), step=step,
                              every={"info": INFO_EVERY, "debug": DEBUG_EVERY})
    log.set_level(level)

    @log.train_step
    def step(x, y):
        m = body(x, y)
        tbkit.record("train", m, every=REC_EVERY)
        tbkit.scalar("loss", m["loss"])
        tbkit.scalar("accuracy", m["accuracy"])
        for v in weights:
            tbkit.histogram(v.path, v.value, level="debug")
        return m["loss"]

    CLOSERS.append(log.close)
    return lambda i, x, y: step(x, y)


def five_fields_step(body, tmp, keep=None, returned=False):
    """A logger and its decorated step that records 5 scalar fields every ``REC_EVERY`` steps,
    kept for ``keep`` steps if given. With ``returned`` the step returns the five values, so
    it computes them on every step whether or not it records (as a step does that clips by the
    gradient norm or reports its metrics): a ring then adds only its own work."""
    log = tbkit.SummaryLogger(tempfile.mkdtemp(dir=tmp))

    @log.train_step
    def step(x, y):
        m = body(x, y)
        fields = {**m, "loss_x2": m["loss"] * 2.0}
        tbkit.record("train", fields, every=REC_EVERY, keep=keep)
        return fields if returned else m["loss"]

    CLOSERS.append(log.close)
    return log, step


def five_fields(body, weights, tmp, keep=None, returned=False):
    """Side by side without and with ``keep``: the per-step cost of the flight recorder."""
    step = five_fields_step(body, tmp, keep, returned)[1]
    return lambda i, x, y: step(x, y)


def dump_bench(workload, tmp, repeats):
    """Milliseconds one in-graph dump of 64 kept steps of the 5-field record takes."""
    body, batches = workload[0], workload[2]
    log, step = five_fields_step(body, tmp, keep=64)
    for i in range(70):
        step(*batches[i % len(batches)])
    (ring,) = list(log.kept_rings)

    @tf.function
    def dump(at):
        ring.dumped.assign(-1)  # forget the last dump: write all 64 again
        with log.writing(), tf.summary.record_if(True):
            ring.dump(at)

    at = tf.constant(70, tf.int64)
    dump(at)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        dump(at)
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1e3


def naive(body, weights, tmp):
    logger = logging.getLogger(f"naive{len(CLOSERS)}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = logging.FileHandler(os.path.join(tempfile.mkdtemp(dir=tmp), "train.log"))
    logger.addHandler(handler)
    CLOSERS.append(handler.close)
    fn = tf.function(body)

    def step(i, x, y):
        m = fn(x, y)
        loss = m["loss"].numpy()
        logger.info(f"step {i} loss {loss:.4f}")
        if i % REC_EVERY == 0:
            logger.info(json.dumps({"step": i, **{k: float(v.numpy()) for k, v in m.items()}}))
        return loss

    return step


def plain_summary(body, weights, tmp):
    writer = tf.summary.create_file_writer(tempfile.mkdtemp(dir=tmp))
    CLOSERS.append(writer.close)
    step_var = tf.Variable(0, dtype=tf.int64, trainable=False)

    def every(s, n):
        return tf.summary.record_if(lambda: tf.equal(s % n, 0))

    @tf.function
    def fn(x, y):
        m = body(x, y)
        s = step_var.read_value()
        with writer.as_default(step=s):
            with every(s, INFO_EVERY):
                tf.summary.scalar("loss", m["loss"])
            with every(s, INFO_EVERY):
                tf.summary.scalar("accuracy", m["accuracy"])
            for v in weights:
                with every(s, DEBUG_EVERY):
                    tf.summary.histogram(v.path, v.value)
            with every(s, REC_EVERY):
                line = tf.strings.format(
                    '"loss": {}, "accuracy": {}, "lr": {}, "grad_norm": {}',
                    [m["loss"], m["accuracy"], m["lr"], m["grad_norm"]],
                )
                tf.summary.text("train", tf.strings.join(["{", line, "}"]))
        step_var.assign_add(1)
        return m["loss"]

    return lambda i, x, y: fn(x, y)


def one_scalar(body, weights, tmp):
    """The yardstick of the targets: one ``tf.summary.scalar`` every step, no guard."""
    writer = tf.summary.create_file_writer(tempfile.mkdtemp(dir=tmp))
    CLOSERS.append(writer.close)
    step_var = tf.Variable(0, dtype=tf.int64, trainable=False)

    @tf.function
    def fn(x, y):
        m = body(x, y)
        tf.summary.scalar("loss", m["loss"], step=step_var)
        step_var.assign_add(1)
        return m["loss"]

    def step(i, x, y):
        if fn.experimental_get_tracing_count():
            return fn(x, y)  # bound to the writer it was traced under
        with writer.as_default():  # once: leaving it flushes, which a step must not do
            return fn(x, y)

    return step


def in_graph_skip(body, step_var):
    """A reference, not a way to log: the least an in-graph decision costs on a step that
    records nothing: the step's value modulo 10 decides a ``tf.cond`` whose recording branch
    never runs."""

    @tf.function
    def fn(x, y):
        m = body(x, y)
        due = tf.equal(tf.math.floormod(step_var, REC_EVERY), -1)  # never, but only at run time
        tf.cond(due, lambda: tf.print(m["loss"]), tf.no_op)
        return m["loss"]

    return lambda i, x, y: fn(x, y)


def own_counter_and_skip(body):
    """A reference: :func:`in_graph_skip` on a step counter of its own that it advances."""
    step_var = tf.Variable(0, dtype=tf.int64, trainable=False)

    def counted(x, y):
        m = body(x, y)
        step_var.assign_add(1)
        return m

    return in_graph_skip(counted, step_var)


def with_tensorboardx(body, weights, tmp):
    writer = tensorboardX.SummaryWriter(tempfile.mkdtemp(dir=tmp))
    CLOSERS.append(writer.close)
    fn = tf.function(lambda x, y: body(x, y)["loss"])

    def step(i, x, y):
        loss = fn(x, y)
        writer.add_scalar("loss", loss.numpy(), i)
        return loss

    return step


CLOSERS: list = []
RETURNED = "record of 5 fields every 10, values returned"
KERAS_BOARD = "keras fit + TensorBoard(update_freq=1)"
KERAS_VS_FIT: dict = {}  # the TensorBoard callback's per-round ratio to fit without callbacks


def block_runner(step, batches):
    counter = itertools.count()

    def run(n):
        out = None
        for _ in range(n):
            i = next(counter)
            x, y = batches[i % len(batches)]
            out = step(i, x, y)
        if isinstance(out, tf.Tensor):
            out.numpy()  # the block ends when its last step has run

    return run


def keras_runners(data, tmp):
    model = make_model()
    model.compile(optimizer=keras.optimizers.Adam(1e-3), metrics=["accuracy"], jit_compile=False,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    ds = tf.data.Dataset.from_tensor_slices(data).batch(BATCH, drop_remainder=True).repeat()
    board = keras.callbacks.TensorBoard(tempfile.mkdtemp(dir=tmp), update_freq=1)

    def fit(callbacks):
        return lambda n: model.fit(ds, steps_per_epoch=n, epochs=1, verbose=0, shuffle=False,
                                   callbacks=callbacks)

    return {"keras fit": fit([]), KERAS_BOARD: fit([board])}


def build(workload, tmp, references=False):
    body, weights, batches, opt = *workload[:3], workload[5]
    iterations = opt.iterations.value  # the tf.Variable inside Keras 3's variable
    makers = {
        "bare": bare,
        "tbkit": with_tbkit,
        "tbkit threshold-off": lambda *a: with_tbkit(*a, level="error"),
        "tbkit, step=optimizer.iterations": lambda *a: with_tbkit(*a, step=iterations),
        "tbkit, step=optimizer.iterations, threshold-off":
            lambda *a: with_tbkit(*a, level="error", step=iterations),
        "naive (.numpy + logging)": naive,
        "plain tf.summary": plain_summary,
        "tensorboardX": with_tensorboardx,
        "one unguarded tf.summary.scalar": one_scalar,
        "record of 5 fields every 10": five_fields,
        "record of 5 fields every 10, keep=64": lambda *a: five_fields(*a, keep=64),
    }
    if references:  # micro only: the ring alone, and what the cheapest in-graph decision costs
        makers[RETURNED] = lambda *a: five_fields(*a, returned=True)
        makers[RETURNED + ", keep=64"] = lambda *a: five_fields(*a, keep=64, returned=True)
        makers["reference: in-graph skip on optimizer.iterations"] = (
            lambda body, weights, tmp: in_graph_skip(body, iterations))
        makers["reference: own step counter + in-graph skip"] = (
            lambda body, weights, tmp: own_counter_and_skip(body))
    return {name: block_runner(make(body, weights, tmp), batches)
            for name, make in makers.items()}


# -- measuring ----------------------------------------------------------------------------------


def interleave(runners, rounds, steps, warmup_blocks=2, slices=1):
    """Seconds per step of every variant in every round; the order rotates each round.

    With ``slices`` > 1 a round's block of ``steps`` runs in that many consecutive pieces per
    variant, the variants taking turns piece by piece: each variant still runs all its
    ``steps`` in order, and a slow spell of the machine falls on all of them alike.
    """
    names = list(runners)
    for name in names:
        for _ in range(warmup_blocks):
            runners[name](steps)
    times = {name: [] for name in names}
    piece = steps // slices
    for r in range(rounds):
        spent = dict.fromkeys(names, 0.0)
        for s in range(slices):
            k = (r * slices + s) % len(names)
            for name in names[k:] + names[:k]:
                start = time.perf_counter()
                runners[name](piece)
                spent[name] += time.perf_counter() - start
        for name in names:
            times[name].append(spent[name] / (piece * slices))
    return {name: np.array(t) for name, t in times.items()}


def quartiles(values):
    q1, med, q3 = np.percentile(values, [25, 50, 75])
    return float(med), float(q1), float(q3)


def end_to_end_table(times):
    fit, board = times.get("keras fit"), times.get(KERAS_BOARD)
    if fit is not None and board is not None:
        KERAS_VS_FIT.update(zip(("median", "q1", "q3"), quartiles(board / fit), strict=True))
    rows = []
    for name, t in times.items():
        ratio = quartiles(t / times["bare"])
        rows.append({"variant": name, "ms_per_step": float(np.median(t)) * 1e3,
                     "ratio_median": ratio[0], "ratio_q1": ratio[1], "ratio_q3": ratio[2],
                     "ratio_of_totals": float(t.sum() / times["bare"].sum()),
                     "seconds_per_step_by_round": t.tolist()})
    return rows


def micro_table(times):
    rows = []
    for name, t in times.items():
        added = quartiles((t - times["bare"]) * 1e6)
        rows.append({"variant": name, "us_per_step": float(np.median(t)) * 1e6,
                     "added_us_median": added[0], "added_us_q1": added[1],
                     "added_us_q3": added[2], "seconds_per_step_by_round": t.tolist()})
    return rows


def histogram_bench(repeats):
    kernel = tf.constant(np.random.default_rng(1).normal(0, 0.05, (784, 256)).astype(np.float32))
    fns = {"tbkit.summary.ops.bucketize": tf.function(lambda k: bucketize(k, 30)),
           "tf.summary.histogram buckets": tf.function(lambda k: _buckets(k, 30))}
    out = {name: fn(kernel).numpy() for name, fn in fns.items()}  # traces, and the results
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn(kernel).numpy()
            times[name].append(time.perf_counter() - start)
    a, b = out.values()
    ms = {name: float(np.median(t)) * 1e3 for name, t in times.items()}
    kit, tb = ms.values()
    same = a.shape == b.shape == (30, 3) and np.allclose(a, b)
    return {"ms": ms, "speedup": tb / kit, "same_buckets": bool(same)}


# -- reporting ----------------------------------------------------------------------------------


def print_tables(e2e, micro, hist, args):
    print(f"\n## End to end: MLP 784-256-256-10, batch {BATCH}, Adam "
          f"({args.rounds} rounds x {args.steps_per_block} steps)\n\n"
          "| variant | median ms/step | median ratio to bare | IQR of ratio | total-time ratio |\n"
          "|---|---:|---:|---:|---:|")
    for r in e2e:
        print(f"| {r['variant']} | {r['ms_per_step']:.3f} | {r['ratio_median']:.3f} | "
              f"{r['ratio_q1']:.3f} – {r['ratio_q3']:.3f} | {r['ratio_of_totals']:.3f} |")
    if KERAS_VS_FIT:
        print(f"\nkeras TensorBoard(update_freq=1) vs fit without callbacks: median ratio "
              f"{KERAS_VS_FIT['median']:.3f} (IQR {KERAS_VS_FIT['q1']:.3f} – "
              f"{KERAS_VS_FIT['q3']:.3f})")
    print(f"\n## Micro: the same logging around a trivial step "
          f"({args.micro_rounds} rounds x {args.micro_steps} steps)\n\n"
          "| variant | median µs/step | µs/step added (median) | IQR of added |\n"
          "|---|---:|---:|---:|")
    for r in micro:
        print(f"| {r['variant']} | {r['us_per_step']:.1f} | {r['added_us_median']:.1f} | "
              f"{r['added_us_q1']:.1f} – {r['added_us_q3']:.1f} |")
    (kit_name, kit), (tb_name, tb) = hist["ms"].items()
    print("\n## Histogram of a 784x256 float32 kernel, 30 buckets, in tf.function\n")
    print(f"| bucketing | median ms |\n|---|---:|\n| {kit_name} | {kit:.3f} |\n"
          f"| {tb_name} | {tb:.3f} |")
    same = "the same" if hist["same_buckets"] else "DIFFERENT"
    print(f"\ntbkit is {hist['speedup']:.1f}x faster; the two give {same} [30, 3] buckets "
          "(np.allclose).")


# -- N steps per call: @log.train_step(steps_per_call=N) and Keras steps_per_execution ---------
# The call of a small tf.function costs hundreds of µs on the host; running N steps per call
# (each logged as its own call) removes most of it. Measured end to end on the MLP against the
# bare one-step-per-call loop; then checked: N steps per call wrote exactly the records (tag,
# step, value) of the one-step loop, on a fresh model of the same seed.

STEPS_PER_CALL = (10, 50)
EXACT_STEPS = 1001  # every sampling period (10, 100, 1 000) covered; not a multiple of 50


def pipeline(data):
    """The MLP's batches as an endless tf.data pipeline (the same batches as the bare loop's),
    prefetched as tf.data's guide advises: the next batch is made while a step runs."""
    return (tf.data.Dataset.from_tensor_slices(data).batch(BATCH, drop_remainder=True).repeat()
            .prefetch(tf.data.AUTOTUNE))


def repeated(data):
    """An iterator over :func:`pipeline`."""
    return iter(pipeline(data))


def tbkit_logged_step(log, body, weights, **options):
    """The end-to-end table's tbkit configuration (``with_tbkit``, histograms named by their
    weight's position), decorated with ``options``."""

    @log.train_step(**options)
    def step(x, y):
        m = body(x, y)
        tbkit.record("train", m, every=REC_EVERY)
        tbkit.scalar("loss", m["loss"])
        tbkit.scalar("accuracy", m["accuracy"])
        for k, v in enumerate(weights):  # named by position: the same in every fresh model
            tbkit.histogram(f"weights/{k}", v.value, level="debug")
        return m["loss"]

    return step


def multi_runner(step, data, n):
    """A block runner for a step that runs ``n`` steps per call on an endless iterator."""
    iterator = repeated(data)

    def run(steps):
        out = None
        for _ in range(steps // n):
            out = step(iterator)
        out.numpy()

    return run


def steps_per_call_runners(workload, tmp):
    body, weights, batches, data = workload[:4]
    runners = {"bare, one step per call": block_runner(bare(body, weights, tmp), batches),
               "tbkit, one step per call": block_runner(with_tbkit(body, weights, tmp),
                                                        batches)}
    for n in STEPS_PER_CALL:
        log = tbkit.SummaryLogger(tempfile.mkdtemp(dir=tmp),
                                  every={"info": INFO_EVERY, "debug": DEBUG_EVERY})
        CLOSERS.append(log.close)
        runners[f"tbkit, steps_per_call={n}"] = multi_runner(
            tbkit_logged_step(log, body, weights, steps_per_call=n), data, n)
    quiet = tbkit.SummaryLogger(tempfile.mkdtemp(dir=tmp))
    CLOSERS.append(quiet.close)
    runners["no tbkit op, steps_per_call=10"] = multi_runner(
        quiet.train_step(steps_per_call=10)(lambda x, y: body(x, y)["loss"]), data, 10)
    runners.update(keras_spe_runners(data, tmp))
    return runners


def keras_spe_runners(data, tmp, spe=10):
    """``fit(steps_per_execution=spe)`` on models of their own, without and with tbkit's
    callback (its default configuration)."""
    ds = pipeline(data)
    runners = {}
    for name, callbacks in ((f"keras fit(steps_per_execution={spe})", []),
                            (f"keras fit(steps_per_execution={spe}) + TensorBoardRecords",
                             [tbkit.keras.TensorBoardRecords(tempfile.mkdtemp(dir=tmp))])):
        model = make_model()
        model.compile(optimizer=keras.optimizers.Adam(1e-3), metrics=["accuracy"],
                      jit_compile=False, steps_per_execution=spe,
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        CLOSERS.extend(c.close for c in callbacks)

        def run(n, model=model, callbacks=callbacks):
            model.fit(ds, steps_per_epoch=n, epochs=1, verbose=0, shuffle=False,
                      callbacks=callbacks)

        runners[name] = run
    return runners


def written_set(logdir):
    """Every (tag, step, value) a run wrote, read back with TensorBoard's loader."""
    from tensorboard.backend.event_processing import event_file_loader
    from tensorboard.util import tensor_util

    found = set()
    for path in sorted(tf.io.gfile.glob(os.path.join(logdir, "*tfevents*"))):
        for event in event_file_loader.EventFileLoader(path).Load():
            for value in event.summary.value:
                array = tensor_util.make_ndarray(value.tensor)
                found.add((value.tag, event.step, array.dtype.str, repr(array.tolist())))
    return found


def exactness_check(tmp, steps=EXACT_STEPS):
    """Train fresh models of one seed for ``steps`` steps, one step per call and N per call;
    whether each wrote exactly what the one-step loop wrote."""
    written = {}
    for n in (1, *STEPS_PER_CALL):
        keras.utils.set_random_seed(0)
        body, weights, batches, data = mlp_workload()[:4]
        logdir = tempfile.mkdtemp(dir=tmp)
        with tbkit.SummaryLogger(logdir, every={"info": INFO_EVERY, "debug": DEBUG_EVERY}) as log:
            if n == 1:
                step = tbkit_logged_step(log, body, weights)
                for i in range(steps):
                    step(*batches[i % len(batches)])
            else:
                step = tbkit_logged_step(log, body, weights, steps_per_call=n)
                ds = tf.data.Dataset.from_tensor_slices(data).batch(BATCH, drop_remainder=True)
                iterator = iter(ds.repeat().take(steps))
                while True:  # the last call is a partial one, then StopIteration
                    try:
                        step(iterator)
                    except StopIteration:
                        break
            assert int(log.step.numpy()) == steps
        written[n] = written_set(logdir)
    one = written[1]
    tags = sorted({t for t, *_ in one})
    return {"steps": steps, "records": len(one), "tags": tags,
            **{f"steps_per_call={n}": {"same_records": written[n] == one,
                                       "same_tag_steps": {r[:2] for r in written[n]}
                                       == {r[:2] for r in one}}
               for n in STEPS_PER_CALL}}


def block_of_whole_calls(steps):
    """``steps`` rounded up to a multiple of every N, so that blocks are whole calls."""
    lcm = int(np.lcm.reduce(STEPS_PER_CALL))
    return -(-steps // lcm) * lcm


def steps_per_call_section(args, tmp):
    workload = mlp_workload()
    exact = exactness_check(tmp)
    block = block_of_whole_calls(args.steps_per_block)
    times = interleave(steps_per_call_runners(workload, tmp), args.rounds, block)
    rows = []
    base = times["bare, one step per call"]
    for name, t in times.items():
        ratio = quartiles(t / base)
        rows.append({"variant": name, "ms_per_step": float(np.median(t)) * 1e3,
                     "ratio_median": ratio[0], "ratio_q1": ratio[1], "ratio_q3": ratio[2],
                     "ratio_of_totals": float(t.sum() / base.sum()),
                     "seconds_per_step_by_round": t.tolist()})
    return {"rows": rows, "exact": exact}


def print_steps_per_call(section, args):
    print(f"\n## N steps per call: MLP, tbkit's configuration, against the bare one-step loop "
          f"({args.rounds} rounds x {block_of_whole_calls(args.steps_per_block)} steps)\n\n"
          "| variant | median ms/step | median ratio to bare | IQR of ratio | total-time ratio |\n"
          "|---|---:|---:|---:|---:|")
    for r in section["rows"]:
        print(f"| {r['variant']} | {r['ms_per_step']:.3f} | {r['ratio_median']:.3f} | "
              f"{r['ratio_q1']:.3f} – {r['ratio_q3']:.3f} | {r['ratio_of_totals']:.3f} |")
    exact = section["exact"]
    print(f"\nExactness, {exact['steps']} steps of a fresh model of one seed ({exact['records']} "
          f"summaries, tags {', '.join(exact['tags'])}):")
    for n in STEPS_PER_CALL:
        check = exact[f"steps_per_call={n}"]
        print(f"- steps_per_call={n}: same (tag, step) set: {check['same_tag_steps']}; "
              f"same (tag, step, value) set: {check['same_records']}")


def run_steps_per_call_only(args, tmp, load_before):
    """``--only-steps-per-call``: that section alone, printed (and written as JSON)."""
    try:
        multi = steps_per_call_section(args, tmp)
    finally:
        for close in CLOSERS:
            close()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"machine: loadavg before {load_before}, after {os.getloadavg()}")
    print_steps_per_call(multi, args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "steps_per_call": multi}, f, indent=2)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=40, help="end-to-end rounds (default 40)")
    p.add_argument("--steps-per-block", type=int, default=100, help="end-to-end block (100)")
    p.add_argument("--micro-rounds", type=int, default=80, help="micro rounds (default 80)")
    p.add_argument("--micro-slices", type=int, default=10,
                   help="run each micro block in this many interleaved pieces (default 10)")
    p.add_argument("--micro-steps", type=int, default=1000,
                   help="micro block; a multiple of 1000 covers every sampling period whole")
    p.add_argument("--quick", action="store_true", help="a few short rounds: a smoke run")
    p.add_argument("--json", metavar="OUT", help="also write the results to OUT as JSON")
    p.add_argument("--only-steps-per-call", action="store_true",
                   help="run only the N-steps-per-call section (--rounds, --steps-per-block)")
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.steps_per_block, args.micro_rounds, args.micro_steps = 2, 20, 2, 100
    if args.micro_slices < 1 or args.micro_steps % args.micro_slices:
        p.error(f"--micro-slices must divide --micro-steps (got {args.micro_slices} and "
                f"{args.micro_steps})")
    load_before = os.getloadavg()
    tmp = tempfile.mkdtemp(prefix="tbkit-bench-")
    if args.only_steps_per_call:
        return run_steps_per_call_only(args, tmp, load_before)
    try:
        multi = steps_per_call_section(args, tmp)
        mlp = mlp_workload()
        runners = build(mlp, tmp)
        runners.update(keras_runners(mlp[3], tmp))
        e2e = end_to_end_table(interleave(runners, args.rounds, args.steps_per_block))
        micro_runners = build(tiny_workload(mlp[1], mlp[5]), tmp, references=True)
        micro = micro_table(interleave(micro_runners, args.micro_rounds, args.micro_steps,
                                       slices=args.micro_slices,
                                       warmup_blocks=1))
        hist = histogram_bench(5 if args.quick else 30)
        dump_ms = dump_bench(tiny_workload(mlp[1], mlp[5]), tmp, 5 if args.quick else 30)
    finally:
        for close in CLOSERS:
            close()
        shutil.rmtree(tmp, ignore_errors=True)
    machine = {"nproc": os.cpu_count(), "tensorflow": tf.__version__,
               "keras": keras.__version__, "tensorboard": tensorboard.__version__,
               "tensorboardX": tensorboardX.__version__, "python": sys.version.split()[0],
               "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
               "threads": {"intra_op": 1, "inter_op": 1}}
    print(f"machine: {json.dumps(machine)}")
    print_tables(e2e, micro, hist, args)
    print(f"\nOne in-graph dump of 64 kept steps (record of 5 scalar fields): {dump_ms:.3f} ms")
    print_steps_per_call(multi, args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "machine": machine, "end_to_end": e2e,
                       "micro": micro, "histogram": hist, "keras_board_vs_fit": KERAS_VS_FIT,
                       "dump_64_kept_ms": dump_ms, "steps_per_call": multi},
                      f, indent=2)


if __name__ == "__main__":
    main()
