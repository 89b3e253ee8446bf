"""Records → one strict-JSON object per step, built inside the TensorFlow graph.

A user's record (dataclass instance, namedtuple or Mapping; nested ones become nested JSON
objects, which readers flatten to dotted names) is turned into JSON text in two stages:

* :func:`template`, at trace time, walks the record, checks every field (names, dtypes, ranks,
  static lengths, Python constants) and raises at once with a message naming the field. It
  encodes Python and numpy values right away into constant text and keeps the tensors. It adds
  no ops, except a ``Pack`` for a list of tensors and a read for a variable, so a step that
  records nothing pays nothing for formatting.
* :meth:`RecordTemplate.encode` builds the formatting ops; tbkit calls it only inside the
  branch that records. Tensors of one kind (bools, ints, float32, float64, strings) are
  formatted together, whatever their number, and the object ends in one ``tf.strings.join``.

The text is the same as :func:`~tbkit.summary.jsonenc.encode_py` gives (the pure twin; see that
module for the leaf encodings), with one exception: a float64 subnormal may differ in its last
digit, yet parses to the same bits. ``tf.strings.format`` is not used: it prints ``nan`` and
``[1 2]``. What ``tf.strings.as_string`` prints, and what is done about it:

* ``precision=9/17, shortest=True`` is C's ``%.9g``/``%.17g``: it round-trips float32/float64,
  but prints integral values without a point (``1``, ``-0``, ``1e+09``): ``.0`` is appended
  when the text has no point and no exponent, so ``-0.0`` keeps its sign.
* ``nan``, ``-nan``, ``inf``, ``-inf``: replaced by the strings ``"NaN"``, ``"Infinity"``,
  ``"-Infinity"``.
* Subnormals print as ``0``: TensorFlow's CPU kernels run with denormals-are-zero, so every
  float op (a cast to float64 too) reads them as zero. They are rebuilt from their bits: a
  float32 subnormal as the exact float64 ``m·2⁻¹⁴⁹``; a float64 one as the integer
  ``round(m·10³²⁴/2¹⁰⁷⁴)`` (int64 and float64 parts, error < 10⁻⁶) written ``<int>e-324``.

Strings are transcoded UTF-8 → UTF-8 with invalid sequences replaced by U+FFFD (as Python's
``errors="replace"``), then escaped with seven RE2 rewrites (``\\ " \\n \\r \\t \\b \\f``);
a string holding another control character goes through a 256-entry byte table instead. Both
work on bytes safely: the escaped characters are ASCII, which no multi-byte sequence contains.
"""

from __future__ import annotations

import copy
import json
from fractions import Fraction
from typing import Any

import tensorflow as tf

from tbkit.data import markers
from tbkit.data.errors import TbkitTypeError, got
from tbkit.data.levels import LEVELS, level_index
from tbkit.summary import jsonenc
from tbkit.summary.jsonenc import MAX_ARRAY_LENGTH, MAX_STRING_BYTES, encode_py

__all__ = ["MAX_ARRAY_LENGTH", "MAX_STRING_BYTES", "RecordTemplate", "encode_py", "template"]

# How each supported dtype is formatted: values of one kind are formatted together.
_KIND = {"bool": "bool", "uint64": "uint64", "float64": "float64", "string": "string"}
_KIND |= dict.fromkeys(["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32"], "int")
_KIND |= dict.fromkeys(["float16", "bfloat16", "float32"], "float32")
_WIDEN = {"int": tf.int64, "float32": tf.float32}

