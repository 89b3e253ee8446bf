"""What tbkit costs in an XLA-compiled step, and what ``reduce=`` costs under MirroredStrategy.

Run from the repository root::

    python bench/xla_step.py               # XLA: a few tens of seconds
    python bench/xla_step.py --quick       # smoke run
    python bench/xla_step.py --distribute  # also reduce= on 2 logical CPUs (MirroredStrategy)
    python bench/xla_step.py --mlp-only    # the MLP part only

XLA part: an MLP 784-256-256-10, batch 64, SGD, compiled with ``jit_compile=True``, as a bare
``tf.function`` and as ``@log.train_step(jit_compile=True)`` with tbkit ops (a record every 10
steps, two scalars at info every 100, histograms of the kernels at debug every 1 000), once at
the debug threshold and once at error (nothing records); the bare step computes the same
gradient norm. "jit called from a tf.function" is the shape of a tbkit jit step without tbkit
(an outer function calling the compiled one). Plus a trivial step (a 4×4 matmul) to see the
fixed cost per call. Interleaved rounds of ``--steps`` steps each, variant order
rotated; reported: median ms per step and the median per-round ratio to the bare jit step.

Distribute part: a trivial replica step on 2 logical CPUs, with one scalar at the default
(the first replica's value, no collective) against the same scalar with ``reduce="mean"``
and ``reduce="max"`` (a collective on every step, recorded or not).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _timed(fn, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        result = fn()
    _ = tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, "numpy") else t, result)
    return (time.perf_counter() - start) / steps * 1e3


def _compare(variants: dict, rounds: int, steps: int) -> None:
    for fn in variants.values():  # trace and compile outside the timing
        for _ in range(3):
            fn()
    times: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for r in range(rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            times[name].append(_timed(variants[name], steps))
    base = names[0]
    print(f"  {'variant':<34} {'ms/step':>8} {'ratio to ' + base:>20}")
    for name in names:
        ratios = [t / b for t, b in zip(times[name], times[base], strict=True)]
        print(f"  {name:<34} {statistics.median(times[name]):8.3f} "
              f"{statistics.median(ratios):20.3f}")
    _close_loggers()


def _mlp_variants(logdir: str) -> dict:
    import tbkit

    tf.random.set_seed(0)
    x = tf.random.normal([64, 784])
    y = tf.random.uniform([64], 0, 10, tf.int64)
    sizes = [784, 256, 256, 10]
    shapes = zip(sizes, sizes[1:], strict=False)
    weights = [tf.Variable(tf.random.normal(shape, stddev=0.05)) for shape in shapes]

    def forward_backward(x, y):
        with tf.GradientTape() as tape:
            h = x
            for i, w in enumerate(weights):
                h = tf.matmul(h, w)
                if i < len(weights) - 1:
                    h = tf.nn.relu(h)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, h))
        grads = tape.gradient(loss, weights)
        for w, g in zip(weights, grads, strict=True):
            w.assign_sub(0.01 * g)
        return loss, grads

    def logged(x, y):
        loss, grads = forward_backward(x, y)
        norm = tf.linalg.global_norm(grads)
        tbkit.scalar("loss", loss)
        tbkit.scalar("grad_norm", norm)
        tbkit.record("train", {"loss": loss, "grad_norm": norm, "phase": "warmup"}, every=10)
        for i, w in enumerate(weights):
            tbkit.histogram(f"kernel/{i}", w)
        return loss

    def unlogged(x, y):  # the same arithmetic, nothing logged
        loss, grads = forward_backward(x, y)
        return loss, tf.linalg.global_norm(grads)

    bare = tf.function(unlogged, jit_compile=True)
    loud = _logger(logdir).train_step(logged, jit_compile=True)
    quiet = _logger(logdir, level="error").train_step(logged, jit_compile=True)
    plain = _logger(logdir).train_step(logged)
    nested = tf.function(lambda x, y: bare(x, y))
    return {
        "bare jit": lambda: bare(x, y),
        "jit called from a tf.function": lambda: nested(x, y),
        "tbkit jit, debug threshold": lambda: loud(x, y),
        "tbkit jit, nothing records": lambda: quiet(x, y),
        "tbkit without jit": lambda: plain(x, y),
    }


_OPEN: list = []  # closed after each section: a logger's finalizer must not run mid-trace


def _logger(logdir: str, level: str = "debug"):
    import tbkit

    _OPEN.append(tbkit.SummaryLogger(tempfile.mkdtemp(dir=logdir), level=level))
    return _OPEN[-1]


def _close_loggers() -> None:
    while _OPEN:
        _OPEN.pop().close()


def _trivial_variants(logdir: str) -> dict:
    import tbkit

    a = tf.ones([4, 4])

    def body(a):
        b = tf.matmul(a, a)
        tbkit.scalar("sum", tf.reduce_sum(b))
        tbkit.record("r", {"mean": tf.reduce_mean(b)}, every=10)
        return b

    bare = tf.function(lambda a: tf.matmul(a, a), jit_compile=True)
    nested = tf.function(lambda a: bare(a))  # the shape of a tbkit jit step, without tbkit
    plain = tf.function(lambda a: tf.matmul(a, a))
    loud = _logger(logdir).train_step(body, jit_compile=True)
    quiet = _logger(logdir, level="error").train_step(body, jit_compile=True)
    return {
        "bare jit (trivial)": lambda: bare(a),
        "jit called from a tf.function": lambda: nested(a),
        "bare without jit": lambda: plain(a),
        "tbkit jit, debug threshold": lambda: loud(a),
        "tbkit jit, nothing records": lambda: quiet(a),
    }


def _distribute_variants(logdir: str) -> dict:
    import tbkit

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    a = tf.ones([4, 4])

    def make(reduce):
        log = _logger(logdir, level="error")

        @log.train_step
        def step(a):
            def replica(a):
                b = tf.matmul(a, a)
                if reduce != "none":
                    tbkit.scalar("sum", tf.reduce_sum(b), reduce=reduce)
                return b

            return strategy.run(replica, args=(a,))

        return lambda: step(a)

    return {f"reduce={name}": make(name) for name in ("none", None, "mean", "max")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--distribute", action="store_true")
    parser.add_argument("--mlp-only", action="store_true")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=500)
    args = parser.parse_args()
    rounds, steps = (2, 50) if args.quick else (args.rounds, args.steps)
    if args.distribute:  # before TensorFlow initialises its devices
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2
        )
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    with tempfile.TemporaryDirectory() as logdir:
        print(f"MLP step, batch 64 ({rounds} rounds of {steps} steps):")
        _compare(_mlp_variants(logdir), rounds, steps)
        if args.mlp_only:
            return
        print(f"Trivial step ({rounds} rounds of {steps * 4} steps):")
        _compare(_trivial_variants(logdir), rounds, steps * 4)
        if args.distribute:
            print(f"MirroredStrategy, 2 logical CPUs, trivial replica step; 'none' logs nothing, "
                  f"reduce=None the first replica's value ({rounds} rounds of {steps} steps):")
            _compare(_distribute_variants(logdir), rounds, steps)


if __name__ == "__main__":
    main()
