"""tbkit in an XLA-compiled step and under MirroredStrategy (docs/distributed.md).

Run it: ``python docs/examples/distributed_xla.py [LOGDIR]`` (default: a temporary folder).
It makes two logical CPUs, so that MirroredStrategy has two replicas on any machine, trains a
small linear model for 20 steps in each setting, and prints what was written.
"""

import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

# Logical devices must be configured before TensorFlow initialises them.
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import tbkit  # noqa: E402

logdir = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="tbkit-example-")
features = tf.random.stateless_normal([160, 8], seed=(1, 2))
targets = tf.reduce_sum(features, axis=1, keepdims=True)
data = tf.data.Dataset.from_tensor_slices((features, targets)).batch(8)

# 1. An XLA-compiled step: the body is compiled, the summaries are written outside it.
w = tf.Variable(tf.zeros([8, 1]))
with tbkit.SummaryLogger(f"{logdir}/xla", every={"info": 5, "debug": 10}) as log:

    @log.train_step(jit_compile=True)
    def xla_step(x, y):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean((x @ w - y) ** 2)
        grad = tape.gradient(loss, w)
        w.assign_sub(0.1 * grad)
        tbkit.scalar("loss", loss)
        tbkit.histogram("weights", w)  # bucketed outside XLA, on recorded steps only
        tbkit.record("train", {"loss": loss, "optimizer": "sgd"})  # a str: a constant
        return loss

    for x, y in data:
        xla_step(x, y)

# 2. MirroredStrategy: the logger (its step variable) and the model under the scope.
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    log = tbkit.SummaryLogger(f"{logdir}/mirrored", every={"info": 5})
    v = tf.Variable(tf.zeros([8, 1]))
batches = iter(strategy.experimental_distribute_dataset(data))


@log.train_step
def mirrored_step(iterator):
    def replica(x, y):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean((x @ v - y) ** 2)
        grad = tf.distribute.get_replica_context().all_reduce("mean", tape.gradient(loss, v))
        v.assign_sub(0.1 * grad)
        tbkit.scalar("loss/first_replica", loss)           # the first replica's own value
        tbkit.scalar("loss/mean", loss, reduce="mean")     # averaged over the replicas
        tbkit.scalar("loss/each", loss, reduce="replicas")  # loss/each/replica_0, _1
        return loss

    losses = strategy.run(replica, args=next(iterator))
    return strategy.reduce("MEAN", losses, axis=None)


with log:
    for _ in range(len(data)):
        mirrored_step(batches)

for run in ("xla", "mirrored"):
    for r in tbkit.read_records(f"{logdir}/{run}"):
        print(run, r.step, r.tag, r.fields)
print("logdir:", logdir)