# A float64 subnormal m·2⁻¹⁰⁷⁴ is written as round(m·C)e-324, C = 10³²⁴/2¹⁰⁷⁴ ≈ 4.94; with
# m = hi·2²⁶ + lo, m·C = hi·A_INT + (hi·A_FRAC + lo·C), A = 2²⁶·C, the first part exact in int64.
_C = Fraction(10**324, 2**1074)
_A_INT = int(_C * 2**26)
_A_FRAC, _C_FLOAT = float(_C * 2**26 - _A_INT), float(_C)
_STRING_MARKER = jsonenc.marker_prefix("MAX_STRING_BYTES", MAX_STRING_BYTES, "bytes")
_ARRAY_MARKER = jsonenc.marker_prefix("MAX_ARRAY_LENGTH", MAX_ARRAY_LENGTH, "length")
_SEPARATOR = b"\xff"  # never occurs in valid UTF-8
_ESCAPES = [
    json.dumps(chr(b), ensure_ascii=False)[1:-1].encode() if b < 128 else bytes([b])
    for b in range(256)
]
_NAMED_ESCAPES_ONLY = r"[^\x00-\x07\x0b\x0e-\x1f]*"  # no control character but \b\t\n\f\r
_NAMED_ESCAPES = [  # RE2 pattern and rewrite; the backslash goes first
    (r"\\", r"\\\\"), ('"', r'\\"'), (r"\n", r"\\n"), (r"\r", r"\\r"), (r"\t", r"\\t"),
    (r"\x08", r"\\b"), (r"\x0c", r"\\f"),
]  # fmt: skip


def _finish_floats(text: tf.Tensor) -> tf.Tensor:
    # Three RE2 rewrites cost a quarter of the equivalent arithmetic tests (measured).
    text = tf.strings.regex_replace(text, "^(-?[0-9]+)$", "\\1.0")
    text = tf.strings.regex_replace(text, "^-?nan$", '"NaN"')
    return tf.strings.regex_replace(text, "^(-?)inf$", '"\\1Infinity"')


def _float32_texts(x: tf.Tensor) -> tf.Tensor:
    bits = tf.bitcast(x, tf.int32)
    magnitude = tf.bitwise.bitwise_and(bits, 0x7FFFFFFF)
    tiny = tf.cast(magnitude, tf.float64) * 2.0**-149  # exact for zeros and subnormals
    wide = tf.where(magnitude < 0x00800000, tf.where(bits < 0, -tiny, tiny), tf.cast(x, tf.float64))
    return _finish_floats(tf.strings.as_string(wide, precision=9, shortest=True))


def _float64_texts(x: tf.Tensor) -> tf.Tensor:
    bits = tf.bitcast(x, tf.int64)
    magnitude = tf.bitwise.bitwise_and(bits, 0x7FFFFFFFFFFFFFFF)
    high, low = tf.bitwise.right_shift(magnitude, 26), tf.bitwise.bitwise_and(magnitude, 2**26 - 1)
    rest = tf.cast(high, tf.float64) * _A_FRAC + tf.cast(low, tf.float64) * _C_FLOAT
    digits = high * _A_INT + tf.cast(tf.round(rest), tf.int64)
    subnormal_text = tf.strings.join([tf.where(bits < 0, "-", ""), tf.strings.as_string(digits)])
    subnormal = tf.logical_and(magnitude > 0, magnitude < 2**52)
    text = _finish_floats(tf.strings.as_string(x, precision=17, shortest=True))
    return tf.where(subnormal, subnormal_text + "e-324", text)


def _string_texts(raw: tf.Tensor) -> tf.Tensor:
    valid = tf.strings.unicode_transcode(
        raw, "UTF-8", "UTF-8", errors="replace", replacement_char=0xFFFD,
        replace_control_characters=False,
    )  # fmt: skip
    nbytes = tf.strings.length(raw)
    over = nbytes > MAX_STRING_BYTES  # such a string is written as a marker holding its head
    valid = tf.where(over, tf.strings.substr(valid, 0, markers.HEAD_CHARS, unit="UTF8_CHAR"), valid)
    # RE2 passes for the seven named escapes are 8-14 times faster than the byte table on
    # long strings and as fast on short ones; the table serves other control characters.
    named_only = tf.reduce_all(tf.strings.regex_full_match(valid, _NAMED_ESCAPES_ONLY))
    escaped = tf.cond(named_only, lambda: _escape_named(valid), lambda: _escape_bytes(valid))
    quoted = tf.strings.join(['"', escaped, '"'])
    size = tf.strings.as_string(nbytes)
    marker = tf.strings.join([_STRING_MARKER, size, ',"head":', quoted, "}}"])
    return tf.where(over, marker, quoted)


def _escape_named(valid: tf.Tensor) -> tf.Tensor:
    for pattern, rewrite in _NAMED_ESCAPES:
        valid = tf.strings.regex_replace(valid, pattern, rewrite)
    return valid


