"""``tbkit.read``: a logdir's records, without TensorFlow.

A thin layer on the event layer (:mod:`tbkit.data.events`): runs found and named as TensorBoard
does, damaged files read as far as they are intact (with a warning naming file and offset),
each run's records after pre-emption by a resumed run, ``tf.summary.text`` summaries as records
with a ``message`` field. A run's data are held in memory between its one read and the caller
(up to :data:`~tbkit.data.events.DEFAULT_BUDGET` bytes; beyond it the run is read twice instead).
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from tbkit.data import events
from tbkit.data import logdir as _logdir
from tbkit.data.errors import TbkitTypeError, expected
from tbkit.data.metadata import BUILTIN_FIELDS
from tbkit.data.parquet import to_parquet  # noqa: F401 (tbkit.read.to_parquet)
from tbkit.data.rows import NON_FINITE, Record, flat

if TYPE_CHECKING:
    import pandas

__all__ = ["Record", "read_records", "to_pandas", "to_parquet"]


def _check_filters(run: Any, tag: Any) -> None:
    for arg, value in (("run", run), ("tag", tag)):
        if value is not None and not isinstance(value, str):
            raise TbkitTypeError(expected(arg, "a str or None", value))


def read_records(
    logdir: str | os.PathLike[str], run: str | None = None, tag: str | None = None
) -> Iterator[Record]:
    """Read every tbkit record under ``logdir``; no TensorFlow needed.

    Args:
        logdir: the directory TensorBoard would be pointed at: a path, or any fsspec URL
            (``s3://bucket/exp``, ``gs://…``; see docs/storage.md).
        run: only this run (exact name, e.g. ``"train"`` or ``"."``), or every run.
        tag: only this tag (exact), or every tag.

    Returns:
        An iterator of :class:`Record`: runs in sorted order, each run's records in the order
        they were written, after pre-emption by resumed runs.

    Raises:
        FileNotFoundError: ``logdir`` does not exist.
        NotADirectoryError: ``logdir`` is not a directory.
        StorageError: ``logdir`` is a URL that cannot be listed (the message says why).
        TbkitTypeError: ``run`` or ``tag`` is neither a str nor None.
    """
    _check_filters(run, tag)
    source = _logdir.Logdir(logdir).check()
    runs = (
        events.run_records(events.scan(name, paths, source=source), None if tag is None else [tag])
        for name, paths in source.runs()
        if run in (None, name)
    )
    return itertools.chain.from_iterable(runs)


def _is_number_like(value: Any) -> bool:
    return value in NON_FINITE if isinstance(value, str) else type(value) in (int, float)


def to_pandas(
    source: str | os.PathLike[str] | Iterable[Record],
    run: str | None = None,
    tag: str | None = None,
) -> pandas.DataFrame:
    """Records as a DataFrame: one row per record.

    Columns: ``run, tag, step, wall_time, level``, then fields in first-seen order, nested
    objects flattened to dotted names (``{"opt": {"lr": 0.1}}`` → ``opt.lr``), arrays as lists.
    A column of numbers mixed with the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"`` (or of
    those strings alone) becomes float64 with them as nan/±inf; numeric columns keep their dtype.

    Args:
        source: a logdir (read with :func:`read_records`) or an iterable of :class:`Record`.
        run: only this run, or every run.
        tag: only this tag, or every tag.

    Raises:
        ImportError: pandas is not installed.
    """
    try:
        import pandas
    except ImportError as e:
        raise ImportError("tbkit.read.to_pandas needs pandas: pip install pandas") from e
    if isinstance(source, str | os.PathLike):  # a logdir
        records: Iterable[Record] = read_records(source, run=run, tag=tag)
    else:
        _check_filters(run, tag)
        records = (r for r in source if run in (None, r.run) and tag in (None, r.tag))
    columns = dict.fromkeys(BUILTIN_FIELDS)
    rows = []
    for r in records:
        row = flat(r)
        columns.update(dict.fromkeys(row))
        rows.append(row)
    frame = pandas.DataFrame(rows, columns=list(columns))
    for name in list(columns)[5:]:
        column = frame[name]
        present = [v for v in column if v is not None and not (isinstance(v, float) and v != v)]
        numeric = pandas.api.types.is_numeric_dtype(column.dtype)
        if not numeric and present and all(map(_is_number_like, present)):
            frame[name] = column.map(lambda v: math.nan if v is None else float(v)).astype(float)
    return frame
