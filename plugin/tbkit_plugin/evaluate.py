"""The filter language, free-text search and sort order evaluated over the store's columns.

Each function answers for every row at once with numpy, and means exactly what the row-by-row
reference means (:meth:`tbkit.query.Query.__call__` for ``where``, a case-folded substring of
the JSON Lines text for ``search``, :func:`tbkit_plugin.selection.sort_key` for ``sort``);
tests hold them to it. Exactness: integers beyond ±2**53 are compared and sorted as the exact
ints the column keeps aside, and a float literal against the int64 ``step`` by floor/ceil.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import reduce
from typing import Any

import numpy as np

from tbkit.data import query
from tbkit.data.levels import LEVELS, RANK
from tbkit_plugin import columns as col
from tbkit_plugin.store import Store

_TEXTUAL = np.array(col.TEXTUAL, np.uint8)
_NUMERIC = np.array(col.NUMERIC, np.uint8)


@dataclass
class Field:
    """One column as the evaluator reads it (built-ins too); arrays cover every row."""

    kind: np.ndarray
    num: np.ndarray | None = None
    code: np.ndarray | None = None
    texts: list[str] | None = None
    big: dict[int, int] | None = None
    exact: np.ndarray | None = None  # int64 values (the step), compared exactly
    ranked: bool = False  # codes are the sort order (level: debug < info < warning < error)


def field(store: Store, name: str, arrays: dict[str, np.ndarray]) -> Field | None:
    """The column ``name`` of ``store`` (call under its lock), or None if no row has it."""
    n = store.n
    if name in ("run", "tag", "level"):
        texts = {"run": store.run_names, "tag": [s.tag for s in store.series],
                 "level": list(LEVELS)}[name]  # fmt: skip
        code = {"run": arrays["run"], "tag": arrays["sid"], "level": arrays["level"]}[name]
        return Field(np.full(n, col.STR, np.uint8), code=code.astype(np.int32), texts=texts,
                     ranked=name == "level")  # fmt: skip
    if name == "step":
        step = arrays["step"]
        return Field(np.full(n, col.INT, np.uint8), num=step.astype(np.float64), exact=step)
    if name == "wall_time":
        return Field(np.full(n, col.FLOAT, np.uint8), num=arrays["wall_time"])
    column = store.column(name)
    if column is None:
        return None
    return Field(column.kind.view(), None if column.num is None else column.num.view(),
                 None if column.code is None else column.code.view(), column.texts,
                 column.big)  # fmt: skip


def _lookup(f: Field, table: list[bool]) -> np.ndarray:
    """``table[code]`` for rows with a text, False elsewhere (code -1 reads the last entry)."""
    if f.code is None:
        return np.zeros(len(f.kind), np.bool_)
    return np.array([*table, False], np.bool_)[f.code]


def where_mask(store: Store, tree: query.Node, arrays: dict[str, np.ndarray]) -> np.ndarray:
    """The rows the parsed filter ``tree`` matches."""
    n = store.n
    cache: dict[str, Field | None] = {}

    def get(name: str) -> Field | None:
        if name not in cache:
            cache[name] = field(store, name, arrays)
        return cache[name]

    def visit(node: query.Node) -> np.ndarray:
        if isinstance(node, query.Compare):
            f = get(node.field)
            return np.zeros(n, np.bool_) if f is None else _compare(f, node)
        if isinstance(node, query.Contains):
            f = get(node.field)
            return np.zeros(n, np.bool_) if f is None else _contains(f, node.text.casefold())
        if isinstance(node, query.Exists):
            f = get(node.field)
            return np.zeros(n, np.bool_) if f is None else f.kind != col.MISSING
        if isinstance(node, query.Not):
            return ~visit(node.arg)
        parts = [visit(arg) for arg in node.args]
        return reduce(np.logical_or if isinstance(node, query.Or) else np.logical_and, parts)

    return visit(tree)


def _compare(f: Field, node: query.Compare) -> np.ndarray:
    op, lit, cmp = node.op, node.value, query.OPERATORS[node.op]
    if node.field == "level":
        ok = [code for code, name in enumerate(LEVELS)
              if cmp(RANK[name], RANK[lit])]  # fmt: skip
        return np.isin(f.code, ok)
    kind = f.kind
    if lit is None:
        return kind == col.NULL if op == "==" else kind > col.NULL
    if isinstance(lit, bool):
        if f.num is None:
            return np.zeros(len(kind), np.bool_)
        return (kind == col.BOOL) & cmp(f.num, float(lit))
    if isinstance(lit, str):
        table = [cmp(text, lit) for text in f.texts or ()]
        return np.isin(kind, (col.STR, col.NFSTR)) & _lookup(f, table)
    numeric = np.isin(kind, _NUMERIC)
    if f.num is None:
        return np.zeros(len(kind), np.bool_)
    if lit != lit:  # NaN equals only NaN; ordering with NaN is false
        if op not in ("==", "!="):
            return np.zeros(len(kind), np.bool_)
        return numeric & (np.isnan(f.num) == (op == "=="))
    if f.exact is not None:
        return numeric & _compare_int64(f.exact, cmp, op, lit)
    return numeric & _compare_exact(f.num, f.big or {}, cmp, lit)


def _compare_int64(values: np.ndarray, cmp: Any, op: str, lit: Any) -> np.ndarray:
    """``values op lit`` exactly for int64 values and an int or float literal."""
    if isinstance(lit, float) and math.isfinite(lit):
        if lit.is_integer():
            lit = int(lit)
        elif op in ("==", "!="):
            return np.full(len(values), op == "!=")
        elif op in ("<", "<="):
            return values <= math.floor(lit)
        else:
            return values >= math.ceil(lit)
    return cmp(values, lit)  # numpy compares int64 with any Python int exactly


def _compare_exact(num: np.ndarray, big: dict[int, int], cmp: Any, lit: Any) -> np.ndarray:
    """``num op lit`` where ``num`` is float64 (ints up to 2**53 exact) and ``big`` the rest."""
    if isinstance(lit, int) and abs(lit) > col.INT53:
        near = col.to_float(lit)
        out = cmp(num, near)  # right wherever num != near: near is lit's nearest double
        out[num == near] = cmp(near, lit)
    else:
        out = cmp(num, lit)
    for row, value in big.items():
        out[row] = cmp(value, lit)
    return out


def _number_text(value: float, is_int: bool) -> str:
    if is_int:
        return str(int(value))
    return json.dumps(value)  # repr, or NaN / Infinity / -Infinity


def _contains(f: Field, needle: str) -> np.ndarray:
    kind, out = f.kind, np.zeros(len(f.kind), np.bool_)
    if f.texts:
        table = [needle in text.casefold() for text in f.texts]
        out |= np.isin(kind, _TEXTUAL) & _lookup(f, table)
    if f.exact is not None:
        values, inverse = np.unique(f.exact, return_inverse=True)
        return out | np.array([needle in str(v) for v in values.tolist()], np.bool_)[inverse]
    if f.num is None:
        return out
    for k in (col.INT, col.FLOAT):
        rows = np.flatnonzero(kind == k)
        if len(rows):  # distinct bit patterns: -0.0 is not 0.0 here, its text is "-0.0"
            bits, inverse = np.unique(f.num[rows].view(np.int64), return_inverse=True)
            values = bits.view(np.float64).tolist()
            hit = np.array([needle in _number_text(v, k == col.INT) for v in values])
            out[rows] = hit[inverse]
    for row, value in (f.big or {}).items():
        out[row] = needle in str(value)
    bools = kind == col.BOOL
    if bools.any():
        out[bools] = np.where(f.num[bools] == 1.0, needle in "true", needle in "false")
    return out


def search_mask(store: Store, needle: str) -> np.ndarray:
    """Rows whose JSON Lines text, case-folded, holds ``needle`` (already case-folded)."""
    out = np.zeros(store.n, np.bool_)
    if "\n" in needle:
        return out  # a JSON line holds no raw newline
    pattern = needle.encode("utf-8")
    chunks, bases = store.chunks()
    for (buffer, starts), base in zip(chunks, bases.tolist(), strict=True):
        if buffer.isascii():
            hay = buffer.lower()  # casefold() of ASCII text, same offsets
        else:
            hay = buffer.decode("utf-8").casefold().encode("utf-8")
            ends = np.flatnonzero(np.frombuffer(hay, np.uint8) == 10) + 1
            starts = np.concatenate([[0], ends, [len(hay) + 1]])
        hits, find = [], hay.find
        pos = find(pattern)
        while pos >= 0:
            hits.append(pos)
            end = find(b"\n", pos)
            if end < 0:
                break
            pos = find(pattern, end + 1)
        if hits:
            out[np.searchsorted(starts, hits, side="right") - 1 + base] = True
    return out


def _dense_rank(keys: list[Any]) -> np.ndarray:
    """Each key's rank among the distinct keys (equal keys, equal ranks)."""
    rank = {key: r for r, key in enumerate(sorted(set(keys)))}
    return np.fromiter(map(rank.__getitem__, keys), np.float64, len(keys))


