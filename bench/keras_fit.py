"""What logging costs in ``model.fit``: tbkit's Keras callback beside Keras's own, in one run.

Run from the repository root::

    python bench/keras_fit.py                  # 30 rounds, about two minutes
    python bench/keras_fit.py --quick          # smoke run, seconds
    python bench/keras_fit.py --json out.json  # also write the results as JSON

An MLP 784-256-256-10 (``--model tiny``: 4-10, a step so small that fit's own per-batch work
dominates and any per-step overhead shows), batch 64, Adam, accuracy as metric, on synthetic
in-memory data (``tf.data``, repeated), one intra-op and one inter-op thread,
``jit_compile=False`` (what ``"auto"`` picks on a CPU). Variants, each with its own model
built from the same weights:

* ``fit``: no callback;
* ``fit + tbkit``: ``tbkit.keras.TensorBoardRecords(every=100)``: the ``batch_*`` scalars and
  the ``batch`` record every 100 steps, epoch metrics at epoch end;
* ``fit + TensorBoard(epoch)``: ``keras.callbacks.TensorBoard()`` (``update_freq="epoch"``);
* ``fit + TensorBoard(update_freq=1)``.

A round runs one epoch of ``--steps`` steps per variant, one ``fit(initial_epoch=r,
epochs=r + 1)`` call each, in an order rotated every round (a slow round slows every variant
alike). The epoch time is taken by two timing callbacks around the variant's callback (first in
``on_epoch_begin``, last in ``on_epoch_end``, neither overrides a batch hook): the per-step
cost plus the variant's epoch-end work, without ``fit``'s per-call setup. The whole ``fit``
call is timed too. Reported per variant: the median ms per step and the median and IQR of the
per-round ratio to ``fit`` with no callback, for both.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorboard  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import tbkit.keras  # noqa: E402

tf.get_logger().setLevel("ERROR")
tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)

BATCH, N_BATCHES, EVERY = 64, 16, 100
BASELINE = "fit"


class EpochStart(keras.callbacks.Callback):
    """Notes the time each epoch starts; listed first, so before the variant's callback."""

    def __init__(self):
        super().__init__()
        self.times: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self.times.append(time.perf_counter())


class EpochEnd(EpochStart):
    """Notes the time each epoch ends; listed last, so after the variant's epoch-end work."""

    def on_epoch_begin(self, epoch, logs=None):
        pass

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter())


def dataset(features: int, seed: int = 0) -> tf.data.Dataset:
    rng = np.random.default_rng(seed)
    xs = rng.standard_normal((BATCH * N_BATCHES, features)).astype(np.float32)
    ys = rng.integers(0, 10, BATCH * N_BATCHES).astype(np.int32)
    return tf.data.Dataset.from_tensor_slices((xs, ys)).batch(BATCH, drop_remainder=True).repeat()


MODELS = {  # name: (input features, hidden layer widths)
    "mlp": (784, (256, 256)),  # about 4 ms a step here: the house workload
    "tiny": (4, ()),           # a [64, 4] x [4, 10] step: fit's own loop is most of the time
}


def make_model(name: str, weights=None) -> keras.Model:
    features, hidden = MODELS[name]
    model = keras.Sequential([
        keras.Input((features,)),
        *(keras.layers.Dense(width, activation="relu") for width in hidden),
        keras.layers.Dense(10),
    ])
    if weights is not None:
        model.set_weights(weights)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), metrics=["accuracy"], jit_compile=False,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def variants(tmp: str) -> dict[str, list]:
    """The callbacks of each variant."""
    return {
        BASELINE: [],
        "fit + tbkit": [tbkit.keras.TensorBoardRecords(os.path.join(tmp, "tbkit"), every=EVERY)],
        "fit + TensorBoard(epoch)": [keras.callbacks.TensorBoard(os.path.join(tmp, "epoch"))],
        "fit + TensorBoard(update_freq=1)": [
            keras.callbacks.TensorBoard(os.path.join(tmp, "batch"), update_freq=1)
        ],
    }


