"""``steps_per_call`` under MirroredStrategy on 2 logical CPUs, in a process of its own (run by
test_multistep.py: logical devices must be set before TensorFlow initialises them).

Usage: ``python multistep_mirrored_run.py ONE MANY``: the same training, one step per call
into ONE and 5 steps per call into MANY (12 batches: calls of 5, 5 and 2 steps). Prints one
JSON line per run: its final step, tracing count, and what each call returned.
"""

import json
import os
import sys

import numpy as np
import tensorflow as tf

BATCHES, GLOBAL_BATCH, STEPS_PER_CALL = 12, 4, 5


def main(one: str, many: str) -> None:
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    for logdir, n in ((one, 1), (many, STEPS_PER_CALL)):
        print(json.dumps(run(strategy, logdir, n)), flush=True)


def run(strategy, logdir: str, steps_per_call: int) -> dict:
    import tbkit

    x = np.random.default_rng(5).normal(size=(BATCHES * GLOBAL_BATCH, 3)).astype(np.float32)
    data = tf.data.Dataset.from_tensor_slices(x).batch(GLOBAL_BATCH)
    batches = iter(strategy.experimental_distribute_dataset(data))
    with strategy.scope():
        log = tbkit.SummaryLogger(logdir, every={"info": 2, "debug": 3})
        w = tf.Variable(tf.ones([3]))

    def replica(x):
        loss = tf.reduce_sum(x * w)
        grad = tf.reduce_mean(x, axis=0)
        w.assign_sub(0.1 * tf.distribute.get_replica_context().all_reduce("mean", grad))
        tbkit.scalar("local", loss)
        tbkit.scalar("mean", loss, reduce="mean", every=1)
        tbkit.scalar("each", loss, reduce="replicas")
        tbkit.record("fields", {"loss": loss, "w0": w[0]}, reduce="sum", every=3)
        tbkit.histogram("w", w, level="debug")
        tbkit.scalar("late", loss, when=loss > 0.5, reduce="max")
        return loss

    @log.train_step(steps_per_call=steps_per_call)
    def train_step(x):
        per_replica = strategy.run(replica, args=(x,))
        return {"sum": strategy.reduce("SUM", per_replica, axis=None), "each": per_replica}

    returned = []
    if steps_per_call == 1:
        for x in batches:
            returned.append(train_step(x))
    else:
        for out in iter(lambda: train_step(batches), None):
            returned.append(out)
    result = {"final_step": int(log.step.numpy()),
              "traces": train_step.experimental_get_tracing_count(),
              "sums": [float(r["sum"]) for r in returned],
              "each": [[float(v) for v in strategy.experimental_local_results(r["each"])]
                       for r in returned]}  # fmt: skip
    log.close()
    return result


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main(*sys.argv[1:])