def sort_rows(store: Store, rows: np.ndarray, name: str, descending: bool,
              arrays: dict[str, np.ndarray]) -> np.ndarray:  # fmt: skip
    """``rows`` stably sorted by column ``name``: numbers < NaN < strings < bools < arrays and
    objects (reversed when ``descending``), rows without a value last in either order; ``level``
    by severity (debug < info < warning < error), not alphabetically."""
    f = field(store, name, arrays)
    if f is None:
        return rows
    kind = f.kind[rows]
    present = kind > col.NULL
    rows, absent, kind = rows[present], rows[~present], kind[present]
    cls = np.full(len(rows), 4, np.uint8)  # arrays and objects
    key = np.zeros(len(rows))
    if f.exact is not None:
        key_exact = f.exact[rows]
        order = np.argsort(key_exact[::-1] if descending else key_exact, kind="stable")
    else:
        num = f.num[rows] if f.num is not None else np.full(len(rows), np.nan)
        numeric = np.isin(kind, _NUMERIC)
        nan = numeric & np.isnan(num)
        cls[numeric] = np.where(nan[numeric], 1, 0)
        key[numeric & ~nan] = num[numeric & ~nan]
        big = f.big or {}
        if big and (numbered := np.flatnonzero(numeric & ~nan)).size:
            picked = rows[numbered].tolist()
            if not big.keys().isdisjoint(picked):
                values = [big.get(r, v) for r, v in zip(picked, num[numbered].tolist(),
                                                        strict=True)]  # fmt: skip
                key[numbered] = _dense_rank(values)
        strings = kind == col.STR
        cls[strings] = 2
        if strings.any():
            codes = f.code[rows[strings]]
            key[strings] = codes if f.ranked else _dense_rank(f.texts)[codes]
        bools = kind == col.BOOL
        cls[bools] = 3
        key[bools] = num[bools]
        others = np.isin(kind, (col.ARRAY, col.OBJECT))
        if others.any():
            codes = f.code[rows[others]]
            used, inverse = np.unique(codes, return_inverse=True)
            sort_texts = [json.dumps(json.loads(f.texts[c]), sort_keys=True) for c in used.tolist()]
            key[others] = _dense_rank(sort_texts)[inverse]
        if descending:
            order = np.lexsort((key[::-1], cls[::-1]))
        else:
            order = np.lexsort((key, cls))
    if descending:  # sort the reversed rows, then reverse back: ties keep their first order
        order = (len(rows) - 1 - order)[::-1]
    return np.concatenate([rows[order], absent])