def _escape_bytes(valid: tf.Tensor) -> tf.Tensor:
    # Join the strings, each followed by a byte that valid UTF-8 never holds, map every byte
    # through the table, and split again (n + 1 parts, the last one empty).
    marked = tf.io.decode_raw(tf.strings.reduce_join(valid + _SEPARATOR), tf.uint8)
    escaped = tf.strings.reduce_join(tf.gather(tf.constant(_ESCAPES), tf.cast(marked, tf.int32)))
    parts = tf.raw_ops.StringSplitV2(input=tf.reshape(escaped, [1]), sep=_SEPARATOR).values
    return tf.reshape(parts[:-1], tf.shape(valid))


_ENCODERS = {
    "bool": tf.strings.as_string,
    "int": tf.strings.as_string,
    "uint64": tf.strings.as_string,
    "float32": _float32_texts,
    "float64": _float64_texts,
    "string": _string_texts,
}


class _Leaf:
    __slots__ = ("where", "tensor", "kind", "unbounded")

    def __init__(self, tag: str, path: str, tensor: tf.Tensor):
        shape = None if tensor.shape.rank is None else tuple(tensor.shape.as_list())
        jsonenc.check_dtype_and_shape(jsonenc.describe(tag, path), tensor.dtype.name, shape)
        self.where = jsonenc.describe(tag, path, quote=False)
        self.tensor, self.kind = tensor, _KIND[tensor.dtype.name]
        #: a vector whose length is only known at run time: it may be over MAX_ARRAY_LENGTH
        self.unbounded = shape == (None,)


def _array_text(values: tf.Tensor, length: tf.Tensor | None) -> tf.Tensor:
    """A vector's JSON array from its elements' texts; a marker if ``length`` (the vector's
    length, given when it is only known at run time) is over MAX_ARRAY_LENGTH, in which case
    ``values`` holds the head only."""
    array = tf.strings.join(["[", tf.strings.reduce_join(values, separator=","), "]"])
    if length is None:
        return array
    marker = tf.strings.join([_ARRAY_MARKER, tf.strings.as_string(length), ',"head":', array, "}}"])
    return tf.where(length > MAX_ARRAY_LENGTH, marker, array)


def _format_kind(kind: str, leaves: list[_Leaf]) -> list[list[Any]]:
    """Format the tensors of one kind with one encoder call: JSON pieces for each leaf."""
    values = [leaf.tensor for leaf in leaves]
    lengths = [tf.size(leaf.tensor) if leaf.unbounded else None for leaf in leaves]
    values = [  # an over-long vector is formatted as far as its marker's head
        v if n is None else v[: tf.where(n > MAX_ARRAY_LENGTH, markers.HEAD_LENGTH, n)]
        for v, n in zip(values, lengths, strict=True)
    ]
    if kind in _WIDEN:
        values = [v if v.dtype == _WIDEN[kind] else tf.cast(v, _WIDEN[kind]) for v in values]
    ranks = [v.shape.rank for v in values]
    if not any(ranks):  # only scalars: one stack in, one unstack out
        flat = tf.stack(values) if len(values) > 1 else tf.reshape(values[0], [1])
        return [[part] for part in tf.unstack(_ENCODERS[kind](flat), num=len(values))]
    flat = [v if rank else tf.reshape(v, [1]) for v, rank in zip(values, ranks, strict=True)]
    encoded = _ENCODERS[kind](tf.concat(flat, 0) if len(flat) > 1 else flat[0])
    if len(values) == 1:
        parts = [encoded]
    else:
        sizes = [v.shape[0] for v in flat]
        if None in sizes:
            sizes = tf.stack(
                [tf.size(v) if s is None else s for v, s in zip(flat, sizes, strict=True)]
            )
        parts = tf.split(encoded, sizes, num=len(values))
    return [
        [_array_text(part, n)] if rank else [tf.reshape(part, [])]
        for part, rank, n in zip(parts, ranks, lengths, strict=True)
    ]


