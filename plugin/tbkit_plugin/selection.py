"""Request parameters → a validated selection of records: filter, sort, page, export.

Pure (no werkzeug, no TensorBoard app): :func:`parse` takes the query string as a
``MultiDict``-like object (``get``, ``getlist``) and raises ``tensorboard.errors`` with the
parameter named, which the routes turn into 400/404 answers.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from tensorboard import errors

from tbkit.data import query, rows
from tbkit.data.levels import LEVELS, RANK
from tbkit_plugin import evaluate
from tbkit_plugin import store as store_mod

MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
_INT53 = 2**53


class BadParameter(errors.InvalidArgumentError):
    """A 400 naming the parameter; for ``where``, also the parser's message and position."""

    def __init__(self, parameter: str, message: str, position: int | None = None):
        super().__init__(f"{parameter!r}: {message}")
        self.parameter, self.message, self.position = parameter, message, position


class UnknownName(errors.NotFoundError):
    """A 404 naming the unknown run or tag."""

    def __init__(self, parameter: str, name: str):
        super().__init__(f"unknown {parameter} {name!r}")
        self.parameter, self.message, self.position = parameter, f"unknown {parameter}", None


@dataclass(frozen=True)
class Selection:
    runs: tuple[str, ...]
    tags: frozenset[str] | None
    levels: frozenset[str] | None
    step_min: int | None
    step_max: int | None
    search: str | None  # case-folded
    where: query.Query | None
    sort: str | None
    descending: bool
    limit: int
    offset: int


def _int(args: Any, name: str, default: int | None, low: int | None = None,
         high: int | None = None) -> int | None:  # fmt: skip
    text = args.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise BadParameter(name, f"must be an integer (got {text!r})") from None
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"from {low} to {high}" if high is not None else f"at least {low}"
        raise BadParameter(name, f"must be an integer {bounds} (got {text!r})")
    return value


int_param = _int  # an optional integer parameter within bounds, BadParameter naming it


def parse(args: Any, store: store_mod.Store) -> Selection:
    """Validate the filters in ``args`` against the (already refreshed) ``store``.

    Raises:
        UnknownName: a run or tag that holds no tbkit records (404).
        BadParameter: any other bad parameter (400).
    """
    known_runs = store.runs()
    runs = tuple(sorted(set(args.getlist("run")))) or tuple(known_runs)  # name order, as the CLI
    for run in runs:
        if run not in known_runs:
            raise UnknownName("run", run)
    tags = frozenset(args.getlist("tag")) or None
    for tag in sorted(tags or ()):
        if not any(tag in known_runs[run] for run in runs):
            raise UnknownName("tag", tag)
    levels = frozenset(args.getlist("level")) or None
    for level in sorted(levels or ()):
        if level not in LEVELS:
            raise BadParameter("level", f"must be one of {', '.join(LEVELS)} (got {level!r})")
    columns = {c["name"] for c in store.schema(runs, tags)}
    where = None
    if (text := args.get("where", "")).strip():
        try:
            where = query.parse(text)
            where.check(columns)
        except query.QueryError as e:
            raise BadParameter("where", e.message, e.position) from None
    sort = args.get("sort") or None
    if sort is not None and sort not in columns:
        raise BadParameter("sort", f"unknown column {sort!r}")
    order = args.get("order", "asc") or "asc"
    if order not in ("asc", "desc"):
        raise BadParameter("order", f"must be 'asc' or 'desc' (got {order!r})")
    search = args.get("search", "")
    return Selection(
        runs=runs, tags=tags, levels=levels,
        step_min=_int(args, "step_min", None), step_max=_int(args, "step_max", None),
        search=search.casefold() if search else None, where=where,
        sort=sort, descending=order == "desc",
        limit=_int(args, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT),  # type: ignore[arg-type]
        offset=_int(args, "offset", 0, 0),  # type: ignore[arg-type]
    )  # fmt: skip


