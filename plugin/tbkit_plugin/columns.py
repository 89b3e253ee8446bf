"""Columns of record fields as numpy arrays: a kind code per row, numbers, dictionary codes.

A field column spans every row of the store. Each row holds a *kind* (missing, null, int,
float, a non-finite string such as ``"NaN"``, string, bool, array, object); numbers, bools and
non-finite strings also have a float64 value, and strings, arrays and objects a code into the
column's list of distinct texts (an array or object as its compact JSON). Integers beyond
±2**53 lose digits as float64, so they are also kept exactly, by row, in a small dict.

:func:`add_chunk` turns a batch of flat records into these arrays, mostly with C-level
``map``/``zip`` over records of one shape rather than Python code per value.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from tbkit.data.rows import NON_FINITE, flatten

MISSING, NULL, INT, FLOAT, NFSTR, STR, BOOL, ARRAY, OBJECT = range(9)
NUMERIC = (INT, FLOAT, NFSTR)  # kinds the filter language compares as numbers
TEXTUAL = (NFSTR, STR, ARRAY, OBJECT)  # kinds with a code into the column's texts
INT53 = 2**53
COMPACT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


class Growable:
    """A numpy array that grows by appending, with amortised copies (capacity × 1.5)."""

    __slots__ = ("data", "n", "fill")

    def __init__(self, dtype: Any, fill: Any = 0):
        self.data, self.n, self.fill = np.empty(0, dtype), 0, fill

    def _reserve(self, n: int) -> None:
        if n > len(self.data):
            new = np.empty(max(n, len(self.data) * 3 // 2, 1024), self.data.dtype)
            new[: self.n] = self.data[: self.n]
            self.data = new

    def pad(self, n: int) -> None:
        """Grow to ``n`` entries, filling the new ones with the fill value."""
        if n > self.n:
            self._reserve(n)
            self.data[self.n : n] = self.fill
            self.n = n

    def append(self, values: np.ndarray) -> None:
        self._reserve(self.n + len(values))
        self.data[self.n : self.n + len(values)] = values
        self.n += len(values)

    def view(self) -> np.ndarray:
        """The first ``n`` entries (a view: later appends do not change it)."""
        return self.data[: self.n]


class Column:
    """One field over every row; the arrays are padded to the store's row count on read."""

    def __init__(self) -> None:
        self.kind = Growable(np.uint8, MISSING)
        self.num: Growable | None = None  # allocated when a numeric or bool value is seen
        self.code: Growable | None = None  # allocated when a textual value is seen
        self.texts: list[str] = []
        self.text_ids: dict[str, int] = {}
        self.big: dict[int, int] = {}  # row → exact int, for ints beyond ±2**53

    def sync(self, n: int) -> None:
        """Pad every array to ``n`` rows."""
        self.kind.pad(n)
        if self.num is not None:
            self.num.pad(n)
        if self.code is not None:
            self.code.pad(n)

    def codes_of(self, texts: Iterable[str]) -> np.ndarray:
        """Dictionary codes of ``texts``, adding the ones not seen before."""
        texts = list(texts)
        ids = self.text_ids
        for text in set(texts).difference(ids):
            ids[text] = len(self.texts)
            self.texts.append(text)
        return np.fromiter(map(ids.__getitem__, texts), np.int32, len(texts))


class _Batch:
    """The arrays of one column for one chunk of ``m`` rows, before they join the column."""

    def __init__(self, m: int):
        self.kind = np.zeros(m, np.uint8)
        self.num: np.ndarray | None = None
        self.code: np.ndarray | None = None
        self.big: dict[int, int] = {}

    def nums(self) -> np.ndarray:
        if self.num is None:
            self.num = np.full(len(self.kind), np.nan)
        return self.num

    def codes(self) -> np.ndarray:
        if self.code is None:
            self.code = np.full(len(self.kind), -1, np.int32)
        return self.code


def _classify(value: Any) -> tuple[int, float, str | None]:
    """Kind, number and text of one value (the slow path, for columns of mixed types)."""
    t = type(value)
    if value is None:
        return NULL, math.nan, None
    if t is bool:
        return BOOL, float(value), None
    if t is int:
        return INT, to_float(value), None
    if t is float:
        return FLOAT, value, None
    if t is str:
        return (NFSTR, NON_FINITE[value], value) if value in NON_FINITE else (STR, math.nan, value)
    return (ARRAY if t is list else OBJECT), math.nan, COMPACT.encode(value)


