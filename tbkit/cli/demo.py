"""The README's main job: train a small classifier with tbkit, then serve TensorBoard.

Synthetic data (three Gaussian blobs in 20 dimensions), so it runs offline in seconds. Every
kind of tbkit summary is used: scalars, histograms, records, ``when=`` anomaly records, a
plain ``text`` message, a user's own ``tf.summary`` call, and two runs (train, validation).
One batch, three quarters of the way in, is an outlier (its features scaled by 100): the
``outlier`` record fires, and the ``train`` record's flight recorder (``keep=32``) writes the
32 steps before it, which the tbkit tab shows among the sampled ones (``kept == true``).
"""

from __future__ import annotations

import dataclasses
import os
import time

import tensorflow as tf

import tbkit

FEATURES, CLASSES, BATCH = 20, 3, 64
KEEP = 32  #: steps the train record's flight recorder keeps
OUTLIER_SCALE = 100.0  #: how much the outlier batch's features are scaled


@dataclasses.dataclass
class TrainingLog:
    """One structured training record."""

    loss: tf.Tensor
    accuracy: tf.Tensor
    learning_rate: tf.Tensor
    grad_norm: tf.Tensor


def make_dataset(seed: int) -> tf.data.Dataset:
    """Endless batches from three fixed Gaussian blobs; ``seed`` picks the samples."""
    centers = tf.random.stateless_normal([CLASSES, FEATURES], seed=[42, 0]) * 0.5

    def sample(i):
        pair = tf.stack([tf.cast(i, tf.int32), seed])
        labels = tf.random.stateless_uniform([BATCH], seed=pair, maxval=CLASSES, dtype=tf.int32)
        noise = tf.random.stateless_normal([BATCH, FEATURES], seed=pair + 1)
        return tf.gather(centers, labels) + noise, labels

    return tf.data.Dataset.counter().map(sample)


def train(logdir: str, steps: int) -> str:
    """Train for ``steps`` steps, logging under ``logdir/<run-name>/{train,validation}``."""
    run = os.path.join(logdir, time.strftime("demo-%Y%m%d-%H%M%S"))
    model = tf.keras.Sequential([
        tf.keras.Input([FEATURES]),
        tf.keras.layers.Dense(64, activation="relu"),
        tf.keras.layers.Dense(CLASSES),
    ])
    schedule = tf.keras.optimizers.schedules.ExponentialDecay(1e-2, 200, 0.5)
    optimizer = tf.keras.optimizers.Adam(schedule)
    loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    train_log = tbkit.SummaryLogger(
        os.path.join(run, "train"),
        every={"info": 10, "debug": tbkit.Schedule({0: 20, 200: 100})},
    )
    validation_log = tbkit.SummaryLogger(os.path.join(run, "validation"), step=train_log.step)

    @train_log.train_step
    def train_step(x, y):
        with tf.GradientTape() as tape:
            logits = model(x, training=True)
            loss = loss_fn(y, logits)
        grads = tape.gradient(loss, model.trainable_variables)
        lr = optimizer.learning_rate  # the rate this step's update uses
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        accuracy = tf.reduce_mean(tf.cast(tf.equal(tf.argmax(logits, -1, tf.int32), y),
                                          tf.float32))
        tbkit.scalar("loss", loss)
        tbkit.scalar("accuracy", accuracy)
        for var, grad in zip(model.trainable_variables, grads, strict=True):
            tbkit.histogram(f"weights/{var.path}", var)
            tbkit.histogram(f"grads/{var.path}", grad)
        tbkit.record("train", TrainingLog(loss, accuracy, lr, tf.linalg.global_norm(grads)),
                     keep=KEEP)
        largest = tf.reduce_max(tf.abs(x))
        tbkit.record("outlier", {"largest_feature": largest, "loss": loss}, level="error",
                     when=largest > 50.0)  # a batch no blob makes (|x| stays under about 6)
        tbkit.record("anomaly", {"loss": loss, "message": "loss is not finite"},
                     level="error", when=tf.logical_not(tf.math.is_finite(loss)))
        tf.summary.scalar("learning_rate", lr)  # plain tf.summary: follows the info level
        return loss

    @validation_log.train_step(advance=False)
    def validation_step(x, y):
        logits = model(x, training=False)
        loss = loss_fn(y, logits)
        accuracy = tf.reduce_mean(tf.cast(tf.equal(tf.argmax(logits, -1, tf.int32), y),
                                          tf.float32))
        tbkit.scalar("loss", loss, every=50)
        tbkit.scalar("accuracy", accuracy, every=50)
        tbkit.record("validation", {"loss": loss, "accuracy": accuracy}, every=50)

    data = iter(make_dataset(seed=0))
    held_out = next(iter(make_dataset(seed=1)))
    with train_log, validation_log:
        with train_log.as_default():
            tbkit.text("phase", "training started", level="warning")
        outlier_at = steps * 3 // 4
        for i in range(steps):
            validation_step(*held_out)
            x, y = next(data)
            train_step(x * OUTLIER_SCALE if i == outlier_at else x, y)
        with train_log.as_default():
            tbkit.text("phase", f"training finished after {steps} steps", level="warning")
    return run
