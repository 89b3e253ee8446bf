"""Group and compare: a selection's records grouped by run, tag or a string field, with count,
mean, min, max and last of each numeric field.

Over every matching record, not a page: vectorised numpy over the store's columns (call under
the lock). NaN and ±Infinity are left out of mean, min and max and counted apart
(``nonfinite``); ``last`` is the value at the highest step (ties: the latest wall time, then
the last read), whatever it is, so a run that ended in NaN says so.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tbkit.data.metadata import BUILTIN_FIELDS
from tbkit_plugin import charts, selection
from tbkit_plugin import columns as col
from tbkit_plugin import store as store_mod

GROUP_BUILTINS = ("run", "tag")


def parse_by(args: Any, store: store_mod.Store, sel: selection.Selection) -> str:
    """The ``by`` parameter: ``run``, ``tag`` or a string field of the selection.

    Raises:
        selection.BadParameter: naming ``by``.
    """
    by = args.get("by") or "run"
    if by in GROUP_BUILTINS:
        return by
    types = {c["name"]: c["type"] for c in store.schema(sel.runs, sel.tags)}
    if by in BUILTIN_FIELDS or types.get(by) != "string":
        got = "not a field of it" if by not in types else f"a {types[by]} field"
        raise selection.BadParameter("by", f"must be 'run', 'tag' or a string field of the "
                                           f"selection (got {by!r}, {got})")  # fmt: skip
    return by


def _keys(store: store_mod.Store, rows: np.ndarray, by: str) -> tuple[list[Any], np.ndarray]:
    """The distinct group keys (sorted; None, a record without the field, last) and each
    row's position among them."""
    arrays = store.arrays()
    if by == "run":
        names: list[Any] = list(store.run_names)
        codes = arrays["run"][rows]
    elif by == "tag":
        names = sorted({s.tag for s in store.series})
        tag_code = np.array([names.index(s.tag) for s in store.series] or [0], np.int64)
        codes = tag_code[arrays["sid"][rows]]
    else:
        column = store.column(by)
        assert column is not None and column.code is not None  # parse_by: a string field
        names = [*column.texts, None]
        kinds = column.kind.view()[rows]
        texts = np.isin(kinds, (col.STR, col.NFSTR))  # a "NaN" in a string field is text
        codes = np.where(texts, column.code.view()[rows], len(names) - 1)
    present, inverse = np.unique(codes, return_inverse=True)
    keys = [names[i] for i in present.tolist()]
    order = sorted(range(len(keys)), key=lambda i: (keys[i] is None, str(keys[i])))
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    return [keys[i] for i in order], rank[inverse]


def summarise(store: store_mod.Store, sel: selection.Selection, rows: np.ndarray, by: str
              ) -> dict[str, Any]:  # fmt: skip
    """Per group of ``rows`` (those ``sel`` matches): its key, record count and the figures of
    each numeric field of the selection's schema."""
    arrays = store.arrays()
    keys, group = _keys(store, rows, by)
    n = len(keys)
    counts = np.bincount(group, minlength=n)
    fields = [c["name"] for c in store.schema(sel.runs, sel.tags)
              if c["type"] == "number" and c["name"] not in BUILTIN_FIELDS]  # fmt: skip
    out = [{"key": key, "count": int(counts[i]), "fields": {}} for i, key in enumerate(keys)]
    step, wall = arrays["step"][rows], arrays["wall_time"][rows]
    # One sort for every field: by group, then step, wall time and read order; a field's last
    # value is then the last of its group among the rows holding it.
    latest = np.lexsort((np.arange(len(rows)), wall, step, group))
    for name in fields:
        column = store.column(name)
        if column is None or column.num is None:
            continue
        numeric = np.isin(column.kind.view()[rows], col.NUMERIC)
        values = column.num.view()[rows]
        finite = numeric & np.isfinite(values)
        g, v = group[finite], values[finite]
        present = np.bincount(group[numeric], minlength=n)
        kept = np.bincount(g, minlength=n)
        total = np.bincount(g, weights=v, minlength=n)
        low, high = np.full(n, np.inf), np.full(n, -np.inf)
        np.minimum.at(low, g, v)
        np.maximum.at(high, g, v)
        picks = latest[numeric[latest]]
        ends = picks[np.r_[group[picks][1:] != group[picks][:-1], True]]
        last = dict(zip(group[ends].tolist(), ends.tolist(), strict=True))
        for i in np.flatnonzero(present).tolist():
            k = int(kept[i])
            at = last[i]
            out[i]["fields"][name] = {
                "count": int(present[i]), "nonfinite": int(present[i]) - k,
                "mean": float(total[i] / k) if k else None,
                "min": float(low[i]) if k else None, "max": float(high[i]) if k else None,
                "last": _number(float(values[at])), "last_step": int(step[at]),
            }  # fmt: skip
    return {"by": by, "fields": fields, "groups": out}


def _number(value: float) -> float | str:
    """A float as strict JSON: non-finite ones as tbkit's strings ("NaN", "Infinity")."""
    return value if np.isfinite(value) else charts.non_finite_text(value)
