"""The write side, in the graph: ops, record encoding, the step decorator, XLA and
``tf.distribute`` support, the logger and its writer, the profiler window. Needs TensorFlow
(but for ``schedule``, which imports it only to build a predicate).
"""
