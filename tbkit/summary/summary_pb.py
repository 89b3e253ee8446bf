"""Pure twins of the ops: the same summaries built with numpy and protobuf, no TensorFlow.

Tests use them as the reference the in-graph ops must match; they also let code without
TensorFlow (a data pipeline, a test) produce tbkit summaries to write with any event writer.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from tensorboard.compat.proto import summary_pb2
from tensorboard.plugins.histogram import metadata as histogram_metadata
from tensorboard.plugins.scalar import metadata as scalar_metadata
from tensorboard.util import tensor_util

from tbkit.data import levels, metadata
from tbkit.summary import jsonenc

#: Number of buckets a histogram has unless ``buckets=`` says otherwise (TensorBoard's default).
DEFAULT_BUCKETS = 30


def _summary(tag: str, array: np.ndarray, md: summary_pb2.SummaryMetadata) -> summary_pb2.Summary:
    summary = summary_pb2.Summary()
    summary.value.add(tag=tag, metadata=md, tensor=tensor_util.make_tensor_proto(array))
    return summary


def scalar_pb(tag: str, data: Any, description: str = "") -> summary_pb2.Summary:
    """Twin of :func:`tbkit.scalar`: a float32 scalar with TensorBoard's scalar metadata."""
    array = np.asarray(data, dtype=np.float32)
    if array.shape != ():
        raise ValueError(f"scalar_pb({tag!r}) needs a scalar (got shape {array.shape})")
    md = scalar_metadata.create_summary_metadata(display_name=tag, description=description)
    return _summary(tag, array, md)


def buckets(data: Any, bucket_count: int = DEFAULT_BUCKETS) -> np.ndarray:
    """Twin of :func:`~tbkit.summary.ops.bucketize`: TensorBoard's ``[bucket_count, 3]``
    histogram."""
    data = np.asarray(data, dtype=np.float64).reshape(-1)
    if data.size == 0:
        return np.zeros((bucket_count, 3))
    low, high = data.min(), data.max()
    if low == high:
        counts = np.zeros(bucket_count)
        counts[-1] = data.size
        edges = np.full(bucket_count, high)
        return np.stack([edges, edges, counts], axis=1)
    width = (high - low) / bucket_count
    with np.errstate(invalid="ignore"):
        index = np.clip(np.floor((data - low) / width), 0, bucket_count - 1)
    counts = np.bincount(index[np.isfinite(index)].astype(np.int64), minlength=bucket_count)
    edges = np.linspace(low, high, bucket_count + 1)
    edges[-1] = high
    return np.stack([edges[:-1], edges[1:], counts.astype(np.float64)], axis=1)


def histogram_pb(
    tag: str, data: Any, bucket_count: int = DEFAULT_BUCKETS, description: str = ""
) -> summary_pb2.Summary:
    """Twin of :func:`tbkit.histogram`, with TensorBoard's histogram metadata."""
    md = histogram_metadata.create_summary_metadata(display_name=tag, description=description)
    return _summary(tag, buckets(data, bucket_count), md)


def record_pb(tag: str, value: Any, level: str = "info") -> summary_pb2.Summary:
    """Twin of :func:`tbkit.record`: a rank-1 string tensor holding one JSON object."""
    level = levels.LEVELS[levels.level_index(level)]
    text = jsonenc.encode_py(value, level, tag=tag)
    return _summary(tag, np.array([text.encode("utf-8")], dtype=object),
                    metadata.create_summary_metadata(dtypes=jsonenc.dtypes(value)))


def text_pb(
    tag: str, message: str, level: str = "info", description: str = ""
) -> summary_pb2.Summary:
    """Twin of :func:`tbkit.text`: a scalar string with TensorBoard's text metadata, the level
    marked on its description."""
    level = levels.LEVELS[levels.level_index(level)]
    md = metadata.create_text_metadata(level, description)
    return _summary(tag, np.array(message.encode("utf-8"), dtype=object), md)
