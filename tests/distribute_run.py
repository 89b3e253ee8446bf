"""A tbkit training loop under tf.distribute, run in a process of its own by test_distribute.py.

Usage: ``python distribute_run.py mirrored INSIDE OUTSIDE`` (2 logical CPUs; the logger made
inside, then outside the strategy's scope), or ``TF_CONFIG=... python distribute_run.py
multiworker LOGDIR`` (one worker of several). Prints one JSON line per run: the folder this
process's logger wrote to, its step variable's class, tracing count and final step.

Replica ``r`` of worker ``w`` reads ``x = 100 * w + 2 * s + r`` at step ``s`` under
MirroredStrategy (one worker), and ``x = 100 * w + s`` under MultiWorkerMirroredStrategy
(one replica per worker).
"""

import json
import os
import sys

import tensorflow as tf

STEPS = 4


def main(mode: str, logdirs: list[str]) -> None:
    if mode == "mirrored":
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2
        )
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        run(strategy, mode, logdirs[0], outside_scope=False)
        run(strategy, mode, logdirs[1], outside_scope=True)
    else:
        run(tf.distribute.MultiWorkerMirroredStrategy(), mode, logdirs[0], outside_scope=False)


def run(strategy, mode: str, logdir: str, outside_scope: bool) -> None:
    import tbkit
    from tbkit.summary import distribute

    run_dir = distribute.worker_logdir(logdir, strategy)
    if outside_scope:
        log = tbkit.SummaryLogger(run_dir, every={"info": 1})
    else:
        with strategy.scope():  # every worker builds the logger: its variables are mirrored
            log = tbkit.SummaryLogger(run_dir, every={"info": 1})

    def dataset(ctx):
        stride = 2 if mode == "mirrored" else 1
        values = tf.data.Dataset.range(STEPS * stride).map(
            lambda i: tf.cast(100 * ctx.input_pipeline_id + i, tf.float32)
        )
        return values.batch(ctx.get_per_replica_batch_size(strategy.num_replicas_in_sync))

    batches = iter(strategy.distribute_datasets_from_function(dataset))

    @log.train_step
    def train_step(iterator):
        def replica(x):
            x = tf.reduce_sum(x)
            tbkit.scalar("local", x)
            tbkit.scalar("mean", x, reduce="mean")
            tbkit.scalar("sum", x, reduce="sum")
            tbkit.scalar("min", x, reduce="min")
            tbkit.scalar("max", x, reduce="max")
            tbkit.scalar("each", x, reduce="replicas", every=2)
            tbkit.record("fields", {"x": x, "n": tf.cast(x, tf.int64), "unit": "s"},
                         reduce="sum", every=2)
            # 'when' is decided on the first replica (the chief's, with several workers).
            tbkit.scalar("late", x, when=x > 1.5, reduce="max")
            return x

        return strategy.reduce("SUM", strategy.run(replica, args=(next(iterator),)), axis=None)

    for _ in range(STEPS):
        train_step(batches)
    print(json.dumps({"run_dir": run_dir, "step": type(log.step).__name__,
                      "traces": train_step.experimental_get_tracing_count(),
                      "final_step": int(log.step.numpy())}), flush=True)
    log.close()


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main(sys.argv[1], sys.argv[2:])
