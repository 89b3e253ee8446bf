"""A kept record under MirroredStrategy on 2 logical CPUs, run in a process of its own by
test_kept.py (logical devices must be set before TensorFlow initialises them).

Usage: ``python kept_mirrored_run.py LOGDIR_INSIDE LOGDIR_OUTSIDE`` (the logger made inside,
then outside the strategy's scope). Replica ``r`` reads ``x = 2 * s + r`` at step ``s``,
and a NaN at step 30; the record keeps replica 0's value and the sum over replicas.
"""

import math
import os
import sys

import tensorflow as tf

STEPS, NAN_AT = 40, 30


def run(strategy, logdir: str, inside_scope: bool) -> None:
    import tbkit

    if inside_scope:
        with strategy.scope():
            log = tbkit.SummaryLogger(logdir)
    else:
        log = tbkit.SummaryLogger(logdir)

    def dataset(ctx):
        values = tf.data.Dataset.range(STEPS * 2).map(
            lambda i: tf.where(i // 2 == NAN_AT, math.nan, tf.cast(i, tf.float32)))
        return values.batch(ctx.get_per_replica_batch_size(strategy.num_replicas_in_sync))

    batches = iter(strategy.distribute_datasets_from_function(dataset))

    @log.train_step
    def train_step(iterator):
        def replica(x):
            x = tf.reduce_sum(x)
            tbkit.record("local", {"x": x}, every=10, keep=8)
            tbkit.record("total", {"x": x}, every=10, keep=8, reduce="sum")
            tbkit.record("anomaly", {"x": x}, level="error", when=~tf.math.is_finite(x))
            return x

        return strategy.reduce("SUM", strategy.run(replica, args=(next(iterator),)), axis=None)

    for _ in range(STEPS):
        train_step(batches)
    log.close()


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    run(mirrored, sys.argv[1], inside_scope=True)
    run(mirrored, sys.argv[2], inside_scope=False)