class RecordTemplate:
    """A checked record, ready to build its JSON text in the graph (see :func:`template`).

    Attributes:
        tensors: the tensor fields in field order (lists of tensors stacked, variables read).
    """

    def __init__(self, pieces: list[Any], leaves: list[_Leaf]):
        self._pieces, self._leaves = pieces, leaves
        self.tensors = [leaf.tensor for leaf in leaves]

    def with_tensors(self, tensors: list[tf.Tensor] | tuple) -> RecordTemplate:
        """The same record over other tensors of the same dtypes and shapes, in field order
        (the values carried out of an XLA body, or all-reduced across replicas)."""
        leaves = []
        for leaf, tensor in zip(self._leaves, tensors, strict=True):
            twin = copy.copy(leaf)
            twin.tensor = tensor
            leaves.append(twin)
        return RecordTemplate(self._pieces, leaves)

    def encode(self) -> tf.Tensor:
        """Build the ops that format the record: a scalar ``tf.string``, the JSON object text.

        Uses only the tensors captured by :func:`template`, so it may run later in the same
        trace, e.g. inside a ``tf.cond`` branch. It cannot fail on the values: a string
        tensor longer than ``MAX_STRING_BYTES`` bytes, or a vector of run-time length longer
        than ``MAX_ARRAY_LENGTH``, is written as an over-cap marker (:mod:`tbkit.data.markers`).
        """
        kinds: dict[str, list[int]] = {}
        for i, leaf in enumerate(self._leaves):
            kinds.setdefault(leaf.kind, []).append(i)
        texts: dict[int, list[Any]] = {}
        for kind, indices in kinds.items():
            leaves = [self._leaves[i] for i in indices]
            texts.update(zip(indices, _format_kind(kind, leaves), strict=True))
        joined: list[Any] = []
        for piece in self._pieces:
            for item in texts[piece] if isinstance(piece, int) else [piece]:
                if isinstance(item, str) and joined and isinstance(joined[-1], str):
                    joined[-1] += item
                else:
                    joined.append(item)
        return tf.strings.join(joined)


def _as_tensor(tag: str, path: str, value: Any) -> tf.Tensor | None:
    """The tensor a field holds (None for Python and numpy values)."""
    if isinstance(value, tf.RaggedTensor | tf.SparseTensor):
        raise TbkitTypeError(
            f"{jsonenc.describe(tag, path)} must be a dense tensor ({got(value)})."
        )
    if tf.is_tensor(value) or isinstance(value, tf.Variable):
        return tf.convert_to_tensor(value)  # reads a variable now, as the user's code sees it
    if isinstance(value, list | tuple) and any(
        tf.is_tensor(v) or isinstance(v, tf.Variable) for v in value
    ):
        try:
            return tf.stack(value)
        except (TypeError, ValueError) as e:
            raise TbkitTypeError(
                f"{jsonenc.describe(tag, path)} must be a list that tf.stack can stack into a "
                f"vector: scalars of one dtype ({type(e).__name__} from tf.stack)."
            ) from e
    return None


def template(tag: str, value: Any, level: str) -> RecordTemplate:
    """Check a record at trace time and prepare its in-graph JSON encoding.

    Args:
        tag: the record's name (used in messages).
        value: a dataclass instance, namedtuple or Mapping whose fields are tensors, variables,
            numpy values, Python scalars, lists of those, or nested records.
        level: the level name written as the ``"level"`` field.

    Returns:
        A :class:`RecordTemplate`; its ``encode()`` builds the formatting ops.

    Raises:
        TbkitTypeError: the value is not a record, a key is not a str, or a field has an
            unsupported type, dtype or rank.
        TbkitValueError: a reserved field name, a too-long string or static length, an int
            outside int64, or an unknown level.
    """
    if not isinstance(tag, str):
        raise TbkitTypeError(f"'tag' must be a str ({got(tag)}).")
    level = LEVELS[level_index(level)]
    leaves: list[_Leaf] = []

    def leaf(tag: str | None, path: str, field: Any) -> Any:
        tensor = _as_tensor(tag, path, field)
        if tensor is None:
            return jsonenc.encode_leaf(tag, path, field)
        leaves.append(_Leaf(tag, path, tensor))
        return len(leaves) - 1

    return RecordTemplate(jsonenc.walk(value, tag, level, leaf), leaves)