def to_float(value: int) -> float:
    """A Python int as the nearest float, ±inf beyond the float range."""
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def _fill(batch: _Batch, column: Column, rows: np.ndarray, values: tuple, base: int) -> None:
    """Write one shape-group's values of a column into the chunk's arrays."""
    types = set(map(type, values))
    if len(types) == 1:
        (t,) = types
        if t is float or t is bool:
            batch.kind[rows] = FLOAT if t is float else BOOL
            batch.nums()[rows] = np.fromiter(values, np.float64, len(values))
            return
        if t is int:
            array = np.array(values)
            if array.dtype == np.int64 and not (np.abs(array) > INT53).any():
                batch.kind[rows] = INT
                batch.nums()[rows] = array
                return
        elif t is str:
            codes = column.codes_of(values)
            batch.codes()[rows] = codes
            if NON_FINITE.keys().isdisjoint(values):
                batch.kind[rows] = STR
                return
        elif t is type(None):
            batch.kind[rows] = NULL
            return
    for row, value in zip(rows.tolist(), values, strict=True):  # mixed: one value at a time
        kind, number, text = _classify(value)
        batch.kind[row] = kind
        if kind in NUMERIC or kind == BOOL:
            batch.nums()[row] = number
        if text is not None:
            batch.codes()[row] = column.codes_of([text])[0]
        if kind == INT and abs(value) > INT53:
            batch.big[base + row] = value


def add_chunk(columns: dict[str, Column], base: int, records: list[dict], series: np.ndarray,
              skip: frozenset[str]) -> dict[int, list[tuple[str, np.ndarray]]]:  # fmt: skip
    """Append a chunk of records as rows ``base`` on of ``columns``.

    Args:
        columns: field name → column; new names are added.
        base: the store's row count before this chunk.
        records: the chunk's field dicts (may hold nested objects; flattened here).
        series: the series id of each record.
        skip: field names not to make columns of (the built-in ones).

    Returns:
        series id → ``[(field, counts of each kind in this chunk)]``, fields in the order
        the series' records first hold them.
    """
    m = len(records)
    groups: dict[tuple, list[int]] = {}
    for i, key in enumerate(zip(series.tolist(), map(tuple, records), strict=True)):
        groups.setdefault(key, []).append(i)
    batches: dict[str, _Batch] = {}
    first_seen: dict[int, dict[str, tuple[int, int]]] = {}
    todo = list(groups.items())
    while todo:
        (sid, names), rows = todo.pop()
        picked = [records[i] for i in rows]
        table = list(zip(*map(dict.values, picked), strict=True)) if names else []
        nested = [j for j, values in enumerate(table) if dict in set(map(type, values))]
        if nested:  # flatten these records and group them again by their flat names
            regroup: dict[tuple, list[int]] = {}
            for i in rows:
                records[i] = flat = flatten(records[i])
                regroup.setdefault((sid, tuple(flat)), []).append(i)
            todo += [(key, sub) for key, sub in regroup.items() if key[1] != names]
            if (sid, names) not in regroup:
                continue
            rows = regroup[(sid, names)]
            picked = [records[i] for i in rows]
            table = list(zip(*map(dict.values, picked), strict=True))
        index = np.array(rows, np.intp)
        seen = first_seen.setdefault(sid, {})
        for position, (name, values) in enumerate(zip(names, table, strict=True)):
            if name in skip:
                continue
            if (rows[0], position) < seen.get(name, (m, 0)):
                seen[name] = (rows[0], position)
            column = columns.get(name)
            if column is None:
                column = columns[name] = Column()
            batch = batches.get(name) or batches.setdefault(name, _Batch(m))
            _fill(batch, column, index, values, base)
    for name, batch in batches.items():
        column = columns[name]
        column.sync(base)
        column.kind.append(batch.kind)
        if batch.num is not None:
            if column.num is None:
                column.num = Growable(np.float64, np.nan)
            column.num.pad(base)
            column.num.append(batch.num)
        if batch.code is not None:
            if column.code is None:
                column.code = Growable(np.int32, -1)
            column.code.pad(base)
            column.code.append(batch.code)
        column.big.update(batch.big)
    counts: dict[int, list[tuple[str, np.ndarray]]] = {}
    for sid, seen in first_seen.items():
        mine = series == sid
        counts[sid] = [
            (name, np.bincount(batches[name].kind[mine], minlength=9))
            for name in sorted(seen, key=seen.__getitem__)
        ]
    return counts