def matching(store: store_mod.Store, sel: Selection) -> np.ndarray:
    """The ids of every row the selection matches, in order (call under ``store.lock``).

    The default order (and the order of ties) is the runs in name order, each run's
    records in write order.
    """
    store.queries += 1
    arrays = store.arrays()
    mask = arrays["alive"] & np.isin(arrays["sid"], store.series_of(sel.runs, sel.tags))
    if sel.levels is not None:
        mask &= np.isin(arrays["level"], [LEVELS.index(level) for level in sel.levels])
    if sel.step_min is not None:
        mask &= arrays["step"] >= sel.step_min
    if sel.step_max is not None:
        mask &= arrays["step"] <= sel.step_max
    if sel.where is not None:
        mask &= evaluate.where_mask(store, sel.where.tree, arrays)
    if sel.search is not None:
        mask &= evaluate.search_mask(store, sel.search)
    order = _write_order(store, sel.runs, arrays)
    rows = order[mask[order]]
    if sel.sort is not None:
        rows = evaluate.sort_rows(store, rows, sel.sort, sel.descending, arrays)
    return rows


def _write_order(store: store_mod.Store, runs: tuple[str, ...], arrays: dict) -> np.ndarray:
    """Every row id ordered by (position of its run in ``runs``, write order); cached."""
    key = (store.generation, runs)
    cached = store.order_cache
    if cached is not None and cached[0] == key:
        return cached[1]
    rank = np.full(len(store.run_names) + 1, len(runs), np.int64)
    for position, name in enumerate(runs):
        rank[store.run_names.index(name)] = position
    order = np.lexsort((arrays["seq"], rank[arrays["run"]]))
    store.order_cache = (key, order)
    return order


def sort_key(value: Any, column: str = "") -> tuple:
    """The reference sort key of a value of ``column``: numbers (with "NaN"-like strings) < NaN
    < strings < bools < arrays and objects; the ``level`` column by severity (debug < info <
    warning < error). :func:`tbkit_plugin.evaluate.sort_rows` sorts as a stable sort on it does,
    rows without a value last."""
    if column == "level":
        return (2, RANK[value])
    if isinstance(value, str) and value in rows.NON_FINITE:
        value = rows.NON_FINITE[value]
    if isinstance(value, bool):
        return (3, value)
    if isinstance(value, int | float):
        return (1, 0) if value != value else (0, value)
    if isinstance(value, str):
        return (2, value)
    return (4, json.dumps(value, sort_keys=True))


def browser_safe(value: Any) -> Any:
    """Integers beyond 2**53 as strings (a JavaScript number would lose digits), recursively."""
    if type(value) is int:
        return str(value) if abs(value) > _INT53 else value
    if isinstance(value, list):
        return [browser_safe(v) for v in value]
    if isinstance(value, dict):
        return {k: browser_safe(v) for k, v in value.items()}
    return value


EXPORT_BATCH = 5000  # rows read per step of an export


def export_jsonl(store: store_mod.Store, ids: np.ndarray) -> Iterator[bytes]:
    """The rows' JSON lines (:func:`tbkit.data.rows.json_line`), in batches."""
    for i in range(0, len(ids), EXPORT_BATCH):
        yield b"".join(line + b"\n" for line in store.lines(ids[i : i + EXPORT_BATCH]))


def export_csv(store: store_mod.Store, ids: np.ndarray, columns: list[str]) -> Iterator[bytes]:
    """CSV with a header row, in tbkit's one dialect and cell format (:mod:`tbkit.data.rows`)."""
    buffer = io.StringIO(newline="")
    writer = rows.csv_writer(buffer)

    def flush() -> bytes:
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text.encode("utf-8")

    writer.writerow([rows.text_cell(name) for name in columns])
    yield flush()
    for i in range(0, len(ids), EXPORT_BATCH):
        for row in store.flat_rows(ids[i : i + EXPORT_BATCH]):
            writer.writerow([rows.cell(row.get(c)) for c in columns])
        yield flush()
