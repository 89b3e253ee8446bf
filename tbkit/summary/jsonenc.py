"""Strict JSON (RFC 8259) text for records, in pure Python and numpy (no TensorFlow).

A record (dataclass instance, namedtuple or Mapping, possibly nested) becomes one JSON object
whose fields keep their declaration or insertion order, followed by ``"level"``. A nested
record becomes a nested JSON object; readers flatten nested objects to dotted names
(``opt.lr``). :func:`walk` is shared with the in-graph encoder (:mod:`tbkit.summary.records`), which
hands it its own leaf function, so both encoders walk, check and word errors the same way.

Leaf encodings (the in-graph encoder produces the same text for every float bit pattern, see
:mod:`tbkit.summary.records`):

* ``None`` → ``null``; bools → ``true``/``false``; ints → digits (Python ints must fit int64).
* Python floats → ``repr`` (the shortest text that round-trips). numpy/tensor float32 (and
  float16/bfloat16, widened to float32) → ``'%.9g'``; float64 → ``'%.17g'``, except float64
  subnormals, written exactly rounded as ``<int>e-324``. Text that would read as an integer
  gets ``.0`` so every float parses back as a float, ``-0.0`` included. NaN, +Inf, -Inf →
  the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"`` (the protobuf JSON mapping).
* str and bytes are UTF-8 text of at most :data:`MAX_STRING_BYTES` bytes (longer ones are
  refused, never truncated). Invalid UTF-8 (and lone surrogates in a str) become U+FFFD.
  Escapes: ``\\"``, ``\\\\``, ``\\b \\f \\n \\r \\t`` and ``\\u00XX`` for other control
  characters; every other character is kept as is.
* Rank-1 arrays and lists of scalars → JSON arrays of at most :data:`MAX_ARRAY_LENGTH`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import struct
from collections.abc import Callable, Mapping
from fractions import Fraction
from typing import Any

import numpy as np

from tbkit.data import markers, metadata
from tbkit.data.errors import TbkitTypeError, TbkitValueError, got
from tbkit.data.levels import LEVELS, level_index

#: The longest string field, in UTF-8 bytes. Longer strings are refused, not truncated.
MAX_STRING_BYTES = 16384
#: The most elements a rank-1 field may hold.
MAX_ARRAY_LENGTH = 1024
#: The deepest nesting of records inside a record (deeper is almost surely a cycle).
MAX_DEPTH = 16

#: Element types a field may hold, as TensorFlow and numpy name them.
SUPPORTED_DTYPES = (
    "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float16", "bfloat16", "float32", "float64", "string",
)  # fmt: skip

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_NON_FINITE = {"nan": '"NaN"', "inf": '"Infinity"', "-inf": '"-Infinity"'}
_SCALARS = (type(None), bool, int, float, str, bytes, np.generic)


def describe(tag: str | None, path: str | None = None, quote: bool = True) -> str:
    """How messages name a record or a field: ``record 'train' field 'opt.lr'``; unquoted for
    in-graph assertions, whose text TensorFlow prints C-escaped (``\\'``)."""
    name = repr if quote else str
    head = "record" if tag is None else f"record {name(tag)}"
    return head if path is None else f"{head} field {name(path)}"


def is_record(value: Any) -> bool:
    """Whether ``value`` is walked as a nested record (dataclass instance, namedtuple, Mapping)."""
    return (
        isinstance(value, Mapping)
        or (dataclasses.is_dataclass(value) and not isinstance(value, type))
        or (isinstance(value, tuple) and hasattr(type(value), "_fields"))
    )


def _items(value: Any, tag: str | None, path: str | None) -> list[tuple[str, Any]]:
    if isinstance(value, Mapping):
        for key in value:
            if not isinstance(key, str):
                raise TbkitTypeError(f"{describe(tag, path)} keys must be str ({got(key)}).")
        return list(value.items())
    if isinstance(value, tuple):
        return list(zip(value._fields, value, strict=True))
    return [(f.name, getattr(value, f.name)) for f in dataclasses.fields(value)]


def field_names(value: Any) -> list[str]:
    """The top-level field names of a record (one :func:`walk` has accepted)."""
    return [name for name, _ in _items(value, None, None)]


def walk(
    value: Any, tag: str | None, level: str, leaf: Callable[[str | None, str, Any], Any]
) -> list[Any]:
    """Walk a record into pieces of JSON text; adjacent text pieces are merged.

    Args:
        value: a dataclass instance, namedtuple or Mapping.
        tag: the record's name, for messages (None when there is none).
        level: the level name, written as the last field.
        leaf: called as ``leaf(tag, path, value)`` for every field that is not a record, with
            its dotted ``path`` (``opt.lr``); returns JSON text (a str) or any other object,
            which stays in the pieces as a placeholder.

    Returns:
        The JSON object as a list of str pieces and ``leaf`` placeholders.

    Raises:
        TbkitTypeError: ``value`` is not a record, or a key is not a str.
        TbkitValueError: a top-level field name is reserved, or records nest too deep.
    """
    if not is_record(value):
        raise TbkitTypeError(
            f"{describe(tag)} must be a dataclass instance, a namedtuple or a Mapping "
            f"({got(value)})."
        )
    pieces: list[Any] = []

    def emit(piece: Any) -> None:
        if isinstance(piece, str) and pieces and isinstance(pieces[-1], str):
            pieces[-1] += piece
        else:
            pieces.append(piece)

    def visit(record: Any, path: str | None, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise TbkitValueError(
                f"{describe(tag, path)} nests records deeper than {MAX_DEPTH} levels "
                "(MAX_DEPTH); does a record contain itself?"
            )
        emit("{")
        items = _items(record, tag, path)
        for i, (name, field) in enumerate(items):
            full = name if path is None else f"{path}.{name}"
            if path is None and name in metadata.RESERVED_FIELDS:
                reserved = ", ".join(repr(n) for n in sorted(metadata.RESERVED_FIELDS))
                raise TbkitValueError(
                    f"{describe(tag, name)} is reserved: record fields may not be named {reserved}."
                )
            if name == markers.KEY:
                raise TbkitValueError(
                    f"{describe(tag, full)} is reserved at every depth: {markers.KEY!r} marks a "
                    "value over a cap (see tbkit.data.markers)."
                )
            emit(("," if i else "") + _str_text(describe(tag, full), name) + ":")
            if is_record(field):
                visit(field, full, depth + 1)
            else:
                emit(leaf(tag, full, field))
        if path is None:  # the top level ends with the level
            emit(("," if items else "") + f'"level":{json.dumps(level)}')
        emit("}")

    visit(value, None, 1)
    return pieces


def encode_py(value: Any, level: str, *, tag: str | None = None) -> str:
    """Encode a record as one strict-JSON object, in pure Python and numpy.

    The reference twin of ``RecordTemplate.encode``: both give the same text, float subnormals
    included. Tensor-like fields (eager tensors, variables: ``__array__``) are read by numpy.

    Args:
        value: a dataclass instance, namedtuple or Mapping of supported leaves.
        level: the level name (any case), written last as ``"level"``.
        tag: the record's name, used only in error messages.

    Returns:
        The JSON object text.

    Raises:
        TbkitTypeError: a field has an unsupported type, dtype or rank.
        TbkitValueError: a reserved field name, a too-long string or array, a too-big int, an
            unknown level.
    """
    return "".join(walk(value, tag, LEVELS[level_index(level)], encode_leaf))


def _tensor_like(value: Any) -> bool:
    return hasattr(value, "__array__") and not isinstance(value, np.ndarray | np.generic)


def encode_leaf(tag: str | None, path: str, value: Any) -> str:
    """The JSON text of one field that is not a record (scalar, array or list).

    Raises:
        TbkitTypeError, TbkitValueError: as :func:`encode_py`.
    """
    where = describe(tag, path)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | bytes):  # np.str_ too: numpy would drop trailing NULs
        return _str_text(where, value)
    if isinstance(value, np.ndarray | np.generic):
        return _array_text(where, value)
    if _tensor_like(value):  # a run-time value, as a tensor is in the graph
        return _array_text(where, np.asarray(value), runtime=True)
    if isinstance(value, int):
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise TbkitValueError(f"{where} must be an int that fits int64 ({got(value)}).")
        return str(int(value))  # int(): an IntEnum prints its name on Python 3.10
    if isinstance(value, float):
        return repr(float(value)) if math.isfinite(value) else _NON_FINITE[str(float(value))]
    if isinstance(value, list | tuple):
        if any(_tensor_like(item) for item in value):  # as tf.stack does in the graph
            dtype = np.asarray(next(v for v in value if _tensor_like(v))).dtype
            try:
                stacked = np.asarray([np.asarray(v) for v in value], dtype)
            except (TypeError, ValueError) as e:
                raise TbkitTypeError(
                    f"{where} must be a list that tf.stack can stack into a vector: scalars of "
                    f"one dtype ({type(e).__name__} from numpy)."
                ) from e
            return _array_text(where, stacked)
        _check_length(where, len(value))
        texts = []
        for i, item in enumerate(value):
            if not isinstance(item, _SCALARS):
                raise TbkitTypeError(
                    f"{describe(tag, f'{path}[{i}]')} must be a number, a bool, a str, bytes "
                    f"or None ({got(item)})."
                )
            texts.append(encode_leaf(tag, f"{path}[{i}]", item))
        return "[" + ",".join(texts) + "]"
    raise TbkitTypeError(
        f"{where} must be a tensor, a number, a bool, a str, bytes, None, a list of those, or "
        f"a nested dataclass, namedtuple or Mapping ({got(value)})."
    )


def dtypes(value: Any) -> dict[str, str]:
    """Field path → dtype of each field of a record that has one (:func:`leaf_dtype`), as
    ``tbkit.record`` records them in the summary's metadata."""
    found: dict[str, str] = {}

    def leaf(tag: str | None, path: str, field: Any) -> str:
        dtype = leaf_dtype(field)
        if dtype is not None:
            found[path] = dtype
        return ""

    walk(value, None, LEVELS[0], leaf)
    return found


def leaf_dtype(value: Any) -> str | None:
    """The dtype a field that is not a record is written from, as recorded in the summary's
    metadata (:func:`tbkit.data.metadata.create_summary_metadata`): a numpy value's or a
    tensor's dtype name (``"string"`` for text), ``"float64"`` for a Python float (written as
    its ``repr``), ``"int64"``, ``"bool"``, ``"string"`` for Python ints, bools and text; a
    list's, if its items other than ``None`` share one; else None (``None``, mixed lists)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, str | bytes):
        return "string"
    if isinstance(value, int):
        return "int64"
    if isinstance(value, float):
        return "float64"
    dtype = getattr(value, "dtype", None)
    if dtype is not None:  # numpy values, tensors, variables
        name = getattr(dtype, "name", str(dtype))
        return "string" if getattr(dtype, "kind", "") in ("U", "S", "O") else name
    if isinstance(value, list | tuple):
        found = {leaf_dtype(item) for item in value if item is not None}
        return found.pop() if len(found) == 1 else None
    return None


def _check_length(where: str, length: int) -> None:
    if length > MAX_ARRAY_LENGTH:
        raise TbkitValueError(
            f"{where} has {length} elements: at most {MAX_ARRAY_LENGTH} are supported "
            "(MAX_ARRAY_LENGTH)."
        )


def check_dtype_and_shape(where: str, dtype_name: str, shape: tuple | None) -> None:
    """Refuse an unsupported dtype, a rank other than 0 or 1, or a too-long static length."""
    if dtype_name not in SUPPORTED_DTYPES:
        raise TbkitTypeError(
            f"{where} has dtype {dtype_name}: supported are {', '.join(SUPPORTED_DTYPES)}."
        )
    if shape is None:
        raise TbkitTypeError(
            f"{where} has an unknown rank: supported are scalars and vectors (rank 0 or 1); "
            "give it a static rank with tf.ensure_shape."
        )
    if len(shape) > 1:
        raise TbkitTypeError(
            f"{where} has shape {shape}: supported are scalars and vectors (rank 0 or 1)."
        )
    if len(shape) == 1 and shape[0] is not None:
        _check_length(where, shape[0])


def _array_text(where: str, array: np.ndarray | np.generic, runtime: bool = False) -> str:
    """A numpy value's JSON text; ``runtime``: it stands for a tensor, whose strings over the
    cap become markers as the graph writes them (its length is static, so checked here)."""
    name = "string" if array.dtype.kind in "USO" else array.dtype.name
    check_dtype_and_shape(where, name, array.shape)
    if name == "bfloat16":  # an ml_dtypes type: widen, as the graph does
        array, name = array.astype(np.float32), "float32"
    items = array.tolist()  # exact Python scalars (object arrays: their objects)
    if array.ndim == 0:
        return _item_text(where, name, items, runtime)
    return "[" + ",".join(_item_text(where, name, item, runtime) for item in items) + "]"


def marker_prefix(cap: str, limit: int, unit: str) -> str:
    """The over-cap marker's text up to its size (see :mod:`tbkit.data.markers`)."""
    return f'{{"{markers.KEY}":{{"cap":"{cap}","limit":{limit},"{unit}":'


def string_marker_text(raw: bytes) -> str:
    """The marker the graph writes for a string tensor of more than MAX_STRING_BYTES bytes."""
    head = json.dumps(raw.decode("utf-8", "replace")[: markers.HEAD_CHARS], ensure_ascii=False)
    prefix = marker_prefix("MAX_STRING_BYTES", MAX_STRING_BYTES, "bytes")
    return f'{prefix}{len(raw)},"head":{head}}}}}'


def array_marker_text(length: int, head_texts: list[str]) -> str:
    """The marker the graph writes for a vector of run-time length over MAX_ARRAY_LENGTH,
    given the texts of its first elements."""
    head = ",".join(head_texts[: markers.HEAD_LENGTH])
    prefix = marker_prefix("MAX_ARRAY_LENGTH", MAX_ARRAY_LENGTH, "length")
    return f'{prefix}{length},"head":[{head}]}}}}'


def _item_text(where: str, name: str, item: Any, runtime: bool = False) -> str:
    if name == "bool":
        return "true" if item else "false"
    if name.startswith(("int", "uint")):
        return str(item)
    if name == "float64":
        return float64_text(item)
    if name != "string":
        return float32_text(item)
    if not isinstance(item, str | bytes):
        raise TbkitTypeError(f"{where} must hold str or bytes ({got(item)}).")
    if runtime and isinstance(item, bytes) and len(item) > MAX_STRING_BYTES:
        return string_marker_text(item)
    return _str_text(where, item)


def _str_text(where: str, text: str | bytes) -> str:
    raw = text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass")
    if len(raw) > MAX_STRING_BYTES:
        raise TbkitValueError(
            f"{where} is a string of {len(raw)} UTF-8 bytes: at most {MAX_STRING_BYTES} are "
            "supported (MAX_STRING_BYTES); strings are refused, not truncated."
        )
    return json.dumps(raw.decode("utf-8", "replace"), ensure_ascii=False)


def _g_text(value: float, digits: int) -> str:
    if not math.isfinite(value):
        return _NON_FINITE[str(value)]
    text = f"{value:.{digits}g}"
    return text + ".0" if text.lstrip("-").isdigit() else text  # a float, -0.0 included


def float32_text(value: float) -> str:
    """JSON text of a float32 value (given as the Python float it widens to exactly)."""
    return _g_text(value, 9)


def float64_text(value: float) -> str:
    """JSON text of a float64 value; subnormals are written exactly rounded as ``<N>e-324``."""
    if value != 0 and abs(value) < 2.2250738585072014e-308:  # subnormal: see records.py
        mantissa = struct.unpack("<q", struct.pack("<d", abs(value)))[0]
        digits = round(Fraction(mantissa * 10**324, 2**1074))
        return f"{'-' if value < 0 else ''}{digits}e-324"
    return _g_text(value, 17)
