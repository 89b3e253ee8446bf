"""Records as Parquet, for warehouses: one folder per run (``run=<name>/``, Hive style), typed
columns, big integers exact, written run by run in bounded memory.

DuckDB, Spark and BigQuery read the folder as one table
(``read_parquet('out/**/*.parquet', hive_partitioning=true, hive_types={'run': 'VARCHAR'})``):
the run comes from the folder name (percent-encoded, so ``exp/train`` is ``run=exp%2Ftrain``),
and every file has the same columns. A column's type comes from every selected record (so a
filter does not change it):

- numbers → ``float64`` (``"NaN"``, ``"Infinity"``, ``"-Infinity"`` as the numbers they stand
  for); integers only → ``int64``, or ``decimal128(38, 0)`` when one is beyond int64 (exact),
  or ``string`` of their digits when one has 39 digits or more;
- booleans → ``bool``; strings → ``string``; arrays and objects → ``string`` of compact JSON;
- any other mix → ``string``: strings as they are, anything else as its JSON text.

Needs pyarrow (``pip install "tbkit[parquet]"``).
"""

from __future__ import annotations

import decimal
import functools
import os
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from tbkit.data import events, query
from tbkit.data import logdir as _logdir
from tbkit.data.errors import TbkitValueError
from tbkit.data.metadata import BUILTIN_FIELDS
from tbkit.data.rows import NON_FINITE, Record, flat, strict_json

BATCH = 10_000  #: rows per row group
_INT64 = 2**63
_DECIMAL_LIMIT = 10**38


def _pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet  # noqa: F401
    except ImportError as e:
        raise ImportError('Parquet export needs pyarrow: pip install "tbkit[parquet]"') from e
    return pyarrow


def _kind(value: Any) -> str:
    t = type(value)
    if value is None:
        return "null"
    if t is bool:
        return "bool"
    if t is int:
        if -_INT64 <= value < _INT64:
            return "int"
        return "bigint" if abs(value) < _DECIMAL_LIMIT else "hugeint"
    if t is float or (t is str and value in NON_FINITE):
        return "float"
    if t is str:
        return "str"
    return "json"


def column_type(kinds: set[str]) -> str:
    """The Parquet type of a column whose values are of these kinds (see the module doc)."""
    kinds = kinds - {"null"}
    if not kinds:
        return "string"
    if kinds <= {"int"}:
        return "int64"
    if kinds <= {"int", "bigint"}:
        return "decimal"
    if kinds <= {"int", "bigint", "hugeint", "float"} and "float" in kinds:
        return "float64"
    if kinds == {"bool"}:
        return "bool"
    return "string"


def _convert(value: Any, kind: str) -> Any:
    if value is None:
        return None
    if kind == "float64":
        return NON_FINITE[value] if type(value) is str else float(value)
    if kind == "decimal":
        return decimal.Decimal(value)
    if kind == "string":
        return value if type(value) is str else strict_json(value)
    return value


def schema_of(records: Iterable[Record]) -> tuple[list[str], dict[str, str]]:
    """The field columns of ``records`` in first-seen order, and the type of each."""
    kinds: dict[str, set[str]] = {}
    for record in records:
        for name, value in flat(record).items():
            if name not in BUILTIN_FIELDS:
                kinds.setdefault(name, set()).add(_kind(value))
    return list(kinds), {name: column_type(k) for name, k in kinds.items()}


def _arrow_type(pa: Any, kind: str) -> Any:
    return {"int64": pa.int64(), "float64": pa.float64(), "bool": pa.bool_(),
            "string": pa.string(), "decimal": pa.decimal128(38, 0)}[kind]  # fmt: skip


def run_folder(out: str, run: str) -> str:
    """Where a run's file goes: ``out/run=<percent-encoded name>``."""
    return f"{out.rstrip('/')}/run={urllib.parse.quote(run, safe='')}"


#: (run name, its records): called twice, first ``quiet`` (for the types), then not.
Runs = list[tuple[str, Callable[[bool], Iterator[Record]]]]


def write(target: _logdir.Logdir, runs: Runs, keep: Callable[[dict], bool] | None = None) -> int:
    """Write ``runs`` under ``target``, every file with the same columns and types (taken from
    all their records, so the folder reads as one table anywhere); return how many rows
    ``keep`` let through. ``_SUCCESS`` is written last: a folder without it is not whole."""
    pa = _pyarrow()
    names, types = schema_of(record for _, records in runs for record in records(True))
    builtins = [("tag", pa.string()), ("step", pa.int64()), ("wall_time", pa.float64()),
                ("level", pa.string())]  # fmt: skip
    schema = pa.schema(builtins + [(n, _arrow_type(pa, types[n])) for n in names])
    count = sum(_write_run(pa, target, run, records, schema, types, keep)
                for run, records in runs)  # fmt: skip
    with target.create(f"{target.root.rstrip('/')}/_SUCCESS"):
        pass
    return count


def _write_run(pa: Any, target: _logdir.Logdir, run: str,
               records: Callable[[bool], Iterator[Record]], schema: Any, types: dict[str, str],
               keep: Callable[[dict], bool] | None) -> int:  # fmt: skip
    """One run's file, in row groups of :data:`BATCH`; none for a run with no rows. A failure
    leaves no file (a Parquet footer would make a part look whole)."""
    columns: dict[str, list] = {name: [] for name in schema.names}
    writer, file, count = None, None, 0

    def flush() -> None:
        nonlocal writer, file
        if writer is None:
            file = target.create(f"{run_folder(target.root, run)}/part-0.parquet")
            writer = pa.parquet.ParquetWriter(file, schema)
        writer.write_table(pa.table(columns, schema=schema))
        for values in columns.values():
            values.clear()

    try:
        for record in records(False):
            row = flat(record)
            if keep is not None and not keep(row):
                continue
            for name in schema.names:
                value = row.get(name)
                columns[name].append(value if name in ("tag", "step", "wall_time", "level")
                                     else _convert(value, types[name]))  # fmt: skip
            count += 1
            if len(columns["tag"]) >= BATCH:
                flush()
        if columns["tag"]:
            flush()
    except BaseException:
        if writer is not None:
            writer.close()  # into a file about to be dropped: nothing dangles
            target.discard(file)
        raise
    if writer is not None:
        writer.close()
        file.close()
    return count


def check_output(target: _logdir.Logdir) -> None:
    """Refuse an output folder that already holds files (an export never mixes with another).

    Raises:
        TbkitValueError: it holds files.
    """
    if target.exists_with_files():
        raise TbkitValueError(f"output {target.url!r} is not empty: give a new folder")


def to_parquet(
    logdir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    run: str | None = None,
    tag: str | None = None,
    where: str | None = None,
) -> int:
    """Write a logdir's records (of ``run``, ``tag``, matching ``where`` if given) as Parquet
    under ``out``, a new or empty local folder or fsspec URL; return how many rows it wrote.

    Raises:
        FileNotFoundError, NotADirectoryError, StorageError: as for ``read_records``.
        TbkitValueError: ``out`` already holds files.
        query.QueryError: ``where`` does not parse.
        ImportError: pyarrow is not installed.
    """
    keep = query.parse(where) if where else None
    source = _logdir.Logdir(logdir).check()
    target = _logdir.Logdir(out)
    check_output(target)
    budget = events.Budget(events.DEFAULT_BUDGET)
    runs: Runs = []
    for name, paths in source.runs():
        if run in (None, name):
            scanned = events.scan(name, paths, budget, source=source)
            tags = None if tag is None else [tag]
            runs.append((name, functools.partial(events.run_records, scanned, tags, None)))
    return write(target, runs, keep)
