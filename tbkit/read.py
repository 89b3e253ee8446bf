"""Event files → tbkit records, without TensorFlow.

Runs are found and named as TensorBoard does. Reading is layered like TensorBoard's
``event_file_loader``: bytes → TFRecord frames → ``Event`` protos → :class:`Record` tuples.
Damage is survived, never hidden: a truncated last record (a file still being written) ends
that file quietly; a record failing its data checksum is skipped with a warning naming file
and byte offset; after a bad length checksum (warned too) the reader scans forward to the next
intact record. A run is buffered before it is yielded because TensorBoard keeps one value per
(tag, step): a datum at the same or a smaller step than the last one of its tag pre-empts every
earlier datum of that tag at that step or later (a resumed run).
"""

from __future__ import annotations

import heapq
import itertools
import json
import math
import os
import struct
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, BinaryIO, NamedTuple

import google_crc32c
from google.protobuf.message import DecodeError
from tensorboard.compat.proto import event_pb2, types_pb2

from tbkit import metadata
from tbkit.errors import DataLossWarning, TbkitTypeError, expected
from tbkit.levels import LEVELS

if TYPE_CHECKING:
    import pandas

_HEADER = struct.Struct("<QI")  # data length, its masked CRC; then data, its masked CRC
_NON_FINITE = frozenset({"NaN", "Infinity", "-Infinity"})
NOT_OURS = -1  # schema version of a tag that belongs to another plugin


def _warn(message: str) -> None:
    warnings.warn(f"tbkit: {message}", DataLossWarning, stacklevel=3)


class Record(NamedTuple):
    """One record object: where and when it was written, its level and its fields."""

    run: str
    tag: str
    step: int
    wall_time: float
    level: str
    fields: dict


def _masked_crc(data: bytes) -> int:
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _frame_at(f: BinaryIO, offset: int, size: int) -> tuple[str, bytes]:
    """Read the TFRecord at ``offset``: ``("ok", data)``, ``("data", data)`` when the data
    checksum fails, ``("length", b"")`` when the length checksum fails, or ``("end", b"")``
    at the end of the file or a truncated last record (a file still being written)."""
    f.seek(offset)
    header = f.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return "end", b""
    length, length_crc = _HEADER.unpack(header)
    if _masked_crc(header[:8]) != length_crc:
        return "length", b""
    if offset + _HEADER.size + length + 4 > size:
        return "end", b""  # never read a length past the end of the file
    data, footer = f.read(length), f.read(4)  # (short only if the file shrank under us)
    return ("ok" if _masked_crc(data) == int.from_bytes(footer, "little") else "data"), data


_BLOCK = 1 << 20  # bytes read at once by the fast path of iter_frames


def _intact_frames(f: BinaryIO, offset: int, size: int) -> Iterator[tuple[int, bytes]]:
    """The fast path of :func:`iter_frames`: read big blocks, check both checksums per frame,
    and stop (for the careful path to take over) at the first frame that is not intact."""
    buffer, base = b"", offset  # buffer holds the file's bytes from offset base on
    header_size, unpack = _HEADER.size, _HEADER.unpack_from
    while offset + header_size <= size:
        at = offset - base
        if at + header_size > len(buffer):
            f.seek(offset)
            buffer, base, at = f.read(max(_BLOCK, header_size)), offset, 0
            if len(buffer) < header_size:
                return
        length, length_crc = unpack(buffer, at)
        if _masked_crc(buffer[at : at + 8]) != length_crc:
            return
        end = offset + header_size + length + 4
        if end > size:
            return
        if end - base > len(buffer):
            f.seek(offset)
            buffer, base, at = f.read(max(_BLOCK, end - offset)), offset, 0
            if len(buffer) < end - offset:
                return
        data = buffer[at + header_size : at + header_size + length]
        footer = buffer[at + header_size + length : at + header_size + length + 4]
        if _masked_crc(data) != int.from_bytes(footer, "little"):
            return
        yield offset, data
        offset = end