def runner(model: keras.Model, callbacks: list, data: tf.data.Dataset, steps: int):
    """A callable running epoch ``r`` and returning (epoch seconds, fit-call seconds)."""
    start, end = EpochStart(), EpochEnd()

    def run(r: int) -> tuple[float, float]:
        began = time.perf_counter()
        model.fit(data, initial_epoch=r, epochs=r + 1, steps_per_epoch=steps, verbose=0,
                  shuffle=False, callbacks=[start, *callbacks, end])
        call = time.perf_counter() - began
        return end.times[-1] - start.times[-1], call

    return run


def interleave(runners: dict, rounds: int, warmup: int) -> dict[str, dict[str, np.ndarray]]:
    names = list(runners)
    for r in range(warmup):
        for name in names:
            runners[name](r)
    times = {name: {"epoch": [], "call": []} for name in names}
    for i in range(rounds):
        k = i % len(names)
        for name in names[k:] + names[:k]:
            epoch, call = runners[name](warmup + i)
            times[name]["epoch"].append(epoch)
            times[name]["call"].append(call)
    return {name: {kind: np.array(t) for kind, t in kinds.items()}
            for name, kinds in times.items()}


def quartiles(values: np.ndarray) -> tuple[float, float, float]:
    q1, med, q3 = np.percentile(values, [25, 50, 75])
    return float(med), float(q1), float(q3)


def table(times: dict, steps: int) -> list[dict]:
    rows = []
    for name, kinds in times.items():
        row: dict = {"variant": name}
        for kind, t in kinds.items():
            ratio = quartiles(t / times[BASELINE][kind])
            row[kind] = {"ms_per_step": float(np.median(t)) / steps * 1e3,
                         "ratio_median": ratio[0], "ratio_q1": ratio[1], "ratio_q3": ratio[2],
                         "seconds_by_round": t.tolist()}
        rows.append(row)
    return rows


def print_table(rows: list[dict], args) -> None:
    features, hidden = MODELS[args.model]
    shape = "-".join(str(n) for n in (features, *hidden, 10))
    print(f"\n## model.fit: {args.model} {shape}, batch {BATCH}, Adam ({args.rounds} rounds x "
          f"{args.steps} steps, order rotated)\n\n"
          "| variant | epoch ms/step | epoch: median ratio to fit | IQR | "
          "fit call: median ratio | IQR |\n|---|---:|---:|---:|---:|---:|")
    for r in rows:
        e, c = r["epoch"], r["call"]
        print(f"| {r['variant']} | {e['ms_per_step']:.3f} | {e['ratio_median']:.3f} | "
              f"{e['ratio_q1']:.3f} – {e['ratio_q3']:.3f} | {c['ratio_median']:.3f} | "
              f"{c['ratio_q1']:.3f} – {c['ratio_q3']:.3f} |")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=30, help="measured rounds (default 30)")
    p.add_argument("--steps", type=int, default=100, help="steps per epoch (default 100)")
    p.add_argument("--warmup", type=int, default=2, help="rounds not measured (default 2)")
    p.add_argument("--model", choices=sorted(MODELS), default="mlp",
                   help="mlp: 784-256-256-10 (default); tiny: 4-10, to see per-step overhead")
    p.add_argument("--quick", action="store_true", help="a few short rounds: a smoke run")
    p.add_argument("--json", metavar="OUT", help="also write the results to OUT as JSON")
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.steps, args.warmup = 3, 20, 1
    load_before = os.getloadavg()
    tmp = tempfile.mkdtemp(prefix="tbkit-keras-bench-")
    data = dataset(MODELS[args.model][0])
    weights = make_model(args.model).get_weights()
    callbacks = variants(tmp)
    try:
        runners = {name: runner(make_model(args.model, weights), cbs, data, args.steps)
                   for name, cbs in callbacks.items()}
        rows = table(interleave(runners, args.rounds, args.warmup), args.steps)
    finally:
        callbacks["fit + tbkit"][0].close()
        shutil.rmtree(tmp, ignore_errors=True)
    machine = {"nproc": os.cpu_count(), "tensorflow": tf.__version__,
               "keras": keras.__version__, "tensorboard": tensorboard.__version__,
               "python": sys.version.split()[0], "loadavg_before": load_before,
               "loadavg_after": os.getloadavg(), "threads": {"intra_op": 1, "inter_op": 1}}
    print(f"machine: {json.dumps(machine)}")
    print_table(rows, args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "machine": machine, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
