"""Chart data: one numeric field of a selection as one (x, y) series per (run, tag).

A series holds the finite values as parallel ``x``, ``y`` and row ``ids`` lists (sorted by
x); NaN and ±Infinity are listed apart (``nonfinite``) so that the chart can mark them instead
of dropping them. A series longer than the cap is down-sampled by min/max per x bucket: the
x range is cut into ``points // 2`` equal buckets and each bucket keeps the rows of its
smallest and largest value, so every peak, every dip and the series' own min and max survive,
in at most ``points`` points. Vectorised numpy over the store's columns (call under the lock).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tbkit.data.metadata import BUILTIN_FIELDS
from tbkit_plugin import columns as col
from tbkit_plugin import selection
from tbkit_plugin import store as store_mod

DEFAULT_POINTS = 2000  # about a point per pixel of a wide chart, twice (min and max)
MAX_POINTS = 100_000
X_AXES = ("step", "wall_time")
_NON_FINITE_TEXT = {True: "Infinity", False: "-Infinity"}


def parse_options(args: Any, store: store_mod.Store, sel: selection.Selection
                  ) -> tuple[str, str, int]:  # fmt: skip
    """``(field, x, points)`` from the request, checked against the selection's schema.

    Raises:
        selection.BadParameter: naming ``field``, ``x`` or ``points``.
    """
    field = args.get("field") or ""
    types = {c["name"]: c["type"] for c in store.schema(sel.runs, sel.tags)}
    if field not in types or field in BUILTIN_FIELDS:
        raise selection.BadParameter("field", f"must be a numeric field of the selection "
                                              f"(got {field!r}, not a field of it)")  # fmt: skip
    if types[field] != "number":
        raise selection.BadParameter(
            "field", f"must be a numeric field of the selection (got {field!r}, a "
                     f"{types[field]} field)")  # fmt: skip
    x = args.get("x") or "step"
    if x not in X_AXES:
        raise selection.BadParameter("x", f"must be 'step' or 'wall_time' (got {x!r})")
    points = selection.int_param(args, "points", DEFAULT_POINTS, 2, MAX_POINTS)
    return field, x, points  # type: ignore[return-value]


def series(store: store_mod.Store, rows: np.ndarray, field: str, x_axis: str,
           points: int) -> list[dict[str, Any]]:  # fmt: skip
    """The chart series of ``field`` over the selected ``rows``, in the rows' series order."""
    column = store.column(field)
    if column is None or column.num is None or not len(rows):
        return []
    kinds = column.kind.view()[rows]
    rows = rows[np.isin(kinds, col.NUMERIC)]
    arrays = store.arrays()
    sids = arrays["sid"][rows]
    order = np.unique(sids, return_index=True)
    out = []
    for sid in order[0][np.argsort(order[1])]:  # series in the order their rows come
        mine = rows[sids == sid]
        xs, ys = arrays[x_axis][mine], column.num.view()[mine]
        by_x = np.argsort(xs, kind="stable")
        mine, xs, ys = mine[by_x], xs[by_x], ys[by_x]
        finite = np.isfinite(ys)
        kept = np.flatnonzero(finite)
        odd = np.flatnonzero(~finite)
        total = len(kept)
        if total > points:
            kept = kept[_min_max_buckets(xs[kept], ys[kept], points // 2)]
        if len(odd) > points:
            odd = odd[:points]
        info = store.series[int(sid)]
        out.append({
            "run": store.run_names[info.run], "tag": info.tag,
            "x": xs[kept].tolist(), "y": ys[kept].tolist(), "ids": mine[kept].tolist(),
            "nonfinite": [{"x": x, "value": non_finite_text(v), "id": i} for x, v, i in
                          zip(xs[odd].tolist(), ys[odd].tolist(), mine[odd].tolist(),
                              strict=True)],
            "nonfinite_total": int((~finite).sum()),
            "total": total,
            "downsampled": len(kept) < total or len(odd) < int((~finite).sum()),
        })  # fmt: skip
    return out


def non_finite_text(value: float) -> str:
    """A non-finite number as strict JSON text, as tbkit writes it."""
    return "NaN" if value != value else _NON_FINITE_TEXT[value > 0]


def _min_max_buckets(xs: np.ndarray, ys: np.ndarray, buckets: int) -> np.ndarray:
    """Positions (ascending) of each x bucket's smallest and largest y; ``xs`` sorted."""
    span = xs[-1] - xs[0]
    if span > 0:
        bucket = np.minimum(((xs - xs[0]) / span * buckets).astype(np.int64), buckets - 1)
    else:
        bucket = np.arange(len(xs)) * buckets // len(xs)
    by_value = np.lexsort((ys, bucket))  # by bucket, then value: ends are min and max
    starts = np.flatnonzero(np.r_[True, bucket[by_value][1:] != bucket[by_value][:-1]])
    ends = np.r_[starts[1:], len(by_value)] - 1
    return np.unique(np.concatenate([by_value[starts], by_value[ends]]))