def iter_frames(path: str, start: int = 0) -> Iterator[tuple[int, bytes]]:
    """Yield ``(byte offset, data)`` of every intact TFRecord in the file at ``path`` from byte
    ``start`` on (a record boundary; the plugin resumes where its last read ended)."""
    try:
        f = open(path, "rb")
    except OSError as e:
        _warn(f"skipped event file {path}: {e}")
        return
    with f:
        offset, size = start, os.fstat(f.fileno()).st_size
        for frame_offset, data in _intact_frames(f, start, size):
            yield frame_offset, data
            offset = frame_offset + _HEADER.size + len(data) + 4  # where the careful path goes on
        while (status := _frame_at(f, offset, size))[0] != "end":
            kind, data = status
            if kind == "length":  # scan for the next offset where both checksums hold
                _warn(f"corrupt record length in {path} at byte offset {offset}; "
                      "skipping to the next intact record.")  # fmt: skip
                offset += 1
                while _frame_at(f, offset, size)[0] in ("length", "data"):
                    offset += 1
                continue
            if kind == "ok":
                yield offset, data
            else:
                _warn(f"skipped a corrupt record (data checksum mismatch) in {path} "
                      f"at byte offset {offset}.")  # fmt: skip
            offset += _HEADER.size + len(data) + 4


def _events(path: str) -> Iterator[event_pb2.Event]:
    """Yield the ``Event`` protos of one event file."""
    for offset, data in iter_frames(path):
        try:
            yield event_pb2.Event.FromString(data)
        except DecodeError:
            _warn(f"skipped a record that is not an Event in {path} at byte offset {offset}.")


def schema_version_of(run: str, tag: str, meta: Any) -> int:
    """The tbkit schema version a tag's metadata declares, or ``NOT_OURS``."""
    if meta.plugin_data.plugin_name != metadata.PLUGIN_NAME:
        return NOT_OURS
    try:
        version = metadata.parse_plugin_content(meta.plugin_data.content)
    except ValueError as e:
        _warn(f"skipping run {run!r} tag {tag!r}: {e}.")
        return NOT_OURS
    if version > metadata.SCHEMA_VERSION:
        _warn(
            f"skipping run {run!r} tag {tag!r}: its records have schema version {version}, "
            f"newer than version {metadata.SCHEMA_VERSION} that this tbkit reads; upgrade tbkit."
        )
        return NOT_OURS
    return version


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not strict JSON")


_STRICT_JSON = json.JSONDecoder(parse_constant=_reject_constant)


def decode_datum(run: str, tag: str, step: int, wall_time: float, tensor: Any, bad: Counter):
    """Yield one datum's records; warn only about a tag's first object that does not parse."""
    for raw in tensor.string_val:
        try:
            fields = _STRICT_JSON.decode(raw.decode("utf-8"))
            if not isinstance(fields, dict):
                raise ValueError(f"not a JSON object: {raw[:80]!r}")
            level = fields.pop("level", None)
            if level not in LEVELS:
                raise ValueError(f"'level' is {level!r}, not one of {LEVELS}")
        except ValueError as e:  # includes JSONDecodeError and UnicodeDecodeError
            bad[tag] += 1
            if bad[tag] == 1:
                _warn(f"skipped an object that does not parse in run {run!r} tag {tag!r} "
                      f"step {step}: {e}")  # fmt: skip
            continue
        yield Record(run, tag, step, wall_time, level, fields)


def _run_records(run: str, paths: list[str], tag: str | None) -> Iterator[Record]:
    """Yield a run's records in write order, after pre-emption per tag.

    A tag is tbkit's if the first metadata the run has for it says so. (TensorBoard takes the
    first value's; TensorFlow repeats it in each event, so a tag whose first event was lost to
    corruption is still read.) String data seen before any metadata wait for the decision."""
    versions: dict[str, int] = {}
    series: dict[str, list[tuple[int, int, float, str, Any]]] = {}
    seq = 0
    for path in paths:
        for event in _events(path):
            for value in event.summary.value:
                if tag is not None and value.tag != tag:
                    continue
                if value.tag not in versions and value.metadata.plugin_data.plugin_name:
                    versions[value.tag] = schema_version_of(run, value.tag, value.metadata)
                if versions.get(value.tag) == NOT_OURS:
                    series.pop(value.tag, None)
                    continue
                if value.tensor.dtype != types_pb2.DT_STRING:
                    continue  # not record data (or not yet known to be tbkit's)
                data = series.setdefault(value.tag, [])
                while data and data[-1][1] >= event.step:
                    data.pop()  # pre-empted by a resumed run
                data.append((seq, event.step, event.wall_time, value.tag, value.tensor))
                seq += 1
    bad: Counter = Counter()
    decided = [data for name, data in series.items() if name in versions]
    for _, step, wall_time, name, tensor in heapq.merge(*decided):  # seq is unique
        yield from decode_datum(run, name, step, wall_time, tensor, bad)
    for name, count in bad.items():
        if count > 1:
            _warn(f"skipped {count} objects that do not parse in run {run!r} tag {name!r}.")


def _check_filters(run: Any, tag: Any) -> None:
    for arg, value in (("run", run), ("tag", tag)):
        if value is not None and not isinstance(value, str):
            raise TbkitTypeError(expected(arg, "a str or None", value))


def run_files(logdir: str) -> list[tuple[str, list[str]]]:
    """The runs under ``logdir`` as sorted ``(name, sorted event file paths)`` pairs."""
    runs, seen = [], set()
    for dirpath, dirnames, filenames in os.walk(logdir, followlinks=True):
        stat = os.stat(dirpath)  # a directory reached twice (symlinks) is read once
        if (key := (stat.st_dev, stat.st_ino)) in seen:
            dirnames.clear()
            continue
        seen.add(key)
        dirnames.sort()
        names = sorted(name for name in filenames if "tfevents" in name)
        if names:
            run = os.path.relpath(dirpath, logdir).replace(os.sep, "/")
            runs.append((run, [os.path.join(dirpath, name) for name in names]))
    return sorted(runs)


def read_records(
    logdir: str | os.PathLike[str], run: str | None = None, tag: str | None = None
) -> Iterator[Record]:
    """Read every tbkit record under ``logdir``; no TensorFlow needed.

    Args:
        logdir: the directory TensorBoard would be pointed at.
        run: only this run (exact name, e.g. ``"train"`` or ``"."``), or every run.
        tag: only this tag (exact), or every tag.

    Returns:
        An iterator of :class:`Record`: runs in sorted order, each run's records in the order
        they were written, after pre-emption by resumed runs.

    Raises:
        FileNotFoundError: ``logdir`` does not exist.
        NotADirectoryError: ``logdir`` is not a directory.
        TbkitTypeError: ``run`` or ``tag`` is neither a str nor None.
    """
    _check_filters(run, tag)
    root = os.fspath(logdir)
    if not os.path.isdir(root):
        if os.path.exists(root):
            raise NotADirectoryError(f"tbkit: logdir {root!r} is not a directory.")
        raise FileNotFoundError(f"tbkit: logdir {root!r} does not exist.")
    runs = (
        _run_records(name, paths, tag) for name, paths in run_files(root) if run in (None, name)
    )
    return itertools.chain.from_iterable(runs)


def _flatten(fields: dict, prefix: str, row: dict) -> None:
    for key, value in fields.items():
        if isinstance(value, dict) and value:
            _flatten(value, f"{prefix}{key}.", row)
        else:
            row[prefix + key] = value


def _is_number_like(value: Any) -> bool:
    return value in _NON_FINITE if isinstance(value, str) else type(value) in (int, float)


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
    if isinstance(source, str | os.PathLike):
        records: Iterable[Record] = read_records(source, run=run, tag=tag)
    else:
        _check_filters(run, tag)
        records = (r for r in source if run in (None, r.run) and tag in (None, r.tag))
    columns = dict.fromkeys(Record._fields[:5])
    rows = []
    for r in records:
        row = dict(zip(Record._fields[:5], r[:5], strict=True))
        _flatten(r.fields, "", row)
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
